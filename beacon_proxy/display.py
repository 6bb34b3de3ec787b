"""Text from outside, shown to a person: hidden and reordering characters as marks.

Headers of queued mail, addresses, CSV sources and reasons are written by
senders and importers.  Shown as they are, a right-to-left override in a
``Subject`` reorders what the operator reads (``Invoice \\u202egpj.exe`` reads
as ``Invoice exe.jpg``), and on a terminal an escape sequence can retitle the
window, rewrite the line or (OSC 52) set the clipboard.  :func:`visible` shows
each such character as a ``<U+XXXX>`` mark: the C0 controls but tab and line
ends, DEL, the C1 controls, and Unicode's bidirectional controls (marks,
embeddings, overrides, isolates).  The console passes every value it shows
through it (its Jinja ``finalize``); the command line does when its standard
output is a terminal (:class:`TerminalText`), so pipes and ``--json`` consumers
still get the exact bytes.

>>> visible("Sale \\u202egnp.exe")
'Sale <U+202E>gnp.exe'
>>> visible("a\\r\\nb\\x1b]52;c;ZXZpbA==\\x07", terminal=True)
'a<U+000D>\\nb<U+001B>]52;c;ZXZpbA==<U+0007>'
"""

from __future__ import annotations

import re
from typing import IO, Final

__all__ = ["TerminalText", "visible"]

_BIDI: Final = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_HIDDEN: Final = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI}]")  # keeps \t \r \n
_HIDDEN_TERMINAL: Final = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI}]")  # keeps \t \n


def _mark(match: re.Match[str]) -> str:
    return f"<U+{ord(match.group()):04X}>"


def visible(text: str, *, terminal: bool = False) -> str:
    """``text`` with its hidden and reordering characters as ``<U+XXXX>`` marks
    (``terminal``: a carriage return too, which would let a line overwrite itself)."""
    return (_HIDDEN_TERMINAL if terminal else _HIDDEN).sub(_mark, text)


class TerminalText:
    """A text stream for a terminal: what is written is :func:`visible` first."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(visible(text, terminal=True))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return self.stream.isatty()
