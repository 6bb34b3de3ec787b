"""The footer step: a visible preference link in the HTML and the text part of every copy.

Bulk-sender rules (Gmail, Yahoo 2024) want a visible way out in the body, not
only the ``List-Unsubscribe`` header, and our promise to recipients is one
click to *stop read-tracking* or *suspend delivery*.  :class:`Footer` is the
per-recipient :data:`~beacon_proxy.rewrite.step.CopyStep` that adds one short
sentence with the recipient's preference link, in the message's language
(``Content-Language``, then the configured default; texts are data files,
:mod:`~beacon_proxy.rewrite.footertext`).

Which parts: the message's *body* text parts only -- a top-level text/plain or
text/html; every text/plain and text/html alternative of a
multipart/alternative (and the root of a multipart/related alternative); the
first part of any other multipart, recursively.  Never an attachment, a
``message/rfc822`` part or another text type (calendar, AMP).

Like the beacon engine, the step never rebuilds the message: it parses the MIME
structure (:func:`~beacon_proxy.rewrite.mime.parse_message`), inserts the
footer into the *decoded* body of each chosen part (before the last real
``</body``: :mod:`~beacon_proxy.rewrite.bodyend`; at the end of a text part)
and writes only the touched encoded lines back
(:func:`~beacon_proxy.rewrite.transfer.apply_edits`:
a 70 KB quoted-printable newsletter is not re-encoded per recipient), so every
other byte leaves as it came.  The footer is encoded in the part's own charset
and transfer encoding; HTML gets ``&#NNNN;`` for what the charset lacks, a text
part falls back to English.

A copy without a preference link (``link`` returned None) gets none; the
relay's own bounces never reach the step (``step.ListMailOnly``).
A part the step cannot modify safely gets no footer and the copy is otherwise
unchanged: broken MIME structure, signed or encrypted mail (the whole message:
a footer would break the signature), unknown charsets, UTF-7, HZ and
ISO-2022-KR (UTF-16/32 parts are edited through their exact UTF-8
transcoding), bytes that do not match a multi-byte label, a 7bit/8bit line
that would pass 998 octets, an ISO-2022-JP insertion point that is not in
ASCII state.  A bug here must never lose or hold mail: any exception leaves
the copy unchanged with ``{"skipped": "error"}`` in the report, logged once
per kind of error.

The report (relay log): ``{"html": 1, "text": 1, "language": "ja"}``, plus
``"text_language": "en"`` when a text part fell back to English and
``"not_modified": ["html: charset x-unknown", ...]`` for body parts left
alone; ``{"skipped": reason}`` when no part got a footer.

Cost (``bench/footer.py``, 70 KB quoted-printable newsletter): the work is
split into a recipient-independent plan (:mod:`~beacon_proxy.rewrite.footerplan`:
the MIME parse, the transfer decode, the search for ``</body``; about 0.45 ms)
and applying it to one link (about 0.035 ms).  Every refused or unknown
recipient's copy of a message is the same bytes, so the step keeps the plans of
the last few messages, found again by comparing the bytes (a memcmp): a
further copy costs about 0.04 ms instead of 0.5, and thousands of copies pay
for one plan.  Real senders personalise the header of every message (``To``,
``Message-ID``, ids), so the refused copies of two messages differ in the
header only: such a copy gets a plan derived from the kept one with the same
body (:func:`~beacon_proxy.rewrite.footerplan.rebase_plan`: the message parsed
again and proven to be the kept one's shifted, what the plan reads from the
header read again; about 0.12 ms instead of 0.5 for the 70 KB newsletter).  A
granted copy differs from every other in its body too (its open-pixel tokens),
but the beacon step says where (``Copy.spliced``: the encoded lines it wrote
for this copy): the first granted copy of a shape is planned and kept, each
further one gets a plan derived from it
(:func:`~beacon_proxy.rewrite.footerplan.derive_granted`: the structure moved,
the unchanged parts' plans reused, the HTML part's decoded text, line starts
and ``</body`` proven from the few lines that differ; about 0.13 ms instead of
0.45), or, where that is not proven, planned afresh.

>>> from beacon_proxy.spool.envelope import Envelope
>>> from beacon_proxy.consent.policy import Policy
>>> from beacon_proxy.rewrite.step import Copy, Recipient, Spliced
>>> footer = Footer(lambda r: "https://prefs.example.com/u/T0k3n")
>>> rcpt = Recipient(Envelope("Q1", "a@x.org", ("b@y.org",), received_at=0), "b@y.org",
...                  Policy.REFUSED)
>>> out = footer(Copy(b"Content-Type: text/plain\\r\\n\\r\\nHello\\r\\n"), rcpt)
>>> out.data.decode().splitlines()[2:]
['Hello', '', 'You receive this newsletter because you subscribed.', \
'Stop read-tracking or suspend delivery: https://prefs.example.com/u/T0k3n']
>>> out.report["footer"]
{'html': 0, 'text': 1, 'language': 'en'}
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any, Final

from beacon_proxy.rewrite.footerplan import (
    FooterPlan,
    GrantedBase,
    PartPlan,
    body_parts,
    derive_granted,
    footer_language,
    plan_footer,
    rebase_plan,
)
from beacon_proxy.rewrite.footertext import FooterText, FooterTexts
from beacon_proxy.rewrite.known import body_start
from beacon_proxy.rewrite.mime import MimeTree
from beacon_proxy.rewrite.step import Copy, Recipient, Spliced

__all__ = ["Footer", "FooterText", "FooterTexts", "body_parts"]

log = logging.getLogger(__name__)

#: An absolute http(s) URL of RFC 3986 characters (no space, quote, "<" or ">").
_LINK: Final = re.compile(r"https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]{1,2000}")
_MAX_LOGGED: Final = 64  # kinds of error logged with a traceback (then only counted)
_NEW_PLANS: Final = 2  # plans seen once, kept to be found by the next identical copy
#: Bytes a plan may hold (the message, its body parts encoded and decoded) and still be
#: kept: the cache holds at most ``cache + 2`` plans, so at most ~100 MiB after a run
#: of very big messages; bigger ones are planned for every copy.
_MAX_KEPT: Final = 16 << 20
_GRANTED_BASES: Final = 2  # granted copies' plans kept, one per shape, for the shape's others
#: A derivation costs about 10 us per written stretch (Python), a fresh plan about 9 ns per
#: byte (C searches): more than a few stretches with fewer bytes each are planned afresh
#: (bench/granted_dense.py: 200 pixels in 22 KB, 2.7 ms derived against 0.3 ms fresh).
_FEW_STRETCHES: Final = 2
_BYTES_PER_STRETCH: Final = 2048


class Footer:
    """The copy step that adds the preference-link footer (see the module docstring).

    ``link(recipient)`` gives the recipient's absolute preference URL;
    ``default_language`` is used when ``Content-Language`` names no language
    ``texts`` has (:meth:`FooterTexts.load`, the shipped English and Japanese,
    by default).

    ``cache`` is how many messages' plans are kept once a second identical copy
    has found them (0: none, every copy is planned).  A new plan first goes to a
    small probation list, so that a run of granted copies (each different, never
    seen again) cannot push out the plan that the refused copies share.  A plan
    is found again only by comparing the whole input bytes, or its body bytes and
    a proof that the header changes nothing (:func:`rebase_plan`; the plan so
    derived is remembered in one slot of its own, for the message's further
    refused copies): a stale or racing entry can cost a new plan, never a wrong
    copy.  Threads may share the step:
    the lists are immutable tuples, replaced under a lock.
    """

    def __init__(self, link: Callable[[Recipient], str | None], *, default_language: str = "en",
                 texts: FooterTexts | None = None, cache: int = 4) -> None:
        self.link = link
        self.texts = FooterTexts.load() if texts is None else texts
        if default_language not in self.texts.languages:
            raise ValueError(f"default_language {default_language!r} has no footer texts "
                             f"(known: {', '.join(sorted(self.texts.languages))})")
        if cache < 0:
            raise ValueError(f"cache must be 0 or more plans, not {cache}")
        self.default_language = default_language
        self.cache = cache
        self._logged: set[str] = set()
        self._lock = threading.Lock()
        self._kept: tuple[FooterPlan, ...] = ()  # found again at least once; most recent first
        self._new: tuple[FooterPlan, ...] = ()  # on probation; newest first
        self._derived: FooterPlan | None = None  # the last plan rebase_plan derived
        self._granted: tuple[GrantedBase, ...] = ()  # newest first, one per shape
        #: Granted copies planned from a kept one of their shape (every part plan derived:
        #: derive_granted) and (at least in part) afresh; for tests and benchmarks.
        self.granted_derived = 0
        self.granted_planned = 0

    def __call__(self, copy: Copy, recipient: Recipient) -> Copy:
        if copy.held is not None:  # nothing to add to (run_steps stops before this)
            return copy
        try:
            data, report = self._render(copy.data, recipient, copy.spliced)
        except Exception as exc:  # a footer bug must never lose or hold mail
            self._log_once(exc)
            data, report = copy.data, {"skipped": "error"}
        return Copy(data, {**copy.report, "footer": report}, held=None)

    def _log_once(self, exc: Exception) -> None:
        kind = f"{type(exc).__name__}: {str(exc)[:200]}"
        if kind in self._logged or len(self._logged) >= _MAX_LOGGED:
            return
        self._logged.add(kind)
        log.error("footer step failed, copy sent without footer: %s", kind, exc_info=exc)

    def _render(self, data: bytes, recipient: Recipient,
                spliced: Spliced | None = None) -> tuple[bytes, dict[str, Any]]:
        plan = self.plan(data, spliced)
        if plan.skip is not None:
            return data, {"skipped": plan.skip}
        url = self.link(recipient)
        if url is None:
            return data, {"skipped": "no preference link"}
        if not _LINK.fullmatch(url):
            raise ValueError(f"preference link is not an absolute http(s) URL: {url[:80]!r}")
        out, report = plan.apply(url, self.texts)
        return (data if out is None else out), report

    def plan(self, data: bytes, spliced: Spliced | None = None) -> FooterPlan:
        """The plan for a message: a kept one when ``data`` is the same bytes, one derived
        from a kept one when only the header differs (:func:`rebase_plan`), one derived
        from the first granted copy of the same shape (``spliced``, the beacon step's
        :class:`~beacon_proxy.rewrite.step.Spliced`: :func:`derive_granted`), else a new
        one."""
        kept, new = self._kept, self._new  # snapshots: each tuple is replaced, never changed
        for plan in kept:
            if plan.tree.data is data or plan.tree.data == data:
                if plan is not kept[0]:
                    self._keep(plan)
                return plan
        for plan in new:
            if plan.tree.data is data or plan.tree.data == data:
                self._keep(plan)
                return plan
        derived = self._derived
        if derived is not None and (derived.tree.data is data or derived.tree.data == data):
            return derived
        if spliced is not None and spliced.data is data and self.cache:
            return self._granted_plan(data, spliced)
        derived = self._rebased(data, (*kept, *new))
        if derived is not None:
            return derived
        plan = plan_footer(data, self.texts, self.default_language)
        if self.cache and plan.failure is None and plan.size <= _MAX_KEPT:
            with self._lock:
                self._new = (plan, *self._new[: _NEW_PLANS - 1])
        return plan

    def _rebased(self, data: bytes, plans: tuple[FooterPlan, ...]) -> FooterPlan | None:
        """A plan derived from the first kept one with the same body, if proven.

        Only the first plan whose body has the same length and bytes is tried: a failed
        proof costs one parse more than a new plan, never more.  The base goes off
        probation (a personalised newsletter's refused copies find it again by body); the
        derived plan is the one remembered for further equal bytes (a message's other
        refused recipients), not kept in the lists (each message has its own header)."""
        split = body_start(data) if self.cache else 0
        if not split:
            return None
        body = len(data) - split
        view = memoryview(data)[split:]
        for base in plans:
            old = base.tree.data
            if len(old) - base.tree.root.body_span.start != body or not old.endswith(view):
                continue
            derived = rebase_plan(base, data, split, self.texts, self.default_language)
            if derived is not None:
                self._derived = derived
                self._keep(base)
            return derived
        return None

    def _granted_plan(self, data: bytes, spliced: Spliced) -> FooterPlan:
        """A granted copy's plan: derived from the kept plan of its shape's first copy,
        part by part where proven (:func:`derive_granted`), else new (and kept as its
        shape's when there is none yet).

        Not put on probation with the others: a granted copy's bytes are seen once.  A
        pixel-dense copy (more than ``_FEW_STRETCHES`` written stretches, fewer than
        ``_BYTES_PER_STRETCH`` bytes each) is planned afresh: cheaper than deriving."""
        parts = dict(spliced.parts)
        stretches = sum(len(written) for written in parts.values())
        if stretches > _FEW_STRETCHES and stretches * _BYTES_PER_STRETCH > len(data):
            self.granted_planned += 1  # pixel-dense: a fresh plan is cheaper
            return plan_footer(data, self.texts, self.default_language)
        for base in self._granted:
            if base.shape == spliced.shape:
                plan, derived = derive_granted(base, data, parts, self.texts,
                                               self.default_language)
                if derived and derived == sum(isinstance(p, PartPlan) for p in plan.parts):
                    self.granted_derived += 1
                    return plan
                self.granted_planned += 1
                if not derived:  # a base that proves nothing: this one instead
                    self._keep_granted(GrantedBase(spliced.shape, plan, parts))
                return plan
        plan = plan_footer(data, self.texts, self.default_language)
        self.granted_planned += 1
        self._keep_granted(GrantedBase(spliced.shape, plan, parts))
        return plan

    def _keep_granted(self, base: GrantedBase) -> None:
        """Keep a granted copy's plan as its shape's (the newest first, one per shape)."""
        if base.plan.failure is not None or base.plan.size > _MAX_KEPT:
            return
        with self._lock:
            others = tuple(b for b in self._granted if b.shape != base.shape)
            self._granted = (base, *others[: _GRANTED_BASES - 1])

    def _keep(self, plan: FooterPlan) -> None:
        """Put a plan found again at the front of the kept ones (off probation)."""
        with self._lock:
            others = tuple(p for p in self._kept if p is not plan)
            self._kept = (plan, *others[: self.cache - 1])
            self._new = tuple(p for p in self._new if p is not plan)

    def language(self, tree: MimeTree) -> str:
        """The footer language: the top-level ``Content-Language`` (its first tag's
        primary subtag, if there are texts for it), else the default."""
        return footer_language(tree, self.texts.languages, self.default_language)
