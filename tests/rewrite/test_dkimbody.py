"""The body hash of further copies (``rewrite/dkimbody.py``): whatever a copy changed,
and wherever, it hashes as the whole-body path does, a remembered copy is trusted
only where the bytes were compared, and two messages are never mixed up.

The reference everywhere is the whole-body path: :func:`crlf`, then
:func:`relaxed_body` (itself checked against dkimpy in ``test_dkim.py``) and one
SHA-256; at the message level, a signer that remembers nothing (``cache=0``).
Ed25519 signatures are deterministic, so signed copies compare byte for byte.
"""

from __future__ import annotations

import hashlib
import random
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.rewrite.dkim import DkimSigner, SigningKey, crlf
from beacon_proxy.rewrite.dkimbody import (
    BodyHashes,
    _tidy_between,
    matched,
    relaxed_body,
    relaxed_tidy,
    unseen,
)

KEY = SigningKey("example.com", "ed1",
                 ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
HEAD = (b"From: News <news@example.com>\r\nTo: ann@example.org\r\nSubject: News\r\n"
        b"Message-ID: <n1@example.com>\r\n\r\n")


def _signer(cache: int = 4) -> DkimSigner:
    return DkimSigner([KEY], clock=lambda: 1_700_000_000, cache=cache)


def _text(rnd: random.Random, lines: int, *, trailing: int = 0) -> bytes:
    """A tidy body: words with single spaces, some empty lines, CRLF line ends."""
    out = []
    for _ in range(lines):
        if rnd.random() < 0.1:
            out.append(b"")
        else:
            out.append(b" ".join(rnd.choice([b"news", b"Link:", b"https://x.example/u/Ab9",
                                             b"=3D", b"<td>", b"caf=C3=A9="])
                                 for _ in range(rnd.randint(1, 9))))
    return b"\r\n".join(out) + b"\r\n" + b"\r\n" * trailing


def _edit(body: bytes, edits: list[tuple[float, int, bytes]]) -> bytes:
    """``body`` with each (where, how many bytes removed, what inserted) applied."""
    for where, removed, inserted in edits:
        at = int(where * len(body))
        body = body[:at] + inserted + body[at + removed :]
    return body


def _whole(body: bytes) -> bytes:
    return hashlib.sha256(relaxed_body(crlf(body))).digest()


def _tidy(body: bytes) -> bool:
    """The whole-buffer answer: CRLF only, ending in CRLF, nothing for relaxed
    canonicalisation to change but the empty lines at the end."""
    return crlf(body) == body and relaxed_tidy(body)[1]


def _hash(hashes: BodyHashes, body: bytes, original: bytes) -> bytes:
    """What the signer does with a body (at 0): the fast path when the remembered copy
    says the body is tidy (which must then be true), else the whole-body path."""
    like = hashes.like_last(body, 0, original)
    if like is not None:
        assert _tidy(body), body
        return hashes.digest(body, 0, original, like)
    return hashes.digest(crlf(body), 0, original, None)


_SNIPPETS = st.sampled_from([b"a", b"Zz9", b"=\r\n", b" ", b"  ", b"\t", b"\r\n", b"\r", b"\n",
                             b"\r\n\r\n", b"x ", b" \r\n", b"\r\r\n"])
_EDITS = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 12),
                            st.lists(_SNIPPETS, max_size=4).map(b"".join)),
                  min_size=0, max_size=4)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lines=st.integers(0, 150), trailing=st.integers(0, 3),
       copies=st.lists(_EDITS, min_size=2, max_size=5))
def test_further_copies_hash_as_the_whole_body(seed: int, lines: int, trailing: int,
                                               copies: list[list[tuple[float, int, bytes]]]
                                               ) -> None:
    base = _text(random.Random(seed), lines, trailing=trailing)
    hashes, original = BodyHashes(), b"the message"
    previous = base
    for edits in copies:
        body = _edit(base, edits)
        assert _hash(hashes, body, original) == _whole(body)
        # The pieces between the changed stretches are each bytes of the last copy.
        if _tidy(previous) and _tidy(body):
            same, gaps = unseen(body, 0, previous, 0)
            assert body[:same] == previous[:same]
            starts = [0, *(b for _, b in gaps)]
            ends = [*(a for a, _ in gaps), len(body)]
            for start, end in zip(starts, ends, strict=True):
                assert start <= end and body[start:end] in previous
        previous = body


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lines=st.integers(0, 150), edits=_EDITS)
def test_the_matched_pieces_are_the_old_bytes(seed: int, lines: int,
                                              edits: list[tuple[float, int, bytes]]) -> None:
    """``matched``'s pieces are each byte-identical to the old body where it says, and
    with the changed stretches they cover the new body exactly once; where two pieces
    meet, there is a (maybe empty) changed stretch."""
    old = b"H: 1\r\n\r\n" + _text(random.Random(seed), lines)
    new = b"H: 22\r\n\r\n" + _edit(old[9:], edits)
    same, gaps, pieces = matched(new, 11, old, 9)
    assert (same, gaps) == unseen(new, 11, old, 9)
    covered = [0] * len(new)
    for start, old_start, size in pieces:
        assert new[start : start + size] == old[old_start : old_start + size]
        for k in range(start, start + size):
            covered[k] += 1
    for a, b in gaps:
        for k in range(a, b):
            covered[k] += 1
    assert covered[11:] == [1] * (len(new) - 11)
    edges = {s for s, _, n in pieces if n} | {s + n for s, _, n in pieces if n}
    touching = {a for a, _ in gaps} | {b for _, b in gaps}
    assert edges - touching <= {11, len(new)}


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), copies=st.lists(_EDITS, min_size=2, max_size=4))
def test_signed_further_copies_are_byte_identical(seed: int,
                                                  copies: list[list[tuple[float, int, bytes]]]
                                                  ) -> None:
    base = _text(random.Random(seed), 60, trailing=seed % 3)
    fast, whole = _signer(), _signer(cache=0)
    original = HEAD + base
    for edits in copies:
        copy = HEAD + _edit(base, edits)
        assert fast.sign(copy, original) == whole.sign(copy, original)


def test_a_footer_change_takes_the_fast_path() -> None:
    """The relay's case: copies that differ in a link early and in one late."""
    base = _text(random.Random(1), 400)
    early = base.index(b"\r\n", 3000) + 2
    late = base.rindex(b"\r\n", 0, len(base) - 500) + 2
    hashes, original = BodyHashes(), b"the message"
    for k in range(5):
        token = f"T{k:05d}{'x' * k}".encode()
        body = (base[:early] + b"Link: https://p.example/u/" + token + b"\r\n" + base[early:late]
                + b'<a href=3D"https://p.example/u/' + token + b'">\r\n' + base[late:])
        like = hashes.like_last(body, 0, original)
        assert (like is None) == (k == 0)
        assert hashes.digest(body, 0, original, like) == _whole(body)
        if like is not None:
            differs = early + len(b"Link: https://p.example/u/T0000")
            assert differs - 128 <= like.same <= differs
            assert (like.seen.mark > 0) == (k >= 2)  # the hash of the shared start, reused


@pytest.mark.parametrize("change", [b"word", b" ", b"a ", b"\t", b"\n", b"\r", b"\r\n",
                                    b"\r\n\r\n", b"\r\r\n", b" \r\n"], ids=repr)
@pytest.mark.parametrize("where", ["after a space", "before a line end", "at a line start",
                                   "between a CR and its LF"])
def test_the_neighbours_of_a_change_are_looked_at(change: bytes, where: str) -> None:
    """A change that makes a fault only with the compared bytes beside it (a space
    after a space, a space or CR before a CRLF, an LF after a CR) is found."""
    base = _text(random.Random(2), 80)
    at = {"after a space": base.index(b" ", 1000) + 1,
          "before a line end": base.index(b"\r\n", 2000),
          "at a line start": base.index(b"\r\n", 3000) + 2,
          "between a CR and its LF": base.index(b"\r\n", 2500) + 1}[where]
    body = base[:at] + change + base[at:]
    hashes = BodyHashes()
    hashes.digest(base, 0, b"", None)
    like = hashes.like_last(body, 0, b"")
    assert (like is not None) == _tidy(body)
    assert _hash(hashes, body, b"") == _whole(body)


def test_where_two_compared_pieces_meet() -> None:
    """Two pieces, each found in the remembered body, can make a fault where they
    meet: here a piece ending in a space, then the common end starting with a CRLF
    (the end is 640 bytes: found exactly, so the pieces touch)."""
    rnd = random.Random(5)
    start, piece = _text(rnd, 30), _text(rnd, 20)[:-2] + b" "  # ends in a space
    end = b"\r\n" + _text(rnd, 40)[: 640 - 2]
    end = end[: end.rindex(b"\r\n")] + b"\r\n"
    end = end[:-2] + b"x" * (640 - len(end)) + b"\r\n"
    old = start + piece + b"bar\r\n" + _text(rnd, 10) + b"q" + end
    new = b"Changed " + start[6:] + piece + end
    assert _tidy(old) and not _tidy(new) and len(end) == 640
    hashes = BodyHashes()
    hashes.digest(old, 0, b"", None)
    assert hashes.like_last(new, 0, b"") is None
    assert _hash(hashes, new, b"") == _whole(new)


@pytest.mark.parametrize("body", [
    b"", b"\r\n", b"\r\n\r\n\r\n", b"text\r\n\r\n\r\n", b"text\r\n", b"text", b"text \r\n",
    b"\ntext\r\n", b"text\r", b"\r\n\r\ntext\r\n\r\n",
], ids=repr)
def test_ends_of_the_body(body: bytes) -> None:
    """Empty lines at the end, no final CRLF, an LF at the start: against a remembered
    copy that is tidy, and as the remembered copy."""
    for before in (b"text\r\n", b"\r\n\r\n", b"", body):
        hashes = BodyHashes()
        assert _hash(hashes, before, b"m") == _whole(before)
        assert _hash(hashes, body, b"m") == _whole(body)
        assert _hash(hashes, body + b"more\r\n", b"m") == _whole(body + b"more\r\n")
        assert _hash(hashes, body + b"\r\n", b"m") == _whole(body + b"\r\n")


@pytest.mark.parametrize(("data", "lo", "hi", "tidy"), [
    (b"ab\r\ncd", 0, 6, True),
    (b"ab\r\ncd", 0, 3, True),  # ends in a CR: its LF is the next piece's
    (b"ab\r\ncd", 3, 6, True),  # starts with an LF: its CR is the last piece's
    (b"ab\r\ncd", 2, 4, True),
    (b"a\rb\r\n", 0, 5, False),
    (b"a\nb\r\n", 0, 5, False),
    (b"ab\r\r\n", 0, 5, False),
    (b"ab\n\r\n", 0, 5, False),
    (b"a b c\r\n", 0, 7, True),
    (b"a  b\r\n", 0, 6, False),
    (b"a \r\n", 0, 4, False),
    (b"a\tb\r\n", 0, 5, False),
    (b"a  b", 2, 4, True),  # the run of spaces begins before the stretch
], ids=repr)
def test_tidy_between(data: bytes, lo: int, hi: int, tidy: bool) -> None:
    assert _tidy_between(data, lo, hi) is tidy


def test_an_untidy_copy_is_not_remembered() -> None:
    hashes = BodyHashes()
    untidy = b"a  b\r\n" * 200
    assert _hash(hashes, untidy, b"m") == _whole(untidy)
    assert hashes.like_last(untidy, 0, b"m") is None


def test_messages_are_never_mixed_up() -> None:
    """Copies of different messages under one ``original`` (the cache's key), and more
    messages than the cache holds, interleaved: each hash is the whole body's."""
    rnd = random.Random(3)
    bodies = [_text(rnd, 100) for _ in range(6)]
    # The same text with a blank run late: a prefix shared with bodies[0].
    bodies.append(bodies[0][:-200] + b"x  y\r\n" + bodies[0][-200:])
    hashes = BodyHashes(cache=4)
    shared = b"one key for all"
    for round_ in range(3):
        for k, body in enumerate(bodies):
            copy = body.replace(b"news", f"n{round_}".encode(), 1)
            assert _hash(hashes, copy, shared) == _whole(copy)
            own = f"message {k}".encode()
            assert _hash(hashes, copy, own) == _whole(copy)


def test_signers_in_threads_agree() -> None:
    """Copies of two messages signed by one step from several threads at once."""
    rnd = random.Random(4)
    bases = [_text(rnd, 300), _text(rnd, 300)]
    originals = [HEAD + b for b in bases]
    fast, whole = _signer(), _signer(cache=0)
    jobs = [(originals[k % 2], HEAD + bases[k % 2].replace(b"news", f"r{k}".encode(), 2))
            for k in range(64)]
    expected = [whole.sign(copy, original) for original, copy in jobs]
    results: dict[int, tuple[bytes, str]] = {}

    def work(start: int) -> None:
        for i in range(start, len(jobs), 4):
            results[i] = fast.sign(jobs[i][1], jobs[i][0])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(jobs))] == expected


def test_cache_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="cache"):
        BodyHashes(cache=-1)
