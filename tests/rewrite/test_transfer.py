"""Transfer decoding and edit-and-re-encode in the original transfer encoding."""

from __future__ import annotations

import binascii
import itertools
import re
import time
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.rewrite.transfer import (
    Edit,
    LineTooLongError,
    TransferError,
    apply_edits,
    decode,
    decode_base64,
    decode_indexed,
    encode_whole,
    normalise_cte,
    padded_soft_breaks,
    qp_slotted,
    qp_two_readings,
)
from tests.rewrite.decoders import (
    libbase64_decode,
    libqp_decode,
    node_base64_decode,
    php_qp_decode,
)

QP_LINE = re.compile(rb"(?:[\x21-\x3c\x3e-\x7e \t]|=[0-9A-F]{2})*=?")


def expected(decoded: bytes, edits: list[Edit]) -> bytes:
    out, pos = [], 0
    for edit in edits:
        out += [decoded[pos : edit.start], edit.replacement]
        pos = edit.end
    return b"".join([*out, decoded[pos:]])


def assert_valid_qp(encoded: bytes, original: bytes = b"") -> None:
    """Every new line at most 76 characters, only printable ASCII or =XX, no trailing blank."""
    old = set(original.split(b"\n"))
    for raw in encoded.split(b"\n"):
        if raw in old:
            continue
        line = raw.removesuffix(b"\r")
        assert len(line) <= 76, line
        assert QP_LINE.fullmatch(line), line
        assert not line.endswith((b" ", b"\t")), line


def physical_lines(body: bytes) -> list[tuple[bytes, int, int]]:
    """(encoded line, decoded start, decoded end), decoded line by line (the slow reference)."""
    pieces = body.split(b"\n")
    raw = [piece + b"\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    lines, dec = [], 0
    for line in raw:
        size = len(binascii.a2b_qp(line))
        lines.append((line, dec, dec + size))
        dec += size
    return lines


def untouched_lines_survive(body: bytes, out: bytes, edits: list[Edit]) -> None:
    """Every encoded line no edit touches appears, in order, byte for byte in the output."""
    lines = physical_lines(body)
    total = lines[-1][2] if lines else 0
    rest = out
    for index, (line, start, end) in enumerate(lines):
        touched = any(
            (e.start < end and e.end > start and e.end > e.start)
            or start <= e.start < end or (e.start == end == total and index == len(lines) - 1)
            for e in edits
        )
        if not touched:
            at = rest.find(line)
            assert at >= 0, line
            rest = rest[at + len(line) :]


# --- decode ------------------------------------------------------------------------------------

def test_normalise_and_decode() -> None:
    assert normalise_cte(None) == "7bit"
    assert normalise_cte(' "BASE64" ') == "base64"
    assert decode(b"caf=C3=A9 =3d x=\r\ny", "Quoted-Printable") == b"caf\xc3\xa9 = xy"
    assert decode(b"aGVs\r\nbG8=\r\n", "base64") == b"hello"
    assert decode(b"aGVsbG8", "base64") == b"hello"  # missing padding repaired
    assert decode(b"aGV*sbG8=", "base64") == b"hello"  # junk skipped
    assert decode(b"\xff\x00raw", "binary") == b"\xff\x00raw"
    assert decode(b"x", "") == b"x"
    with pytest.raises(TransferError, match="unknown"):
        decode(b"begin 644 x", "x-uuencode")
    with pytest.raises(TransferError):
        apply_edits(b"x", "x-uuencode", [])


@given(st.binary(max_size=300))
def test_lenient_base64_never_raises(data: bytes) -> None:
    decode(data, "base64")
    decode(data, "quoted-printable")


@pytest.mark.parametrize("cte", ["7bit", "8bit", "binary", "quoted-printable", "base64"])
@given(body=st.binary(max_size=400))
def test_no_edits_return_the_body_unchanged(cte: str, body: bytes) -> None:
    assert apply_edits(body, cte, []) is body


def test_edits_must_be_sorted_and_inside() -> None:
    for cte, body in (("7bit", b"abcdef"), ("quoted-printable", b"abcdef"),
                      ("base64", b"YWJjZGVm")):
        with pytest.raises(ValueError, match="sorted"):
            apply_edits(body, cte, [Edit(3, 4, b""), Edit(1, 2, b"")])
        with pytest.raises(ValueError, match="sorted"):
            apply_edits(body, cte, [Edit(1, 3, b""), Edit(2, 4, b"")])
        with pytest.raises(ValueError, match="sorted"):
            apply_edits(body, cte, [Edit(2, 1, b"")])
        with pytest.raises(ValueError, match="beyond"):
            apply_edits(body, cte, [Edit(5, 7, b"")])
        assert decode(apply_edits(body, cte, [Edit(6, 6, b"!")]), cte) == b"abcdef!"


# --- the property: output decodes to the decoded body with the edits -------------------------

TEXT = st.lists(st.sampled_from([b"a", b"<img src=\"x\">", b" ", b"\t", b"=", b".", b"\r\n",
                                 b"\n", b"\r", b"\xc3\xa9", b"\xff", b"-", b"z" * 40]),
                max_size=120).map(b"".join)


@st.composite
def edit_sets(draw: st.DrawFn, size: int) -> list[Edit]:
    points = sorted(draw(st.lists(st.integers(0, size), max_size=8)))
    edits = []
    for start, end in zip(points[::2], points[1::2], strict=False):
        edits.append(Edit(start, end, draw(TEXT.map(lambda b: b[:90]))))
    return edits


@pytest.mark.parametrize("cte", ["7bit", "8bit", "binary", "quoted-printable", "base64"])
@settings(max_examples=150)
@given(data=st.data(), eol=st.sampled_from([b"\r\n", b"\n"]), width=st.sampled_from([76, 72, 64]))
def test_output_decodes_to_the_edited_text(cte: str, data: st.DataObject, eol: bytes,
                                           width: int) -> None:
    text = data.draw(TEXT)
    if cte == "quoted-printable":
        body = binascii.b2a_qp(text.replace(b"\r\n", b"\n").replace(b"\n", eol))
    elif cte == "base64":
        encoded = binascii.b2a_base64(text, newline=False)
        body = eol.join(encoded[i : i + width] for i in range(0, len(encoded), width))
    else:
        body = text
    decoded = decode(body, cte)
    edits = data.draw(edit_sets(len(decoded)))
    try:
        out = apply_edits(body, cte, edits)
    except LineTooLongError:
        assert cte in ("7bit", "8bit")
        assert any(len(line) > 998 for line in expected(decoded, edits).split(b"\n"))
        return
    assert decode(out, cte) == expected(decoded, edits)
    if cte == "quoted-printable":
        untouched_lines_survive(body, out, edits)
        assert_valid_qp(out, body)
    if cte == "base64":
        assert apply_edits(body, cte, edits, decoded=decoded) == out
        lines = [line.removesuffix(b"\r") for line in out.split(b"\n")]
        limit = width if eol in body else 76  # one line: the default line length
        assert all(len(line) <= limit for line in lines)
        assert all(len(line) % 4 == 0 for line in lines)


# --- quoted-printable specifics ------------------------------------------------------------------

def newsletter(blocks: int = 400) -> bytes:
    row = ('<tr><td style="padding:8px">Crème n°{n} — 12 € <a href="https://shop.example/p/{n}">'
           "voir</a></td></tr>\r\n")
    return "".join(row.format(n=n) for n in range(blocks)).encode()


def test_qp_re_encodes_only_the_touched_lines() -> None:
    html = newsletter()
    body = binascii.b2a_qp(html)
    pixel = b'<img src="https://t.example/o/1" width="1" height="1">'
    decoded = html[:5000] + pixel + html[5000:40000] + pixel + html[40000:]
    body = binascii.b2a_qp(decoded)
    first = decoded.find(pixel)
    second = decoded.find(pixel, first + 1)
    edits = [Edit(first, first + len(pixel), b""), Edit(second, second + len(pixel), b"<br>")]
    out = apply_edits(body, "quoted-printable", edits)
    assert decode(out, "quoted-printable") == expected(decoded, edits)
    before, after = body.split(b"\r\n"), out.split(b"\r\n")
    assert len(set(before) - set(after)) <= 6  # a pixel spans at most a few encoded lines
    untouched_lines_survive(body, out, edits)
    assert_valid_qp(out)


def test_qp_soft_breaks_join_the_segment_to_what_follows() -> None:
    body = b"a" * 75 + b"=\r\n" + b"b" * 75 + b"=\r\n" + b"c" * 10 + b"\r\nend"
    out = apply_edits(body, "quoted-printable", [Edit(80, 81, b"X" * 80)])
    assert decode(out, "quoted-printable") == b"a" * 75 + b"b" * 5 + b"X" * 80 + b"b" * 69 + (
        b"c" * 10 + b"\r\nend")
    assert out.startswith(b"a" * 75 + b"=\r\n")
    assert out.endswith(b"=\r\n" + b"c" * 10 + b"\r\nend")
    assert_valid_qp(out)


def test_qp_full_last_line_gets_room_for_the_soft_break() -> None:
    body = b"x=\r\n" + b"y" * 10 + b"\r\n"
    for new in (b"w" * 76, b"w" * 75 + b"\xe9", b"w" * 74 + b"\xe9", b"w" * 73 + b"\xe9\xe9"):
        out = apply_edits(body, "quoted-printable", [Edit(0, 1, new)])
        assert decode(out, "quoted-printable") == new + b"y" * 10 + b"\r\n"
        assert_valid_qp(out)


def test_qp_removing_a_hard_line_break_and_trailing_space() -> None:
    body = b"one \r\ntwo\r\nthree"
    out = apply_edits(body, "quoted-printable", [Edit(4, 6, b"")])  # drop the CRLF
    assert decode(out, "quoted-printable") == b"one two\r\nthree"
    assert out.endswith(b"two\r\nthree")
    out = apply_edits(body, "quoted-printable", [Edit(3, 3, b"  ")])
    assert decode(out, "quoted-printable") == b"one   \r\ntwo\r\nthree"
    assert_valid_qp(out)


def test_qp_lf_only_and_odd_input_is_kept_around_the_edit() -> None:
    body = b"<p>caf=c3=a9</p>\n=3D=\nbroken =ZZ and = \nlast"
    decoded = decode(body, "quoted-printable")
    at = decoded.index(b"last")
    out = apply_edits(body, "quoted-printable", [Edit(at, at + 4, b"\xe9t\xe9\n")])
    assert decode(out, "quoted-printable") == decoded[:at] + b"\xe9t\xe9\n"
    assert out.startswith(b"<p>caf=c3=a9</p>\n=3D=\nbroken =ZZ and = \n")
    assert b"\r" not in out


def test_qp_bare_line_feed_in_a_crlf_body_stays_within_76_columns() -> None:
    body = b"z" * 40  # binascii.b2a_qp lets the character before a LF overrun the line
    out = apply_edits(body, "quoted-printable", [Edit(36, 36, b"z" * 40 + b"\n")])
    assert decode(out, "quoted-printable") == b"z" * 76 + b"\n" + b"z" * 4
    assert_valid_qp(out)
    assert b"\n" not in out.replace(b"\r\n", b"")


def test_qp_insertion_at_both_ends_and_empty_body() -> None:
    body = b"abc=\r\n"
    out = apply_edits(body, "quoted-printable", [Edit(0, 0, b"<"), Edit(3, 3, b">")])
    assert decode(out, "quoted-printable") == b"<abc>"
    assert apply_edits(b"", "quoted-printable", [Edit(0, 0, b"=")]) == b"=3D"


# --- base64 specifics ----------------------------------------------------------------------------

def wrap(data: bytes, width: int, eol: bytes) -> bytes:
    encoded = binascii.b2a_base64(data, newline=False)
    return eol.join(encoded[i : i + width] for i in range(0, len(encoded), width))


@pytest.mark.parametrize(("width", "eol"), [(76, b"\r\n"), (72, b"\n"), (64, b"\r\n")])
def test_base64_keeps_line_length_line_ending_and_the_lines_before_the_edit(
        width: int, eol: bytes) -> None:
    html = newsletter(300)
    body = wrap(html, width, eol) + eol
    at = 30_000
    edits = [Edit(at, at + 7, b"")]  # shifts the groups after it: the rest is re-encoded
    out = apply_edits(body, "base64", edits)
    assert decode(out, "base64") == expected(html, edits)
    assert out.endswith(eol) and not out.endswith(eol * 2)
    per_line = width // 4 * 3
    kept = at // per_line * (width + len(eol))
    assert out[:kept] == body[:kept]
    assert all(len(line) == width for line in out.split(eol)[:-2])


def test_base64_group_preserving_edits_keep_the_lines_after_too() -> None:
    html = newsletter(300)
    body = wrap(html, 76, b"\r\n")
    edits = [Edit(1000, 1006, b"abc"), Edit(2000, 2000, b"xyz")]  # -3 + 3: groups stay aligned
    out = apply_edits(body, "base64", edits)
    assert decode(out, "base64") == expected(html, edits)
    lines, new = body.split(b"\r\n"), out.split(b"\r\n")
    assert new[: 1000 // 57] == lines[: 1000 // 57]
    assert new[-len(lines) + 2000 // 57 + 1 :] == lines[2000 // 57 + 1 :]


def test_base64_with_junk_is_rewritten_whole() -> None:
    body = b"PHA+aGVs\r\nbG8gd29y!!bGQ8L3A+\r\n"
    decoded = decode(body, "base64")
    assert decoded == b"<p>hello world</p>"
    out = apply_edits(body, "base64", [Edit(3, 8, b"bye")])
    assert decode(out, "base64") == b"<p>bye world</p>"
    assert out.endswith(b"\r\n") and b"!" not in out


# --- 7bit / 8bit ---------------------------------------------------------------------------------

def test_splice_and_line_length_limit() -> None:
    body = b"<p>" + b"x" * 900 + b"</p>\r\n<p>short</p>"
    out = apply_edits(body, "8bit", [Edit(3, 4, b"\xe9")])
    assert out == b"<p>\xe9" + b"x" * 899 + b"</p>\r\n<p>short</p>"
    with pytest.raises(LineTooLongError):
        apply_edits(body, "7bit", [Edit(3, 3, b"y" * 100)])
    assert apply_edits(body, "binary", [Edit(3, 3, b"y" * 100)]).count(b"y") == 100
    long_line = b"z" * 2000
    assert apply_edits(long_line, "8bit", [Edit(10, 10, b"q")]).count(b"q") == 1  # already long
    assert apply_edits(body, "7bit", [Edit(3, 3, b"y" * 50 + b"\r\n" + b"y" * 50)])


# --- bounded work --------------------------------------------------------------------------------

def test_many_edits_on_a_big_part_stay_linear() -> None:
    html = newsletter(20_000)  # about 2 MB
    marker = b"voir"
    edits: list[Edit] = []
    pos = 0
    while len(edits) < 2000 and (at := html.find(marker, pos)) >= 0:
        edits.append(Edit(at, at + len(marker), b"lire"))
        pos = at + len(marker)
    for cte, body in (("quoted-printable", binascii.b2a_qp(html)),
                      ("base64", wrap(html, 76, b"\r\n")), ("8bit", html)):
        started = time.process_time()
        out = apply_edits(body, cte, edits)
        assert time.process_time() - started < 2.0, cte
        assert decode(out, cte) == html.replace(b"voir", b"lire", len(edits))


# --- the quoted-printable index ------------------------------------------------------------------

@settings(max_examples=100)
@given(data=st.data(), eol=st.sampled_from([b"\r\n", b"\n"]),
       blocks=st.sampled_from([1, 40, 400]))
def test_indexed_decode_and_edits_equal_the_plain_ones(data: st.DataObject, eol: bytes,
                                                       blocks: int) -> None:
    text = newsletter(blocks) + data.draw(TEXT)
    body = binascii.b2a_qp(text.replace(b"\r\n", b"\n").replace(b"\n", eol))
    decoded, index = decode_indexed(body, "quoted-printable")
    assert decoded == decode(body, "quoted-printable")
    assert index[0] == (0, 0) and all(body[enc - 1] == 0x0A for enc, _ in index[1:])
    edits = data.draw(edit_sets(len(decoded)))
    assert apply_edits(body, "quoted-printable", edits, qp_index=index) == apply_edits(
        body, "quoted-printable", edits)


def test_indexed_decode_of_other_encodings_has_no_index() -> None:
    assert decode_indexed(b"aGVsbG8=", "base64") == (b"hello", ())
    assert decode_indexed(b"plain", "8bit") == (b"plain", ())


# --- qp_slotted: an insertion with a slot, the same bytes as apply_edits for any slot ---------

_SLOT_BYTES = st.binary(min_size=1, max_size=120).filter(lambda b: b"\r" not in b
                                                          and b"\n" not in b)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([b"\r\n", b"\n"]), st.data())
def test_a_slotted_insertion_is_apply_edits_for_any_slot(
        decoded: bytes, eol: bytes, data: st.DataObject) -> None:
    decoded = decoded.replace(b"\r\n", b"\n").replace(b"\n", eol)
    body = encode_whole(decoded, "quoted-printable", eol)[0]
    at = data.draw(st.integers(0, len(decoded)))
    pieces = data.draw(st.lists(st.binary(max_size=200), min_size=1, max_size=4))
    slotted = qp_slotted(body, at, pieces, decode_indexed(body, "quoted-printable")[1])
    for slot in data.draw(st.lists(_SLOT_BYTES, min_size=1, max_size=3)):
        edit = [Edit(at, at, slot.join(pieces))]
        assert slotted.fill(slot) == apply_edits(body, "quoted-printable", edit)


@pytest.mark.parametrize("slot", [b"", b"a\rb", b"a\nb"])
def test_a_slot_is_never_empty_or_a_line_break(slot: bytes) -> None:
    slotted = qp_slotted(b"abc\r\n", 3, [b"<", b">"])
    with pytest.raises(ValueError, match="slot"):
        slotted.fill(slot)


def test_a_slotted_insertion_beyond_the_body_raises_as_apply_edits() -> None:
    with pytest.raises(ValueError, match="beyond"):
        qp_slotted(b"abc\r\n", 9, [b"<", b">"])
    with pytest.raises(ValueError, match="at least one piece"):
        qp_slotted(b"abc\r\n", 0, [])


# --- written: the stretches an edit wrote, the rest copied -----------------------------------

def test_a_stretch_written_empty_at_the_start_is_a_cut_at_an_end() -> None:
    """Deleting a whole first quoted-printable line writes an empty stretch at 0: a cut
    at the output's start, which the property below takes as an end (hypothesis found
    ``stop == 0`` read there as ``out[-1]``)."""
    written: list[tuple[int, int]] = []
    body = binascii.b2a_qp(b"\x00\n\x00", istext=True)
    assert apply_edits(body, "quoted-printable", [Edit(0, 2, b"")], written=written) == b"=00"
    assert written == [(0, 0)]


@pytest.mark.parametrize("cte", ["7bit", "8bit", "binary", "quoted-printable"])
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([b"\r\n", b"\n"]), st.data())
def test_written_stretches_are_all_that_differs_between_two_replacements(
        cte: str, text: bytes, eol: bytes, data: st.DataObject) -> None:
    """Two edit lists at the same places, other replacements: the stretches outside
    ``written`` are the same bytes in both results, in order; quoted-printable cuts lie
    after an LF (or at an end), so the result decodes stretch by stretch."""
    body = text.replace(b"\r", b"").replace(b"\n", eol)
    if cte == "quoted-printable":
        body = binascii.b2a_qp(body, istext=True).replace(b"\n", eol) if eol != b"\n" \
            else binascii.b2a_qp(body, istext=True)
    size = len(decode(body, cte))
    cuts = sorted(data.draw(st.lists(st.integers(0, size), max_size=6)))
    spans = list(zip(cuts[::2], cuts[1::2], strict=False))
    words = st.binary(min_size=0, max_size=90).filter(lambda b: b"\n" not in b)
    results = []
    for _ in range(2):
        edits = [Edit(a, b, data.draw(words)) for a, b in spans]
        written: list[tuple[int, int]] = []
        try:
            out = apply_edits(body, cte, edits, written=written)
        except LineTooLongError:
            return
        results.append((out, written))
    (_, first), (_, second) = results
    assert len(first) == len(second) <= len(spans)  # QP: one per re-encoded segment
    kept: list[list[bytes]] = [[], []]
    for n, (out, written) in enumerate(results):
        previous = 0
        for start, stop in written:
            assert previous <= start <= stop <= len(out)
            kept[n].append(out[previous:start])
            if cte == "quoted-printable":
                assert start == 0 or out[start - 1] == 0x0A
                assert stop in (0, len(out)) or out[stop - 1] == 0x0A
            previous = stop
        kept[n].append(out[previous:])
        if cte == "quoted-printable":  # decoded stretch by stretch: the same text
            cuts_ = [0, *(x for w in written for x in w), len(out)]
            assert b"".join(binascii.a2b_qp(out[a:b]) for a, b in
                            itertools.pairwise(cuts_)) == decode(out, cte)
    assert kept[0] == kept[1]


def test_base64_reports_no_written_stretches() -> None:
    with pytest.raises(ValueError, match="base64"):
        apply_edits(b"aGVsbG8=\r\n", "base64", [Edit(0, 1, b"j")], written=[])


@pytest.mark.parametrize(("body", "two"), [
    (b"aGVsbG8=\r\n", False), (b"aGVsbG8=\r\n\r\n", False), (b"aGVsbG8h\r\n", False),
    (b"aGVsbG8=\r\nd29ybGQ=\r\n", True),  # Thunderbird and Roundcube decode on
    (b"aGVsbG8==d29y\r\n", True), (b"aGVs=bG8h\r\n", True),
    (b"aGVsbG8=\r\n==\r\n", False),  # only padding after it: nothing more to read
    # "=" inside data whose count Python's decoder cannot take: Thunderbird counts it
    (b"=AAAPHA+aGk8L3A+QQ\r\n", True), (b"AA=APHA+aGk8L3A+QQ\r\n", True),
])
def test_base64_after_a_padding_has_two_readings(body: bytes, two: bool) -> None:
    assert decode_base64(body)[1] is two


@pytest.mark.parametrize(("body", "two"), [
    (b"<p>x</p>=\r\n<p>y</p>\r\n", False), (b"<img s= \r\nrc=x>", True),
    (b"x\x00<!--\r\n", False), (b"x=00y\r\n", False),  # a NUL: charsets.reading holds it
])
def test_quoted_printable_that_decoders_read_in_two_ways(body: bytes, two: bool) -> None:
    assert padded_soft_breaks(body) is two


# -- quoted-printable and base64 that other readers decode otherwise (session 26) -------------

@pytest.mark.parametrize(("body", "two"), [
    (b"<p>caf=C3=A9</p>=\r\n<p>y</p>\r\n", False), (b"=3c=3C", False),
    (b"<a href=3D\"x?a=1&b=2\">", False),  # a sloppy mailer's raw "=": text to all
    (b"end=", False), (b"a=Z", False), (b"= x", False),
    (b"==3Cimg src=3D\"T\">", True),  # Python: "=3Cimg", PHP and libqp: "=<img"
    (b"x==\r\n3C", True),  # libqp: "x=<"
    (b"token==&x", True),  # "=" to Python, "==" to the others: never one text
    (b"=3=\r\nCimg", True),  # libqp deletes the soft break first: "<img"
    (b"=3=\nC", True), (b"<img s= \r\nrc=x>", True), (b"s=\t\nrc", True),
    (b"=\r<img src=T>\n", True),  # Python skips to the LF, PHP reads on after the CR
    (b"= \r<img>\n", True),
    (b"\xbcimg src=3DT\xbe", True),  # mailparser reads it as ASCII, the high bit cleared
    (b"caf\xc3\xa9", True),  # raw UTF-8 a sloppy mailer left: the same, fail-closed
])
def test_quoted_printable_that_decoders_read_in_two_ways_is_found(body: bytes,
                                                                   two: bool) -> None:
    assert qp_two_readings(body) is two


def _alike(text: bytes) -> bytes:
    """The differences the three readers may keep: blanks at a line's end, and a run of
    ``=`` and blanks at the very end (a soft break to some, text to others)."""
    return re.sub(rb"[ \t]+(?=[\r\n]|\Z)", b"", re.sub(rb"[= \t]*\Z", b"", text))


_QP_PIECES = st.sampled_from([b"=", b"=", b"=", b"3", b"C", b"c", b"D", b"0", b"\r", b"\n",
                              b"\r\n", b" ", b"\t", b"<", b"a", b"Z", b"\xbc"])


@settings(max_examples=3000)
@given(st.lists(_QP_PIECES, min_size=1, max_size=14).map(b"".join))
def test_one_reading_means_python_php_and_libqp_read_the_same_text(body: bytes) -> None:
    """What :func:`qp_two_readings` lets through the precise path, every reader of
    :mod:`tests.rewrite.decoders` reads as Python does (NUL aside: such text is held)."""
    if not qp_two_readings(body):
        python = _alike(binascii.a2b_qp(body))
        assert _alike(php_qp_decode(body)) == python
        assert _alike(libqp_decode(body)) == python


#: The one-pass search qp_two_readings made before it searched a superset first.
_TWO_WAYS_ONE_PASS = re.compile(rb"=(?:=|[ \t]+\r?\n|[ \t]*\r(?!\n)|[0-9A-Fa-f]=[ \t]*\r?\n)")


@settings(max_examples=3000)
@given(st.lists(_QP_PIECES, min_size=0, max_size=24).map(b"".join))
def test_the_two_step_search_finds_what_one_pass_finds(body: bytes) -> None:
    assert qp_two_readings(body) is (not body.isascii()
                                     or _TWO_WAYS_ONE_PASS.search(body) is not None)


@pytest.mark.parametrize(("body", "other"), [
    (b"PGI-aGk8L2I-\r\n", node_base64_decode), (b"PGI_\r\n", node_base64_decode),
    (b"aGVs-bG8=\r\n", node_base64_decode),
    (b"aGk8" + bytes(b | 0x80 for b in b"L2I+") + b"\r\n", libbase64_decode),
])
def test_another_alphabet_is_a_second_reading(body: bytes,
                                              other: Callable[[bytes], bytes]) -> None:
    """Python skips ``-``, ``_`` and bytes over 0x7F; Node's ``Buffer.from(text,
    "base64")`` takes the first two for ``+`` and ``/``, ``mailparser`` clears the high
    bit of the others: a part with any of them is read precisely by nobody."""
    decoded, two = decode_base64(body)
    assert two and decoded != other(body)
