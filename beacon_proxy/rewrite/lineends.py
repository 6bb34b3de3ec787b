"""A copy's line ends, made CRLF and proven so, and its line-start periods, when no
DKIM step signs it.

The courier sends every copy with CRLF line ends only, ending in one, and a
period put before every line's leading period (``deliver.smtp.wire_data``; RFC
5321 sections 2.3.8 and 4.5.2).  Checking the line ends takes a pass over the
whole copy (:func:`crlf_lines`: a split on CRLF, a join and two ``memchr``,
0.09 ms of CPU for the 70 KB newsletter) and finding the periods another (a
search for CRLF and period, 0.05 ms), per copy, unless a step proved them
(:attr:`Copy.crlf <beacon_proxy.rewrite.step.Copy.crlf>`, :attr:`Copy.dots
<beacon_proxy.rewrite.step.Copy.dots>`).  The DKIM step proves both for the
copies it signs (its periods carried as here: :func:`carried_dots`);
:class:`CrlfProof`, the last step when DKIM is off (``app.copy_steps``), proves
both for the others, the way the DKIM step proves its line ends, without a pass
over the whole copy:

* a further copy of a message (the same ``original`` object as the copy it
  remembers) is compared with that copy
  (:func:`~beacon_proxy.rewrite.dkimbody.matched`: ``memcmp`` over the shared
  stretches, a few ``bytes.find`` to meet again after a change).  The
  remembered copy has CRLF line ends only, so every stretch of the new copy
  byte-identical to some stretch of it has no bad line end inside: a bad line
  end is one byte or two adjacent bytes (a CR not before an LF, an LF not
  after a CR).  Only the changed stretches, each with a byte of each
  neighbour, and the ends of the body are searched
  (:func:`~beacon_proxy.rewrite.dkimbody.gaps_pass`, the very check the DKIM
  body hash relies on), and the header block is checked whole (it is small;
  :func:`~beacon_proxy.rewrite.dkimbody.crlf_header_at`);
* the periods (:meth:`CrlfProof.shown`): the remembered copy's that lie, with
  their CRLF, inside a compared piece, moved to where the piece is in the new
  copy; and those found by searching the header with the CRLF after it and
  each changed stretch widened by two bytes each way: a CRLF and period are
  three adjacent bytes, and every place where a compared piece meets
  something else is a changed stretch (maybe an empty one), so one astride
  such an edge is searched;
* any other copy (a message's first, or one whose change brings a bad line
  end, or more than :data:`~beacon_proxy.rewrite.dkimbody.MAX_GAPS` changes)
  takes the whole passes, which also convert it (:func:`crlf_lines`, what the
  courier did) and find its periods (:func:`line_dots`; more than
  :data:`MAX_DOTS`: not carried, the courier searches); it becomes the
  remembered copy of its message.

So a copy marked ``crlf`` (and given ``dots``) is one whose every byte was
either searched or compared with a copy that was searched whole: nothing is
trusted that was not compared, and a message is never mistaken for another
(the entry holds its ``original`` object).  A wrong proof would let a bare CR
or LF, or an unstuffed line ``.``, reach the upstream, which could take it for
a line end or the end of the data (SMTP smuggling), so the tests compare the
step with the whole passes on hostile copies, and with pieces given at exact
edges (``tests/rewrite/test_lineends.py``).

Cost (``bench/passes.py``, ``docs/performance.md``; the 70 KB newsletter's
further copies): about 0.04 ms for the step, and the courier's DATA section
then 0.004 ms instead of 0.17.

>>> proof = CrlfProof()
>>> from beacon_proxy.spool.envelope import Envelope
>>> from beacon_proxy.consent.policy import Policy
>>> original = b"Subject: hi\\r\\n\\r\\nHello\\n.there\\r\\n"
>>> rcpt = Recipient(Envelope("Q1", "a@x.org", ("b@y.org",)), "b@y.org", Policy.REFUSED, original)
>>> first = proof(Copy(original), rcpt)
>>> first.data, first.crlf, first.dots
(b'Subject: hi\\r\\n\\r\\nHello\\r\\n.there\\r\\n', True, (22,))
>>> other = first.data.replace(b"hi", b"ho")  # another recipient's: compared, not searched
>>> proof.proven(other, original), proof(Copy(other), rcpt).dots
(True, (22,))
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from beacon_proxy.rewrite.dkimbody import (
    MAX_GAPS,
    LastCopies,
    Piece,
    crlf_header_at,
    gaps_pass,
    matched,
)
from beacon_proxy.rewrite.step import Copy, Recipient

__all__ = ["LINE_DOT", "MAX_DOTS", "CrlfProof", "Shown", "carried_dots", "crlf_lines",
           "line_dots"]

MAX_DOTS: Final = 256  # line-start periods carried per copy; more: the courier searches
# A period that starts a line (but the first): what SMTP's transparency stuffs and
# unstuffs (RFC 5321 4.5.2).  One pattern for the three places that search for it
# (here, ``deliver.smtp.wire_data``, ``smtpd.data.unstuff``); no group, so ``re``
# searches for it as a literal (faster than ``bytes.find``/``split`` for one that
# starts with CR: see those functions).
LINE_DOT: Final = re.compile(rb"\r\n\.")


def crlf_lines(data: bytes) -> bytes:
    r"""``data`` with CRLF line ends only, ending in one: each bare CR or LF becomes CRLF.

    The check: the bytes left once every CRLF pair is cut out hold no CR and no LF
    (a split, a join and two ``memchr``: 0.086 ms of CPU for 70 KB, where three
    ``count`` passes took 0.12).  Returns ``data`` itself when nothing changes.

    >>> crlf_lines(b"a\r\nb\nc\rd"), crlf_lines(b"")
    (b'a\r\nb\r\nc\r\nd\r\n', b'\r\n')
    """
    rest = b"".join(data.split(b"\r\n"))
    if b"\r" in rest or b"\n" in rest:  # a bare CR or LF somewhere
        # As re.sub(rb"\r\n|\r|\n", b"\r\n") does, without a regex: each CRLF pair,
        # then each CR left (a bare one), becomes one LF; then every LF becomes CRLF.
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def line_dots(data: bytes, lo: int = 0, hi: int | None = None,
              limit: int | None = None) -> list[int]:
    r"""The offsets of the periods that start a line (after a CRLF, or at 0) and lie,
    with the CRLF before them, within ``data[lo:hi]``; the search stops once more
    than ``limit`` are found (those are returned).

    >>> line_dots(b".a\r\n.b\r\nc.\r\n..\r\n"), line_dots(b"\r\n." * 9, limit=2)
    ([0, 4, 12], [2, 5, 8])
    """
    hi = len(data) if hi is None else hi
    found = [0] if lo == 0 and data.startswith(b".") else []
    for match in LINE_DOT.finditer(data, lo, hi):
        found.append(match.end() - 1)
        if limit is not None and len(found) > limit:
            break
    return found


@dataclass(frozen=True, slots=True)
class Shown:
    """What comparing a copy with the last one showed: its line ends are CRLF only and
    it ends in one.  ``dots``: the offsets of its line-start periods
    (:func:`line_dots`), or None when there are more than :data:`MAX_DOTS`."""

    dots: tuple[int, ...] | None


class CrlfProof:
    """The copy step that makes a copy's line ends CRLF and says so (``Copy.crlf``),
    comparing a further copy of a message with the last one instead of searching it
    whole (see the module docstring).  ``cache``: how many messages' last copies are
    remembered (0: none, every copy takes the whole pass).  Threads may share it."""

    def __init__(self, cache: int = 4) -> None:
        # original -> (last copy with CRLF line ends only, where its body starts, its
        # line-start periods or None)
        self._last: LastCopies[tuple[bytes, int, tuple[int, ...] | None]] = LastCopies(cache)

    def __call__(self, copy: Copy, recipient: Recipient) -> Copy:
        if copy.crlf:  # an earlier step proved it
            return copy
        data = copy.data
        shown = self.shown(data, recipient.original)
        if shown is None:
            data = crlf_lines(data)
            dots = line_dots(data, limit=MAX_DOTS)  # more: the courier searches anyway
            kept = tuple(dots) if len(dots) <= MAX_DOTS else None
            at = crlf_header_at(data)
            if at > 0 and recipient.original:
                self._last.put(recipient.original, (data, at, kept), len(data) - at)
        else:
            kept = shown.dots
        return Copy(data, copy.report, copy.held, copy.wait, crlf=True, dots=kept)

    def proven(self, data: bytes, original: bytes) -> bool:
        """Whether ``data`` has CRLF line ends only and ends in one, shown by comparing
        it with the last copy of ``original`` (False: not shown, maybe not true)."""
        return self.shown(data, original) is not None

    def shown(self, data: bytes, original: bytes) -> Shown | None:
        """What comparing ``data`` with the last copy of ``original`` shows (None: not
        that ``data`` has CRLF line ends only; maybe it has).

        The dots: those of the last copy that lie, with their CRLF, inside a piece of
        ``data`` byte-identical to a stretch of it, moved to where the piece is; and
        those found by searching the rest: the header (with the CRLF that ends it)
        and each changed stretch widened by two bytes each way, so that a CRLF and
        period that straddle a piece's edge are found (every edge is a changed
        stretch, maybe an empty one).
        """
        if not original:
            return None
        last = self._last.get(original)
        if last is None:
            return None
        at = crlf_header_at(data)
        if at < 0:
            return None
        old, old_at, old_dots = last
        _, gaps, pieces = matched(data, at, old, old_at)
        if len(gaps) > MAX_GAPS or not gaps_pass(data, at, gaps):
            return None
        if old_dots is None:
            return Shown(None)
        return Shown(carried_dots(data, at, pieces, gaps, old_dots))


def carried_dots(data: bytes, at: int, pieces: Iterable[Piece],
                 gaps: Iterable[tuple[int, int]], old_dots: Sequence[int]
                 ) -> tuple[int, ...] | None:
    """The offsets of every line-start period of ``data`` (its body starts at ``at``),
    from :func:`~beacon_proxy.rewrite.dkimbody.matched`'s ``pieces`` and ``gaps`` of its
    body against a copy whose line-start periods are ``old_dots`` (all of them, in
    order); None when there are more than :data:`MAX_DOTS`.

    Those of the old copy that lie, with their CRLF, inside a piece, moved to where the
    piece is; and those found by searching the header (with the CRLF after it and the
    body's first byte) and each changed stretch widened by two bytes each way, so that
    a CRLF and period astride a piece's edge are found (every edge is a changed
    stretch, maybe an empty one).  :meth:`CrlfProof.shown` and the DKIM step
    (:mod:`~beacon_proxy.rewrite.dkim`) carry them so."""
    dots = set(line_dots(data, 0, at + 2))  # the header's, and the body's first line
    for start, old_start, size in pieces:
        lo = bisect.bisect_left(old_dots, old_start + 2)
        hi = bisect.bisect_left(old_dots, old_start + size)
        dots.update(dot - old_start + start for dot in old_dots[lo:hi])
    end = len(data)
    for a, b in gaps:
        dots.update(line_dots(data, max(a - 2, at), min(b + 2, end)))
    return tuple(sorted(dots)) if len(dots) <= MAX_DOTS else None
