"""Round 4's shortcuts under an adversarial sender, through the relay's whole copy chain
(branch wt-attack3).

The sender writes a campaign minified into long lines (so ``rescan.cut_of`` cuts it at
each ``>``) and fills its personalisation slots, per message, with whatever may make a
copy differ from its template where the cut, a quoted value, a comment, a conditional
comment, raw text, ``<style>``, CDATA or a hiding element would make a rescan read it
otherwise: quotes, ``-->``, ``<!--``, ``<![endif]``, ``</style``, ``]]>``, the
recipient's address (as given, upper case, percent-encoded, base64), a tracker token.
Each message goes to one to three recipients, refused and granted, who differ only in
letter case, IDN spelling or a quoted local part.  The *shortcut* chain (the relay's:
scan templates and rescans, known analyses and rebases, shared refused copies, granted
footers derived from the first granted copy of the same shape, line-end proofs) must
send every copy byte for byte as the *fresh* chain does (no cache anywhere:
``Engine(templates=0)``, ``Footer(cache=0)``, the courier's whole pass); see
``test_shortcuts_differential.py`` for the chains.  And in a refused precise copy the
oracle (html5lib, lxml) finds no URL the cold engine neutralises for that recipient
(tracker by rules, size or hiding; naming the recipient) loaded more often than the cold
engine keeps it (a load the scanner does not see at all is its own limit, held to the
oracle by ``test_oracle.py``, not a shortcut's).

``ATTACK3_FUZZ`` examples (default 6); e.g. ``ATTACK3_FUZZ=300`` for a soak.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import os
import quopri
import tempfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beacon_proxy import tokens as tokens_module
from beacon_proxy.consent.policy import Policy
from beacon_proxy.consent.store import open_store
from beacon_proxy.deliver.smtp import wire_data
from beacon_proxy.rewrite.engine import Action, Engine
from beacon_proxy.rewrite.html import scan_entries
from beacon_proxy.rewrite.rescan import ScanCache, cut_of
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.spool.envelope import Envelope
from tests.rewrite import oracle
from tests.rewrite.hostile import TRACKER_HOST
from tests.rewrite.test_shortcuts_differential import NOW, _chain, _Tap

COUNT = int(os.environ.get("ATTACK3_FUZZ", "6"))
RULES = load_rules()
NAMED = "reader@example.org"
#: Envelope spellings of one mailbox and of an IDN one (what the identity check must
#: tell apart, or find in each other's URLs), and an address no URL names.
RECIPIENTS = [NAMED, "Reader@Example.ORG", '"reader"@example.org', "ann@b\u00fccher.example",
              "ann@xn--bcher-kva.example", "bob@example.net"]
PIXEL = f'<img src="https://{TRACKER_HOST}/o.gif?u=SLOT" width="1" height="1" alt="">'
NAMED_IMAGE = '<img src="https://img.shop.example/p/WHO/hero.jpg" width="600" height="300">'
PAD = "<tr><td class=c>Lorem ipsum dolor sit amet</td></tr>"
#: The template's chunks: markup whose reading reaches across constructs.
CHUNKS = [
    PAD, PAD + PAD, PIXEL, NAMED_IMAGE, "<p>Hi SLOT</p>", "<div title='SLOT'>x</div>",
    '<a href="https://l.shop.example/c?u=SLOT">SLOT</a>', '<div style="display:none">',
    "</div>", "<!--SLOT-->", "<!--[if mso]>", "<![endif]-->", "<!--[if !mso]><!-->",
    "<!--<![endif]-->", "<style>.a{color:red}SLOT</style>", "<script>SLOT</script>",
    "<title>SLOT</title>", "<![CDATA[SLOT]]>", "<textarea>SLOT</textarea>",
    '<td background="https://q.shop.example/r.png">', "<table>", "</table>",
    "<p style=\"background:url('https://b.shop.example/SLOT.png')\">x</p>",
    '<picture><source srcset="https://s.shop.example/1.png"><img src="a.png"></picture>',
    "<?x SLOT?>", "<!x SLOT>", "SLOT",
]
#: What a slot holds in one message: no ">" (a copy keeps its number of lines), mostly.
FILLS = [
    "", "Ann", "'", '"', "-->", "<!--", "<![endif]", "<!--[if mso]", "</style", "</script",
    "]]", "--!", "&quot;", "&#39;", "\\", "display:none", "url(https://x.shop.example/y)",
    "WHO", "WHO_UPPER", "WHO_ENCODED", "WHO_B64", "12345", "<img", "<!", "=", " ", ">",
    "<!-->", '">', "'>",
]

Message = tuple[int, tuple[str, ...], int, tuple[tuple[str, bool], ...]]
Campaign = tuple[tuple[str, ...], tuple[Message, ...]]


def _fill(value: str, who: str) -> str:
    return (value.replace("WHO_UPPER", who.upper())
            .replace("WHO_ENCODED", who.replace("@", "%40"))
            .replace("WHO_B64", base64.b64encode(who.encode()).decode())
            .replace("WHO", who))


def _html(chunks: tuple[str, ...], fills: tuple[str, ...], who: str) -> bytes:
    out, k = [], 0
    for chunk in chunks:
        while "SLOT" in chunk:
            chunk = chunk.replace("SLOT", _fill(fills[k % len(fills)], who), 1)
            k += 1
        out.append(chunk.replace("WHO", who))
    html = ("<html><body><table>" + "".join(out) + "</table></body></html>").encode()
    while cut_of(html)[0] != b">":  # minified: long lines, cut at each ">"
        html = html.replace(b"<table>", b"<table>" + PAD.encode() * 8, 1)
    return html


def _message(html: bytes, n: int, cte: int) -> bytes:
    head = (f"From: News <news@shop.example>\r\nTo: r{n}@example.org\r\n"
            f"Subject: Offers\r\nMessage-ID: <m{n}@shop.example>\r\n"
            "List-Id: Shop news <news.shop.example>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/html; charset=utf-8\r\n").encode()
    if cte == 0:
        body = quopri.encodestring(html).replace(b"\n", b"\r\n")
        return head + b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body
    if cte == 1:
        return head + b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(
            html).replace(b"\n", b"\r\n")
    return head + b"Content-Transfer-Encoding: 8bit\r\n\r\n" + html + b"\r\n"


def _html_parts(data: bytes) -> list[str]:
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    out = []
    for part in msg.walk():
        if part.get_content_type() == "text/html":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                out.append(payload.decode("utf-8", "replace"))
    return out


def _leaks(sent: bytes, original: bytes, recipient: str) -> list[str]:
    """Loads of a refused copy that the oracle finds more often than the cold engine keeps
    that URL for this recipient, among the URLs it neutralises (trackers by rules, size
    or hiding, URLs naming the recipient).  (A load the scanner does not see at all is
    its own limit, held to the oracle by ``test_oracle.py``; an unsized image on an
    unknown host is kept by design.)"""
    engine = Engine(RULES, templates=0)
    items = engine.items(engine.analyse(original), recipient, Policy.REFUSED)
    kept = Counter(item.reference.url for item in items
                   if item.reference.remote and item.action is Action.KEEP)
    gone = {item.reference.url for item in items
            if item.reference.remote and item.action is not Action.KEEP}
    out = []
    for html in _html_parts(sent):
        for parser in oracle.PARSERS:
            loaded = Counter(load.url for load in oracle.loads(html, parser))
            out += [url for url, count in loaded.items() if url in gone and count > kept[url]]
    return out


async def _sends(shortcut: bool, campaign: Campaign, where: Path) -> list[object]:
    chunks, messages = campaign
    out: list[object] = []
    tap = _Tap()
    async with open_store(f"sqlite:///{where / ('s' if shortcut else 'f')}.db") as store:
        step = _chain(shortcut, store, tap, False)
        for n, (cte, fills, who, rcpts) in enumerate(messages):
            data = _message(_html(chunks, fills, RECIPIENTS[who]), n, cte)
            env = Envelope(f"Q{n}", "news@shop.example", tuple(r for r, _ in rcpts),
                           list_id="news.shop.example", received_at=NOW)
            message = await step.prepare(env, data)
            out.append(message.campaign)
            for rcpt, granted in rcpts:
                copy = message.render(rcpt, Policy.GRANTED if granted else Policy.REFUSED)
                sent = (wire_data(copy.data, copy.crlf, copy.dots) if shortcut
                        else wire_data(copy.data))
                if shortcut and not granted and copy.data is not None and copy.held is None \
                        and "neutralised" not in copy.report:
                    assert not _leaks(copy.data, data, rcpt), (n, rcpt, data)
                out.append((sent, copy.held, sorted(copy.report.items(), key=str)))
    return [*out, tap.seen]


_RCPTS = st.lists(st.tuples(st.sampled_from(RECIPIENTS), st.booleans()), min_size=1,
                  max_size=3, unique_by=lambda r: r[0]).map(tuple)
_MESSAGES = st.lists(st.tuples(st.integers(0, 2), st.lists(st.sampled_from(FILLS), min_size=1,
                                                           max_size=6).map(tuple),
                               st.integers(0, len(RECIPIENTS) - 1), _RCPTS),
                     min_size=2, max_size=6).map(tuple)
_CAMPAIGNS = st.tuples(st.lists(st.sampled_from(CHUNKS), min_size=3, max_size=24).map(tuple),
                       _MESSAGES)


@settings(max_examples=COUNT, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_CAMPAIGNS)
def test_a_minified_campaign_with_hostile_slots_sends_what_the_fresh_chain_sends(
        campaign: Campaign) -> None:
    clock = SimpleNamespace(time=lambda: NOW)  # open tokens carry their minting second
    with mock.patch.object(tokens_module, "time", clock), \
            tempfile.TemporaryDirectory() as tmp:
        shortcut = asyncio.run(_sends(True, campaign, Path(tmp)))
        fresh = asyncio.run(_sends(False, campaign, Path(tmp)))
    for n, (mine, theirs) in enumerate(zip(shortcut, fresh, strict=True)):
        assert mine == theirs, (n, campaign)


def test_the_campaign_s_copies_are_rescanned() -> None:
    """The strategy reaches the rescan: copies of one template with its slots changed
    (a quote past the template's last one is scanned in full, by design)."""
    chunks = (PAD, PIXEL, "<p>Hi SLOT</p>", NAMED_IMAGE, "<!--SLOT-->", PAD)
    cache = ScanCache()
    scan_entries(_html(chunks, ("Ann",), NAMED), learner=cache)
    for fill in ("Bob", "--", "<!--", "</style", "<![endif]", "WHO_B64"):
        assert cache.rescan(_html(chunks, (fill,), NAMED), "utf-8", 200_000) is not None, fill
    assert cache.rescan(_html(chunks, ("'",), NAMED), "utf-8", 200_000) is None
