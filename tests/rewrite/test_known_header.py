"""A known body under another header (rewrite/known.py, Engine.rebase): the derived
analysis renders every copy exactly as a fresh analysis of the new bytes would, or the
message is analysed again.  Hostile headers first: each one that changes what the
analysis sees must fall back."""

from __future__ import annotations

import asyncio
import base64
import pickle
import random
import re
from collections.abc import Callable

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.metrics import ANALYSES
from beacon_proxy.rewrite.engine import Analysis, Engine
from beacon_proxy.rewrite.known import AnalysisCache, body_start, cached
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import TraceHeader
from beacon_proxy.tokens import Tokens
from tests.rewrite.hostile import HEAD, PAGE, PIXEL, TRACKER_HOST, tracker_traces
from tests.rewrite.test_known import Counting, Gated, _env

ENGINE = Engine(load_rules())
# a URL naming a recipient (her personalised hero image) and the planted tracker
PERSONAL = PAGE.replace("https://cdn.shop.example/hero.jpg",
                        "https://img.shop.example/p/reader@example.org/hero.jpg")
HTML = "Content-Type: text/html; charset=utf-8\r\n"


def _single(head: str = HEAD, content: str = HTML, page: str = PERSONAL) -> bytes:
    return (head + "MIME-Version: 1.0\r\n" + content + "\r\n" + page + "\r\n").encode()


def _multi(head: str = HEAD, boundary: str = "b1") -> bytes:
    body = ("--b1\r\nContent-Type: text/plain\r\n\r\nAutumn offers\r\n"
            "--b1\r\nContent-Type: text/html; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            + PERSONAL.replace("=", "=3D") + "\r\n--b1--\r\n")
    return (head + "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
            + body).encode()


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


BASES: dict[str, bytes] = {"single": _single(), "multi": _multi(), "lf": _lf(_multi())}


def _header(data: bytes) -> tuple[bytes, bytes]:
    split = body_start(data)
    return data[:split], data[split:]


def _with_header(data: bytes, change: Callable[[bytes], bytes]) -> bytes:
    head, body = _header(data)
    return change(head) + body


def _link(url: str) -> str:
    return "https://prefs.example/o/" + str(len(url))


RECIPIENTS = ("reader@example.org", "other@example.net", None)


def _renders(analysis: Analysis) -> list[bytes]:
    """Every copy that matters, refused ones first: named and unnamed recipients, with
    and without campaign diffing's findings."""
    out = []
    everything = frozenset((p, i) for p, part in enumerate(analysis.parts)
                           for i in range(len(part.entries)))
    for diffed in (frozenset(), everything):
        for policy in (Policy.REFUSED, Policy.GRANTED):
            for rcpt in RECIPIENTS:
                out.append(ENGINE.render(analysis, rcpt, policy, _link, diffed=diffed).data)
    return out


def _check(base: bytes, data: bytes) -> Analysis | None:
    """The rebase of ``base``'s analysis onto ``data``: None, or equal to a fresh analysis
    in every field and in every copy it renders, byte for byte."""
    cached_analysis = ENGINE.analyse(base)
    _renders(cached_analysis)  # its lazily built parts and refused memo filled first
    derived = ENGINE.rebase(cached_analysis, data, body_start(data))
    if derived is None:
        return None
    fresh = Engine(load_rules(), templates=0).analyse(data)
    assert derived == fresh
    assert derived.data is data and derived.tree.data is data and not derived._refused
    assert _renders(derived) == _renders(fresh)
    return derived


# -- derived when only what the analysis does not read changes ------------------------------


@pytest.mark.parametrize("name", sorted(BASES))
@pytest.mark.parametrize("change", [
    lambda h: h.replace(b"reader@example.org", b"anna.k@example.org"),  # To
    lambda h: h.replace(b"<h1@shop.example>", b"<a-much-longer-message-id-9@shop.example>"),
    lambda h: b"X-Bench-Id: 42\r\n" + h,
    lambda h: h.replace(b"MIME-Version: 1.0\r\n", b"").replace(b"MIME-Version: 1.0\n", b""),
    lambda h: h.replace(b"Subject: Autumn offers", b'Subject: <img src="https://'
                        + TRACKER_HOST.encode() + b'/o.gif?u=1">'),  # HTML-looking value
    lambda h: b"From news@shop.example Mon Dec  1 10:00:00 2026\r\n" + h,  # mbox line
    lambda h: h.replace(b"Shop news <news.shop.example>", b"<other.shop.example>"),
    lambda h: re.sub(rb"List-Id:[^\n]*\n", b"", h),
], ids=["to", "message-id", "added-field", "no-mime-version", "html-looking-value",
        "mbox-line", "list-id-changed", "list-id-removed"])
def test_a_header_the_analysis_does_not_read_is_rebased(
        name: str, change: Callable[[bytes], bytes]) -> None:
    base = BASES[name]
    data = _with_header(base, change)
    if name == "lf":
        data = _lf(data)
    assert data != base
    derived = _check(base, data)
    assert derived is not None
    assert derived.list_id == ENGINE.analyse(data).list_id
    refused = ENGINE.render(derived, "reader@example.org", Policy.REFUSED)
    body = refused.data[body_start(refused.data):]  # the header may name anything
    assert tracker_traces(body) == [] and b"reader@example.org/hero" not in body


# -- hostile headers: what the analysis reads changed, so it is analysed again ---------------


def _hostile() -> dict[str, tuple[bytes, bytes]]:
    single, multi = BASES["single"], BASES["multi"]
    remote = b"Content-Base: https://evil.example/\r\n"
    return {
        "type-changed": (single, _single(content="Content-Type: text/plain\r\n")),
        "type-made-html": (_single(content="Content-Type: text/plain\r\n"), single),
        "type-added": (_single(content=""), single),
        "type-duplicated": (single, _single(content=HTML + "Content-Type: text/plain\r\n")),
        "charset-changed": (single, _single(content=HTML.replace("utf-8", "utf-16"))),
        "cte-added": (single, _single(content=HTML + "Content-Transfer-Encoding: base64\r\n")),
        "boundary-changed": (multi, _multi(boundary="b2")),
        "multipart-signed": (multi, _with_header(multi, lambda h: h.replace(
            b"multipart/alternative", b'multipart/signed; protocol="application/pgp-sig"'))),
        "content-base": (single, _with_header(single, lambda h: remote + h)),
        "content-location-multi": (multi, _with_header(multi, lambda h: h[:-2] +
                                   b"Content-Location: https://evil.example/x.html\r\n\r\n")),
        "bare-cr": (single, _with_header(single, lambda h: b"X-A: a\rb\r\n" + h)),
        "no-blank-line-moved": (single, _with_header(single, lambda h: b"not a field\r\n" + h)),
    }


@pytest.mark.parametrize("case", sorted(_hostile()))
def test_a_hostile_header_falls_back_to_a_full_analysis(case: str) -> None:
    base, data = _hostile()[case]
    assert _header(base)[1] == _header(data)[1]
    assert _check(base, data) is None
    fresh, old = ENGINE.analyse(data), ENGINE.analyse(base)
    if case not in ("bare-cr", "no-blank-line-moved"):
        # the hazard is real: the old analysis's copies, with the new header, are not
        # the new message's copies
        assert (fresh.parts, fresh.problems, fresh.signed) != (
            old.parts, old.problems, old.signed) or fresh.tree.parts[0].content_type != (
            old.tree.parts[0].content_type)


def _edges() -> dict[str, tuple[bytes, bytes]]:
    single, multi = BASES["single"], BASES["multi"]
    spaced = single.replace(b"\r\n\r\n<html>", b"\r\n\r\n \t<html>")
    return {
        "continuation-blank": (single, _with_header(single, lambda h: h[:-2] + b" \r\n\r\n")),
        "lf-header-crlf-body": (single, _with_header(single, lambda h: _lf(h))),
        "crlf-header-lf-body": (_lf(single), _with_header(_lf(single), lambda h: h.replace(
            b"\n", b"\r\n"))),
        "body-starts-with-space": (spaced, _with_header(spaced, lambda h: b"X-Id: 7\r\n" + h)),
        "body-starts-with-boundary": (multi, _with_header(multi, lambda h: b"X-Id: 7\r\n" + h)),
        "header-grows-a-lot": (single, _with_header(single, lambda h: b"X-Pad: " +
                                                    b"x" * 5000 + b"\r\n" + h)),
        "header-emptied": (single, b"\r\n" + _header(single)[1]),
        "folded-content-type": (single, _with_header(single, lambda h: h.replace(
            b"text/html; charset=utf-8", b"text/html;\r\n charset=utf-8"))),
        "content-type-case": (single, _with_header(single, lambda h: h.replace(
            b"Content-Type: text/html", b"content-type: TEXT/HTML"))),
    }


@pytest.mark.parametrize("case", sorted(_edges()))
def test_an_unusual_header_or_split_is_rebased_exactly_or_analysed_again(case: str) -> None:
    base, data = _edges()[case]
    assert base != data
    _check(base, data)


def test_the_remote_base_in_the_header_is_what_the_proof_catches() -> None:
    """The tree is equal (Content-Base is not a Content-* field the parser reads): only
    the remote-base check tells the messages apart, and the new one must not be scanned."""
    base, data = _hostile()["content-base"]
    old, fresh = ENGINE.analyse(base), ENGINE.analyse(data)
    delta = len(data) - len(base)
    shifted = [(p.body_span.start + delta, p.content_type) for p in old.tree.parts]
    assert [(p.body_span.start, p.content_type) for p in fresh.tree.parts] == shifted
    assert old.parts and not fresh.parts
    assert ENGINE.rebase(old, data, body_start(data)) is None


def test_the_bodies_are_compared_not_trusted() -> None:
    base = BASES["single"]
    data = _with_header(base, lambda h: b"X-Id: 1\r\n" + h)
    split = body_start(data)
    changed = data[:-3] + b"X" + data[-2:]
    assert ENGINE.rebase(ENGINE.analyse(base), changed, split) is None
    # a wrong split (not where the parser's body starts) is refused too
    assert ENGINE.rebase(ENGINE.analyse(base), data, split + 1) is None
    assert ENGINE.rebase(ENGINE.analyse(base), data, split - 1) is None
    assert ENGINE.rebase(ENGINE.analyse(base), data, 0) is None
    assert ENGINE.rebase(ENGINE.analyse(base), data, len(data)) is None


def test_a_message_without_a_body_is_never_rebased() -> None:
    async def run() -> None:
        counting = Counting()
        known_cache = AnalysisCache(ENGINE.fingerprint)
        known = cached(counting, known_cache, ENGINE.rebase)
        one, two = b"Subject: a\r\nTo: x@example.org\r\n", b"Subject: a\r\nTo: y@example.org\r\n"
        for data in (one, two, one):
            assert (await known(data)) == ENGINE.analyse(data)
        # no body: the whole message is the key, equal bytes only
        assert counting.calls == [one, two] and known_cache.rebased == 0

    asyncio.run(run())


# -- property: many header variants -----------------------------------------------------------

_FIELDS = [b"To: reader%d@example.org", b"Message-ID: <%d@shop.example>", b"X-Bench-Id: %d",
           b"Subject: Autumn offers %d", b"X-Html: <a href=\"https://t.example/%d\">",
           b"List-Id: <list%d.shop.example>", b"Content-Type: text/plain; x=%d",
           b"Content-Transfer-Encoding: base64 (%d)", b"Content-Base: https://b%d.example/",
           b"Content-Location: cid:%d", b"Content-Type: multipart/mixed; boundary=b%d",
           b"X-Folded: %d\r\n continued", b"MIME-Version: 1.%d", b"Content-Disposition: "
           b"attachment; n=%d", b"content-type:text/html;charset=iso-8859-%d"]


def _mutate(head: bytes, rng: random.Random) -> bytes:
    eol = b"\r\n" if head.endswith(b"\r\n\r\n") else b"\n"
    lines = head[: -len(eol)].split(eol)[:-1]
    for _ in range(rng.randint(1, 3)):
        what = rng.randrange(3)
        if what == 0 or not lines:
            field = rng.choice(_FIELDS) % rng.randrange(10)
            lines.insert(rng.randint(0, len(lines)), field.replace(b"\r\n", eol))
        elif what == 1:
            del lines[rng.randrange(len(lines))]
        else:
            i = rng.randrange(len(lines))
            lines[i] = lines[i].replace(b"shop", b"store%d" % rng.randrange(100))
    return eol.join(lines) + eol + eol


@pytest.mark.parametrize("name", sorted(BASES))
def test_any_header_variant_renders_as_a_fresh_analysis_or_is_analysed_again(
        name: str) -> None:
    rng = random.Random(f"rebase-{name}")
    base = BASES[name]
    derived = fell_back = 0
    for _ in range(80):
        data = _with_header(base, lambda h: _mutate(h, rng))
        if _check(base, data) is None:
            fell_back += 1
        else:
            derived += 1
    assert derived > 20 and fell_back > 5  # both paths taken


# -- the cache and the relay's step -----------------------------------------------------------


def _count(source: str) -> float:
    return float(ANALYSES.labels(source)._value.get())


async def test_a_personalised_header_is_analysed_once_and_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from beacon_proxy import tokens
    from beacon_proxy.rewrite.beacons import BeaconStep

    # granted copies carry open tokens stamped with the second they are minted: the two
    # paths' copies are compared byte for byte, so no second may pass between them
    monkeypatch.setattr(tokens, "time", SimpleNamespace(time=lambda: 1_800_000_000.0))

    def step(counting: Counting, cache: AnalysisCache | None) -> BeaconStep:
        return BeaconStep(ENGINE, Tokens(["a test secret of some length"]),
                          public_url="https://prefs.example", hostname="relay.example",
                          steps=(TraceHeader("relay.example"),), analyse=counting, cache=cache)

    counting = Counting()
    mine, plain = step(counting, AnalysisCache(ENGINE.fingerprint)), step(Counting(), None)
    before = _count("header"), _count("known")
    sent = []
    for n, rcpt in enumerate(("reader@example.org", "b@x.example", "c@x.example")):
        head, body = _header(BASES["multi"])
        data = head.replace(b"reader@example.org", rcpt.encode()).replace(
            b"h1@", b"h%d@" % n) + body
        sent.append(data)
        for policy in (Policy.REFUSED, Policy.GRANTED):
            theirs = (await plain.prepare(_env(n, rcpt), data)).render(rcpt, policy)
            ours = (await mine.prepare(_env(n, rcpt), data)).render(rcpt, policy)
            assert ours.data == theirs.data and ours.report == theirs.report
            if policy is Policy.REFUSED:
                assert tracker_traces(ours.data) == []
    assert counting.calls == sent[:1]
    assert mine.cache is not None
    # each message prepared twice: the first one's analysis is kept (its repeat is known),
    # the others are rebased each time (derived analyses are not kept)
    assert (mine.cache.hits, mine.cache.rebased, mine.cache.misses) == (1, 4, 1)
    assert (_count("header") - before[0], _count("known") - before[1]) == (4, 1)


async def test_a_hostile_header_is_analysed_and_replaces_the_kept_analysis() -> None:
    counting = Counting()
    cache = AnalysisCache(ENGINE.fingerprint)
    known = cached(counting, cache, ENGINE.rebase)
    base, data = _hostile()["type-changed"]
    assert (await known(base)).parts
    got = await known(data)
    assert got == ENGINE.analyse(data) and not got.parts
    assert counting.calls == [base, data] and len(cache) == 1
    assert (await known(data)) is got  # the new one is kept for its body now


async def test_concurrent_copies_of_one_body_under_other_headers_are_analysed_once() -> None:
    gated = Gated()
    known = cached(gated, AnalysisCache(ENGINE.fingerprint), ENGINE.rebase)
    first_data = BASES["multi"]
    others = [b"X-Id: %d\r\n" % i + first_data for i in range(3)]
    hostile = _hostile()["boundary-changed"][1]  # another body: its own analysis
    first = asyncio.ensure_future(known(first_data))
    await gated.started.wait()
    rest = [asyncio.ensure_future(known(d)) for d in others]
    for _ in range(5):
        await asyncio.sleep(0)
    gated.gate.set()
    results = await asyncio.gather(first, *rest, known(hostile))
    assert gated.calls == [first_data, hostile]
    for data, result in zip([first_data, *others, hostile], results, strict=True):
        assert result == ENGINE.analyse(data)
    assert PIXEL  # the planted tracker the checks above look for


# -- the shared refused copy of a derived analysis (engine._rebased_refused) -----------------


def _rendered_by(monkeypatch: pytest.MonkeyPatch) -> list[Analysis]:
    """The analyses ``Engine._render`` renders for, from now on."""
    seen: list[Analysis] = []
    real = Engine._render

    def counting(self: Engine, analysis: Analysis, *args: object) -> object:
        seen.append(analysis)
        return real(self, analysis, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "_render", counting)
    return seen


def test_a_derived_refused_copy_is_made_from_the_origins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = ENGINE.analyse(BASES["multi"])
    shared = ENGINE.render(base, None, Policy.REFUSED)
    assert shared.changed and tracker_traces(BASES["multi"])
    rendered = _rendered_by(monkeypatch)
    for n in range(3):
        data = b"X-Id: %d\r\n" % n + BASES["multi"]
        derived = ENGINE.rebase(base, data, body_start(data))
        assert derived is not None and derived._origin is base
        copy = ENGINE.render(derived, "other@example.net", Policy.REFUSED)
        fresh = Engine(load_rules(), templates=0).render(
            ENGINE.analyse(data), "other@example.net", Policy.REFUSED)
        assert copy.data == fresh.data and copy.data.startswith(b"X-Id: %d\r\n" % n)
        assert copy.items == fresh.items and copy.trackers == fresh.trackers
        assert not tracker_traces(copy.data)
        # a rebase of a derived analysis points at the first origin
        again = ENGINE.rebase(derived, BASES["multi"], body_start(BASES["multi"]))
        assert again is not None and again._origin is base
    assert rendered.count(base) == 0 and len(rendered) == 3  # only the fresh engine's


def test_a_derived_analysis_without_the_origins_copy_renders_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    base = ENGINE.analyse(BASES["multi"])  # nothing rendered from it yet
    data = _with_header(BASES["multi"], lambda h: b"X-Id: 1\r\n" + h)
    derived = ENGINE.rebase(base, data, body_start(data))
    assert derived is not None
    rendered = _rendered_by(monkeypatch)
    ENGINE.render(derived, None, Policy.REFUSED)
    assert rendered == [derived]


@pytest.mark.parametrize("charset", ["utf-16", "utf-8"])
def test_a_single_part_message_renders_its_own_refused_copy(
        monkeypatch: pytest.MonkeyPatch, charset: str) -> None:
    """The root is the HTML part: its re-encoding reads the header (a UTF-16 part written
    back whole takes the header's line ending), so its copy is never spliced."""
    page = PERSONAL.encode(charset)
    body = base64.encodebytes(page).replace(b"\n", b"\r\n")
    data = (HEAD + "MIME-Version: 1.0\r\nContent-Type: text/html; charset=" + charset
            + "\r\nContent-Transfer-Encoding: base64\r\n\r\n").encode() + body
    base = ENGINE.analyse(data)
    ENGINE.render(base, None, Policy.REFUSED)
    lf = _with_header(data, _lf)  # an LF header over the same body
    assert _check(data, lf) is not None  # every copy as fresh (another origin)
    derived = ENGINE.rebase(base, lf, body_start(lf))
    assert derived is not None
    rendered = _rendered_by(monkeypatch)
    copy = ENGINE.render(derived, None, Policy.REFUSED)
    assert rendered == [derived]
    assert copy.data == ENGINE.render(ENGINE.analyse(lf), None, Policy.REFUSED).data


def test_a_pickled_analysis_has_no_origin() -> None:
    base = ENGINE.analyse(BASES["multi"])
    data = b"X-Id: 1\r\n" + BASES["multi"]
    derived = ENGINE.rebase(base, data, body_start(data))
    assert derived is not None and derived._origin is base
    assert pickle.loads(pickle.dumps(derived))._origin is None
