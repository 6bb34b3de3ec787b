"""A differential fuzzer for Engine.rebase (rewrite/known.py, source="header"): a known
body under a mutated header is either analysed again or renders every copy - refused and
granted, named and unnamed recipients, with and without campaign diffing's findings -
byte for byte as a fresh analysis of the new bytes does.  The same for the footer's
``rebase_plan`` (rewrite/footerplan.py): a rebased plan equals a fresh ``plan_footer``
of the new bytes and applies to the same copy, byte for byte, report and all.

The bodies are the real templates (``shared/data/templates``) and the benchmark's
newsletter, in several MIME shapes; the headers are mutated the way a lenient client
reads them differently (Content-* variants, RFC 2231 sections, comments, folds,
duplicates, encoded-words, NUL and 8-bit bytes, a line without a colon, an mbox line,
LF against CRLF, huge fields, remote bases...).  Seeded and bounded: ``REBASE_FUZZ``
(default 240) mutated messages in all; a bigger count for a soak, e.g.
``REBASE_FUZZ=20000``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import pickle
import quopri
import random
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from beacon_proxy import tokens
from beacon_proxy.consent.policy import Policy
from beacon_proxy.consent.store import open_store
from beacon_proxy.rewrite.diffing import CampaignDiffing
from beacon_proxy.rewrite.engine import Analysis, Engine
from beacon_proxy.rewrite.footer import Footer
from beacon_proxy.rewrite.footerplan import FooterPlan, plan_footer, rebase_plan
from beacon_proxy.rewrite.footertext import FooterTexts
from beacon_proxy.rewrite.known import AnalysisCache, body_start, cached
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import Copy, Recipient
from tests.rewrite import hostile
from tests.rewrite.hostile import TRACKER_HOST
from tests.rewrite.test_known import Counting, _env, _step
from tests.rewrite.test_known_header import _renders
from tests.rewrite.test_oracle import TEMPLATE_FILES
from tests.rewrite.test_pool import NEWSLETTER

ENGINE = Engine(load_rules())
FRESH = Engine(load_rules(), templates=0)  # no scan cache: nothing remembered between messages


def newsletter(products: int) -> bytes:
    """bench/newsletter.py's newsletter (LF line ends, quoted-printable parts)."""
    return bytes(NEWSLETTER.newsletter(products=products))


COUNT = int(os.environ.get("REBASE_FUZZ", "240"))
TEXTS = FooterTexts.load()
PREFS = "https://prefs.example.com/u/T0k3n?a=1&b=2"

# what makes a refused copy differ: a planted pixel and an image naming the recipient
_PLANT = (f'<img src="https://{TRACKER_HOST}/o.gif?u=5f3a9" width="1" height="1" alt="">'
          '<img src="https://img.shop.example/p/reader@example.org/hero.jpg" alt="Hi">'
          '<div style="background:url(https://cdn.shop.example/bg.png)">x</div>')

HEAD = ("From: News <news@shop.example>\r\nTo: reader@example.org\r\n"
        "Subject: Autumn offers\r\nMessage-ID: <h1@shop.example>\r\n"
        "List-Id: Shop news <news.shop.example>\r\nMIME-Version: 1.0\r\n")


def _html(text: str) -> str:
    low = text.lower()
    at = low.rfind("</body>")
    return text[:at] + _PLANT + text[at:] if at >= 0 else text + _PLANT


def _shapes(html: str) -> list[bytes]:
    raw = _html(html).replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
    qp = quopri.encodestring(raw).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    b64 = base64.encodebytes(raw).replace(b"\n", b"\r\n")
    head = HEAD.encode()
    single = head + b"Content-Type: text/html; charset=utf-8\r\n\r\n" + raw + b"\r\n"
    alternative = (head + b'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
                   b"--b1\r\nContent-Type: text/plain\r\n\r\nAutumn offers\r\n"
                   b"--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
                   b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp +
                   b"\r\n--b1--\r\n")
    mixed = (head + b"Content-Type: multipart/mixed; boundary=m\r\n\r\npreamble\r\n"
             b"--m\r\nContent-Type: text/html; charset=utf-8\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--m--\r\n")
    single_qp = (head + b"Content-Type: text/html; charset=utf-8\r\n"
                 b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp)
    lf = alternative.replace(b"\r\n", b"\n")
    return [single, alternative, mixed, single_qp, lf]


def _bases() -> list[bytes]:
    """The newsletter, the hostile messages (signed, forwarded, broken, at the limits,
    unmodelled, other charsets), then each template in each shape."""
    out = [newsletter(products=20), hostile.lf_only(), hostile.missing_close(),
           hostile.smime_signed(), hostile.forwarded(), hostile.sloppy_base64_no_mime_version(),
           hostile.svg_foreign_content(), hostile.select_raw_text(), hostile.deep_nesting(),
           hostile.many_parts(1100),
           hostile.charset_message("utf-16", hostile.PAGE.encode("utf-16")),
           hostile.charset_message("iso-8859-1", hostile.PAGE.encode(), "quoted-printable")]
    for path in TEMPLATE_FILES:
        out += _shapes(path.read_text("utf-8", "replace"))
    return out


# -- header mutations -----------------------------------------------------------------------

_TYPES = [
    b"Content-Type: text/html; charset=utf-8", b"Content-Type: text/plain",
    b"Content-Type: text/html", b"Content-Type: TEXT/HTML; CHARSET=UTF-8",
    b"Content-Type: text/html (c); charset=utf-8", b"Content-Type: text / html",
    b"Content-Type: text/html charset=utf-8", b"Content-Type: text/html;charset*=utf-8''utf-8",
    b"Content-Type: text/html; charset*0=utf; charset*1=-8",
    b"Content-Type: text/html; charset=\"utf-8\"; charset=utf-8",
    b"Content-Type: text/html; charset=iso-8859-1", b"Content-Type: text/html; charset=utf-16",
    b"Content-Type: text/html; charset=utf-7", b"Content-Type: text/html; charset=x-unknown",
    b"Content-Type: text/x-amp-html; charset=utf-8", b"Content-Type: application/xhtml+xml",
    b"Content-Type: multipart/alternative; boundary=\"b1\"",
    b"Content-Type: multipart/alternative; boundary=\"b1\"; boundary=b1",
    b"Content-Type: multipart/alternative; boundary*0=b; boundary*1=1",
    b"Content-Type: multipart/alternative; boundary=\"b1 \"",
    b"Content-Type: multipart/mixed; boundary=m", b"Content-Type: multipart/mixed; boundary=\"m\"",
    b"Content-Type: multipart/signed; boundary=b1; protocol=x",
    b"Content-Type: multipart/digest; boundary=b1", b"Content-Type: message/rfc822",
    b"Content-Type: multipart/alternative;\r\n boundary=\"----=_Part_8f3b21_1746.1715000000000\"",
    b"Content-Type: multipart/alternative; boundary=\"----=_Part_8f3b21_1746.1715000000000\"",
    b"Content-Type: multipart/alternative; boundary=----=_Part_8f3b21_1746.1715000000000",
    b"Content-Type:", b"Content-Type: ;charset=utf-8", b"Content-type :text/html",
]
_OTHERS = [
    b"Content-Transfer-Encoding: quoted-printable", b"Content-Transfer-Encoding: base64",
    b"Content-Transfer-Encoding: 7BIT", b"Content-Transfer-Encoding: 8bit (c)",
    b"Content-Transfer-Encoding: binary", b"Content-Transfer-Encoding: x-uuencode",
    b"Content-Transfer-Encoding:  Quoted-Printable ", b"Content-Transfer-Encoding: (c) base64",
    b"MIME-Version: 1.0", b"MIME-Version: 2.0", b"MIME-Version: 1.0 (produced by x)",
    b"Content-Disposition: attachment; filename=a.html", b"Content-Disposition: inline",
    b"Content-Base: https://evil.example/", b"Content-Base: \"https://evil.example/\"",
    b"Content-Location: https://evil.example/x.html", b"Content-Location: cid:a@b",
    b"Content-Location: x.html", b"Content-Base:\r\n https://evil.example/",
    b"Content-Base: h\r\n ttps://evil.example/", b"CONTENT-LOCATION:HTTPS://EVIL.EXAMPLE/",
    b"Content-Location: //evil.example/", b"Content-Base : https://evil.example/",
    b"Content-ID: <a@b>", b"Content-Language: de", b"Content-Language: ar, he",
    b"Content-Language: ja", b"Content-Language: JA-jp, en", b"Content-Language:\r\n ja",
    b"Content-Language: e n", b"Content-Language: en", b"Content-Language: \xe9",
    b"Content-Type: text/plain; charset=iso-2022-jp", b"Content-Type: text/plain; charset=utf-16",
    b"Content-Type: text/plain; charset=shift_jis", b"Content-Type: text/html; charset=hz-gb-2312",
    b"Content-Description: =?utf-8?b?PGltZyBzcmM9eD4=?=",
    b"Subject: =?UTF-8?Q?Spring_Sale_=E2=80=93?=", b"List-Id: <other.list.example>",
    b"List-Id: a b c", b"List-Unsubscribe: <https://u.example/x>",
    b"X-Nul: a\x00b", b"X-8bit: \xe9\xff\xfe", b"X-Bare: a\rb", b"X-Ws:    ",
    b"X-Html: <img src=\"https://" + TRACKER_HOST.encode() + b"/h.gif\">",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=shop.example; s=s; bh=x; b=y",
    b"Received: from x by y; Mon, 1 Dec 2026 10:00:00 +0000",
    b"X-Long: " + b"x" * 1200, b"X-Huge: " + b"y" * 9000,
    b"Content-Foo: bar", b"Content-: x", b"content-type\t: text/html",
]


_NOISE = b"\r\n\t :-;=\x00\xff\"()\\a*'%"


def _eol(head: bytes) -> bytes:
    return b"\r\n" if head.endswith(b"\r\n\r\n") or head == b"\r\n" else b"\n"


def _lines(head: bytes) -> tuple[list[bytes], bytes]:
    eol = _eol(head)
    body = head[: -len(eol)]  # the blank line
    return (body[: -len(eol)].split(eol) if body else []), eol


def _mutate(head: bytes, rng: random.Random) -> bytes:
    """One to three changes to a header block (ending with its blank line)."""
    lines, eol = _lines(head)
    prefix = b""
    for _ in range(rng.randint(1, 3)):
        what = rng.randrange(15)
        at = rng.randint(0, len(lines))
        pick = rng.randrange(len(lines)) if lines else -1
        if what in (0, 1):
            lines.insert(at, rng.choice(_TYPES).replace(b"\r\n", eol))
        elif what in (2, 3):
            lines.insert(at, rng.choice(_OTHERS).replace(b"\r\n", eol))
        elif what == 4 and lines:
            del lines[pick]
        elif what == 5 and lines:
            lines.insert(pick, lines[pick])  # duplicated
        elif what == 6 and lines and b" " in lines[pick]:
            cut = lines[pick].index(b" ", lines[pick].index(b" ") if rng.random() < .5 else 0)
            lines[pick] = lines[pick][:cut] + eol + rng.choice([b" ", b"\t", b"  "]) + (
                lines[pick][cut + 1:])  # folded
        elif what == 7 and lines:
            lines.insert(pick + 1, rng.choice([b" ", b"\t", b" \t "]))  # a fold of blanks
        elif what == 8 and lines:
            lines[pick] = lines[pick].swapcase() if rng.random() < .5 else lines[pick].upper()
        elif what == 9:
            lines.insert(at, rng.choice([b"not a field", b"--b1", b"--m", b">From x",
                                         b"X-NoSpace:x", b": empty name", b"X Sp: v"]))
        elif what == 10:
            prefix = rng.choice([b"From news@shop.example Mon Dec  1 10:00:00 2026",
                                 b"From ", b"From:x"]) + eol
        elif what == 11:
            eol = b"\n" if eol == b"\r\n" else b"\r\n"  # the header's line ends change
        elif what == 12 and lines:
            lines[pick] = lines[pick].replace(b"shop", b"store%d" % rng.randrange(100))
        elif what == 13:
            lines = []  # no header at all
        elif what == 14 and lines:  # raw bytes: line ends, folds, separators, NUL, 8-bit
            line = lines[pick]
            cut = rng.randint(0, len(line))
            noise = bytes(rng.choice(_NOISE) for _ in range(rng.randint(1, 4)))
            lines[pick] = line[:cut] + noise + line[cut:]
    out = prefix + eol.join(lines) + (eol if lines else b"") + eol
    return out if rng.random() < .95 else out.replace(b"\n", b"\r\n").replace(b"\r\r", b"\r")


def _check(base: Analysis, data: bytes) -> bool:
    """The derived analysis of ``data`` (if proven) against a fresh one, every field and
    every copy byte for byte; True when derived."""
    derived = ENGINE.rebase(base, data, body_start(data))
    if derived is None:
        return False
    fresh = FRESH.analyse(data)
    assert derived == fresh, data[: body_start(data)]
    assert _renders(derived) == _renders(fresh), data[: body_start(data)]
    return True


def _footer_bases() -> list[bytes]:
    """Messages whose footer plan reads the header beyond the parse: a text without a
    line break (its line ending is the header's), a ``Content-Language``, Japanese in
    ISO-2022-JP and UTF-16, an attachment, nothing after the header."""
    return [b"Content-Type: text/plain\r\n\r\nHello",
            b"Content-Language: ja\nContent-Type: text/html; charset=utf-8\n\n<p>x</p>",
            b"Content-Type: text/plain; charset=utf-16\r\n\r\n" + "Hi \u3042".encode("utf-16"),
            b"Content-Language: ja\r\nContent-Type: text/plain; charset=iso-2022-jp\r\n\r\n"
            + "\u3053\u3093\u306b\u3061\u306f\r\n".encode("iso-2022-jp"),
            hostile.charset_message("shift_jis", "\u65e5\u672c<p>x</p>".encode("shift_jis")),
            b"Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\n"
            b"Content-Type: text/plain\r\n\r\nBody\r\n--m\r\nContent-Type: text/html\r\n"
            b"Content-Disposition: attachment\r\n\r\n<p>a</p>\r\n--m--\r\n",
            b"Content-Type: text/html\r\n\r\n\r\n", b"Subject: x\n\n"]


def _check_footer(base: FooterPlan, data: bytes) -> bool:
    """The rebased footer plan of ``data`` (if proven) against a fresh one, every field and
    the copy it makes, byte for byte; True when rebased."""
    derived = rebase_plan(base, data, body_start(data), TEXTS, "en")
    if derived is None:
        return False
    fresh = plan_footer(data, TEXTS, "en")
    assert fresh.failure is None and derived == fresh, data[: body_start(data)]
    assert derived.apply(PREFS, TEXTS) == fresh.apply(PREFS, TEXTS), data[: body_start(data)]
    return True


def test_header_mutations_plan_footers_as_fresh_plans() -> None:
    """Every base (the messages and their refused copies, which the relay's footer step
    sees) under ``COUNT`` mutated headers: rebased footer plans equal fresh ones."""
    rng = random.Random(20261205)
    bases = _bases()[:12] + [ENGINE.render(ENGINE.analyse(b), None, Policy.REFUSED).data
                             for b in _bases()[12:]] + _footer_bases()
    plans = [plan_footer(b, TEXTS, "en") for b in bases]
    rebased = 0
    for n in range(COUNT):
        index = n % len(bases)
        data = bases[index]
        split = body_start(data)
        if plans[index].failure is not None or not split:
            continue
        rebased += _check_footer(plans[index], _mutate(data[:split], rng) + data[split:])
    assert rebased > COUNT // 10  # the fuzzer reaches the rebased path


def test_the_footer_step_answers_as_an_uncached_one() -> None:
    """The ``Footer`` step (kept plans, rebased plans, the derived one remembered) over
    personalised, repeated and mutated copies: each copy and report as without a cache."""
    rng = random.Random(5)
    cached_step = Footer(lambda r: PREFS)
    fresh_step = Footer(lambda r: PREFS, cache=0)
    rcpt = Recipient(_env(), "r@x.example", Policy.REFUSED)
    rebased = 0
    for base in (newsletter(products=10), *_footer_bases()[:4]):
        split = body_start(base)
        for n in range(12):
            head = base[:split]
            head = (b"X-Id: %d\r\n" % n + head) if n % 3 else _mutate(head, rng)
            copy = Copy(head + base[split:])
            for _ in range(2):  # a second recipient of the same message: equal bytes
                assert cached_step(copy, rcpt) == fresh_step(copy, rcpt), head
            derived = cached_step._derived
            rebased += derived is not None and derived.tree.data is copy.data
    assert rebased > 20


@pytest.mark.skipif(not TEMPLATE_FILES, reason="no shared templates")
def test_header_mutations_over_real_templates_render_as_fresh_analyses() -> None:
    rng = random.Random(20261204)
    bases = _bases()
    # every other one as the relay's pool sends it back (pickled), the rest as made here
    analyses = [ENGINE.analyse(b) if i % 2 else pickle.loads(pickle.dumps(ENGINE.analyse(b)))
                for i, b in enumerate(bases)]
    for a in analyses:
        _renders(a)  # the kept analysis's lazily built state and memo filled first
    derived = 0
    for n in range(COUNT):
        index = n % len(bases)
        data = bases[index]
        split = body_start(data)
        mutated = _mutate(data[:split], rng) + data[split:]
        derived += _check(analyses[index], mutated)
    assert derived > COUNT // 10  # the fuzzer reaches the derived path


def test_the_relay_cache_answers_as_a_fresh_analysis() -> None:
    """Through ``cached`` (known, rebased, replaced, single flight) on the newsletter."""
    rng = random.Random(7)
    base = newsletter(products=10)
    split = body_start(base)

    async def run() -> None:
        known = cached(Counting(), AnalysisCache(ENGINE.fingerprint), ENGINE.rebase)
        datas = [base] + [_mutate(base[:split], rng) + base[split:] for _ in range(30)]
        got = await asyncio.gather(*[known(d) for d in datas])
        for data, analysis in zip(datas, got, strict=True):
            fresh = FRESH.analyse(data)
            assert analysis == fresh
            assert _renders(analysis) == _renders(fresh)

    asyncio.run(run())




@pytest.mark.parametrize(("make", "waits"), [
    (lambda: newsletter(products=10), True), (hostile.smime_signed, False),
    (hostile.forwarded, False), (hostile.missing_close, False)],
    ids=["newsletter", "signed", "forwarded", "missing-close"])
async def test_the_relay_step_with_campaign_diffing_sends_the_same_copies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Callable[[], bytes],
        waits: bool) -> None:
    """The whole beacon step (cache, rebase, campaign diffing's keys from From, Subject
    and List-Id, its findings, the fallback, the trace header): with the cache every copy,
    refused and granted, and every observation equal to the step's without it.

    The first copies of a list's campaign wait for a second one (``is_list_mail``: the
    ``List-Id`` is among the mutations).  The open tokens of granted copies carry their
    minting time, and a wait its deadline: both clocks frozen, or two runs a second apart
    would differ."""
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: 1_800_000_000.0))
    base = make()
    split = body_start(base)
    rng = random.Random(11)
    heads = [base[:split]]
    for n in range(24):
        head = base[:split].replace(b"rcpt@example.net", b"r%d@example.net" % (n % 5))
        head = head.replace(b"8f3b21@", b"%d@" % n)
        if n % 3 == 0:
            head = head.replace(b"X-Mailer", b"List-Id: <l%d.shop.example>\nX-Mailer" % (n % 2))
        if n % 4 == 1:
            head = head.replace(b"Subject: =?UTF-8?Q?Spring", b"Subject: =?UTF-8?Q?Autumn")
        heads.append(_mutate(head, rng) if n % 2 else head)
    seen: list[list[object]] = []
    waited = 0
    for with_cache in (False, True):
        async with open_store(f"sqlite:///{tmp_path / str(with_cache) / 'c.db'}") as store:
            step = _step(Counting(), AnalysisCache(ENGINE.fingerprint) if with_cache else None,
                         CampaignDiffing(store, hold=30, clock=lambda: 1_800_000_000.0))
            out: list[object] = []
            for n, head in enumerate(heads):
                rcpt = f"r{n % 5}@example.net"
                message = await step.prepare(_env(n, rcpt), head + base[split:])
                out.append(message.campaign)  # a list's first copies wait (held)
                for policy in (Policy.REFUSED, Policy.GRANTED):
                    copy = message.render(rcpt, policy)
                    out.append((copy.data, copy.held, sorted(copy.report.items(), key=str)))
                    waited += copy.wait is not None
            seen.append(out)
            if with_cache:
                assert step.cache is not None and step.cache.rebased > 3
    assert seen[0] == seen[1] and bool(waited) == waits  # only a personal copy waits


async def test_a_rebase_running_while_its_entry_is_replaced_answers_for_its_own_bytes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A big message is rebased in a thread; meanwhile a hostile header's analysis of the
    same body replaces the kept entry.  The rebase still answers from the analysis it
    started with, its result is not kept, and neither shares a refused copy."""
    import threading

    from beacon_proxy.rewrite import known as known_module

    base = newsletter(products=10)
    split = body_start(base)
    other = b"X-Id: 1\n" + base  # derived
    hostile = base[:split].replace(b"multipart/alternative", b"multipart/mixed") + base[split:]
    monkeypatch.setattr(known_module, "_HASH_IN_THREAD", 0)  # every rebase in a thread
    started, release = threading.Event(), threading.Event()

    def slow_rebase(analysis: Analysis, data: bytes, at: int) -> Analysis | None:
        if data == other:
            started.set()
            assert release.wait(60)  # the test sets it (a bound, not a clock being raced)
        return ENGINE.rebase(analysis, data, at)

    cache = AnalysisCache(ENGINE.fingerprint)
    counting = Counting()
    known = cached(counting, cache, slow_rebase)
    kept = await known(base)
    ENGINE.render(kept, None, Policy.REFUSED)  # the kept analysis's memo filled
    running = asyncio.ensure_future(known(other))
    await asyncio.to_thread(started.wait, 60)
    replaced = await known(hostile)  # analysed: the proof fails; replaces the entry
    assert cache.kept(cache.key(hostile)) is replaced
    release.set()
    derived = await running
    assert derived == FRESH.analyse(other) and derived.data is other
    assert _renders(derived) == _renders(FRESH.analyse(other))
    assert derived._refused is not kept._refused and derived not in (kept, replaced)
    assert cache.kept(cache.key(other)) is replaced  # the derived analysis is not kept
    assert counting.calls == [base, hostile]
