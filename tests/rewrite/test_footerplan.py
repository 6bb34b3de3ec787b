"""The footer's plan and its cache: kept plans give exactly the copies a fresh plan gives
(fixtures, real templates, every charset x transfer encoding, mangled messages), the
cache finds identical copies and survives a run of granted ones, failures stay where a
single pass meets them, and threads sharing a step get right copies."""

from __future__ import annotations

import logging
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite import footerplan
from beacon_proxy.rewrite.footer import Footer
from beacon_proxy.rewrite.footerplan import PartPlan, plan_footer
from beacon_proxy.rewrite.footertext import FooterTexts
from beacon_proxy.rewrite.known import body_start
from beacon_proxy.rewrite.mime import parse_message, reparse_shifted
from beacon_proxy.rewrite.step import Copy, Recipient
from beacon_proxy.rewrite.transfer import Edit, apply_edits, decode_indexed
from beacon_proxy.spool.envelope import Envelope
from tests.rewrite.test_footer import (
    _SEEDS,
    CODECS,
    CTES,
    PAGE,
    PLAIN,
    RCPT,
    URL,
    _mutated,
    _original,
    message,
)
from tests.rewrite.test_oracle import TEMPLATE_FILES

TEXTS = FooterTexts.load()
OTHER_URL = "https://prefs.example.com/u/x?a=1&b='2'&c=" + "z" * 120
#: The characters a checked link is made of (footer._LINK).
LINK_CHARS = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
              "-._~:/?#[]@!$&'()*+,;=%")
SLOT_MESSAGE = message(PAGE, PLAIN, cte="quoted-printable")
TEMPLATE_SEEDS = [message(p.read_text("utf-8"), "Hello\n", cte=cte, language="ja")
                  for p in TEMPLATE_FILES for cte in ("quoted-printable", "8bit", "base64")]


class Links:
    """A link function whose answer the test changes between copies."""

    def __init__(self) -> None:
        self.url: str | None = URL

    def __call__(self, recipient: Recipient) -> str | None:
        return self.url


def equal(data: bytes) -> bytes:
    """Equal bytes in a new object (``bytes(data)`` would be ``data`` itself)."""
    return bytes(bytearray(data))


def same_copies(data: bytes, *, default_language: str = "en") -> None:
    """Copies of ``data`` for several links: from a kept plan exactly as from a fresh one."""
    links = Links()
    cached = Footer(links, default_language=default_language)
    fresh = Footer(links, default_language=default_language, cache=0)
    for url in (URL, OTHER_URL, URL, None, OTHER_URL):
        links.url = url
        for step in (cached, cached, fresh):
            # a new bytes object each time: the relay's copies are equal, not identical
            out = step(Copy(equal(data), {"beacons": 0}), RCPT)
            assert out == fresh(Copy(data, {"beacons": 0}), RCPT), (url, out.report)
    plan = cached.plan(equal(data))
    assert cached.plan(equal(data)) is plan  # found again, not planned again


@pytest.mark.parametrize("data", _SEEDS + TEMPLATE_SEEDS,
                         ids=[f"seed{i}" for i in range(len(_SEEDS))]
                         + [f"template{i}" for i in range(len(TEMPLATE_SEEDS))])
def test_kept_plans_give_the_same_copies_as_fresh_ones(data: bytes) -> None:
    same_copies(data)
    same_copies(data.replace(b"\r\n", b"\n"), default_language="ja")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_kept_plans_of_mangled_messages_give_the_same_copies(data: bytes) -> None:
    same_copies(data)


@pytest.mark.parametrize("cte", CTES)
@pytest.mark.parametrize("charset", list(CODECS))
def test_the_line_index_changes_nothing_but_the_work(charset: str, cte: str) -> None:
    data = message(*_original(charset, cte), charset=charset, cte=cte, language="ja")
    plan = plan_footer(data, TEXTS, "en")
    for part in plan.parts:
        assert isinstance(part, PartPlan)
        full = decode_indexed(part.body, part.cte)[1]
        for at in sorted({0, 1, part.at // 2, part.at, len(part.decoded)}):
            edit = [Edit(at, at, b"<p>inserted\r\nfooter</p>")]
            line = footerplan._line_index(part.body, part.cte, full, at)
            assert (apply_edits(part.body, part.cte, edit, decoded=part.decoded, qp_index=line)
                    == apply_edits(part.body, part.cte, edit, decoded=part.decoded,
                                   qp_index=full))


def test_a_run_of_granted_copies_does_not_push_out_the_shared_plan() -> None:
    step = Footer(Links(), cache=1)
    refused = message(PAGE, PLAIN)
    first = step.plan(refused)
    assert step.plan(equal(refused)) is first  # seen twice: kept
    for n in range(10):  # granted copies: each different, each planned once
        granted = message(PAGE.replace("spring", f"sp{n:04d}"), PLAIN)
        assert step.plan(granted) is not first
    assert step.plan(equal(refused)) is first


def test_the_cache_is_bounded_in_plans_and_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    step = Footer(Links(), cache=2)
    messages = [message(PAGE, PLAIN + f"{n}\n") for n in range(5)]
    for data in messages:
        step.plan(data)
        step.plan(data)
    assert len(step._kept) == 2 and len(step._new) == 0
    assert [p.tree.data for p in step._kept] == messages[:2:-1]
    monkeypatch.setattr("beacon_proxy.rewrite.footer._MAX_KEPT", 100)
    big = message(PAGE, PLAIN + "big\n")
    step.plan(big)
    assert step.plan(big) is not step.plan(big)  # too big to keep: planned every time
    none = Footer(Links(), cache=0)
    assert none.plan(messages[0]) is not none.plan(messages[0])
    with pytest.raises(ValueError, match="cache must be 0 or more"):
        Footer(Links(), cache=-1)


def test_a_planning_bug_surfaces_where_a_single_pass_meets_it(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken(view: bytes) -> int | None:
        raise RuntimeError("body_end bug")

    monkeypatch.setattr(footerplan, "body_end", broken)
    links = Links()
    step = Footer(links)
    data = message(PAGE, PLAIN)
    plan = step.plan(data)
    assert isinstance(plan.failure, RuntimeError) and len(plan.parts) == 1  # the text part
    assert step.plan(data) is not plan  # a failed plan is not kept
    with caplog.at_level(logging.ERROR, "beacon_proxy.rewrite.footer"):
        out = step(Copy(data), RCPT)
        links.url = None  # the link is asked for before the bug is met, as before
        none = step(Copy(data), RCPT)
    assert (out.data, out.report["footer"]) == (data, {"skipped": "error"})
    assert (none.data, none.report["footer"]) == (data, {"skipped": "no preference link"})
    assert [r.getMessage() for r in caplog.records] == [
        "footer step failed, copy sent without footer: RuntimeError: body_end bug"]


def test_threads_sharing_a_step_get_right_copies() -> None:
    step = Footer(Links(), cache=1)
    fresh = Footer(Links(), cache=0)
    messages = [message(PAGE, PLAIN + f"{n}\n", cte=cte) for n in range(3) for cte in CTES]
    expected = [fresh(Copy(data), RCPT) for data in messages]
    start = threading.Barrier(4, timeout=30)
    wrong: list[int] = []

    def render(offset: int) -> None:
        start.wait()
        for i in range(60):
            n = (i + offset) % len(messages)
            if step(Copy(equal(messages[n])), RCPT) != expected[n]:
                wrong.append(n)

    threads = [threading.Thread(target=render, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert wrong == []


def test_a_plan_is_for_every_recipient_and_the_link_for_one() -> None:
    seen: list[str] = []

    def link(recipient: Recipient) -> str:
        seen.append(recipient.address)
        return f"https://prefs.example.com/u/{recipient.address.split('@')[0]}"

    step = Footer(link)
    data = message(PAGE, PLAIN)
    copies = []
    for address in ("ann@example.org", "bob@example.org"):
        rcpt = Recipient(Envelope("Q1", "news@shop.example", (address,), received_at=0),
                         address, Policy.REFUSED)
        copies.append(step(Copy(data), rcpt).data)
    assert seen == ["ann@example.org", "bob@example.org"]
    assert b"/u/ann" in copies[0] and b"/u/bob" not in copies[0]
    assert copies[1] == copies[0].replace(b"/u/ann", b"/u/bob")


# -- a known body under another header (rebase_plan) ------------------------------------------

SINGLE = b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello"  # no line break: the header's


def rebased(data: bytes, new: bytes) -> footerplan.FooterPlan | None:
    """``data``'s plan rebased onto ``new``; when proven, it must equal a fresh plan of
    ``new`` and make the same copy, report and all."""
    derived = footerplan.rebase_plan(plan_footer(data, TEXTS, "en"), new,
                                     body_start(new), TEXTS, "en")
    if derived is not None:
        fresh = plan_footer(new, TEXTS, "en")
        assert derived == fresh
        assert derived.apply(URL, TEXTS) == fresh.apply(URL, TEXTS)
    return derived


def test_a_personalised_header_rebases_the_plan() -> None:
    data = message(PAGE, PLAIN)
    new = data.replace(b"To: ann@example.org", b"To: bob.with.a.longer.name@example.org")
    derived = rebased(data, new)
    assert derived is not None and derived.tree.data is new
    assert all(isinstance(p, PartPlan) for p in derived.parts)


def test_a_header_that_changes_the_language_rebases_with_the_new_language() -> None:
    data = message(PAGE, PLAIN, language="en")
    derived = rebased(data, data.replace(b"Content-Language: en", b"Content-Language: ja-JP"))
    assert derived is not None and derived.language == "ja"
    assert derived.apply(URL, TEXTS)[1]["language"] == "ja"
    gone = rebased(data, data.replace(b"Content-Language: en\r\n", b""))
    assert gone is not None and gone.language == "en"


@pytest.mark.parametrize(("old", "new"), [
    (b"charset=utf-8", b"charset=iso-8859-1"),  # the root's charset
    (b"Content-Type: text/plain; charset=utf-8", b"Content-Type: text/html"),
    (b"Content-Type: text/plain; charset=utf-8\r\n", b""),  # a Content-Type removed
    (b"\r\n\r\n", b"\r\nContent-Type: text/html\r\n\r\n"),  # a second one: a conflict
    (b"\r\n\r\n", b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"),
    (b"\r\n\r\n", b"\r\nContent-Disposition: attachment\r\n\r\n"),
    (b"Content-Type: text/plain;", b"Content-Type: multipart/signed; boundary=b; x=y;"),
    (b"\r\n\r\n", b"\r\nX-Bare: a\rb\r\n\r\n"),  # a bare CR: a problem
], ids=["charset", "type", "no-type", "two-types", "cte", "attachment", "signed", "bare-cr"])
def test_a_header_that_changes_the_root_part_plans_afresh(old: bytes, new: bytes) -> None:
    assert rebased(SINGLE, SINGLE.replace(old, new, 1)) is None


@pytest.mark.parametrize(("old", "new"), [
    (b'boundary="BOUND"', b'boundary="OTHER"'),
    (b"multipart/alternative", b"multipart/mixed"),  # the first part only, not each
    (b"MIME-Version: 1.0\r\n", b"Content-Type: multipart/signed; boundary=BOUND\r\n"),
    (b"Subject: Deals\r\n", b"Subject: Deals\r\n--BOUND\r\n"),  # a delimiter in the header
], ids=["boundary", "mixed", "signed", "delimiter-line"])
def test_a_header_that_changes_the_structure_plans_afresh(old: bytes, new: bytes) -> None:
    data = message(PAGE, PLAIN)
    assert rebased(data, data.replace(old, new, 1)) is None


def test_the_line_ending_of_a_header_that_gives_the_footers_is_compared() -> None:
    """A text without a line break takes its line ending from the header: an LF header
    plans afresh (its footer gets LF), a CRLF one with other fields is rebased."""
    lf = b"Content-Type: text/plain; charset=utf-8\n\nHello"
    assert reparse_shifted(parse_message(SINGLE), lf, body_start(lf)) is not None  # same tree
    assert rebased(SINGLE, lf) is None  # but the footer's line ending is the header's
    assert rebased(SINGLE, b"To: x@y\r\n" + SINGLE) is not None
    multi = message(PAGE, PLAIN)  # the texts have line breaks: the header's do not matter
    split = body_start(multi)
    assert rebased(multi, multi[:split].replace(b"\r\n", b"\n") + multi[split:]) is not None


def test_an_unproven_body_or_a_plan_with_a_failure_is_not_rebased(
        monkeypatch: pytest.MonkeyPatch) -> None:
    data = message(PAGE, PLAIN)
    plan = plan_footer(data, TEXTS, "en")
    new = b"X-Id: 1\r\n" + data
    assert footerplan.rebase_plan(plan, new[:-3] + b"x\r\n", body_start(new), TEXTS, "en") is None
    assert footerplan.rebase_plan(plan, new, 0, TEXTS, "en") is None  # no header to tell apart
    broken = footerplan.FooterPlan(plan.tree, failure=ValueError("x"))
    assert footerplan.rebase_plan(broken, new, body_start(new), TEXTS, "en") is None

    def raises(*args: object) -> str:
        raise RuntimeError("language")

    monkeypatch.setattr(footerplan, "footer_language", raises)
    assert footerplan.rebase_plan(plan, new, body_start(new), TEXTS, "en") is None


def test_skipped_messages_rebase_to_the_same_reason() -> None:
    signed = message(PAGE, PLAIN).replace(b"multipart/alternative", b"multipart/signed")
    derived = rebased(signed, b"X-Id: 1\r\n" + signed)
    assert derived is not None and derived.skip == "signed or encrypted"


def test_the_step_rebases_personalised_copies_and_keeps_its_base_against_granted_ones() -> None:
    """Refused copies of personalised messages share the first one's plan (off probation:
    a run of granted copies does not push it out); a message's second refused copy finds
    the derived plan by its bytes; every copy as an uncached step makes it."""
    step, fresh = Footer(lambda r: URL), Footer(lambda r: URL, cache=0)
    data = message(PAGE, PLAIN)
    planned: list[bytes] = []
    real = footerplan.plan_footer

    def counting(data: bytes, *args: object) -> footerplan.FooterPlan:
        planned.append(data)
        return real(data, *args)  # type: ignore[arg-type]

    copies = []
    for n in range(6):
        copy = Copy(b"X-Id: %d\r\n" % n + data)
        granted = [Copy(copy.data.replace(b"spring sale", b"sale %d" % g)) for g in range(3)]
        copies.append((copy, granted, fresh(copy, RCPT), [fresh(c, RCPT) for c in granted]))
    footer_module = __import__("beacon_proxy.rewrite.footer", fromlist=["plan_footer"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(footer_module, "plan_footer", counting)
        for copy, granted, expected, expected_granted in copies:
            assert step(copy, RCPT) == expected
            assert step(Copy(equal(copy.data)), RCPT) == expected
            assert [step(c, RCPT) for c in granted] == expected_granted
    refused = [p for p in planned if b"spring sale" in p]
    assert len(refused) == 1  # the first message's only


# --- the slotted footer: the same bytes as rendering and encoding it per copy -----------------

#: Links of every length around a quoted-printable line (soft breaks land everywhere),
#: with characters QP or HTML escapes ("=", "&", "'").
SLOT_URLS = [URL, OTHER_URL, *(f"https://p.example/u/{'a=&' * (n % 5)}{'b' * n}"
                               for n in range(0, 160, 7))]


def old_path(plan: footerplan.FooterPlan, url: str, monkeypatch: pytest.MonkeyPatch,
             texts: FooterTexts = TEXTS) -> tuple[bytes | None, dict[str, object]]:
    """The copy as made before the slot: the footer rendered and encoded for this link."""
    with monkeypatch.context() as patch:
        patch.setattr(PartPlan, "_slot", lambda self, footers: None)
        return plan.apply(url, texts)


def same_as_old(data: bytes, monkeypatch: pytest.MonkeyPatch, urls: list[str] = SLOT_URLS,
                languages: tuple[str, ...] = ("en", "ja")) -> None:
    for language in languages:
        plan = plan_footer(data, TEXTS, language)
        for url in urls:
            try:
                old = old_path(plan, url, monkeypatch)
            except Exception as exc:  # a plan failure: raised the same by both
                with pytest.raises(type(exc)):
                    plan.apply(url, TEXTS)
                continue
            assert plan.apply(url, TEXTS) == old, (language, url)


@pytest.mark.parametrize("data", _SEEDS + TEMPLATE_SEEDS,
                         ids=[f"seed{i}" for i in range(len(_SEEDS))]
                         + [f"template{i}" for i in range(len(TEMPLATE_SEEDS))])
def test_the_slotted_footer_gives_the_old_bytes(data: bytes,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    same_as_old(data, monkeypatch)
    same_as_old(data.replace(b"\r\n", b"\n"), monkeypatch)


@pytest.mark.parametrize("cte", CTES)
@pytest.mark.parametrize("charset", [*CODECS, "windows-1252", "gb18030", "big5", "euc-kr",
                                     "utf-16le", "us-ascii", "x-unknown"])
def test_the_slotted_footer_in_every_charset_and_encoding(
        charset: str, cte: str, monkeypatch: pytest.MonkeyPatch) -> None:
    page, plain = _original(charset, cte) if charset in CODECS else (PAGE, PLAIN)
    if charset == "utf-16le":
        data = message(page, plain, charset="utf-8", cte=cte, language="ja")
        data = data.replace(b"charset=utf-8", b"charset=utf-16le")  # bytes that lie: skipped
    else:
        data = message(page, plain, charset=charset, cte=cte, language="ja")
    same_as_old(data, monkeypatch)
    plan = plan_footer(data, TEXTS, "en")
    for _ in range(2):  # the slot is made for the second copy
        plan.apply(URL, TEXTS)
    slotted = [p for p in plan.parts if isinstance(p, PartPlan)
               and any(isinstance(s, footerplan._Slot) for s in p.slots.values())]
    if cte == "quoted-printable" and charset in ("utf-8", "iso-8859-1", "shift_jis"):
        assert len(slotted) == 2  # the cheap path is taken where it is proven


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_the_slotted_footer_of_mangled_messages_gives_the_old_bytes(data: bytes) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        same_as_old(data, monkeypatch, [URL, OTHER_URL], ("ja",))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=LINK_CHARS, min_size=1, max_size=300))
def test_any_link_gets_the_old_bytes(tail: str) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        same_as_old(SLOT_MESSAGE, monkeypatch, [f"https://p.example/{tail}"], ("ja",))


def test_a_link_that_is_not_printable_ascii_takes_the_old_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_footer(SLOT_MESSAGE, TEXTS, "en")
    for url in ("https://p.example/é", "https://p.example/a\r\nb", "https://p.example/\x00"):
        assert plan.apply(url, TEXTS) == old_path(plan, url, monkeypatch)


def test_a_rebased_plan_shares_the_slots() -> None:
    plan = plan_footer(SLOT_MESSAGE, TEXTS, "en")
    plan.apply(URL, TEXTS)
    plan.apply(OTHER_URL, TEXTS)
    other = b"To: someone@example.org\r\n" + SLOT_MESSAGE
    derived = footerplan.rebase_plan(plan, other, body_start(other), TEXTS, "en")
    assert derived is not None
    for old, new in zip(plan.parts, derived.parts, strict=True):
        assert isinstance(old, PartPlan) and isinstance(new, PartPlan)
        assert new.slots is old.slots
        assert [type(s) for s in old.slots.values()] == [footerplan._Slot]


def test_a_plan_used_once_makes_no_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[PartPlan] = []
    make = PartPlan._make_slot

    def counted(self: PartPlan, footers: footerplan._Footers) -> footerplan._Slot | None:
        made.append(self)
        return make(self, footers)

    monkeypatch.setattr(PartPlan, "_make_slot", counted)
    plan = plan_footer(SLOT_MESSAGE, TEXTS, "en")
    plan.apply(URL, TEXTS)
    assert not made
    plan.apply(URL, TEXTS)
    plan.apply(OTHER_URL, TEXTS)
    assert len(made) == 2  # once per part, on the second copy


def test_the_slots_kept_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_footer(SLOT_MESSAGE, TEXTS, "ja")
    monkeypatch.setattr(footerplan, "_SLOT_KEYS", 1)
    for language in ("en", "ja", "en", "ja"):  # the Japanese footer in two languages
        texts = FooterTexts({"en": TEXTS.get("en"), "ja": TEXTS.get(language)})
        assert plan.apply(URL, texts) == old_path(plan, URL, monkeypatch, texts)
    assert all(len(p.slots) == 1 for p in plan.parts if isinstance(p, PartPlan))
