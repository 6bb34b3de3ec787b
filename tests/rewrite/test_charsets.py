"""Charset labels, scan views (ASCII structure kept, multi-byte characters masked), text."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.rewrite import charsets
from beacon_proxy.rewrite.charsets import (
    UNKNOWN_CHARSET,
    decode_text,
    encode_text,
    is_supported,
    looks_valid,
    normalise_charset,
    scan_view,
)


@pytest.mark.parametrize(
    ("label", "name"),
    [
        (None, "us-ascii"), ("", "us-ascii"), ('"UTF-8"', "utf-8"), ("utf8", "utf-8"),
        (" Latin1 ", "iso-8859-1"), ("ISO_8859-15", "iso-8859-15"), ("latin2", "iso-8859-2"),
        ("cp-1252", "windows-1252"), ("Windows-1251", "windows-1251"), ("cp1250", "windows-1250"),
        ("x-sjis", "shift_jis"), ("shift-jis", "shift_jis"), ("Shift_JIS", "shift_jis"),
        ("cp932", "shift_jis"), ("Windows-31J", "shift_jis"), ("EUC-JP", "euc-jp"),
        ("iso-2022-jp", "iso-2022-jp"), ("ISO-2022-JP-2", "iso-2022-jp"), ("gb2312", "gbk"),
        ("GBK", "gbk"), ("gb18030", "gb18030"), ("big5", "big5"), ("Big5-HKSCS", "big5"),
        ("ks_c_5601-1987", "euc-kr"), ("euc-kr", "euc-kr"), ("koi8-r", "koi8-r"),
        ("tis-620", "windows-874"), ("us-ascii", "us-ascii"), ("ANSI_X3.4-1968", "us-ascii"),
        ("utf-16", "utf-16"), ("UTF-16LE", "utf-16le"), ("utf-7", "utf-7"),
        *((label, UNKNOWN_CHARSET) for label in (
            "klingon", "rot13", "base64", "hex", "idna", "utf-8; format=flowed", "x-unknown",
            "unknown-8bit", "cp037")),
    ],
)
def test_normalise_charset(label: str | None, name: str) -> None:
    assert normalise_charset(label) == name


@given(st.text(max_size=60))
def test_normalise_charset_never_raises(label: str) -> None:
    name = normalise_charset(label)
    assert name == UNKNOWN_CHARSET or name in charsets._CHARSETS


def test_is_supported() -> None:
    for name in ("utf-8", "us-ascii", "windows-1252", "shift_jis", "iso-2022-jp", "euc-kr",
                 "GB2312", "big5", "euc-jp", "iso-2022-kr", "koi8-r"):
        assert is_supported(name), name
    for name in ("utf-16", "utf-32be", "utf-7", "hz-gb-2312", UNKNOWN_CHARSET, "klingon"):
        assert not is_supported(name), name


# --- scan views on known text ------------------------------------------------------------------

def test_identity_charsets_return_the_same_bytes() -> None:
    data = "<p title='é'>Crème — 20 €</p>".encode()
    for charset in ("utf-8", "us-ascii", "euc-jp"):
        assert scan_view(data, charset) is data
    latin = "<p>Façade €</p>".encode("cp1252")
    assert scan_view(latin, "windows-1252") is latin
    assert scan_view(latin, UNKNOWN_CHARSET) is latin


def test_shift_jis_backslash_trail_is_masked() -> None:
    text = '<style>.a:before{content:"表ソ"}</style><p>能</p>'
    data = text.encode("shift_jis")
    assert data.count(b"\\") == 3  # every one of them a trail byte
    view = scan_view(data, "shift_jis")
    assert len(view) == len(data)
    assert b"\\" not in view
    ascii_only = bytes(b for b in view if b < 0x80)
    assert ascii_only == b'<style>.a:before{content:""}</style><p></p>'


def test_shift_jis_half_width_katakana_and_pairs_of_lead_range_bytes() -> None:
    text = "ｱｲｳ<b>あ\\あア</b>"  # あ = 82 A0, ア = 83 41 (ASCII-range trail 'A')
    data = text.encode("cp932")
    view = scan_view(data, "shift_jis")
    assert bytes(b for b in view if b < 0x80) == b"<b>\\</b>"


def test_gbk_backslash_trail_is_masked_and_gb18030_digits_too() -> None:
    data = "<p>竹籠 淺</p>".encode("gbk")
    assert b"\\" in data
    view = scan_view(data, "gb2312")
    assert b"\\" not in view
    assert bytes(b for b in view if b < 0x80) == b"<p> </p>"
    four = "<i>\U0001f600€</i>".encode("gb18030")  # 4-byte sequences carry digits 0x30-0x39
    assert bytes(b for b in scan_view(four, "gb18030") if b < 0x80) == b"<i></i>"


def test_big5_and_euc_kr_ascii_range_trails() -> None:
    big5 = "<a title=功>許</a>".encode("big5")
    assert bytes(b for b in scan_view(big5, "big5") if b < 0x80) == b"<a title=></a>"
    korean = "<b>갂똠</b>".encode("cp949")  # UHC extension: trail bytes are letters
    assert any(0x41 <= b <= 0x7A for b in korean[3:-4])
    assert bytes(b for b in scan_view(korean, "ks_c_5601-1987") if b < 0x80) == b"<b></b>"


def test_iso_2022_jp_escapes_and_double_byte_text_are_masked() -> None:
    data = '<p class="x">日本語</p><a href="y">ソ</a>'.encode("iso2022_jp")
    view = scan_view(data, "ISO-2022-JP")
    assert len(view) == len(data)
    assert bytes(b for b in view if b < 0x80) == b'<p class="x"></p><a href="y"></a>'
    kana = b"<b>\x1b(I123\x1b(B</b>"  # JIS X 0201 katakana: 7-bit bytes that are not ASCII
    assert bytes(b for b in scan_view(kana, "iso-2022-jp") if b < 0x80) == b"<b></b>"
    shifted = b"<i>\x1b.A\x1bNi</i>\x1b$B%=\x1b$(D\x22\x2f\x1b(J<u>"  # G2 + single shift
    assert bytes(b for b in scan_view(shifted, "iso-2022-jp") if b < 0x80) == b"<i></i><u>"
    unterminated = b"<p>\x1b$B%=%="
    assert scan_view(unterminated, "iso-2022-jp") == b"<p>" + b"\x80" * 7


def test_iso_2022_kr_shift_out_runs_are_masked() -> None:
    data = "<p>한국어</p>\n<b>x</b>".encode("iso2022_kr")
    view = scan_view(data, "iso-2022-kr")
    assert bytes(b for b in view if b < 0x80) == b"<p></p>\n<b>x</b>"


def test_unsupported_charsets_are_fully_masked() -> None:
    data = "<p>x</p>".encode("utf-16")
    assert scan_view(data, "utf-16") == b"\x80" * len(data)


# --- property tests ----------------------------------------------------------------------------

def _repertoire(codec: str, ranges: list[tuple[int, int]], limit: int = 400) -> list[str]:
    chars = []
    for lo, hi in ranges:
        for code in range(lo, hi):
            char = chr(code)
            try:
                if len(char.encode(codec)) > 1 or (codec in ("cp932",) and code >= 0xFF61):
                    chars.append(char)
            except UnicodeEncodeError:
                continue
            if len(chars) >= limit * len(ranges):
                break
    return chars


_CJK = [(0x3041, 0x3097), (0x30A1, 0x30F7), (0x4E00, 0x5200), (0xFF01, 0xFF5E)]
CASES: dict[str, tuple[str, list[str]]] = {
    "shift_jis": ("cp932", _repertoire("cp932", [*_CJK, (0xFF61, 0xFFA0), (0x2460, 0x2474)])),
    "euc-jp": ("euc_jp", _repertoire("euc_jp", _CJK)),
    "iso-2022-jp": ("iso2022_jp", _repertoire("iso2022_jp", _CJK)),
    "gbk": ("gbk", _repertoire("gbk", [(0x4E00, 0x5200), (0x7C00, 0x7E00), (0x3000, 0x3020)])),
    "gb18030": ("gb18030", _repertoire("gb18030", [(0x4E00, 0x4F00), (0x1F600, 0x1F640),
                                                   (0x00C0, 0x0100), (0x3400, 0x3440)])),
    "big5": ("big5hkscs", _repertoire("big5hkscs", [(0x4E00, 0x5300), (0x8A00, 0x8C00)])),
    "euc-kr": ("cp949", _repertoire("cp949", [(0xAC00, 0xAE00), (0xB000, 0xB200)])),
    "iso-2022-kr": ("iso2022_kr", _repertoire("iso2022_kr", [(0xAC00, 0xAD00), (0xD55C, 0xD560)])),
    "utf-8": ("utf-8", _repertoire("utf-8", _CJK)),
    "windows-1252": ("cp1252", [bytes([b]).decode("cp1252") for b in range(0x80, 0x100)
                                if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)]),
}
MARKUP = st.text(alphabet="<>\"'=/&;()\\{}@ \t\nabcxyzAZ09#:.-_|~`^[]", min_size=1, max_size=12)


@pytest.mark.parametrize("charset", sorted(CASES))
@settings(max_examples=60)
@given(data=st.data())
def test_view_keeps_markup_at_its_offsets_and_masks_the_rest(charset: str, data: st.DataObject
                                                             ) -> None:
    codec, repertoire = CASES[charset]
    segments = data.draw(st.lists(st.one_of(
        MARKUP.map(lambda s: (s, True)),
        st.text(alphabet=st.sampled_from(repertoire), min_size=1, max_size=6).map(
            lambda s: (s, False)),
    ), max_size=20))
    encoded = [(text.encode(codec), ascii_) for text, ascii_ in segments]
    whole = b"".join(e for e, _ in encoded)
    view = scan_view(whole, charset)
    assert len(view) == len(whole)
    pos = 0
    for chunk, is_markup in encoded:
        if is_markup:
            assert view[pos : pos + len(chunk)] == chunk
        else:
            assert all(b >= 0x80 for b in view[pos : pos + len(chunk)])
        pos += len(chunk)
    assert looks_valid(whole, charset)


def _reference_pairs(data: bytes, lead: Callable[[int], bool], trail: Callable[[int], bool],
                     four: bool = False) -> set[int]:
    """Offsets of ASCII-range bytes inside a multi-byte character, by a plain state machine."""
    hidden: set[int] = set()
    i = 0
    while i < len(data):
        if lead(data[i]) and i + 1 < len(data):
            nxt = data[i + 1]
            digit = four and 0x30 <= nxt <= 0x39  # GB18030: the second half restarts as a lead
            if nxt < 0x80 and not trail(nxt) and not digit:
                i += 1  # an ASCII byte that cannot be a trail byte is read again (WHATWG)
                continue
            if nxt < 0x80:
                hidden.add(i + 1)
            i += 2  # a pair, or an invalid pair consumed as one error
            continue
        i += 1
    return hidden


REFERENCES: dict[str, Callable[[bytes], set[int]]] = {
    "shift_jis": lambda d: _reference_pairs(d, lambda b: 0x81 <= b <= 0x9F or 0xE0 <= b <= 0xFC,
                                            lambda b: 0x40 <= b <= 0x7E or 0x80 <= b <= 0xFC),
    "big5": lambda d: _reference_pairs(d, lambda b: 0x81 <= b <= 0xFE,
                                       lambda b: 0x40 <= b <= 0x7E or 0xA1 <= b <= 0xFE),
    "euc-kr": lambda d: _reference_pairs(
        d, lambda b: 0x81 <= b <= 0xFE,
        lambda b: 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A or 0x81 <= b <= 0xFE),
    "gb18030": lambda d: _reference_pairs(d, lambda b: 0x81 <= b <= 0xFE,
                                          lambda b: 0x40 <= b <= 0x7E or 0x80 <= b <= 0xFE, True),
}
BYTES = st.binary(max_size=80) | st.lists(st.sampled_from(
    [0x30, 0x35, 0x3C, 0x40, 0x41, 0x5C, 0x61, 0x7E, 0x80, 0x81, 0x82, 0x9F, 0xA0, 0xA1, 0xE0,
     0xFC, 0xFD, 0xFE, 0xFF]), max_size=80).map(bytes)


@pytest.mark.parametrize("charset", sorted(REFERENCES))
@given(data=BYTES)
def test_double_byte_masking_matches_a_state_machine(charset: str, data: bytes) -> None:
    view = scan_view(data, charset)
    hidden = REFERENCES[charset](data)
    assert len(view) == len(data)
    for i, (before, after) in enumerate(zip(data, view, strict=True)):
        if i in hidden:
            assert after >= 0x80
        elif before < 0x80:
            assert after == before


def test_big_inputs_are_masked_in_independent_chunks() -> None:
    unit = '<td style="x">表示ソ\\能</td>\r\n'
    data = (unit * 4000).encode("cp932")
    view = scan_view(data, "shift_jis")
    expected = bytes(b for b in unit.replace("表示ソ", "").replace("能", "").encode() if b < 0x80)
    assert bytes(b for b in view if b < 0x80) == expected * 4000


@given(st.binary(max_size=200), st.sampled_from(sorted(charsets._CHARSETS)))
def test_lying_bytes_give_a_safe_view_and_never_raise(data: bytes, charset: str) -> None:
    view = scan_view(data, charset)
    assert len(view) == len(data)
    assert all(v == d for v, d in zip(view, data, strict=True) if v < 0x80)
    looks_valid(data, charset)
    decode_text(data, charset)


@given(st.lists(st.sampled_from([b"\x1b$B", b"\x1b(B", b"\x1b(J", b"\x1b$@", b"%=", b"<a>",
                                 b"\x1b", b"\x1b(I", b"\x1bN", b"\n", b'"']), max_size=30))
def test_iso_2022_jp_fast_path_agrees_with_the_general_walk(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert charsets._iso2022jp_view(data) == charsets._iso2022jp_view_any(data)


# --- validity and text -------------------------------------------------------------------------

def test_looks_valid_catches_lying_charsets() -> None:
    assert looks_valid("café".encode(), "us-ascii")  # unlabelled UTF-8 is common
    assert not looks_valid("café".encode("latin-1"), "us-ascii")
    assert not looks_valid("café".encode("latin-1"), "utf-8")
    assert not looks_valid("日本".encode("shift_jis"), "iso-2022-jp")  # 8-bit in a 7-bit charset
    assert not looks_valid(b"<p>\x1b[31mred</p>", "iso-2022-jp")  # unknown escape sequence
    assert looks_valid(b"\x1b$B-!\x1b(B", "iso-2022-jp")  # NEC circled digit one
    assert looks_valid("日本".encode("shift_jis"), "shift_jis")
    assert not looks_valid(b"\x82", "shift_jis")
    assert not looks_valid("x".encode("utf-16"), "utf-16")
    assert looks_valid(b"\x1b$)C\x0eGQ\x0f", "iso-2022-kr")
    assert not looks_valid(b"\x1b$B", "iso-2022-kr")


def test_decode_and_encode_text() -> None:
    assert decode_text("日本".encode("iso2022_jp"), "ISO-2022-JP") == "日本"
    assert decode_text(b"\xff", "utf-8") == "\ufffd"
    assert decode_text("表".encode("cp932"), "x-sjis") == "表"
    assert decode_text(b"caf\xc3\xa9", "us-ascii") == "café"
    inserted = encode_text("配信停止 ①€", "iso-2022-jp")
    assert inserted.endswith(b"&#8364;")
    assert inserted.isascii() and b"\x1b(B" in inserted
    assert scan_view(inserted, "iso-2022-jp").endswith(b"&#8364;")
    assert encode_text("Désabonner €", "iso-8859-1") == b"D\xe9sabonner &#8364;"
    assert encode_text("x", "us-ascii") == b"x"
    with pytest.raises(ValueError, match="cannot encode"):
        encode_text("x", "utf-16")
    with pytest.raises(ValueError, match="cannot encode"):
        encode_text("x", UNKNOWN_CHARSET)
