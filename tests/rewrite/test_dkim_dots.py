"""The DKIM step's line-start periods (``Copy.dots``, ``rewrite/dkim.py``): whatever a
copy changed, and wherever, the offsets the step gives are exactly the periods that
start a line of the signed copy, so the courier may stuff them without searching.

A period missed would let a line ``.`` end the DATA early (SMTP smuggling), so the
reference is a plain reading (each line's first byte) and the searching courier's
DATA section, on hostile edits: periods, CRLF and period, bare CRs and LFs, blanks,
at every place, in the header and the body, with the sender's signature removed or
not, signed or left unsigned.
"""

from __future__ import annotations

import random

from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.policy import Policy
from beacon_proxy.deliver.smtp import wire_data
from beacon_proxy.rewrite.dkim import DkimSigner, SigningKey
from beacon_proxy.rewrite.lineends import MAX_DOTS
from beacon_proxy.rewrite.step import Copy, Recipient
from beacon_proxy.spool.envelope import Envelope
from tests.rewrite.test_lineends import _dots, _edit  # the plain reading, the edits

KEY = SigningKey("example.com", "ed1",
                 ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
HEADS = [
    b"From: News <news@example.com>\r\nTo: ann@example.org\r\nSubject: News\r\n\r\n",
    b"From: News <news@example.org>\r\nSubject: unsigned: no key\r\n\r\n",
    b"From: News <news@example.com>\r\nDKIM-Signature: v=1; h=from:subject; b=x\r\n"
    b"Subject: News\r\n\r\n",
    b"DKIM-Signature: v=1; h=subject; b=x\r\nFrom: a@example.com\r\n\r\n",
    b".X: a header line starting with a period\r\nFrom: a@example.com\r\n\r\n",
]
ENVELOPE = Envelope("Q1", "news@example.com", ("ann@example.org",))


def _signer(cache: int = 4) -> DkimSigner:
    return DkimSigner([KEY], clock=lambda: 1_700_000_000, cache=cache)


def _text(rnd: random.Random, lines: int) -> bytes:
    words = [b"news", b"Link:", b"https://x.example/u/Ab9", b"=3D", b".dot", b"..", b"."]
    return b"".join(b" ".join(rnd.choice(words) for _ in range(rnd.randint(1, 6))) + b"\r\n"
                    for _ in range(lines))


def _check(signer: DkimSigner, data: bytes, original: bytes) -> Copy:
    out = signer(Copy(data), Recipient(ENVELOPE, "ann@example.org", Policy.REFUSED, original))
    assert out.crlf
    if out.dots is not None:
        assert out.dots == _dots(out.data)
    assert wire_data(out.data, out.crlf, out.dots) == wire_data(out.data)
    return out


_SNIPPETS = st.sampled_from([b"a", b".", b"..", b"\r\n.", b"\r\n..", b".\r\n", b"\r\n",
                             b"\r", b"\n", b" ", b"  ", b"\t", b"\r\n\r\n", b"\r\r\n"])
_EDITS = st.lists(st.tuples(st.floats(0, 1), st.integers(0, 12),
                            st.lists(_SNIPPETS, max_size=4).map(b"".join)),
                  min_size=0, max_size=4)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lines=st.integers(0, 120),
       head=st.sampled_from(HEADS), copies=st.lists(st.tuples(_EDITS, _EDITS), min_size=2,
                                                    max_size=5))
def test_every_copys_periods_are_exactly_its_line_starts(
        seed: int, lines: int, head: bytes,
        copies: list[tuple[list[tuple[float, int, bytes]], list[tuple[float, int, bytes]]]]
        ) -> None:
    """Further copies of one message with random edits to the header and the body: the
    periods given are the signed copy's, as a signer that remembers nothing gives them
    too (and the signed bytes are that signer's)."""
    base = _text(random.Random(seed), lines)
    fast, whole, original = _signer(), _signer(cache=0), head + base
    for head_edits, body_edits in copies:
        data = _edit(head, head_edits) + _edit(base, body_edits)
        out = _check(fast, data, original)
        again = _check(whole, data, original)
        assert out.data == again.data
        if out.dots is not None and again.dots is not None:
            assert out.dots == again.dots


def test_a_footer_change_carries_the_periods() -> None:
    """The relay's case: further copies differ in a link; their periods are carried
    (not left to the courier), moved by the change in length, and exact."""
    rnd = random.Random(7)
    base = _text(rnd, 300)
    early = base.index(b"\r\n", 2000) + 2
    signer, original = _signer(), HEADS[0] + base
    for k in range(4):
        link = b"https://p.example/u/" + b"T" * (k + 1) + b"\r\n.after the link\r\n"
        out = _check(signer, HEADS[0] + base[:early] + link + base[early:], original)
        assert out.dots is not None and len(out.dots) > 10


def test_many_periods_are_left_to_the_courier() -> None:
    signer, body = _signer(), b".\r\n" * (MAX_DOTS + 1)
    for k in range(2):
        out = _check(signer, HEADS[0] + body + b"x" * k + b"\r\n", HEADS[0] + body)
        assert out.dots is None
