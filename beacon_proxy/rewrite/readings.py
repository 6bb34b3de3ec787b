"""Text that clients read in more than one way: the precise path holds only if every
reading finds the same loads.

:func:`~beacon_proxy.rewrite.charsets.reading` gives, besides the view the scanner
works on, the views of the other readings some client makes of the same bytes
(:attr:`~beacon_proxy.rewrite.charsets.Reading.others`): a label browsers do not know
(``cp932``, ``iso-2022-jp-2``: they read windows-1252 or a ``<meta>`` charset), a
``<meta>`` charset naming Shift_JIS or Big5 in an unlabelled part, a lying label
(browsers resynchronise and keep to it), ISO-2022-JP escapes only some decoders know.
All views have the text's length, so their references are comparable span for span.
When every view gives the same references, the copy made from the scanner's view is
the copy for every reader; otherwise the text is read differently by different
clients, and the engine leaves it to the fallback, which holds it unless its own
neutralisation is the same for every view.
"""

from __future__ import annotations

from collections.abc import Sequence

from beacon_proxy.rewrite.html import scan_entries
from beacon_proxy.rewrite.htmlrefs import Entry, materialize
from beacon_proxy.rewrite.unmodelled import unmodelled_markup

__all__ = ["read_otherwise"]


def read_otherwise(others: Sequence[bytes], entries: Sequence[Entry], charset: str,
                   max_tags: int) -> str | None:
    """Why another reading of the text (one of ``others``) loads otherwise than the
    scan that found ``entries``, or None when every one finds the same references.

    >>> from beacon_proxy.rewrite.charsets import reading
    >>> data = b'<style>p{font:"\\x95\\\\"; background:url(https://t.test/o)} /*"*/</style>'
    >>> read = reading(data, None)        # unlabelled: a browser may guess Shift_JIS
    >>> read_otherwise(read.others, scan_entries(read.view)[0], read.charset, 1000)
    'another reading of its charset finds other references'
    >>> read = reading(b'<meta charset="shift_jis">' + data, None)
    >>> view_entries = scan_entries(read.view)[0]
    >>> read_otherwise(read.others, view_entries, read.charset, 1000)
    'another reading of its charset finds other references'
    """
    mine = [materialize(entry) for entry in entries]
    for view in others:
        low = view.lower()
        unmodelled = unmodelled_markup(low)
        if unmodelled is not None:
            return f"another reading of its charset has {unmodelled}"
        found, _, incomplete = scan_entries(view, max_tags=max_tags, charset=charset, low=low)
        if incomplete is not None:
            return f"another reading of its charset: {incomplete}"
        if [materialize(entry) for entry in found] != mine:
            return "another reading of its charset finds other references"
    return None
