"""The line-end proof (``rewrite/lineends.py``): whatever a copy changed, and wherever,
the step gives the bytes the courier's whole pass gives, and says ``crlf`` only of
bytes that have CRLF line ends only and end in one.

The reference everywhere is :func:`crlf_lines` (what ``wire_data`` does to a copy
without a proof) and a plain reading of the property: no CR without an LF after it,
no LF without a CR before it, a CRLF at the end.  A wrong proof would let a bare CR
or LF reach the upstream, which may take it for a line end (SMTP smuggling).
"""

from __future__ import annotations

import asyncio
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.app import copy_steps
from beacon_proxy.config import Config
from beacon_proxy.consent.policy import Policy
from beacon_proxy.deliver.smtp import wire_data
from beacon_proxy.rewrite.beacons import BeaconStep
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.lineends import MAX_DOTS, CrlfProof, Shown, crlf_lines
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import Copy, Recipient
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens

HEAD = (b"From: News <news@example.com>\r\nTo: ann@example.org\r\nSubject: News\r\n"
        b"Message-ID: <n1@example.com>\r\n\r\n")
ENVELOPE = Envelope("Q1", "news@example.com", ("ann@example.org",))


def _crlf_only(data: bytes) -> bool:
    """The property, read plainly (one byte at a time)."""
    for i, byte in enumerate(data):
        if byte == 0x0D and data[i + 1 : i + 2] != b"\n":
            return False
        if byte == 0x0A and (i == 0 or data[i - 1] != 0x0D):
            return False
    return data.endswith(b"\r\n")


def _recipient(original: bytes) -> Recipient:
    return Recipient(ENVELOPE, "ann@example.org", Policy.REFUSED, original)


def _text(rnd: random.Random, lines: int) -> bytes:
    """A body with CRLF line ends: words, blanks, tabs, some empty lines."""
    words = [b"news", b"Link:", b"https://x.example/u/Ab9", b"=3D", b"<td>", b"caf=C3=A9=",
             b".dot", b"\t", b"  "]
    return b"".join(b" ".join(rnd.choice(words) for _ in range(rnd.randint(0, 9))) + b"\r\n"
                    for _ in range(lines))


def _edit(body: bytes, edits: list[tuple[float, int, bytes]]) -> bytes:
    """``body`` with each (where, how many bytes removed, what inserted) applied."""
    for where, removed, inserted in edits:
        at = int(where * len(body))
        body = body[:at] + inserted + body[at + removed :]
    return body


def _dots(data: bytes) -> tuple[int, ...]:
    """The line-start periods, read plainly: each line's first byte."""
    found, start = [], 0
    for line in data.split(b"\r\n"):
        if line.startswith(b"."):
            found.append(start)
        start += len(line) + 2
    return tuple(found)


def _check(proof: CrlfProof, data: bytes, original: bytes) -> Copy:
    """The step's copy of ``data``: the whole pass's bytes, proven, with exactly its
    line-start periods (when carried); when the step said it needed no pass, the
    bytes were already CRLF only; and the DATA section is the searching courier's."""
    proven = proof.proven(data, original)
    out = proof(Copy(data, {"k": "v"}), _recipient(original))
    assert out.crlf and out.data == crlf_lines(data) and _crlf_only(out.data)
    assert out.report == {"k": "v"}
    if proven:
        assert _crlf_only(data), data
        assert out.data is data
    if out.dots is not None:
        assert out.dots == _dots(out.data)
    assert wire_data(out.data, out.crlf, out.dots) == wire_data(data)
    return out


_SNIPPETS = st.sampled_from([b"a", b"Zz9", b"=\r\n", b" ", b"\t", b"\r\n", b"\r", b"\n",
                             b"\r\n\r\n", b"\r\r\n", b"\n\r", b".", b"\r\n.", b"\x00"])
_EDITS = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 12),
                            st.lists(_SNIPPETS, max_size=4).map(b"".join)),
                  min_size=0, max_size=4)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lines=st.integers(0, 150),
       copies=st.lists(st.tuples(_EDITS, _EDITS), min_size=2, max_size=5))
def test_further_copies_are_what_the_whole_pass_makes(
        seed: int, lines: int,
        copies: list[tuple[list[tuple[float, int, bytes]], list[tuple[float, int, bytes]]]]
        ) -> None:
    """Random changes to the header and the body of each copy, bare CRs and LFs among
    them: every copy is the whole pass's bytes, and a proof is never wrong."""
    base = _text(random.Random(seed), lines)
    proof, original = CrlfProof(), HEAD + base
    for head_edits, body_edits in copies:
        _check(proof, _edit(HEAD, head_edits) + _edit(base, body_edits), original)


def test_a_footer_change_needs_no_whole_pass() -> None:
    """The relay's case: copies that differ in a link early and in one late."""
    base = _text(random.Random(1), 400)
    early, late = base.index(b"\r\n", 3000) + 2, base.rindex(b"\r\n", 0, len(base) - 500) + 2
    proof, original = CrlfProof(), HEAD + base
    for k in range(5):
        token = f"T{k:05d}{'x' * k}".encode()
        copy = (HEAD + base[:early] + b"Link: https://p.example/u/" + token + b"\r\n"
                + base[early:late] + b'<a href=3D"https://p.example/u/' + token + b'">\r\n'
                + base[late:])
        assert proof.proven(copy, original) == (k > 0)
        _check(proof, copy, original)


@pytest.mark.parametrize("change", [b"\n", b"\r", b"\r\r\n", b"\n\r", b"x\r", b"\nx",
                                    b"\r\n", b"word"], ids=repr)
@pytest.mark.parametrize("where", ["at a line start", "before a line end",
                                   "between a CR and its LF", "at the body's start",
                                   "at the body's end", "in the header"])
def test_a_bad_line_end_next_to_compared_bytes_is_found(change: bytes, where: str) -> None:
    """A change that makes a bad line end only with the compared bytes beside it (an LF
    after a line end, a CR before a letter, anything between a CR and its LF)."""
    base = _text(random.Random(2), 120)
    body = {"at a line start": lambda: _insert(base, base.index(b"\r\n", 1000) + 2, change),
            "before a line end": lambda: _insert(base, base.index(b"\r\n", 2000), change),
            "between a CR and its LF": lambda: _insert(base, base.index(b"\r\n", 2500) + 1,
                                                       change),
            "at the body's start": lambda: change + base,
            "at the body's end": lambda: base + change,
            "in the header": lambda: base}[where]()
    head = _insert(HEAD, HEAD.index(b"\r\n", 40) + 1, change) if where == "in the header" else HEAD
    proof, original = CrlfProof(), HEAD + base
    _check(proof, original, original)
    _check(proof, head + body, original)


@pytest.mark.parametrize("change", [
    b"=\r\n",  # a quoted-printable soft break: the period after it starts a line
    b"\r\n", b"\r\n.", b".", b"..\r\n", b"\r\n.\r\n", b".footer text\r\n",
], ids=repr)
def test_every_line_start_period_is_carried_wherever_a_change_puts_one(change: bytes) -> None:
    """A change at each offset of a stretch full of periods (in a line, at a line's start,
    stuffed twice, after a soft break), and the bytes before a period cut away: the
    copy's periods are exactly its line-start ones, wherever the change meets the
    compared bytes (a wrong list is an early end of DATA at the upstream)."""
    line = b"a.b ..c =3D.d\r\n.e.f\r\n..g\r\nh.\r\n.\r\n"
    base = _text(random.Random(7), 40) + line * 8 + _text(random.Random(8), 40)
    original = HEAD + base
    proof = CrlfProof()
    _check(proof, original, original)
    start = base.index(line)
    for at in range(start - 3, start + 2 * len(line) + 3):
        _check(proof, HEAD + _insert(base, at, change), original)
        _check(proof, HEAD + base[:at] + base[at + len(change) :], original)


_OLD_LINES = st.lists(st.sampled_from([b".", b"..", b"a", b".a.", b"b c"]), max_size=3).map(
    b"".join)
_SEGMENTS = st.lists(st.one_of(
    st.tuples(st.floats(0, 1), st.integers(0, 30)),  # a piece: where in the old body, how long
    st.lists(st.sampled_from([b"x", b".", b"\r\n", b"\r\n.", b"..", b"\r"]), max_size=3).map(
        b"".join),  # a changed stretch
), max_size=12)


@settings(max_examples=400, deadline=None)
@given(old_lines=st.lists(_OLD_LINES, max_size=30), segments=_SEGMENTS)
def test_periods_at_the_exact_edges_of_compared_pieces(
        old_lines: list[bytes], segments: list[tuple[float, int] | bytes]) -> None:
    """The comparison finds a piece's edges only to within 128 bytes, so a CRLF and a
    period astride an exact edge are rare with it: here the pieces and changed
    stretches are given exactly (``matched`` replaced; where two pieces meet, an
    empty stretch, as ``matched`` promises), and the periods are still exactly the
    copy's."""
    old_body = b"".join(line + b"\r\n" for line in old_lines)
    old, at = HEAD + old_body, len(HEAD)
    new, gaps, pieces = bytearray(HEAD), [], []
    after_piece = False
    for segment in segments:
        if isinstance(segment, bytes):
            gaps.append((len(new), len(new) + len(segment)))
            new += segment
        else:
            if after_piece:  # where two pieces meet: an empty stretch
                gaps.append((len(new), len(new)))
            start = at + int(segment[0] * len(old_body))
            piece = old[start : start + segment[1]]
            pieces.append((len(new), start, len(piece)))
            new += piece
        after_piece = not isinstance(segment, bytes)
    proof = CrlfProof()
    _check(proof, old, old)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("beacon_proxy.rewrite.lineends.matched",
                      lambda *args: (0, gaps, pieces))
        _check(proof, bytes(new), old)


@pytest.mark.parametrize("head", [
    HEAD.replace(b"Subject: News\r\n", b"Subject: News\r\n.folded\r\n"),
    HEAD.replace(b"Subject: News\r\n", b"Subject:\r\n .News\r\n"),
    b"." + HEAD, HEAD[:-2] + b".x: y\r\n\r\n", HEAD + b".",
], ids=repr)
def test_a_period_in_the_header_or_at_the_bodys_start(head: bytes) -> None:
    """The header is searched whole, with the empty line and the body's first byte."""
    base = _text(random.Random(9), 100)
    proof, original = CrlfProof(), HEAD + base
    _check(proof, original, original)
    copy = _check(proof, head + base, original)
    assert proof.proven(head + base, original) == _crlf_only(head + base)
    assert copy.dots is not None


def test_many_periods_are_not_carried() -> None:
    """More line-start periods than MAX_DOTS: the courier searches for them."""
    base = b".x\r\n" * (MAX_DOTS + 1)
    proof, original = CrlfProof(), HEAD + base
    assert _check(proof, original, original).dots is None
    assert _check(proof, HEAD + base + b"y\r\n", original).dots is None
    few = HEAD + b"y\r\n" * (MAX_DOTS + 1)
    assert _check(proof, few, few).dots == ()
    assert _check(proof, HEAD + b".z\r\n" * (MAX_DOTS + 1), few).dots is None


def _insert(data: bytes, at: int, what: bytes) -> bytes:
    return data[:at] + what + data[at:]


def test_a_cut_crlf_is_found() -> None:
    """Removing only the LF (or only the CR) of a line end deep in the body."""
    base = _text(random.Random(6), 200)
    proof, original = CrlfProof(), HEAD + base
    _check(proof, original, original)
    at = base.index(b"\r\n", 4000)
    for cut in (base[:at + 1] + base[at + 2 :], base[:at] + base[at + 1 :]):
        assert not proof.proven(HEAD + cut, original)
        _check(proof, HEAD + cut, original)


@pytest.mark.parametrize("data", [
    b"", b"\r\n", b"\r\n\r\n", b"Subject: x\r\n", b"Subject: x\r\n\r\n", b"Subject: x",
    b"\nSubject: x\r\n\r\nbody\r\n", b"Subject: x\n\r\n\r\nbody\r\n", b"Subject: x\r\n\r\n\n",
    b"Subject: x\r\n\r\nbody", b"Subject: x\r\n\r\nbody\r", b"S: x\r\n\r\n\r\n\r\n",
], ids=repr)
def test_odd_messages(data: bytes) -> None:
    """No body, an empty one, no final CRLF, an LF at either side of the empty line:
    as the remembered copy and against one."""
    for before in (b"Subject: x\r\n\r\nbody\r\n", data):
        proof = CrlfProof()
        _check(proof, before, b"m")
        _check(proof, data, b"m")
        _check(proof, data + b"more\r\n", b"m")


def test_messages_are_never_mixed_up() -> None:
    """A copy is compared only with the last copy of its own ``original`` object: equal
    bytes in another object, or no original, take the whole pass."""
    base = _text(random.Random(3), 100)
    original = HEAD + base
    proof = CrlfProof(cache=2)
    _check(proof, original, original)
    assert proof.proven(original, original)
    assert not proof.proven(original, bytes(bytearray(original)))
    assert not proof.proven(original, b"")
    others = [bytes(bytearray(original)) for _ in range(2)]
    for other in others:  # two more messages: the first one is forgotten
        _check(proof, other, other)
    assert not proof.proven(original, original)
    assert CrlfProof(cache=0).proven(original, original) is False


def test_a_proven_copy_passes_through() -> None:
    copy = Copy(b"A: b\r\n\r\nc\r\n", crlf=True)
    assert CrlfProof()(copy, _recipient(b"m")) is copy


def test_proofs_in_threads() -> None:
    """Copies of two messages proven by one step from several threads at once."""
    rnd = random.Random(4)
    originals = [HEAD + _text(rnd, 300), HEAD + _text(rnd, 300) + b"bare\rCR\r\n"]
    jobs = [(originals[k % 2], originals[k % 2].replace(b"news", f"r{k}".encode(), 2))
            for k in range(64)]
    proof = CrlfProof()
    results: dict[int, Copy] = {}

    def work(start: int) -> None:
        for i in range(start, len(jobs), 4):
            results[i] = proof(Copy(jobs[i][1]), _recipient(jobs[i][0]))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i].data for i in range(len(jobs))] == [crlf_lines(c) for _, c in jobs]
    assert all(results[i].crlf for i in range(len(jobs)))


@pytest.mark.parametrize("bare_cr", [False, True])
def test_the_relays_copies_without_dkim_are_proven(bare_cr: bool,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies made by the relay's own copy steps (DKIM off: the proof is the last
    step), of a message with a line starting with a period, with a bare CR in its body
    or without: each leaves with the bytes the courier would have sent, proven, and
    the further copies of a message without a bare CR need no whole pass."""
    tokens = Tokens(["test secret 0123456789abcdef"])
    steps = copy_steps(Config(), tokens, hostname="relay.example")
    proof = steps[-1]
    assert isinstance(proof, CrlfProof)
    found: list[tuple[bool, bytes]] = []
    shown = proof.shown

    def recorded(data: bytes, original: bytes) -> Shown | None:
        result = shown(data, original)
        found.append((result is not None, data))
        return result

    monkeypatch.setattr(proof, "shown", recorded)
    html = b"".join(b'<p class="x">Item %d <img src="https://cdn.example/%d.png"></p>\r\n'
                    % (k, k) for k in range(300))
    message = (b"From: News <news@shop.example>\r\nTo: a@example.org\r\nSubject: Hi\r\n"
               b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html
               + b".starts with a dot\r\n" + (b"bare\rCR\r\n" if bare_cr else b""))
    step = BeaconStep(Engine(load_rules()), tokens, public_url="https://prefs.example.com",
                      hostname="relay.example", steps=steps)
    prepared = asyncio.run(step.prepare(ENVELOPE, message))
    unproven = BeaconStep(Engine(load_rules()), tokens, public_url="https://prefs.example.com",
                          hostname="relay.example", steps=steps[:-1])
    plain = asyncio.run(unproven.prepare(ENVELOPE, message))
    for k, policy in enumerate([Policy.REFUSED, Policy.GRANTED, Policy.REFUSED]):
        copy = prepared.render(f"reader{k}@example.org", policy)
        assert copy.crlf and (b"bare\r\nCR" in copy.data) == bare_cr
        assert copy.dots is not None and copy.dots == _dots(copy.data) and copy.dots
        other = plain.render(f"reader{k}@example.org", policy)
        assert not other.crlf
        assert wire_data(copy.data, copy.crlf) == wire_data(other.data)
    assert all(_crlf_only(data) for shown, data in found if shown)
    if not bare_cr:
        assert [shown for shown, _ in found] == [False, True, True]
