"""Charset labels, scan views (ASCII structure kept, multi-byte characters masked), text,
byte order marks and the UTF-8 transcoding of charsets that are not ASCII-compatible."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.rewrite import charsets
from beacon_proxy.rewrite.charsets import (
    UNKNOWN_CHARSET,
    WHATWG_LABELS,
    decode_text,
    effective_charset,
    encode_text,
    from_utf8,
    has_bom,
    is_supported,
    is_transcoded,
    lenient_view,
    looks_valid,
    normalise_charset,
    scan_view,
    to_utf8,
)
from beacon_proxy.rewrite.css import scan_css
from beacon_proxy.rewrite.engine import Engine


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
        ("utf_16_be", "utf-16be"), ("UTF-32", "utf-32"), ("utf-32LE", "utf-32le"),
        ("UCS-4", "utf-32"), ("unicode-1-1-utf-7", "utf-7"), ("csUnicode11UTF7", "utf-7"),
        ("HZ-GB-2312", "hz-gb-2312"), ("x-user-defined", "x-user-defined"),
        ("iso-2022-cn", "replacement"), ("ISO-2022-KR", "iso-2022-kr"), ("koi8-ru", "koi8-u"),
        ("x-mac-ukrainian", "x-mac-cyrillic"), ("iso-8859-11", "windows-874"),
        *((label, UNKNOWN_CHARSET) for label in (
            "klingon", "rot13", "base64", "hex", "idna", "utf-8; format=flowed", "x-unknown",
            "unknown-8bit", "cp037", "x-unknown-42", "utf-16x", "unicode-1-1-utf-16")),
    ],
)
def test_normalise_charset(label: str | None, name: str) -> None:
    assert normalise_charset(label) == name


@given(st.text(max_size=60))
def test_normalise_charset_never_raises(label: str) -> None:
    name = normalise_charset(label)
    assert name == UNKNOWN_CHARSET or name in charsets._CHARSETS


def test_every_charset_is_supported_and_only_the_others_are_transcoded() -> None:
    ascii_compatible = ("utf-8", "us-ascii", "windows-1252", "shift_jis", "iso-2022-jp",
                        "euc-kr", "GB2312", "big5", "euc-jp", "iso-2022-kr", "koi8-r",
                        "x-user-defined", "replacement", UNKNOWN_CHARSET, "klingon",
                        "unicode11utf8")
    transcoded = ("utf-16", "UTF-16LE", "utf-16be", "unicode", "unicodeFFFE", "utf-32",
                  "utf-32le", "utf-32be", "utf-7", "hz-gb-2312")
    for name in ascii_compatible + transcoded:
        assert is_supported(name), name
    assert [name for name in ascii_compatible if is_transcoded(name)] == []
    assert [name for name in transcoded if not is_transcoded(name)] == []
    assert {name for name in charsets._CHARSETS if is_transcoded(name)} == {
        "utf-16", "utf-16le", "utf-16be", "utf-32", "utf-32le", "utf-32be", "utf-7",
        "hz-gb-2312"}


# --- the WHATWG label table --------------------------------------------------------------------

# Labels whose mail meaning differs from the browser's (charsets._MAIL_LABELS and rows we keep).
MAIL_DEVIATIONS = {
    **dict.fromkeys(("ansi_x3.4-1968", "ascii", "us-ascii"), "us-ascii"),
    **dict.fromkeys(("cp819", "csisolatin1", "ibm819", "iso-8859-1", "iso-ir-100", "iso8859-1",
                     "iso88591", "iso_8859-1", "iso_8859-1:1987", "l1", "latin1"), "iso-8859-1"),
    **dict.fromkeys(("csisolatin5", "iso-8859-9", "iso-ir-148", "iso8859-9", "iso88599",
                     "iso_8859-9", "iso_8859-9:1989", "l5", "latin5"), "iso-8859-9"),
    **dict.fromkeys(("csiso88598i", "iso-8859-8-i", "logical"), "iso-8859-8"),
    "csiso2022kr": "iso-2022-kr", "iso-2022-kr": "iso-2022-kr", "hz-gb-2312": "hz-gb-2312",
    "utf-16": "utf-16",
}


def test_the_whatwg_table_is_complete() -> None:
    """Checked against the Encoding Standard's encodings.json (2026): 40 encodings, 228 labels."""
    assert len(WHATWG_LABELS) == 40
    assert sum(map(len, WHATWG_LABELS.values())) == 228
    assert WHATWG_LABELS["utf-8"] == ("unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8",
                                      "utf-8", "utf8", "x-unicode20utf8")
    assert WHATWG_LABELS["utf-16le"] == ("csunicode", "iso-10646-ucs-2", "ucs-2", "unicode",
                                         "unicodefeff", "utf-16", "utf-16le")
    assert WHATWG_LABELS["utf-16be"] == ("unicodefffe", "utf-16be")
    assert WHATWG_LABELS["replacement"] == ("csiso2022kr", "hz-gb-2312", "iso-2022-cn",
                                            "iso-2022-cn-ext", "iso-2022-kr", "replacement")
    labels = [label for group in WHATWG_LABELS.values() for label in group]
    assert len(labels) == len(set(labels))
    assert all(label == label.strip().lower() for label in labels)


@pytest.mark.parametrize(
    ("encoding", "label"),
    [(encoding, label) for encoding, labels in WHATWG_LABELS.items() for label in labels],
)
def test_every_whatwg_label_is_known(encoding: str, label: str) -> None:
    expected = MAIL_DEVIATIONS.get(label, encoding)
    for spelling in (label, label.upper(), f' "{label}" '):
        assert normalise_charset(spelling) == expected, spelling
    assert expected in charsets._CHARSETS


@pytest.mark.parametrize(
    ("label", "name"),
    [
        # every label that means UTF-8 or UTF-16 (WHATWG and mail)
        *((label, "utf-8") for label in WHATWG_LABELS["utf-8"]),
        ("unicode-1-1-utf-8", "utf-8"), ("UNICODE11UTF8", "utf-8"), ("x-unicode20utf8", "utf-8"),
        *((label, "utf-16le") for label in ("csunicode", "iso-10646-ucs-2", "ucs-2", "unicode",
                                            "unicodefeff", "utf-16le", "utf_16_le", "utf-16-le",
                                            "x-utf-16le", "UnicodeLittleUnmarked")),
        *((label, "utf-16be") for label in ("unicodefffe", "utf-16be", "utf_16_be",
                                            "x-utf-16be", "UnicodeBigUnmarked")),
        ("utf-16", "utf-16"), ("UTF16", "utf-16"),
        # a sample of the legacy encodings, spelled as found in mail
        ("866", "ibm866"), ("csIBM866", "ibm866"), ("ISO-IR-101", "iso-8859-2"),
        ("iso_8859-3:1988", "iso-8859-3"), ("l4", "iso-8859-4"), ("cyrillic", "iso-8859-5"),
        ("ASMO-708", "iso-8859-6"), ("iso-8859-6-i", "iso-8859-6"), ("sun_eu_greek", "iso-8859-7"),
        ("greek8", "iso-8859-7"), ("visual", "iso-8859-8"), ("hebrew", "iso-8859-8"),
        ("latin6", "iso-8859-10"), ("iso885913", "iso-8859-13"), ("iso8859-14", "iso-8859-14"),
        ("l9", "iso-8859-15"), ("csisolatin9", "iso-8859-15"), ("koi", "koi8-r"),
        ("cskoi8r", "koi8-r"), ("csmacintosh", "macintosh"), ("dos-874", "windows-874"),
        ("iso885911", "windows-874"), ("x-cp1250", "windows-1250"), ("x-cp1258", "windows-1258"),
        ("cp1254", "windows-1254"), ("csiso58gb231280", "gbk"), ("gb_2312", "gbk"),
        ("iso-ir-58", "gbk"), ("x-x-big5", "big5"), ("cseucpkdfmtjapanese", "euc-jp"),
        ("ms932", "shift_jis"), ("ms_kanji", "shift_jis"), ("csksc56011987", "euc-kr"),
        ("iso-ir-149", "euc-kr"), ("windows-949", "euc-kr"), ("iso-2022-cn-ext", "replacement"),
        ("replacement", "replacement"), ("csISO2022KR", "iso-2022-kr"),
        ("x-mac-cyrillic", "x-mac-cyrillic"), ("x-user-defined", "x-user-defined"),
        # mail meanings kept over WHATWG's windows-1252 / windows-1254
        ("ascii", "us-ascii"), ("ISO-8859-1", "iso-8859-1"), ("latin5", "iso-8859-9"),
        # beyond WHATWG
        ("utf-32", "utf-32"), ("csUCS4", "utf-32"), ("iso-10646-ucs-4", "utf-32"),
        ("utf_32_be", "utf-32be"), ("utf-7", "utf-7"), ("utf7", "utf-7"),
        ("x-unicode-2-0-utf-7", "utf-7"), ("hz", "hz-gb-2312"),
    ],
)
def test_labels(label: str, name: str) -> None:
    assert normalise_charset(label) == name


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


def test_transcoded_bytes_are_fully_masked() -> None:
    data = "<p>x</p>".encode("utf-16")
    assert scan_view(data, "utf-16") == b"\x80" * len(data)
    assert scan_view(b"+ADw-p+AD4-", "utf-7") == b"\x80" * 11


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
    valid = looks_valid(data, charset)
    decode_text(data, charset)
    encode_text(decode_text(data, charset), charset)
    effective = effective_charset(data, charset)
    if is_transcoded(charset):
        assert not valid
        with pytest.raises(ValueError, match="transcoding"):
            lenient_view(data, charset)
    else:
        assert lenient_view(data, charset) == data
    if is_transcoded(effective):
        to_utf8(data, effective)


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
    assert not looks_valid("x".encode("utf-16"), "utf-16")  # scan its transcoding instead
    assert looks_valid(b"\xff\x80<p>", UNKNOWN_CHARSET)  # unknown labels: any bytes
    assert looks_valid(b"\xff\x80<p>", "iso-2022-cn")
    assert looks_valid(b"\xff\x80<p>", "x-user-defined")
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
    assert encode_text("<é>", "utf-16") == b"\x00<\x00\xe9\x00>"  # no BOM: big-endian
    assert encode_text("<é>", "utf-16le") == b"<\x00\xe9\x00>\x00"
    assert decode_text(b"\xff\xfe<\x00", "utf-16") == "<"
    assert decode_text(b"+ADw-a+AD4-", "utf-7") == "<a>"
    assert encode_text("日本€", "hz-gb-2312") == b"~{HU1>~}&#8364;"


# --- unknown labels: the ASCII structure -------------------------------------------------------

@pytest.mark.parametrize("label", ["x-unknown-42", "klingon", "iso-2022-cn", "replacement"])
def test_unknown_labels_are_scanned_as_their_ascii_bytes(label: str) -> None:
    data = '<p>Grüße</p><img src="https://t.example/o.gif?u=1" width=1>'.encode() + b"\xff\x1b$)A"
    charset = normalise_charset(label)
    assert is_supported(charset) and not is_transcoded(charset)
    assert effective_charset(data, label) == charset
    assert looks_valid(data, charset)
    assert scan_view(data, charset) is data
    assert decode_text("Grüße".encode(), charset) == "Grüße"  # read as UTF-8
    assert decode_text(b"\xff", charset) == "\ufffd"
    assert encode_text("Désabonner €", charset) == b"D&#233;sabonner &#8364;"


def test_x_user_defined_maps_high_bytes_to_private_use() -> None:
    data = b"<p>\x80\xff</p>"
    assert looks_valid(data, "x-user-defined")
    assert scan_view(data, "x-user-defined") is data
    assert decode_text(data, "x-user-defined") == "<p>\uf780\uf7ff</p>"
    assert encode_text("<p>\uf780\uf7ff é</p>", "x-user-defined") == b"<p>\x80\xff &#233;</p>"


# --- effective charset: byte order marks and byte order ----------------------------------------

BOMS = [
    (b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe\x00\x00", "utf-32le"),
    (b"\x00\x00\xfe\xff", "utf-32be"), (b"\xff\xfe", "utf-16le"), (b"\xfe\xff", "utf-16be"),
]


@pytest.mark.parametrize(("bom", "charset"), BOMS)
@pytest.mark.parametrize("label", [None, "utf-8", "iso-8859-1", "shift_jis", "iso-2022-jp",
                                   "utf-16", "utf-16le", "utf-16be", "utf-32", "utf-32be",
                                   "utf-7", "x-klingon", "x-user-defined"])
def test_a_byte_order_mark_wins_over_the_label(bom: bytes, charset: str, label: str | None
                                               ) -> None:
    codec = {"utf-8": "utf-8", "utf-16le": "utf-16-le", "utf-16be": "utf-16-be",
             "utf-32le": "utf-32-le", "utf-32be": "utf-32-be"}[charset]
    data = bom + '<img src="https://t.example/o.gif">'.encode(codec)
    assert effective_charset(data, label or "") == charset
    assert effective_charset(data, label) == charset if label else True
    assert has_bom(data, charset)
    if charset != "utf-8":
        assert is_transcoded(charset)
        assert to_utf8(data, charset) == b'<img src="https://t.example/o.gif">'


def test_without_a_bom_the_nul_bytes_tell_the_byte_order() -> None:
    html = '<html><body><img src="https://t.example/o.gif"><p>日本語 Grüße</p></body></html>'
    for label, codec, charset in [
        ("utf-16", "utf-16-le", "utf-16le"), ("utf-16", "utf-16-be", "utf-16be"),
        ("UTF-32", "utf-32-le", "utf-32le"), ("utf-32", "utf-32-be", "utf-32be"),
    ]:
        data = html.encode(codec)
        assert effective_charset(data, label) == charset, (label, codec)
        assert to_utf8(data, label) == html.encode()  # a bare label is resolved the same way
    # An explicit byte order is believed; undecidable bare labels are big-endian (RFC 2781).
    assert effective_charset(html.encode("utf-16-be"), "utf-16le") == "utf-16le"
    assert effective_charset(html.encode("utf-32-le"), "unicodeFFFE") == "utf-16be"
    assert effective_charset(b"\x00\x00", "utf-16") == "utf-16be"
    assert effective_charset(b"a\x00\x00a", "utf-16") == "utf-16be"
    assert effective_charset(b"", "utf-16") == "utf-16be"
    assert effective_charset(b"", "utf-32") == "utf-32be"
    assert effective_charset("表示".encode("utf-32-le"), "utf-32") == "utf-32le"


def test_a_utf32_bom_must_start_utf32() -> None:
    """FF FE 00 00 is also a UTF-16LE BOM and U+0000, which is what browsers read."""
    utf16 = b"\xff\xfe" + "\x00<img src=x>".encode("utf-16-le")
    assert effective_charset(utf16, "utf-16") == "utf-16le"
    assert effective_charset(utf16, "utf-32") == "utf-16le"
    assert to_utf8(utf16, "utf-16le") == b"\x00<img src=x>"
    assert effective_charset(utf16[:6], "x-klingon") == "utf-16le"  # length not a multiple of 4
    utf32 = b"\xff\xfe\x00\x00" + "\x00<img src=x>".encode("utf-32-le")
    assert effective_charset(utf32, "utf-16") == "utf-32le"
    be16 = b"\x00\x00\xfe\xff" + "<img src=x>".encode("utf-16-be")  # U+0000 U+FEFF <img...
    assert effective_charset(be16, "utf-16be") == "utf-16be"
    assert effective_charset(be16, "utf-16") == "utf-16be"


def test_byte_order_is_sniffed_from_a_prefix_only() -> None:
    data = ("<p>" * 2000).encode("utf-16-le") + ("<p>" * 100_000).encode("utf-16-be")
    assert effective_charset(data, "utf-16") == "utf-16le"


def test_a_utf16_label_on_bytes_without_nul_is_a_lying_label() -> None:
    data = b'<img src="https://t.example/o.gif" width="1">'
    for label in ("utf-16", "utf-16le", "UTF-16BE", "unicode", "utf-32", "utf-32le"):
        assert effective_charset(data, label) == UNKNOWN_CHARSET, label
    # One NUL is enough to trust the label: then no ASCII-reading is tried (a known gap).
    assert effective_charset(b"\x00" + data, "utf-16") == "utf-16be"
    assert effective_charset(data + b"\x00", "utf-16") == "utf-16le"


def test_other_labels_are_only_normalised() -> None:
    assert effective_charset(b"<p>\x00</p>", "Shift_JIS") == "shift_jis"
    assert effective_charset(b"<p>", None) == "us-ascii"  # type: ignore[arg-type]
    assert effective_charset(b"+ADw-p+AD4-", "UTF-7") == "utf-7"
    assert effective_charset(b"\xfe<p>", "unicode11utf8") == "utf-8"
    assert effective_charset(b"<p>", "x-unknown-42") == UNKNOWN_CHARSET


def test_has_bom() -> None:
    assert has_bom("x".encode("utf-16"), "utf-16")
    assert has_bom(b"\xfe\xff\x00x", "utf-16") and has_bom(b"\xfe\xff\x00x", "utf-16be")
    assert not has_bom(b"\xfe\xff\x00x", "utf-16le")
    assert not has_bom(b"\xff\xfe\x00\x00", "utf-32be")
    assert has_bom(b"+/v8-<p>", "utf-7") and has_bom(b"+/v9AGE-", "utf-7")
    assert not has_bom(b"+AGE-", "utf-7")
    assert has_bom(b"\xef\xbb\xbf", "utf-8")
    assert not has_bom(b"~{", "hz-gb-2312")
    assert not has_bom(b"", "utf-16le")


# --- transcoding -------------------------------------------------------------------------------

def test_utf7_markup_hidden_in_base64_is_transcoded() -> None:
    data = b'+ADw-img src=+ACI-https://t.example/o.gif?u=a+AEA-b.org+ACI- width=1+AD4-Hello'
    assert is_transcoded(effective_charset(data, "utf-7"))
    assert to_utf8(data, "utf-7") == b'<img src="https://t.example/o.gif?u=a@b.org" width=1>Hello'
    assert b"<img" not in data  # the bytes alone hide the tag


def test_hz_is_transcoded() -> None:
    data = b"<p>~{HU1>~}</p><img src=x>~~"
    assert to_utf8(data, "hz-gb-2312") == "<p>日本</p><img src=x>~".encode()
    assert from_utf8("<p>日本 €</p>".encode(), "hz-gb-2312", bom=False) == (
        b"<p>~{HU1>~} &#8364;</p>")


def test_to_utf8_is_lenient_and_drops_the_bom() -> None:
    assert to_utf8(b"\xff\xfe<\x00p\x00>", "utf-16le") == b"<p\xef\xbf\xbd"  # odd length
    assert to_utf8(b"\xff\xfe<\x00\xff\xfe", "utf-16le") == b"<\xef\xbb\xbf"  # one BOM dropped
    assert to_utf8(b"\xfe\xff\x00<", "utf-16le") == "\ufffe\u3c00".encode()  # not its BOM
    assert to_utf8(b"<\x00\x00\x00\x00\x00\x11\x00", "utf-32le") == b"<\xef\xbf\xbd"
    assert to_utf8(b"+/v8-a+-", "utf-7") == b"a+"
    assert to_utf8(b"a\xe9b", "utf-7") == "a\ufffdb".encode()


def test_utf16_lone_surrogates_survive_the_round_trip() -> None:
    data = b"<\x00\x3d\xd8>\x00"  # '<', a lone high surrogate, '>'
    utf8 = to_utf8(data, "utf-16le")
    assert utf8 == b"<\xed\xa0\xbd>"
    assert scan_view(utf8, "utf-8") == utf8 and not looks_valid(utf8, "utf-8")
    assert lenient_view(utf8, "utf-8") == utf8
    assert from_utf8(utf8, "utf-16le", bom=False) == data


def test_an_edited_transcoding_goes_back_with_its_bom() -> None:
    html = '<p>Grüße 日本</p><img src="https://t.example/o.gif" width="1"><p>\U0001f600</p>'
    data = html.encode("utf-16")  # BOM + native order
    charset = effective_charset(data, "utf-16")
    utf8 = to_utf8(data, charset)
    view = scan_view(utf8, "utf-8")
    start = view.index(b"<img")
    end = view.index(b">", start) + 1
    edited = utf8[:start] + utf8[end:]
    out = from_utf8(edited, charset, bom=has_bom(data, charset))
    assert out == html.replace('<img src="https://t.example/o.gif" width="1">', "").encode("utf-16")


def test_from_utf8_needs_a_definite_transcoded_charset() -> None:
    for charset in ("utf-16", "UTF-32"):
        with pytest.raises(ValueError, match="has no byte order"):
            from_utf8(b"x", charset, bom=False)
    with pytest.raises(ValueError, match="ASCII-compatible"):
        from_utf8(b"x", "utf-8", bom=False)
    with pytest.raises(ValueError, match="ASCII-compatible"):
        to_utf8(b"x", "shift_jis")
    assert from_utf8(b"<\xff>", "utf-16be", bom=False) == "<\ufffd>".encode("utf-16-be")


FIXED_ORDER = ["utf-16le", "utf-16be", "utf-32le", "utf-32be"]
CODEC = {"utf-16le": "utf-16-le", "utf-16be": "utf-16-be", "utf-32le": "utf-32-le",
         "utf-32be": "utf-32-be"}
BOM_OF = {"utf-16le": b"\xff\xfe", "utf-16be": b"\xfe\xff", "utf-32le": b"\xff\xfe\x00\x00",
          "utf-32be": b"\x00\x00\xfe\xff"}


@pytest.mark.parametrize("charset", FIXED_ORDER)
@given(text=st.text(), bom=st.booleans())
def test_utf16_utf32_round_trip_is_exact(charset: str, text: str, bom: bool) -> None:
    data = (BOM_OF[charset] if bom else b"") + text.encode(CODEC[charset])
    utf8 = to_utf8(data, charset)
    expected = text[1:] if not bom and text.startswith("\ufeff") else text
    assert utf8 == expected.encode()
    assert from_utf8(utf8, charset, bom=has_bom(data, charset)) == data


@pytest.mark.parametrize("label", ["utf-16", "utf-32", "unicode", "unicodeFFFE", "utf-32le"])
@given(text=st.text(min_size=1), bom=st.booleans(), little=st.booleans())
def test_round_trip_through_the_effective_charset(label: str, text: str, bom: bool,
                                                  little: bool) -> None:
    """The engine's sequence: effective_charset, has_bom, to_utf8, (edit), from_utf8."""
    family = "utf-32" if "32" in label else "utf-16"
    order = family + ("le" if little else "be")
    data = (BOM_OF[order] if bom else b"") + text.encode(CODEC[order])
    charset = effective_charset(data, label)
    if not is_transcoded(charset):
        assert charset == UNKNOWN_CHARSET and b"\x00" not in data
        return
    if family == "utf-32" and not bom and charset != order:
        return  # a mis-sniffed UTF-32 may hold values past U+10FFFF (then U+FFFD)
    assert from_utf8(to_utf8(data, charset), charset, bom=has_bom(data, charset)) == data


@given(data=st.binary(max_size=200).map(lambda b: b[: len(b) // 2 * 2]))
def test_any_even_length_bytes_round_trip_as_utf16(data: bytes) -> None:
    for charset in ("utf-16le", "utf-16be"):
        assert from_utf8(to_utf8(data, charset), charset, bom=has_bom(data, charset)) == data


@given(text=st.text(), bom=st.booleans())
def test_utf7_round_trip_keeps_the_text(text: str, bom: bool) -> None:
    data = (b"+/v8-" if bom else b"") + text.encode("utf-7")
    utf8 = to_utf8(data, "utf-7")
    expected = text[1:] if not bom and text.startswith("\ufeff") else text
    assert utf8 == expected.encode()
    out = from_utf8(utf8, "utf-7", bom=has_bom(data, "utf-7"))
    assert out.decode("utf-7") == data.decode("utf-7")  # the bytes may differ (not unique)
    assert has_bom(out, "utf-7") == has_bom(data, "utf-7")


HZ_TEXT = st.text(alphabet=st.sampled_from("<>=\"' ab~\n日本表示中文"))


@given(text=HZ_TEXT)
def test_hz_round_trip_keeps_the_text(text: str) -> None:
    data = from_utf8(text.encode(), "hz-gb-2312", bom=False)
    assert data.decode("hz") == text
    assert from_utf8(to_utf8(data, "hz-gb-2312"), "hz-gb-2312", bom=False) == data
    python = text.encode("hz")  # CPython's encoder, when it gets '~' right
    try:
        right = python.decode("hz") == text
    except UnicodeDecodeError:  # it can end in a lone "~" its own decoder rejects
        right = False
    if right:
        assert to_utf8(python, "hz-gb-2312") == text.encode()


def test_hz_tilde_survives_where_cpython_drops_it() -> None:
    text = "<<" + "中<" * 5 + "中~"  # CPython 3.11's hz encoder ends this in "~}~", not "~}~~"
    assert from_utf8(text.encode(), "hz-gb-2312", bom=False).decode("hz") == text
    assert encode_text(text, "hz-gb-2312").decode("hz") == text


# --- lying labels ------------------------------------------------------------------------------

def test_lenient_view_is_the_identity_for_lying_labels() -> None:
    data = "<p>表</p>".encode("shift_jis") + b'\x82<img src="https://t.example/o.gif">'
    assert not looks_valid(data, "shift_jis")
    assert lenient_view(data, "shift_jis") is data
    assert b"<img" in lenient_view(data, "shift_jis")
    for charset in ("gbk", "big5", "euc-kr", "iso-2022-jp", "utf-8", "windows-1252"):
        assert lenient_view(data, charset) is data
    with pytest.raises(ValueError, match="transcoding"):
        lenient_view(data, "utf-16le")


def test_lenient_view_misses_css_after_a_backslash_trail_byte() -> None:
    """The documented gap: only both views together cover every client."""
    data = ('<style>.a{content:"表"} .b{background:url(https://t.example/o.gif)}</style>'
            .encode("shift_jis") + b"\x82")
    assert not looks_valid(data, "shift_jis")
    css = slice(data.index(b">") + 1, data.rindex(b"</style>"))
    labelled = [r.url for r in scan_css(scan_view(data, "shift_jis")[css])]
    identity = [r.url for r in scan_css(lenient_view(data, "shift_jis")[css])]
    assert labelled == ["https://t.example/o.gif"]
    assert identity == []


# -- reading() asks looks_valid() only where the answer changes the view --------------------

_READ_BYTES = st.lists(st.sampled_from([b"<p>", b"a", b"\x80", b"\xc3\xa9", b"\xe2\x82", b"\x1b$B",
                                        b"\x1b(B", b"\xff", b"\x00", b"~{", b"+ADw-", b"\x8e\xa1",
                                        b"\x81\x40", b"\xa4\xa1"]), max_size=12)


@settings(max_examples=60, deadline=None)
@given(_READ_BYTES)
def test_reading_gives_the_view_it_gave_when_it_always_checked(parts: list[bytes]) -> None:
    # Before: view = scan_view(...) if looks_valid(...) else lenient_view(...), for every
    # charset that is not transcoded.  Now only the kinds whose scan_view differs from
    # the bytes ask; every other kind must give the bytes both ways.
    decoded = b"".join(parts)
    for label in sorted(charsets._CHARSETS):
        read = charsets.reading(decoded, label)
        charset = effective_charset(decoded, label)
        if read is None or is_transcoded(charset):
            continue
        old = (scan_view(decoded, charset) if looks_valid(decoded, charset)
               else lenient_view(decoded, charset))
        assert read.view == old, label
        assert (read.text, read.charset) == (decoded, charset)


def test_only_the_kinds_with_their_own_view_are_checked() -> None:
    kinds = {row.kind for row in charsets._CHARSETS.values()} - {"transcoded"}
    for kind in kinds - charsets._OWN_VIEW:
        name = next(n for n, row in charsets._CHARSETS.items() if row.kind == kind)
        assert scan_view(b"<p>\x80\xff", name) == b"<p>\x80\xff"
        assert lenient_view(b"<p>\x80\xff", name) == b"<p>\x80\xff"


# -- text that clients read in more than one way --------------------------------------------

_TRAIL_CSS = b'<style>p{font-family:"\x95\\"; background:url(https://t.example/o)} /*"*/</style>'


_ENGINES: dict[str, Engine] = {}


def _refused_outcome(html: bytes, ctype: str, cte: str = "8bit") -> str:
    from beacon_proxy.consent.policy import Policy
    from beacon_proxy.rewrite.copies import CopyPolicy, decide, prepare
    from beacon_proxy.rewrite.rules import load_rules

    body = base64.encodebytes(html) if cte == "base64" else html
    data = (b"From: a@shop.example\r\nTo: r@example.org\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: " + ctype.encode() + b"\r\nContent-Transfer-Encoding: "
            + cte.encode() + b"\r\n\r\n" + body + b"\r\n")
    engine = _ENGINES.get("engine") or _ENGINES.setdefault("engine", Engine(load_rules()))
    prepared = prepare(engine, data, CopyPolicy())
    return decide(engine, prepared, "r@example.org", Policy.REFUSED, CopyPolicy()).outcome


@pytest.mark.parametrize("label", ["utf-8", "iso-8859-1", "windows-1252", "shift_jis",
                                   "Shift_JIS", "euc-jp", "iso-2022-jp", "gb2312", "gbk",
                                   "big5", "euc-kr", "ks_c_5601-1987", "koi8-r"])
def test_ordinary_labels_have_one_reading(label: str) -> None:
    """Correctly labelled text keeps one view: no second scan, the precise path."""
    codec = {"iso-2022-jp": "iso2022_jp", "ks_c_5601-1987": "cp949"}.get(label.lower(), label)
    text = ('<meta charset="shift_jis"><p style="font-family:\'\uff2d\uff33 \uff30ゴシック\'">'
            "表示 ソ 能</p>"
            if label.lower() in ("shift_jis", "euc-jp", "iso-2022-jp") else
            "<p>Grüße 表示</p>" if label.lower() in ("utf-8", "gb2312", "gbk", "big5") else
            "<p>x</p>")
    data = text.encode(codec, "xmlcharrefreplace")
    read = charsets.reading(data, label)
    assert read is not None and read.others == () and not read.foreign


@pytest.mark.parametrize(
    ("label", "known"),
    [("shift_jis", True), ("Shift_JIS", True), ("ms_kanji", True), ("ms-kanji", False),
     ("cp932", False), ("x-mac-japanese", False), ("cp950", False), ("big5hkscs", False),
     ("big5-hkscs", True), ("cp936", False), ("euc-cn", False), ("gb2312", True),
     ("ks_c_5601-1987", True), ("ks_c_5601_1987", False), ("euc_kr", False),
     ("iso-2022-jp", True), ("iso-2022-jp-2", False), ("iso2022jp", False),
     ("utf-16le", True), ("utf-16-le", False), ("x-utf-16le", False), ("u16", False),
     ("unicodelittleunmarked", False), ("utf-32", False), ("ucs-4", False), ("utf-7", False),
     ("hz", False), ("x-hz", False), ("us-ascii", False), (None, False), ("latin1", True)])
def test_browsers_read_only_whatwg_labels(label: str | None, known: bool) -> None:
    assert charsets.browsers_read(label) is known


@pytest.mark.parametrize("label", ["cp932", "ms-kanji", "x-mac-japanese"])
def test_a_label_browsers_do_not_know_is_also_read_as_ascii(label: str) -> None:
    data = b'<meta charset="windows-1252"><p>x</p>' + _TRAIL_CSS
    read = charsets.reading(data, label)
    assert read is not None and read.charset == "shift_jis"
    assert read.view == scan_view(data, "shift_jis")
    assert read.others[0] == data  # then what a browser's detector may take it for
    assert _refused_outcome(data, f"text/html; charset={label}") in ("fallback", "held")
    # the same bytes with a label browsers know: one reading, the precise path
    assert charsets.reading(data, "shift_jis").others == ()  # type: ignore[union-attr]


def test_a_label_browsers_do_not_know_keeps_the_precise_path_when_readings_agree() -> None:
    """Japanese text (ASCII-range trail bytes in text, not in CSS) reads the same."""
    data = ('<p>表示 ソフト 能力</p><img src="https://t.example/o.gif?u=12345678" width=1 '
            'height=1>').encode("shift_jis")
    read = charsets.reading(data, "cp932")
    # the bytes (windows-1252) and what a detector may take them for (no <meta>)
    assert read is not None and read.others[0] == data
    assert _refused_outcome(data, "text/html; charset=cp932") == "stripped"


@pytest.mark.parametrize("label", ["utf-16-le", "x-utf-16le", "unicodelittleunmarked", "u16",
                                   "utf-32le"])
def test_transcoded_labels_browsers_do_not_know(label: str) -> None:
    crafted = b'<p>x\x00</p><img src="https://t.example/o.gif">'
    assert charsets.reading(crafted, label) is None  # browsers see the <img>
    assert _refused_outcome(crafted, f"text/html; charset={label}", "base64") == "held"
    codec = "utf-32-le" if "32" in label else "utf-16-le"
    honest = '<img src="https://t.example/o.gif">'.encode(codec)
    read = charsets.reading(honest, label)
    assert read is not None and read.foreign and read.text == honest.decode(codec).encode()
    assert not charsets.opens_tags(honest)


@pytest.mark.parametrize("meta", ["shift_jis", "x-sjis", "big5", "gbk", "cp932"])
@pytest.mark.parametrize("label", [None, "us-ascii", "x-klingon"])
def test_a_meta_charset_with_ascii_trail_bytes_is_a_second_reading(meta: str,
                                                                   label: str | None) -> None:
    data = f'<meta charset="{meta}"><p>x</p>'.encode() + _TRAIL_CSS
    read = charsets.reading(data, label)  # type: ignore[arg-type]
    assert read is not None and read.view == data
    name = normalise_charset(meta)
    assert read.others[0] == scan_view(data, name)  # then the detector's guesses
    assert _refused_outcome(data, "text/html" + (f"; charset={label}" if label else "")
                            ) in ("fallback", "held")


def test_a_lying_double_byte_label_is_read_both_ways() -> None:
    data = b"<p>x</p>" + _TRAIL_CSS + b"<p>\xc2\x81</p>"
    assert not looks_valid(data, "shift_jis")
    read = charsets.reading(data, "shift_jis")
    assert read is not None and read.view == data
    assert set(read.others) == {scan_view(data, "shift_jis"),
                                charsets._resynchronised_view(data, "shift_jis"),
                                charsets._python_view(data, "shift_jis", "sjis")}  # session 17
    assert len(read.others) == 3
    assert _refused_outcome(data, "text/html; charset=shift_jis") in ("fallback", "held")


@pytest.mark.parametrize(("charset", "valid", "invalid"), [
    ("shift_jis", b"\x95\\", b"\x85\\"), ("shift_jis", b"\x95\\", b"\x82\\"),
    ("big5", b"\xb3\\", b"\x81\\")])
def test_a_lying_label_s_valid_and_invalid_pairs_read_as_browsers_read_them(
        charset: str, valid: bytes, invalid: bytes) -> None:
    """Session 16's attack: one valid pair with a trail "\\", one invalid: the bytes and the
    label's view each leave url( inside a CSS string; a browser masks only the valid pair's
    trail and reads the url."""
    data = (b'<style>b{x:"' + invalid + b'"' + valid + b'"} i{background:url(https://t.example/o)}'
            b"</style><i>x</i>")
    read = charsets.reading(data, charset)
    assert read is not None
    view = charsets._resynchronised_view(data, charset)
    assert view in read.others
    at = data.index(valid)
    assert view[at:at + 2] == b"\x80\x80" and view[data.index(invalid) + 1] == 0x5C
    assert _refused_outcome(data, f"text/html; charset={charset}") in ("fallback", "held")


@settings(max_examples=200)
@given(st.binary(max_size=40))
def test_the_resynchronised_view_keeps_length_and_ascii_outside_characters(data: bytes) -> None:
    for charset in ("shift_jis", "big5", "gbk", "euc-kr"):
        view = charsets._resynchronised_view(data, charset)
        assert len(view) == len(data)
        assert all(v == d or v == 0x80 for v, d in zip(view, data, strict=True))
        assert all(v == 0x80 for v, d in zip(view, data, strict=True) if d >= 0x80)


@pytest.mark.parametrize("escape", [b"\x1b$A", b"\x1b$(C", b"\x1b$(D", b"\x1b$(Q", b"\x1bN"])
def test_iso_2022_jp_escapes_browsers_do_not_know(escape: bytes) -> None:
    data = b"<p>x</p>" + escape + b'<img src="https://t.example/o.gif">\x1b(B<p>y</p>'
    read = charsets.reading(data, "iso-2022-jp")
    assert read is not None and b"<img" not in read.view
    (whatwg,) = read.others
    assert b'<img src="https://t.example/o.gif">' in whatwg and b"\x1b" not in whatwg
    assert _refused_outcome(data, "text/html; charset=iso-2022-jp", "7bit") in (
        "fallback", "held")


def test_iso_2022_jp_roman_backslash_is_a_yen_sign_for_browsers() -> None:
    data = (b'<p>x</p>\x1b(J<style>p{font-family:"a\\"; background:url(https://t.example/o)}'
            b' /*"*/</style>\x1b(B')
    read = charsets.reading(data, "iso-2022-jp")
    assert read is not None
    # the shift right before "p": the view's masked bytes would be part of the selector
    assert charsets.reading(data.replace(b"\x1b(J<style>", b"<style>\x1b(J"),
                            "iso-2022-jp") is None
    (whatwg,) = read.others
    assert whatwg[data.index(b"a\\") + 1] == 0x5C | 0x80
    assert read.view[data.index(b"a\\") + 1] == 0x5C  # the readers that take it for ASCII
    assert _refused_outcome(data, "text/html; charset=iso-2022-jp", "7bit") in (
        "fallback", "held")
    # Roman text without a backslash or tilde reads the same everywhere
    plain = b"<p>x</p>\x1b(J<b>abc</b>\x1b(B<p>y</p>"
    assert charsets.reading(plain, "iso-2022-jp").others == ()  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"\x1b$B", b"\x1b$@", b"\x1b(B", b"\x1b(J", b"\x1b(I",
                                 b"\x1b$A", b"\x1bN", b"\x1b$(D", b"\x1b", b"<p>", b"\\",
                                 b"~", b"F|", b'"']), max_size=12))
def test_the_whatwg_view_follows_the_whatwg_decoder(pieces: list[bytes]) -> None:
    """Every byte the view keeps below 0x80 is that ASCII character in the decoder's
    output (checked with a reference state machine of the Encoding Standard)."""
    data = b"".join(pieces)
    view = charsets._iso2022jp_whatwg_view(data)
    if view is None:
        view = scan_view(data, "iso-2022-jp")
    assert len(view) == len(data)
    state, i, expected = "ascii", 0, bytearray()
    while i < len(data):
        seq = data[i + 1:i + 3]
        if data[i] == 0x1B:
            known = {b"(B": "ascii", b"(J": "roman", b"(I": "kana", b"$@": "jis",
                     b"$B": "jis"}.get(seq)
            width = 3 if known else 1
            expected += b"\x80" * width
            state = known or state
            i += width
            continue
        byte = data[i]
        keep = state == "ascii" or (state == "roman" and byte not in (0x5C, 0x7E))
        expected.append(byte if keep else 0x80)
        i += 1
    assert [b if b < 0x80 else 0x80 for b in view] == list(expected)


# --- ISO-2022 shifts that output nothing: the characters around them join ----------------------

_E, _J = "\x1b(B", "\x1b(J"


@pytest.mark.parametrize(("data", "charset", "joins"), [
    (b"<img s\x1b(Brc=x>", "iso-2022-jp", True),  # "src" to every reader
    (b"<img s\x1b(Jrc=x>", "iso-2022-jp", True),  # JIS-Roman: the same letters
    (b"<img \x1b(Bsrc=x>", "iso-2022-jp", True),  # the view's name: "\x80\x80\x80src"
    (b"<img src\x1b(B\n=x>", "iso-2022-jp", True),
    (b"\x1b(B@import 'x';", "iso-2022-jp", True),  # a style sheet's first token
    (b"s\x1b$B\x1b(Brc", "iso-2022-jp", True),  # an empty double-byte run (Python, iconv)
    (b"s\x1b(B\x1b(Brc", "iso-2022-jp", True),
    (b"s\x1b.Arc", "iso-2022-jp", True),  # a G2 designation
    (b"hi \x1b$A0!\x1b(B ok", "iso-2022-jp", True),  # WHATWG reads "0!" as ASCII
    (b"\x1b$BF|\x1b(Brc", "iso-2022-jp", False),  # a kanji between: a character
    (b"\x1b(B<html>", "iso-2022-jp", False),
    (b"a \x1b(B b", "iso-2022-jp", True),  # whitespace: "src= ESC ( B URL" is src=URL
    (b"<p>\x1b(B<b>", "iso-2022-jp", False),
    (b"\x1b(B\r\n<p>", "iso-2022-jp", False),
    (b"<p>x</p> \x1b(B", "iso-2022-jp", False),
    ("<p>日本語</p><img src=x>".encode("iso2022_jp"), "iso-2022-jp", False),
    (b"\x1b$)C<img s\x0e\x0frc=x>", "iso-2022-kr", True),  # an empty shift
    (b"<img s\x1b$)Crc=x>", "iso-2022-kr", True),
    (b"\x1b$)C\r\n<p>\x0eGQ\x0f</p>", "iso-2022-kr", False),  # RFC 1557's designation
    (b"\x1b$)C<html>\x0eGQ\x0f", "iso-2022-kr", False),
    ("<p>한국어</p><img src=x>".encode("iso2022_kr"), "iso-2022-kr", False),
    (b"<img s\x1b(Brc=x>", "utf-8", False),  # no shifts in other charsets
    ("Price: \u00a51,000 <b>x</b>".encode("iso2022_jp"), "iso-2022-jp", False),  # ESC(J \ ESC(B
    (b"a\x1b(J~\x1b(Bb", "iso-2022-jp", False),  # an overline stands between
    (b"a\x1b(J\x1b(Bb", "iso-2022-jp", True),
    (b"Caf\x1b.A\x1bNi <b>x</b>", "iso-2022-jp", False),  # G2 Latin-1: ESC . A ESC N i
    (b"\x1b$B$3$s\x1b(J\x0e6E\x0f\x1b(B</p>", "iso-2022-jp", False),  # CP50222 katakana
])
def test_shifts_that_output_nothing_join_the_characters_around_them(
        data: bytes, charset: str, joins: bool) -> None:
    assert charsets.escapes_join(data, charset) is joins
    assert (charsets.reading(data, charset) is None) is joins


@pytest.mark.parametrize("label", ["us-ascii", "x-unknown"])
def test_a_declared_iso_2022_reading_that_joins_has_no_view_either(label: str) -> None:
    """Unlabelled, a client honours the <meta>: it reads "src" where the view masks."""
    data = b'<meta charset="iso-2022-jp"><img s\x1b(Brc=x>'
    assert charsets.reading(data, label) is None
    assert charsets.reading(data.replace(b"s\x1b(Brc", b"src"), label) is not None


@pytest.mark.parametrize("charset", ["iso-2022-jp", "iso-2022-kr"])
@settings(max_examples=150)
@given(data=st.data())
def test_text_as_encoders_write_it_never_joins(charset: str, data: st.DataObject) -> None:
    codec, repertoire = CASES[charset]
    if charset == "iso-2022-jp":  # JIS-Roman's own two: ESC ( J \ ESC ( B from the encoder
        repertoire = [*repertoire, "\u00a5", "\u203e"]
    text = "".join(data.draw(st.lists(st.one_of(
        MARKUP, st.text(alphabet=st.sampled_from(repertoire), min_size=1, max_size=6)),
        max_size=20)))
    assert not charsets.escapes_join(text.encode(codec), charset)


#: No line end: Python passes one through in a double-byte run (which it does not end), where
#: the view masks it; harmless (a separator between kanji), and no join.
_JP_PIECES = ["s", "rc", "=", " ", "<", ">", "@", "\x1b(B", "\x1b(J", "\x1b$B", "\x1b$@",
              "\x1b.A", "F|", "%="]


def _runs(text: str) -> str:
    """Runs of non-ASCII collapsed to one "\\x80"; a run with whitespace, ">" or the start
    before it and whitespace, "<" or the end after it dropped (it joins nothing)."""
    text = re.sub("[\x80-\U0010ffff]+", "\x80", text)
    return re.sub("(?:(?<=[\t\n\f\r >])|^)\x80(?=[\t\n\f\r <]|$)", "", text)


@settings(max_examples=400)
@given(pieces=st.lists(st.sampled_from(_JP_PIECES), max_size=14))
def test_where_nothing_joins_the_view_reads_as_python_decodes(pieces: list[str]) -> None:
    """The oracle: Python's own decoder (what the scan view follows).  Text it decodes with
    its tokens where the view's masked bytes leave them, or held."""
    data = "".join(pieces).encode("latin-1")
    try:
        decoded = data.decode("iso2022_jp_2")
    except UnicodeDecodeError:
        return  # not valid: looks_valid() sends it to lenient readings (tested above)
    if charsets.escapes_join(data, "iso-2022-jp"):
        return
    view = scan_view(data, "iso-2022-jp").decode("latin-1")
    assert _runs(view) == _runs(decoded), (data, view, decoded)


def test_iso_2022_jp_so_and_si_are_no_ascii_in_any_view() -> None:
    """WHATWG decodes 0x0E and 0x0F as errors (U+FFFD, a character a URL may hold): kept
    as control bytes, a url(...\\x0e) was a bad url to the scanner and loaded in Chromium."""
    data = b"<style>i{background:url(https://t.example/o\x0e)}</style><i>x</i>"
    read = charsets.reading(data, "iso-2022-jp")
    assert read is not None and b"\x0e" not in read.view and read.view.count(0x80) == 1
    assert _refused_outcome(data, "text/html; charset=iso-2022-jp", "7bit") == "stripped"
    # "s SI ESC ( B rc": SI is a character (U+FFFD), so the shift joins nothing
    read = charsets.reading(b'<meta charset="iso-2022-jp"><img s\x0f\x1b(Brc=x>', "us-ascii")
    assert read is not None and all(b"src" not in view for view in (read.view, *read.others))


@pytest.mark.parametrize("meta", [
    b'<meta charset="&#115;hift_jis">', b'<meta charset="&#x73;hift_jis">',
    b'<meta charset="shift&lowbar;jis">',
    b'<meta http-equiv="Content-Type" content="text/html; charset&#61;shift_jis">',
    b'<meta http-equiv="Content-Type" content="text/html; ch&#97;rset=shift_jis">',
    b'<meta http-equiv="Content-Type" content="text/html; charset=&quot;shift_jis&quot;">'])
def test_a_meta_charset_spelled_with_character_references_is_read(meta: bytes) -> None:
    """A browser decodes a <meta>'s attributes before it reads the charset."""
    data = meta + b'<style>b{x:"\x95\\"} i{background:url(https://t.example/o)}</style>'
    read = charsets.reading(data, "us-ascii")  # no label: the default
    assert read is not None and scan_view(data, "shift_jis") in read.others
    assert _refused_outcome(data, "text/html") in ("fallback", "held")


def test_a_bare_utf_16_label_is_little_endian_to_browsers() -> None:
    """The engine sniffs the byte order; browsers do not: big-endian filler (most of the
    NULs first) then little-endian tags are tags to Chromium alone."""
    data = ("a" * 181).encode("utf-16-be") + b'<img src="https://t.example/o">'.decode(
        ).encode("utf-16-le")
    assert charsets.effective_charset(data, "utf-16") == "utf-16be"
    assert charsets.reading(data, "utf-16") is None
    for text in ("<p>\u65e5\u672c text</p>",):  # either order alone reads the same
        assert charsets.reading(text.encode("utf-16-le"), "utf-16") is not None
        assert charsets.reading(text.encode("utf-16-be"), "utf-16") is not None


@pytest.mark.parametrize(("data", "ctype"), [
    (b'<style>b{x:"\x95\\"} i{background:url(https://t.example/o)}</style><i>x</i>',
     "text/html"),
    (b'<style>b{x:"\xb3\\"} i{background:url(https://t.example/o)}</style><i>x</i>',
     "text/html; charset=x-klingon"),
    (b'<p>\xc4\xe3</p><style>b{x:"\x81\\"} i{background:url(https://t.example/o)}</style>',
     "text/html; charset=utf-8-sig")])
def test_text_whose_charset_a_browser_guesses_is_read_as_it_may_guess(data: bytes,
                                                                       ctype: str) -> None:
    """No label browsers know, no <meta>: Chromium's detector takes one kanji for Shift_JIS
    (or Big5, GBK), hides the "\\" in it and closes the string: the url loads."""
    assert _refused_outcome(data, ctype) in ("fallback", "held")


@pytest.mark.parametrize("data", [
    b'<img src= \x1b(B https://t.example/o>', b'<img src=\n\x1b(B\nhttps://t.example/o>',
    b'<img src \x1b(B =https://t.example/o>',
    b'<i style="background:url( \x1b(B https://t.example/o)">x</i>'])
def test_a_shift_between_blanks_still_joins(data: bytes) -> None:
    """Session 16's second attack: a browser merges the blanks, the view's masked bytes
    became the value (or a name) of their own."""
    assert charsets.escapes_join(b"<p>\x1b$BF|\x1b(B</p>" + data, "iso-2022-jp")


@pytest.mark.parametrize("lone", [b"\xff", b"\x80"])
def test_a_byte_that_starts_no_character_is_an_error_of_its_own(lone: bytes) -> None:
    """WHATWG's Big5 decoder takes a lone 0x80 or 0xFF alone and reads the next byte as a
    lead (Python's codec calls it incomplete): the pair after it is a character."""
    view = charsets._resynchronised_view(lone + b"\xb3\\", "big5")
    assert view == b"\x80\x80\x80"


#: full-width colon and parentheses spelled as escapes (ruff: ambiguous characters)
_CJK_LINE = "<p>本日のおすすめ商品\uff1a価格 ¥1,000\uff08税込\uff09。詳しくはこちら →</p>"
_TEMPLATE_FILES = sorted((Path(__file__).resolve().parents[3] / "shared" / "data" / "templates")
                         .glob("*.html"))


@pytest.mark.skipif(not _TEMPLATE_FILES, reason="no shared templates")
@pytest.mark.parametrize(("charset", "codec"), [
    ("iso-2022-jp", "iso2022_jp"), ("shift_jis", "cp932"), ("euc-jp", "euc_jp"),
    ("big5", "big5"), ("gbk", "gbk"), ("euc-kr", "cp949"), ("utf-8", "utf-8")])
@pytest.mark.parametrize("labelled", [True, False])
def test_real_newsletters_in_cjk_charsets_keep_the_precise_path(charset: str, codec: str,
                                                                labelled: bool) -> None:
    """The readings added against attacks (joins, resynchronised pairs, a detector's
    guesses) hold no honest mail: the twelve real templates with a Japanese line (a yen
    price, full-width punctuation) in each charset, with and without a label, are
    stripped precisely, never sent to the fallback nor held."""
    for path in _TEMPLATE_FILES:
        html = path.read_text("utf-8")
        at = html.lower().find("</body>")
        html = html[:at] + _CJK_LINE + html[at:] if at > 0 else html + _CJK_LINE
        data = html.encode(codec, "xmlcharrefreplace")
        ctype = f"text/html; charset={charset}" if labelled else "text/html"
        assert _refused_outcome(data, ctype, "base64") == "stripped", path.name


@pytest.mark.parametrize("label", ["us-ascii", "x-klingon", "cp932"])
def test_an_xml_declaration_s_encoding_is_read_when_browsers_know_no_label(label: str) -> None:
    """Session 16's third charset attack: Blink reads ``<?xml ... encoding="..."?>`` at the
    start of a part without a label it knows."""
    joined = (b'<?xml version="1.0" encoding="iso-2022-jp"?><html><body><p>hello</p>'
              b'<img s\x1b(Brc="https://t.example/o"></body></html>')
    assert charsets.reading(joined, label) is None
    sjis = (b'<?xml version="1.0" encoding=\'shift_jis\'?><p>hello</p><style>i{x:"\xc2\x95\\";'
            b' background:url(https://t.example/o); y:"z"}</style><i>x</i>')
    read = charsets.reading(sjis, label)
    assert read is not None and scan_view(sjis, "shift_jis") in (read.view, *read.others)
    assert _refused_outcome(sjis, f"text/html; charset={label}") in ("fallback", "held")


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("label", ["us-ascii", "x-klingon", "utf-7", "hz"])
def test_utf_16_that_starts_with_an_xml_declaration_is_utf_16_to_chromium(codec: str,
                                                                         label: str) -> None:
    data = '<?xml version="1.0"?><p>x</p><img src="https://t.example/o">'.encode(codec)
    assert charsets.reading(data, label) is None
    assert charsets.reading(data, codec.replace("16-", "16")) is not None  # browsers' label


@pytest.mark.parametrize("label", ["'utf-8'", "utf-8'", "'shift_jis'", "'iso-2022-jp'"])
def test_a_label_in_apostrophes_is_none_browsers_know(label: str) -> None:
    """Session 16's fourth charset attack: Chromium handed ``'utf-8'`` reads windows-1252
    or the <meta>; the proxy had stripped the apostrophes and read the label alone."""
    assert not charsets.browsers_read(label)
    data = (b'<meta charset="shift_jis"><p>hello</p><style>i{x:"\xc2\x95\\"; '
            b'background:url(https://t.example/o); y:"z"}</style><i>x</i>')
    assert _refused_outcome(data, f"text/html; charset={label}") in ("fallback", "held")


# --- a byte order mark that overrides the label: clients that convert by the label ----------

_TRACKED = b'<img src="https://t.example/o.gif">'


@pytest.mark.parametrize(("data", "label"), [
    (b"\xef\xbb\xbf<p>+ADw-img src=+ACI-https://t.example/o+ACI-+AD4-</p>", "utf-7"),
    (b"\xef\xbb\xbf<p><im~{~}g src=https://t.example/o></p>", "hz-gb-2312"),
    (b"\xef\xbb\xbf\x00<\x00i\x00m\x00g\x00>", "utf-16"),  # either order: a NUL-led tag
    (b"\xff\xfe<img src=https://t.example/o> ", "iso-8859-1"),
    (b"\xfe\xff<img src=https://t.example/o> ", "us-ascii"),  # no label
    (b"\xef\xbb\xbf<p>a\x1b$B\x1b(Bb</p>", "iso-2022-jp"),  # the label's shifts join
    # Roundcube deletes the NULs and reads windows-1252: the bytes of 日本語 are "e,g" there
    ("\ufeff<p>日本語</p>".encode("utf-16-le"), "iso-8859-1"),
])
def test_a_label_s_reading_no_view_shows_is_none(data: bytes, label: str) -> None:
    """Browsers follow the mark; Roundcube and clients built on Python's ``email`` convert
    by the label.  Where that reading opens a tag and has no same-length view, no copy is
    safe for both: None (the fallback holds the part)."""
    assert charsets.reading(data, label) is None


def test_a_label_with_a_view_of_its_own_is_a_further_reading() -> None:
    """Under UTF-8's mark a ``shift_jis`` label is one more view: ``\\x95\\\\`` is one
    character to Shift_JIS readers, so the CSS string ends before the ``url()``."""
    data = b'\xef\xbb\xbf<style>p{font-family:"\x95\\"} p{background:url(x)} "}</style>'
    read = charsets.reading(data, "shift_jis")
    assert read is not None and read.charset == "utf-8" and read.view == data
    assert scan_view(data, "shift_jis") in read.others
    assert _refused_outcome(data.replace(b"url(x)", b"url(https://t.example/o?e="
                                         b"reader%40example.org)"), "text/html; charset=shift_jis"
                            ) in ("fallback", "held")


@pytest.mark.parametrize(("data", "label"), [
    (b"\xef\xbb\xbf" + _TRACKED, "utf-8"), (b"\xef\xbb\xbf" + _TRACKED, "iso-8859-1"),
    (b"\xef\xbb\xbf" + _TRACKED, "us-ascii"), (b"\xef\xbb\xbf" + _TRACKED, "x-klingon"),
    ("\ufeff<p>日本語</p>".encode("utf-16-le") + _TRACKED.decode().encode("utf-16-le"), "utf-16"),
    ("\ufeff<p>x</p>".encode("utf-16-be"), "utf-16be"),
    ("\ufeff<p>x</p>".encode("utf-8"), "utf-16"),
])
def test_a_mark_whose_label_reading_shows_nothing_else_keeps_one_reading(
        data: bytes, label: str) -> None:
    """The mark of the label's own charset, or a label whose reading adds nothing (an
    ASCII-compatible one under UTF-8's mark reads the same ASCII; UTF-16 text read as
    single bytes opens no tag; ASCII read as UTF-16 is CJK): the part keeps its reading."""
    read = charsets.reading(data, label)
    assert read is not None and read.others == ()


@pytest.mark.parametrize("data", [
    b'<p>hi</p><img\x00src="https://t.example/o?e=r%40example.org">',  # a space: an image
    b'<p>hi</p><im\x00g src="https://t.example/o?e=r%40example.org">',  # deleted: one too
    b'<style>i{x:"a\\\t\n"; background:url(https://t.example/o); y:"}\n}</style>',
    b'<style>i{x:"a\\\x0b\r\n"; background:url(https://t.example/o); y:"}\n}</style>',
])
def test_a_nul_or_a_blank_roundcube_deletes_has_no_view(data: bytes) -> None:
    """A NUL is U+FFFD to browsers, a space to Thunderbird's quoted-printable decoder
    (``=00``) and gone to Roundcube, which also deletes tabs, VTs and CRs before a line
    feed (``\\<TAB><LF>``: a CSS line continuation there): no view of one length."""
    assert charsets.reading(data, "utf-8") is None
    assert _refused_outcome(data, "text/html; charset=utf-8") == "held"


def test_a_backslash_before_a_crlf_is_read_alike() -> None:
    data = b'<style>i{x:"a\\\r\n b"}</style><p>hi</p>'
    read = charsets.reading(data, "utf-8")
    assert read is not None and read.others == ()


# --- labels only Python's codecs know: a client built on Python's email decodes by them ---------

@pytest.mark.parametrize(("data", "label"), [
    ('<img src="https://t.example/o">'.encode("cp500"), "cp500"),  # EBCDIC: "<" is 0x4C
    ('<img src="https://t.example/o">'.encode("cp037"), "ibm037"),
    (b"<p>\\x3cimg src=https://t.example/o\\x3e</p>", "unicode_escape"),
    (b"<p>\\u003cimg src=https://t.example/o></p>", "raw_unicode_escape"),
    (b'<p title="\xd9>"><img src=https://t.example/o></p>', "johab"),  # ">" a second byte
    (b"<p>x</p>-abc", "punycode"), (b"<p>x</p>", "idna"),  # quadratic decoders: not read
])
def test_a_python_codec_that_reads_ascii_otherwise_has_no_view(data: bytes, label: str) -> None:
    """``get_content()`` decodes by any text codec Python knows; where that reads the
    part's ASCII otherwise than its bytes (scanned as ``x-unknown``), the copy is held."""
    assert normalise_charset(label) == "x-unknown"
    assert charsets.reading(data, label) is None


@pytest.mark.parametrize("label", ["cp858", "mac_turkish", "hp_roman8", "kz1048", "x-klingon",
                                   "rot13", "base64"])
def test_an_ascii_compatible_python_codec_keeps_its_reading(label: str) -> None:
    data = '<p>Grüße café</p><img src="https://t.example/o">'.encode("latin-1")
    read = charsets.reading(data, label)
    assert read is not None and read.view == data


@pytest.mark.parametrize(("label", "name"), [
    ("utf_8_sig", "utf-8"), ("iso2022_jp_2004", "iso-2022-jp"), ("iso2022_jp_3", "iso-2022-jp"),
    ("euc_jis_2004", "euc-jp"), ("shift_jisx0213", "shift_jis")])
def test_python_names_of_known_charsets_are_known(label: str, name: str) -> None:
    assert normalise_charset(label) == name


@pytest.mark.parametrize(("data", "label"), [
    (b'<style>p{x:"\xfa\\" ";background:url(https://t.example/o);y:"}</style>', "shift_jis"),
    (b'<style>p{x:"\x88\\" ";background:url(https://t.example/o);y:"}</style>', "big5"),
    (b'<style>p{x:"\x95\\" ";background:url(https://t.example/o);y:"}</style>', "x-sjis"),
    (b'<style>p{x:"\xb3\\" ";background:url(https://t.example/o);y:"}</style>', "x-x-big5"),
])
def test_pairs_python_s_codec_reads_otherwise_are_one_more_view(data: bytes, label: str) -> None:
    """Python's strict ``shift_jis``/``big5`` know fewer pairs than cp932 and Big5-HKSCS
    (NEC's 0xFA, HKSCS's 0x88), and a label Python does not know is ASCII to it: the
    backslash is one there and escapes the quote, so the ``url()`` is outside a string
    to a client built on Python's email and inside one to browsers.  Both are scanned."""
    read = charsets.reading(data, label)
    assert read is not None
    kind = charsets._info(read.charset).kind
    codec = charsets._python_pairs(label, read.charset)
    assert codec is not None and charsets._python_view(data, codec, kind) in read.others
    assert _refused_outcome(data, f"text/html; charset={label}") in ("fallback", "held")


@pytest.mark.parametrize(("label", "codec"), [
    ("shift_jis", "shift_jis"), ("ks_c_5601-1987", "euc_kr"), ("gb2312", "gb2312"),
    ("x-sjis", "ascii"), ("cp932", None), ("gb18030", None), ("utf-8", None), ("big5-hkscs", None)])
def test_the_codec_python_reads_a_double_byte_label_by(label: str, codec: str | None) -> None:
    assert charsets._python_pairs(label, normalise_charset(label)) == codec


def test_text_valid_in_python_s_codec_has_no_further_view() -> None:
    data = "<p>本日のおすすめ 表示</p>".encode("shift_jis")
    read = charsets.reading(data, "shift_jis")
    assert read is not None and read.others == ()



@pytest.mark.parametrize(("data", "label"), [
    (b"<p>+ADw-img src=+ACI-https://t.example/o+ACI-+AD4-</p>", "x-utf-7"),
    (b"<p>hi</p><img s\x1b(Brc=https://t.example/o>", "x-iso-2022-jp"),
    (b"<p>hi</p><img s\x0e\x0frc=https://t.example/o>", "x-iso-2022-kr"),
    ('<img src="https://t.example/o">'.encode("cp037"), "ebcdic-us"),
    ('<img src="https://t.example/o">'.encode("cp037"), "x-ibm037"),
    (b'\xd9<title><img src="https://t.example/o">', "130"),
    (b"\x1b$)A\x0ea<title>\x0f<img src=https://t.example/o>", "iso-2022-cn"),
    ((b'<img src="https://t.example/o">' + b"\x00 " * 8), "utf-16"),  # NULs gone: ASCII
    (b'<img src="https://t.example/o">\x00\x00', "unicode"),  # UTF-8 to Roundcube
    (b"<meta charset=x-iso-2022-jp><img s\x1b(Brc=https://t.example/o>", "us-ascii"),
])
def test_what_roundcube_reads_otherwise_has_no_view(data: bytes, label: str) -> None:
    """Session 17's charset attack, Roundcube's reading (its label clean-up, then mbstring
    or iconv, after deleting every NUL): each loaded the tracker in Chromium from text a
    refused copy kept."""
    assert _refused_outcome(data, f"text/html; charset={label}") in ("held", "fallback")


@pytest.mark.parametrize(("label", "others"), [
    ("utf-8", 0), ("iso-8859-1", 0), ("windows-1252", 0), ("latin1", 0), ("shift_jis", 0),
    ("ks_c_5601-1987", 0), ("gb2312", 0), ("big5", 0), ("iso-2022-jp", 0)])
def test_labels_roundcube_reads_alike_add_nothing(label: str, others: int) -> None:
    html = "<p>Grüße</p><img src=https://t.example/o>"
    codec = {"shift_jis": "shift_jis", "ks_c_5601-1987": "euc_kr", "gb2312": "gb2312",
             "big5": "big5", "iso-2022-jp": "iso2022_jp"}.get(label, "latin-1")
    read = charsets.reading(html.encode(codec, "replace"), label)
    assert read is not None and len(read.others) == others
