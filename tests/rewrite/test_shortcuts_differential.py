"""Round 3's proof-based shortcuts against the fresh path, through the relay's whole
copy chain: what reaches the upstream's DATA must be byte for byte the same.

The *shortcut* chain is the relay's: the known-analyses cache with ``Engine.rebase``
(a known body under another header) and the shared refused copy of a derived analysis
(``engine._rebased_refused``), campaign diffing with the loaded references kept per
analysis (``campaign.loads``/``Analysis.shared``), the footer with kept, rebased
(``footerplan.rebase_plan``) and slotted plans (``transfer.qp_slotted``), the
unsubscribe and trace headers, then ``lineends.CrlfProof`` (line ends and line-start
periods proven from the last copy), its ``crlf``/``dots`` handed to
``deliver.smtp.wire_data``.  The *fresh* chain has no cache anywhere (``Engine``
without templates, no analysis cache, ``Footer(cache=0)``, no ``CrlfProof``) and the
courier's whole-copy pass (``wire_data`` without a proof).  The copies are compared
before the line-end step too, and once more with DKIM on (the signer's own proof, with
and without its remembered copies).

Messages are personalised newsletters (the ``To`` and ``Message-ID`` change per
message), under the header fuzzer's mutations (Content-* variants, folds, duplicates,
LF/CRLF, noise), with bodies that carry what the shortcuts must not get wrong: lines
starting with a period, ``\\r\\n.\\r\\n`` inside a body, bare CR and LF, a beacon URL
that differs from the last message's only in its token, UTF-16, ISO-2022-JP, a text
part without a line break, several recipients per message (further copies), refused
and granted, named in a URL or not.  Refused copies are also held to the oracle:
no trace of the tracker's host in any way a client could decode them.

``SHORTCUT_FUZZ`` (default 12) examples; e.g. ``SHORTCUT_FUZZ=2000`` for a soak.
"""

from __future__ import annotations

import asyncio
import base64
import os
import quopri
import random
import tempfile
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beacon_proxy import tokens as tokens_module
from beacon_proxy.consent.policy import Policy
from beacon_proxy.consent.store import open_store
from beacon_proxy.deliver.smtp import wire_data
from beacon_proxy.rewrite.beacons import BeaconStep, inline_analyse
from beacon_proxy.rewrite.diffing import CampaignDiffing
from beacon_proxy.rewrite.dkim import DkimSigner, SigningKey
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.footer import Footer
from beacon_proxy.rewrite.known import AnalysisCache, body_start
from beacon_proxy.rewrite.lineends import CrlfProof
from beacon_proxy.rewrite.links import PreferenceLinks
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import Copy, CopyStep, ListMailOnly, Recipient, TraceHeader
from beacon_proxy.rewrite.unsubscribe import UnsubscribeHeaders
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens
from tests.rewrite import hostile
from tests.rewrite.hostile import TRACKER_HOST, tracker_traces
from tests.rewrite.test_known_header_fuzz import _mutate, newsletter

COUNT = int(os.environ.get("SHORTCUT_FUZZ", "12"))
NOW = 1_800_000_000.0
SECRET = ["a test secret of some length"]
PIXEL = f"https://{TRACKER_HOST}/o.gif?u=5f3a9"
NAMED = "reader@example.org"  # an image URL of the plant names this address
HEAD = ("From: News <news@shop.example>\r\nTo: reader@example.org\r\n"
        "Subject: Autumn offers\r\nMessage-ID: <h1@shop.example>\r\n"
        "List-Id: Shop news <news.shop.example>\r\nMIME-Version: 1.0\r\n")
PLANT = (f'<img src="{PIXEL}" width="1" height="1" alt="">'
         f'<img src="https://img.shop.example/p/{NAMED}/hero.jpg" alt="Hi">'
         '<div style="background:url(https://cdn.shop.example/bg.png)">x</div>')
#: HTML whose lines start with periods, hold an SMTP end of data, and run long
DOTTY = ("<html><body>\n.\n.. two\n.hidden { color: red }\n<p>a\r\n.\r\nb</p>\n"
         f"<p>{'x' * 90}.</p>\n.{PLANT}\n<p>See you.</p>\n</body></html>\n")


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def _bases() -> list[bytes]:
    """Messages (header, blank line, body) whose bodies the shortcuts reuse."""
    html = DOTTY.encode()
    qp = quopri.encodestring(html.replace(b"\n", b"\r\n"))
    b64 = base64.encodebytes(html).replace(b"\n", b"\r\n")
    head = HEAD.encode()
    return [
        newsletter(products=6),
        head + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html,  # LF body, CRLF head
        head + b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp,
        head + b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
        b"--b1\r\nContent-Type: text/plain\r\n\r\n.\r\n..\r\nHello\r\n"
        b"--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp + b"\r\n--b1--\r\n",
        head + b"Content-Type: multipart/mixed; boundary=m\r\n\r\n.preamble\r\n"
        b"--m\r\nContent-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--m\r\n"
        b"Content-Type: text/plain\r\n\r\n.\r\n--m--\r\n",
        head + b"Content-Type: text/plain\r\n\r\nHello, no line break",
        head + b'Content-Type: multipart/alternative; boundary="b2"\r\n\r\n'
        b"--b2\r\nContent-Type: text/plain\n\nNo break\r\n--b2\r\n"
        b"Content-Type: text/html\r\n\r\n<p>x</p>" + PLANT.encode() + b"\r\n--b2--\r\n",
        hostile.charset_message("utf-16", (hostile.PAGE + "\n.\n").encode("utf-16")),
        hostile.charset_message("utf-16", hostile.PAGE.encode("utf-16-le"), "8bit"),
        head + b"Content-Language: ja\r\nContent-Type: text/plain; charset=iso-2022-jp\r\n"
        b"\r\n" + "\u3053\u3093\u306b\u3061\u306f\r\n.\r\n".encode("iso-2022-jp"),
        _crlf(HEAD + "Content-Type: text/html\n\n" + DOTTY).replace(b"\r\n.\r\n", b"\r\n.\r"),
        hostile.lf_only(), hostile.missing_close(), hostile.forwarded(),
        # a UTF-16 HTML part below the root, re-encoded whole (its own header's line end)
        head + b'Content-Type: multipart/alternative; boundary="u"\r\n\r\n--u\n'
        b"Content-Type: text/html; charset=utf-16\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes((hostile.PAGE + "\n.\n").encode("utf-16")) + b"--u--\n",
    ]


BASES = _bases()
_EDITS = [b"\r\n.\r\n", b"\n.\n", b"\r.\r", b"\r", b"\n", b".", b"\r\n..\r\n", b"\r\n.",
          b".\r\n", b"\x00", b"\r\n\r\n", b" ", b"\t"]


def _message(base: bytes, n: int, seed: int, shape: int) -> bytes:
    """Message ``n`` of a personalised run over ``base``: its own To and Message-ID, and
    by ``shape``: a mutated header, a beacon token of its own, a body edit, (8) not
    personalised (equal bytes to an earlier message: the copies share one original),
    (16) the header's line ends switched."""
    rng = random.Random(seed)
    split = body_start(base) or len(base)
    head, body = base[:split], base[split:]
    if not shape & 8:  # else the same bytes as every such message: one shared original
        head = head.replace(b"To: reader@", b"To: r%d@" % n).replace(b"<h1@", b"<h%d@" % n)
    if shape & 1:
        head = _mutate(head, rng)
    if shape & 16:  # the header's line ends switched, CRLF and LF (the body's stay)
        crlf = head.count(b"\r\n") * 2 > head.count(b"\n")
        head = head.replace(b"\r\n", b"\n") if crlf else head.replace(b"\n", b"\r\n")
    if shape & 2:  # differs from the last message in its beacon URL only
        body = body.replace(b"u=5f3a9", b"u=%05d" % (n * 7919 % 100_000))
    if shape & 4 and body:  # a line end, a period, NUL or blank put anywhere
        at = rng.randrange(len(body) + 1)
        body = body[:at] + rng.choice(_EDITS) + body[at:]
    return head + body


class _Tap:
    """A copy step that keeps each copy's bytes as they are before the line-end step
    (which makes every copy CRLF, and so would hide a difference in line ends only)."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def __call__(self, copy: Copy, recipient: Recipient) -> Copy:
        self.seen.append(copy.data)
        return copy


#: The relay's key for the DKIM runs (Ed25519 signatures are deterministic: the chains
#: sign the same bytes alike)
DKIM_KEY = SigningKey("shop.example", "ed1", ed25519.Ed25519PrivateKey.generate())


def _chain(shortcut: bool, store: object, tap: _Tap, dkim: bool) -> BeaconStep:
    tokens = Tokens(SECRET)
    links = PreferenceLinks(tokens, "https://prefs.example", forward=False)
    steps: list[CopyStep] = [
        ListMailOnly(Footer(links, cache=4 if shortcut else 0)),
        ListMailOnly(UnsubscribeHeaders(links)), TraceHeader("relay.example"), tap]
    if dkim:  # the signer proves the line ends (Copy.crlf) from its remembered copies
        steps.append(DkimSigner([DKIM_KEY], clock=lambda: NOW, cache=4 if shortcut else 0))
    elif shortcut:
        steps.append(CrlfProof())
    engine = Engine(load_rules()) if shortcut else Engine(load_rules(), templates=0)
    return BeaconStep(engine, tokens, public_url="https://prefs.example",
                      hostname="relay.example", analyse=inline_analyse(engine), steps=steps,
                      campaigns=CampaignDiffing(store, hold=30, clock=lambda: NOW),  # type: ignore[arg-type]
                      cache=AnalysisCache(engine.fingerprint) if shortcut else None)


Run = list[tuple[int, int, int, tuple[tuple[str, bool], ...]]]


async def _sends(shortcut: bool, run: Run, where: Path, dkim: bool = False) -> list[object]:
    """What each copy of each message of ``run`` sends: (DATA section, held, report), and
    the bytes each copy had before the line-end proof."""
    out: list[object] = []
    tap = _Tap()
    async with open_store(f"sqlite:///{where / ('s' if shortcut else 'f')}.db") as store:
        step = _chain(shortcut, store, tap, dkim)
        for n, (base, seed, shape, rcpts) in enumerate(run):
            data = _message(BASES[base], n, seed, shape)
            env = Envelope(f"Q{n}", "news@shop.example", tuple(r for r, _ in rcpts),
                           list_id="news.shop.example", received_at=NOW)
            message = await step.prepare(env, data)
            out.append(message.campaign)
            for rcpt, granted in rcpts:
                policy = Policy.GRANTED if granted else Policy.REFUSED
                copy = message.render(rcpt, policy)
                sent = (wire_data(copy.data, copy.crlf, copy.dots) if shortcut
                        else wire_data(copy.data))
                if copy.held is None and not granted and not shape & 5 \
                        and "neutralised" not in copy.report:
                    # the oracle, for a precise copy of a well-formed message (a fallback's
                    # neutralised attributes keep the URL as text, and a mangled message
                    # may hold it as plain text): nothing of the pixel left
                    assert not tracker_traces(copy.data), (shortcut, n, rcpt, data)
                out.append((sent, copy.held, sorted(copy.report.items(), key=str)))
    return [*out, tap.seen]


_RCPTS = st.lists(st.tuples(st.sampled_from([NAMED, "ann@example.net", "bob@example.net",
                                             "r1@example.org"]), st.booleans()),
                  min_size=1, max_size=3, unique_by=lambda r: r[0])
_RUNS = st.lists(st.tuples(st.booleans(), st.integers(0, 2**32), st.integers(0, 31),
                           _RCPTS.map(tuple)), min_size=2, max_size=8)


@settings(max_examples=COUNT, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.integers(0, len(BASES) - 1), st.integers(0, len(BASES) - 1), _RUNS)
def test_the_shortcut_chain_sends_what_the_fresh_chain_sends(
        first: int, second: int, messages: list[tuple[bool, int, int, tuple[tuple[str, bool], ...]]]
) -> None:
    """Each run interleaves personalised messages over two bases (the first two over one,
    so the second is rebased); every copy's DATA section, hold and report as the fresh
    chain's."""
    run: Run = [(first, 1, 0, ((NAMED, False), ("ann@example.net", False))),
                (first, 2, 0, (("bob@example.net", False), ("ann@example.net", True)))]
    run += [(second if other else first, seed, shape, rcpts)
            for other, seed, shape, rcpts in messages]
    assert _same(run)


@pytest.mark.parametrize("base", range(len(BASES)))
def test_every_base_rebased_under_another_header_and_its_line_ends_switched(base: int) -> None:
    """The first message (two refused recipients: the origin's shared refused copy made),
    then the same body personalised, its header's line ends switched (CRLF and LF), then
    mutated: each copy as the fresh chain's (the relay's own SMTP line-end conversion
    would hide a difference in line ends only: the copies before it are compared too)."""
    assert _same([(base, 1, 0, ((NAMED, False), ("ann@example.net", False))),
                  (base, 2, 0, (("bob@example.net", False), ("ann@example.net", True))),
                  (base, 3, 16, (("ann@example.net", False), ("bob@example.net", False))),
                  (base, 4, 17, (("ann@example.net", False), (NAMED, True))),
                  (base, 5, 24, (("r1@example.org", False), ("ann@example.net", False)))])


@settings(max_examples=max(COUNT // 2, 1), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.integers(0, len(BASES) - 1), st.integers(0, len(BASES) - 1), _RUNS)
def test_with_dkim_the_shortcut_chain_sends_what_the_fresh_chain_sends(
        first: int, second: int, messages: list[tuple[bool, int, int, tuple[tuple[str, bool], ...]]]
) -> None:
    """The same with DKIM on: the signer's own proof of the line ends (a further copy
    checked against the last one of the same ``original``, shared by messages of equal
    bytes) instead of ``CrlfProof``; the fresh signer remembers nothing."""
    run: Run = [(first, 1, 0, ((NAMED, False), ("ann@example.net", False))),
                (first, 2, 8, (("bob@example.net", False), ("ann@example.net", True)))]
    run += [(second if other else first, seed, shape, rcpts)
            for other, seed, shape, rcpts in messages]
    assert _same(run, dkim=True)


def _same(run: Run, dkim: bool = False) -> bool:
    clock = SimpleNamespace(time=lambda: NOW)  # open tokens carry their minting second
    with mock.patch.object(tokens_module, "time", clock), \
            tempfile.TemporaryDirectory() as tmp:
        shortcut = asyncio.run(_sends(True, run, Path(tmp), dkim))
        fresh = asyncio.run(_sends(False, run, Path(tmp), dkim))
    for n, (mine, theirs) in enumerate(zip(shortcut, fresh, strict=True)):
        assert mine == theirs, (n, run)
    return True


def test_periods_the_footer_link_puts_at_a_line_start_are_stuffed_on_further_copies() -> None:
    """The slotted footer re-encodes only the link's quoted-printable line per copy; with
    links of every length, full of periods, a soft line break lands before a period at
    every offset: a line-start period that the message's first copy did not have, in a
    stretch ``CrlfProof`` does not search whole.  Every copy's DATA section is the one
    the courier's whole pass makes; no line ``.`` before the end."""
    qp_text = b"Hello=\r\n.there\r\n" + b"y" * 60 + b"\r\n"
    messages = [
        b"Subject: a\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: "
        b"quoted-printable\r\n\r\n" + qp_text,
        b"Subject: b\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: "
        b"quoted-printable\r\n\r\n<p>" + qp_text + b"</p></body>\r\n",
    ]
    footer, proof = Footer(lambda r: f"https://x.example/{r.address.split('@')[0]}"), CrlfProof()
    stuffed_later = 0
    for data in messages:
        for k in range(1, 90):  # each recipient's link is k characters longer
            rcpt = Recipient(Envelope("Q1", "a@x.example", ("b@y.example",)),
                             "a." * k + "@y.example", Policy.REFUSED, data)
            copy = proof(footer(Copy(data), rcpt), rcpt)
            assert copy.crlf
            sent = wire_data(copy.data, copy.crlf, copy.dots)
            assert sent == wire_data(copy.data), k
            assert sent.find(b"\r\n.\r\n") == len(sent) - 5  # only the terminator
            stuffed_later += k > 1 and any(
                dot > len(data) - len(qp_text) + 20 for dot in copy.dots or ())
    assert stuffed_later > 10  # the attack reached the mapped-and-searched path
