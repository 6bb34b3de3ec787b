"""Round 6's per-message shortcuts under attack (branch wt-attack4): a sender who
controls every byte of the messages, and their order, against

* the analysis cache's key reuse (``AnalysisCache.key``: a body equal to the last one
  keyed has its key without a hash): runs of messages whose bodies differ by one byte
  anywhere, have equal lengths, move the header's end, are empty, come from several
  threads at once, or were handed over in a buffer that changes afterwards -- every key
  is the one a fresh cache computes, and the cache never answers with an analysis of
  other bytes;
* the DKIM step's carried line-start periods (``DkimSigner.signed``, ``Copy.dots``):
  several messages interleaved (the remembered copies evicted and replaced), bodies
  big enough that the comparison meets again after a change (pieces in the middle),
  periodic bodies in which a sample matches in the wrong place, changes snapped to
  the edges of CRLF and period, periods right after the header and at the very end,
  more periods than are carried, an RSA and an Ed25519 key, a key of another domain,
  no key, no From: the periods given are exactly the signed copy's line starts, the
  signed bytes those of a signer that remembers nothing, and the courier's DATA
  section the searching one's, with one terminator only.

The end-to-end counterpart (the real relay, an aiosmtpd upstream that unstuffs):
``tests/e2e/test_dkim_dots_attack.py``.
"""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.policy import Policy
from beacon_proxy.deliver.smtp import wire_data
from beacon_proxy.rewrite.dkim import DkimSigner, SigningKey
from beacon_proxy.rewrite.known import AnalysisCache, body_start, cached
from beacon_proxy.rewrite.lineends import MAX_DOTS
from beacon_proxy.rewrite.step import Copy, Recipient
from beacon_proxy.spool.envelope import Envelope
from tests.rewrite.test_known import ENGINE, Counting
from tests.rewrite.test_lineends import _dots

# --------------------------------------------------------------------------
# The analysis cache's key

_HEADS = [b"", b"To: a@x.org\r\n\r\n", b"To: b@x.org\r\n\r\n", b"Subject: s\n\n",
          b"A: 1\r\n", b"\r\n", b"\n", b"To: a@x.org\r\nX: y\r\n\r\n"]


def _one_byte_off(body: bytes, where: float, byte: int) -> bytes:
    """``body`` with the byte at ``where`` (a fraction of its length) replaced."""
    if not body:
        return bytes([byte])
    i = min(int(where * len(body)), len(body) - 1)
    return body[:i] + bytes([byte]) + body[i + 1 :]


_MESSAGES = st.lists(st.tuples(st.sampled_from(_HEADS), st.booleans(), st.floats(0, 1),
                               st.integers(0, 255), st.booleans()), min_size=1, max_size=16)


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=300), messages=_MESSAGES)
def test_keys_of_bodies_one_byte_apart_are_fresh_keys(
        body: bytes, messages: list[tuple[bytes, bool, float, int, bool]]) -> None:
    """One body under many headers, and copies of it one byte off (the first byte, the
    last, any), equal in length: each key is a fresh cache's for the same bytes."""
    cache = AnalysisCache(b"ctx")
    for head, off, where, byte, pass_split in messages:
        data = head + (_one_byte_off(body, where, byte) if off else body)
        split = body_start(data) if pass_split else None
        assert cache.key(data, split) == AnalysisCache(b"ctx").key(data)


def test_a_moved_header_end_is_another_body() -> None:
    """Equal bytes split elsewhere (the empty line moved) are other bodies, and the same
    body under another context is another key."""
    cache = AnalysisCache(b"ctx")
    first = b"A: 1\r\n\r\nB: 2\r\n\r\nbody"
    moved = b"A: 1\r\nB: 2\r\n\r\n\r\nbody"  # same length, the body two bytes longer
    assert len(first) == len(moved)
    keys = [cache.key(first), cache.key(moved), cache.key(first, 0), cache.key(moved)]
    assert keys == [AnalysisCache(b"ctx").key(first), AnalysisCache(b"ctx").key(moved),
                    AnalysisCache(b"ctx").key(first, 0), AnalysisCache(b"ctx").key(moved)]
    assert len(set(keys[:3])) == 3
    assert AnalysisCache(b"other").key(first) != cache.key(first)


def test_a_buffer_changed_after_keying_lends_no_key() -> None:
    """A mutable buffer keyed, then changed in place: a message equal to what it holds
    now gets its own key, not the key of what the buffer held (the last key is kept
    only for immutable bytes)."""
    cache = AnalysisCache(b"ctx")
    buffer = bytearray(b"To: a@x.org\r\n\r\ngranted body")
    cache.key(buffer)  # type: ignore[arg-type]  # what the type rules out, at run time
    buffer[-4:] = b"BODY"
    now = bytes(buffer)
    assert cache.key(now) == AnalysisCache(b"ctx").key(now)


def test_keys_made_in_threads_at_once_are_fresh_keys() -> None:
    """key() runs on the event loop and, for a big message, in a thread: keys made in
    eight threads at once, over bodies that repeat and differ by a byte, are each a
    fresh cache's (the last key is one tuple, replaced whole)."""
    rnd = random.Random(6)
    bodies = [bytes(rnd.randrange(256) for _ in range(2000)) for _ in range(3)]
    bodies += [_one_byte_off(bodies[0], w, 0x2E) for w in (0.0, 0.5, 1.0)]
    messages = [rnd.choice(_HEADS) + rnd.choice(bodies) for _ in range(3000)]
    cache = AnalysisCache(b"ctx")
    with ThreadPoolExecutor(8) as pool:
        keys = list(pool.map(cache.key, messages))
    fresh = {m: AnalysisCache(b"ctx").key(m) for m in set(messages)}
    assert keys == [fresh[m] for m in messages]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_HEADS[1:3] + _HEADS[7:]), st.integers(0, 3)),
                min_size=2, max_size=8))
def test_the_cache_answers_each_message_with_its_own_analysis(
        messages: list[tuple[bytes, int]]) -> None:
    """Through ``cached``: a body, the same body one byte off (a granted link's token
    changed) and under other headers, in any order: each answer is an analysis of the
    very bytes asked about (never the last message's)."""
    link = b'<a href="https://t.example.com/c?u=AAAA">x</a>'
    bodies = [b"<p>" + link.replace(b"AAAA", b"AAA" + bytes([65 + n])) + b"</p>\r\n"
              for n in range(4)]
    analyse = cached(Counting(), AnalysisCache(ENGINE.fingerprint), ENGINE.rebase)

    async def run() -> None:
        for head, n in messages:
            data = head.replace(b"\r\n\r\n", b"\r\nContent-Type: text/html\r\n\r\n") + bodies[n]
            assert (await analyse(data)).data == data

    asyncio.run(run())


# --------------------------------------------------------------------------
# The DKIM step's carried periods

_ED = SigningKey("example.com", "ed1",
                 ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
_RSA = SigningKey("example.com", "rsa1",
                  rsa.generate_private_key(public_exponent=65537, key_size=1024))
_SHOP = SigningKey("shop.example", "s1",
                   ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
_KEYSETS = [(_ED, _RSA), (_RSA,), (_ED,), (_ED, _RSA, _SHOP), (_SHOP,), ()]
_DKIM_HEADS = [
    b"From: News <news@example.com>\r\nTo: ann@example.org\r\nSubject: News\r\n\r\n",
    b"From: a@mail.shop.example\r\nSubject: a subdomain's parent key\r\n\r\n",
    b"From: a@nokey.example\r\nSubject: no key\r\n\r\n",
    b"Subject: no From\r\n\r\n",
    b"From: a@example.com\r\nDKIM-Signature: v=1; h=from:subject; b=x\r\nSubject: s\r\n\r\n",
    b".X: a header line starting with a period\r\nFrom: a@example.com\r\n\r\n",
    b"From: a@example.com\r\n.\r\n\r\n",
    b".X: 1\r\nDKIM-Signature: v=1; h=subject; b=x\r\n.Y: 2\r\nFrom: a@example.com\r\n\r\n",
]
_LINES = [b".", b"..", b".\r\n.", b"", b"line", b"a b", b"QUIT", b"MAIL FROM:<e@x>", b". x"]
# what a change inserts: mostly bytes that keep the body tidy (so the copy is compared
# with the last one and its periods carried), sometimes a fault (the whole-body path)
_SNIPPETS = [b".", b"..", b"\r\n", b"\r\n.", b".\r\n", b"\r\n.\r\n", b"a", b"\r\n\r\n"]
_FAULTS = [b"\r", b"\n", b"  ", b"\t", b" \r\n"]
_ENVELOPE = Envelope("Q1", "news@example.com", ("ann@example.org",))


def _body(rnd: random.Random, size: int) -> bytes:
    """A tidy body of about ``size`` bytes full of period lines: periodic (a sample of it
    is found in many places) or random lines, maybe starting and ending with a period."""
    if rnd.random() < 0.4:
        unit = b"\r\n".join(rnd.choice(_LINES) for _ in range(rnd.randint(1, 4))) + b"\r\n"
        return unit * (size // len(unit) + 1)
    return b"".join(rnd.choice(_LINES) + b"\r\n" for _ in range(size // 4 + 1))


def _edited(rnd: random.Random, data: bytes, most: int = 5) -> bytes:
    """``data`` with up to ``most`` changes, most snapped to a CRLF's edges (where a CRLF
    and period may straddle the end of a compared piece)."""
    for _ in range(rnd.randint(0, most)):
        at = rnd.randint(0, len(data))
        crlf = data.find(b"\r\n", at)
        if crlf >= 0 and rnd.random() < 0.6:
            at = crlf + rnd.randint(0, 3)
        removed = rnd.choice([0, 0, 1, 2, 3, 40, 700])
        inserted = b"".join(rnd.choice(_FAULTS if rnd.random() < 0.05 else _SNIPPETS)
                            for _ in range(rnd.randint(0, 3)))
        data = data[:at] + inserted + data[at + removed :]
    return data


def _signed(signer: DkimSigner, data: bytes, original: bytes) -> Copy:
    return signer(Copy(data), Recipient(_ENVELOPE, "ann@example.org", Policy.REFUSED,
                                        original))


@settings(max_examples=120, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), keys=st.sampled_from(_KEYSETS),
       cache=st.sampled_from([1, 2, 4]))
def test_interleaved_messages_copies_have_exactly_their_periods(
        seed: int, keys: tuple[SigningKey, ...], cache: int) -> None:
    rnd = random.Random(seed)
    fast = DkimSigner(keys, clock=lambda: 1_700_000_000, cache=cache)
    whole = DkimSigner(keys, clock=lambda: 1_700_000_000, cache=0)
    messages = []
    for _ in range(rnd.randint(1, 4)):
        head = rnd.choice(_DKIM_HEADS if rnd.random() < 0.3 else _DKIM_HEADS[:2])
        body = _body(rnd, rnd.choice([8, 400, 1500, 3000, 12000]))
        messages.append((head, body, head + body))
    for _ in range(rnd.randint(2, 12)):
        head, body, original = rnd.choice(messages)
        data = _edited(rnd, head, 1) + _edited(rnd, body) if rnd.random() < 0.8 else original
        out = _signed(fast, data, original)
        assert out.crlf and out.data == _signed(whole, data, original).data
        if out.dots is not None:
            assert out.dots == _dots(out.data)
        section = wire_data(out.data, out.crlf, out.dots)
        assert section == wire_data(out.data)
        assert section.endswith(b"\r\n.\r\n") and b"\r\n.\r\n" not in section[:-3]


def test_periods_at_the_edges_of_a_copy_are_carried() -> None:
    """Further copies whose body starts and ends with a period line and whose two changes
    (far enough apart for a compared piece between them) are next to period lines, or
    make one: their periods carried, exactly."""
    signer, head = DkimSigner([_ED], clock=lambda: 1_700_000_000), _DKIM_HEADS[0]
    middle = b"".join(b"line %d\r\n.\r\n" % n for n in range(120))
    original = head + b".\r\n" + middle + b".\r\n"
    changes = [b"x", b"\r\n.", b".", b"\r\n..\r\n", b"", b"\r\n"]
    for k, change in enumerate(changes):
        body = (b".\r\n" + middle.replace(b"line 30\r\n", b"line 30" + change + b"\r\n")
                .replace(b"\r\nline 90", b"\r\n" + change + b"line 90" + b"y" * k))
        out = _signed(signer, head + body + b".\r\n", original)
        assert out.dots is not None and out.dots == _dots(out.data)
        assert wire_data(out.data, out.crlf, out.dots) == wire_data(out.data)


def test_one_period_over_the_limit_is_left_to_the_courier() -> None:
    """The header's and the body's periods count together: MAX_DOTS of them carried, one
    more not (the courier searches)."""
    signer, original = DkimSigner([_ED], clock=lambda: 1_700_000_000), b""
    head = _DKIM_HEADS[5]  # one period in the header
    for extra in (0, 1):
        body = b".\r\n" * (MAX_DOTS - 1 + extra)
        original = head + body
        for n in range(2):
            out = _signed(signer, head + body + b"x" * n + b"\r\n", original)
            assert (out.dots is None) == bool(extra)
            assert wire_data(out.data, out.crlf, out.dots) == wire_data(out.data)


def test_copies_signed_in_threads_at_once_have_exactly_their_periods() -> None:
    """Big copies are rendered (and signed) off the event loop: one signer shared by
    four threads at once, over further copies of two messages, each copy a few changes
    off: every copy's periods are its own line starts (a copy is compared with some
    remembered copy of its message, whichever a thread finds)."""
    rnd = random.Random(64)
    head = _DKIM_HEADS[0]
    bodies = [_body(rnd, 1200) for _ in range(2)]
    originals = [head + body for body in bodies]  # one object per message, as the relay's
    jobs = []
    for _ in range(400):
        n = rnd.randrange(2)
        jobs.append((head + _edited(rnd, bodies[n], 2), originals[n]))
    signer = DkimSigner([_ED], clock=lambda: 1_700_000_000)
    whole = DkimSigner([_ED], clock=lambda: 1_700_000_000, cache=0)
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda job: _signed(signer, *job), jobs))
    for (data, original), out in zip(jobs, outs, strict=True):
        assert out.data == _signed(whole, data, original).data
        assert out.dots is None or out.dots == _dots(out.data)
    assert sum(out.dots is not None for out in outs) > 300  # given, not left to the courier
