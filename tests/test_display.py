from __future__ import annotations

import io

import pytest

from beacon_proxy.display import TerminalText, visible


@pytest.mark.parametrize(("text", "html", "terminal"), [
    ("plain text\twith a tab\n", "plain text\twith a tab\n", "plain text\twith a tab\n"),
    ("a\r\nb", "a\r\nb", "a<U+000D>\nb"),
    ("\x00\x08\x0b\x0c\x1b\x7f\x85\x9f", "<U+0000><U+0008><U+000B><U+000C><U+001B><U+007F>"
     "<U+0085><U+009F>", "<U+0000><U+0008><U+000B><U+000C><U+001B><U+007F><U+0085><U+009F>"),
    ("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
     "".join(f"<U+{c:04X}>" for c in (0x61C, 0x200E, 0x200F, *range(0x202A, 0x202F),
                                        *range(0x2066, 0x206A))), None),
    ("日本語 \u200d emoji joiner and é stay", "日本語 \u200d emoji joiner and é stay", None),
])
def test_visible(text: str, html: str, terminal: str | None) -> None:
    assert visible(text) == html
    assert visible(text, terminal=True) == (html if terminal is None else terminal)


def test_terminal_text_marks_what_it_writes() -> None:
    out = io.StringIO()
    stream = TerminalText(out)
    assert stream.write("x\u202ey\r\n") == 5
    stream.flush()
    assert out.getvalue() == "x<U+202E>y<U+000D>\n"
    assert not stream.isatty()
