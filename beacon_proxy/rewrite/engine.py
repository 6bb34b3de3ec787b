"""The rewriting engine: find beacons once per message, render each recipient's copy.

:meth:`Engine.analyse` does everything that does not depend on the
recipient, once per message: the MIME structure, the transfer-decoded HTML
parts, their scan views (:mod:`~beacon_proxy.rewrite.charsets`), the
references (:mod:`~beacon_proxy.rewrite.html`) and their classification by
rules and size (:mod:`~beacon_proxy.rewrite.classify`).  :meth:`Engine.render`
then adds what does: whether a URL carries this recipient's address, and what
the policy does with each tracker:

* ``refused``: every tracker goes (its ``removal_span`` is replaced by its
  ``neutral`` text); a visible image whose URL identifies the recipient is
  replaced by its ``alt`` text; a layout image (tiny or hidden, no identifier:
  :mod:`~beacon_proxy.rewrite.classify`) keeps its tag and gets a transparent
  ``data:`` image of its declared size as its URL (``Action.INLINE``,
  :mod:`~beacon_proxy.rewrite.inline`), so nothing loads and nothing moves; an
  invisible load (a resource hint, icon or manifest ``<link>`` that is no tracker)
  goes as a tracker does;
* ``granted``: every tracker's URL points at the first-party open endpoint
  (the ``link`` callback mints it); a visible personalised image is kept, as
  the recipient consented and a pixel in its place would break the mail;
  layout images and invisible loads are left as they are.

References that campaign diffing found personal (:mod:`~beacon_proxy.rewrite.campaign`:
their URL differs between the recipients' copies) are given to ``render`` as
``diffed`` and become trackers with the reason ``campaign-diff``.

Edits are applied to the decoded bytes of each part and re-encoded with the
part's own transfer encoding (:func:`~beacon_proxy.rewrite.transfer.apply_edits`,
which re-encodes only the lines it touches); the message is the original
bytes with those bodies spliced in.  Two exceptions change a part's header:
a 7bit/8bit part whose edited line would pass 998 octets is re-encoded as
quoted-printable, and a part in a charset that is not ASCII-compatible
(UTF-16, UTF-32, UTF-7) is scanned as a UTF-8 transcoding and written back
whole in its own charset.

What the precise path could not handle is listed in ``Analysis.unhandled``
(broken MIME, a scan that hit its limits, renderable parts it does not scan
such as ``text/css`` or a ``data:`` URL that a browser loads as a document or
style sheet, opaque or encrypted content); such an analysis is not
``complete``, and the caller (:mod:`~beacon_proxy.rewrite.copies`) then
applies the conservative fallback to refused copies.  Signed parts are left
alone here (``Analysis.signed``): the caller decides whether to unwrap them.
:meth:`Engine.render` raises :class:`RenderError` rather than send a copy in
which an edit could not be made.

A copy needs only the trackers (and the references that identify its
recipient): the others - most of a newsletter's images - stay as the
scanner's compact entries, and their ``Reference`` and ``Item`` objects are
built when someone asks (``HtmlPart.references``, ``Rendered.items``, as
``beacon-proxy scan`` does).
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache, partial
from typing import Any, Final, NamedTuple, TypeVar, cast

from beacon_proxy.consent.policy import Policy
from beacon_proxy.headerfacts import list_id
from beacon_proxy.rewrite.calendar import CalendarChange, calendar_change, is_calendar
from beacon_proxy.rewrite.campaign import diff_finding, diffed_by_part
from beacon_proxy.rewrite.charsets import from_utf8, opens_tags, reading
from beacon_proxy.rewrite.classify import (
    Finding,
    classify,
    classify_entries,
    declared_px,
    is_layout_shaped,
    is_neutralised,
    plain_finding,
)
from beacon_proxy.rewrite.html import Entry, Reference, finish_scan, materialize, scan_entries
from beacon_proxy.rewrite.htmlrefs import EMBEDDED_DOCUMENT
from beacon_proxy.rewrite.identity import RecipientIdentity
from beacon_proxy.rewrite.inline import transparent_png
from beacon_proxy.rewrite.mime import (
    HTML_TYPES,
    MAX_DEPTH,
    MAX_PARTS,
    OPAQUE_TYPES,
    RENDERED_TYPES,
    MimePart,
    MimeTree,
    is_message,
    parse_message,
    reencode,
    reparse_shifted,
)
from beacon_proxy.rewrite.readers import ReaderChecks, ReadersDiffer
from beacon_proxy.rewrite.readings import read_otherwise
from beacon_proxy.rewrite.rescan import MAX_TEMPLATES, QpChecks, ScanCache
from beacon_proxy.rewrite.rules import TrackerRules
from beacon_proxy.rewrite.signed import has_signed_parts
from beacon_proxy.rewrite.transfer import (
    Edit,
    LineTooLongError,
    QpIndex,
    TransferError,
    apply_edits,
    decode_base64,
    decode_indexed,
    splice,
)
from beacon_proxy.rewrite.unmodelled import hide_encoded_files, remote_base, unmodelled_markup

__all__ = ["Action", "Analysis", "Engine", "HtmlPart", "Item", "RenderError", "Rendered"]

Link = Callable[[str], str]  # original tracker URL -> first-party open URL

_new = tuple.__new__
_MAX_HTML_PART = 16 << 20  # bytes of decoded HTML scanned per part
_EMBEDDED: Final = (EMBEDDED_DOCUMENT,)  # a finding's reasons: the part goes to the fallback
_REFUSED_KEPT = 2  # shared refused copies kept per analysis (by campaign diffing's findings)
#: Transfer encodings whose edited bodies say which stretches were written (apply_edits)
_WRITTEN: Final = frozenset({"quoted-printable", "7bit", "8bit", "binary"})


def _remote_bases(tree: MimeTree) -> frozenset[tuple[int, ...]]:
    """The paths of the parts whose header names a remote base URL."""
    return frozenset(part.path for part in tree.parts
                     if remote_base(tree.data[part.header_span]))


@lru_cache(maxsize=1024)
def _identity(recipient: str) -> RecipientIdentity:
    """The recipient's :class:`RecipientIdentity`, kept for the next copy to the same address.

    Building one costs ~30 us (six digests of each spelling, base64 cores, the IDNA
    forms): the relay sends a list's recipients every newsletter of it, and a
    personalised refused copy built it twice (:meth:`Engine.render`, then
    :meth:`Engine._decide`).  The identity's answers never change (its slots are set
    once, but for its digests, made on first need and replaced whole); 1024 of them
    hold ~3 MB.  A list larger than that gains nothing here (each lookup misses, ~1 us).
    """
    return RecipientIdentity(recipient)


class RenderError(ValueError):
    """A copy could not be rendered as the analysis said (the caller falls back)."""


class Action(enum.StrEnum):
    STRIP = "strip"
    REWRITE = "rewrite"
    KEEP = "keep"
    INLINE = "inline"  # a layout image's URL replaced by a transparent data: image


_T = TypeVar("_T")
_SHARED_NAMES: Final = 8  # names Analysis.shared keeps per analysis


@dataclass(frozen=True, slots=True)
class HtmlPart:
    """One HTML part, decoded and scanned (recipient-independent)."""

    part: MimePart
    decoded: bytes
    charset: str
    entries: tuple[Entry, ...]  # the scan's references, some not yet materialized
    noted: dict[int, Finding]  # findings with a reason (classify_entries), by index
    trackers: tuple[int, ...] = ()  # indexes of the findings that are trackers
    qp_index: QpIndex = ()  # quoted-printable line starts, for apply_edits
    transcoded: str | None = None  # the part's own charset when ``decoded`` is UTF-8 of it
    bom: bool = False  # the part's bytes start with a byte order mark (kept on re-encoding)
    layout: tuple[int, ...] = ()  # layout images and invisible loads (is_neutralised)
    foreign: bool = False  # transcoded, browsers read its bytes: they must open no tag
    # URLs inside markup where browsers neither load nor follow them (rewrite.stray):
    # another reader may load them, so a copy they name the recipient of takes the fallback
    strays: tuple[str, ...] = ()
    _cache: dict[str, tuple[Any, ...]] = field(default_factory=dict, repr=False,
                                               compare=False)

    @property
    def references(self) -> tuple[Reference, ...]:
        """Every reference in document order (built on first use)."""
        refs = self._cache.get("references")
        if refs is None:
            refs = self._cache["references"] = tuple(map(materialize, self.entries))
        return refs

    @property
    def findings(self) -> tuple[Finding, ...]:
        """The finding of each reference, without a recipient, same order (built on first use)."""
        findings = self._cache.get("findings")
        if findings is None:
            findings = self._cache["findings"] = tuple([
                self.finding(i) for i in range(len(self.entries))])
        return findings

    def reference(self, index: int) -> Reference:
        refs = self._cache.get("references")
        return refs[index] if refs is not None else materialize(self.entries[index])

    def finding(self, index: int) -> Finding:
        found = self.noted.get(index)
        return found if found is not None else plain_finding(self.entries[index])


@dataclass(frozen=True, slots=True)
class Analysis:
    data: bytes
    tree: MimeTree
    parts: tuple[HtmlPart, ...]
    problems: tuple[str, ...]  # why (parts of) the message are left alone
    list_id: str | None
    urls: str  # every remote URL, joined: one substring test per address form
    unhandled: tuple[str, ...] = ()  # renderable content the precise path did not handle
    signed: bool = False  # signed (or opaque S/MIME) content, left alone here
    # Every calendar part and its refused form (rewrite.calendar): refused copies only
    calendars: tuple[CalendarChange, ...] = ()
    strays: str = ""  # every part's stray URLs (HtmlPart.strays), joined as ``urls``
    # Refused copies whose recipient no URL names are all the same copy: Engine.render
    # keeps the last ones here, by ``diffed``.  Not an init field: ``replace()`` (other
    # bytes) starts with an empty memo, and pickling sends it empty from the workers.
    _refused: dict[frozenset[tuple[int, int]], Rendered] = field(
        init=False, default_factory=dict, repr=False, compare=False)
    # The analysis this one was derived from by Engine.rebase (same body, another header):
    # its shared refused copies give this one's (Engine.render).  Not sent when pickled.
    _origin: Analysis | None = field(init=False, default=None, repr=False, compare=False)
    # What shared() keeps, by name (on the origin only).  Not sent when pickled.
    _shared: dict[str, Any] = field(init=False, default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> list[Any]:
        """Pickled (to and from the analysis workers) without the shared refused copies."""
        return [{} if f.name in ("_refused", "_shared") else None if f.name == "_origin"
                else getattr(self, f.name) for f in fields(self)]

    def shared(self, name: str, make: Callable[[Analysis], _T]) -> _T:
        """``make(analysis)`` made once for this analysis and every one rebased from it.

        Why: every copy of a newsletter is judged against the same analysis (the
        known-bytes cache), or one :meth:`Engine.rebase` derived from it (another
        header): what depends only on the parts' entries -- which a rebase keeps, the
        very objects, in the same parts -- need not be made again per message.
        ``make`` must read nothing else (not the header, not the bytes); it gets the
        origin, so a mistake there shows in every message alike.  At most
        :data:`_SHARED_NAMES` names; threads may race to make one (then equal values).
        """
        origin = self._origin or self
        try:
            return cast(_T, origin._shared[name])
        except KeyError:
            pass
        value = make(origin)
        if len(origin._shared) < _SHARED_NAMES:
            origin._shared[name] = value
        return value

    def __setstate__(self, state: list[Any]) -> None:
        for f, value in zip(fields(self), state, strict=True):
            object.__setattr__(self, f.name, value)

    @property
    def modifiable(self) -> bool:
        return bool(self.parts)

    @property
    def complete(self) -> bool:
        """Every part a client could render was scanned (signed ones aside)."""
        return not self.unhandled


class Item(NamedTuple):
    """One reference as a recipient's copy sees it.

    A ``NamedTuple`` like ``Reference`` and ``Finding``: every copy lists every
    reference, and a frozen dataclass costs several times as much to build.
    """

    part: int  # index into Analysis.parts
    reference: Reference
    finding: Finding
    action: Action


_Decided = list[tuple[int, int, Item]]  # (part, reference index, item), in document order


@dataclass(frozen=True, slots=True, eq=False)
class Rendered:
    """One recipient's copy: its bytes, and what was found and done."""

    data: bytes
    trackers: tuple[Item, ...]  # the items whose finding is a tracker
    changed: bool
    problems: tuple[str, ...] = ()  # parts that could not be re-encoded, left unmodified
    layout: tuple[Item, ...] = ()  # layout images and invisible loads it neutralises
    _all: Callable[[], list[Item]] = field(default=list, repr=False)
    _items: list[tuple[Item, ...]] = field(default_factory=list, repr=False)
    #: A granted copy: its shape (the analysis's origin and the places of the edits) and
    #: the stretches of each rewritten part's body written for it (``step.Spliced``);
    #: None when not known (another policy, a part re-encoded whole or in base64).
    written: tuple[Hashable, tuple[tuple[tuple[int, ...], tuple[tuple[int, int], ...]], ...]] \
        | None = None
    calendar: int = 0  # constructs that could load removed from calendar parts (refused)
    # report() by (policy, problems): a refused copy's Rendered is shared by every
    # recipient of the message that no URL names, and its report is the same for each
    _reports: dict[tuple[Policy, tuple[str, ...]], dict[str, Any]] = field(
        default_factory=dict, repr=False)

    @property
    def items(self) -> tuple[Item, ...]:
        """Every reference of the copy, with its finding and action (built on first use)."""
        if not self._items:
            self._items.append(tuple(self._all()))
        return self._items[0]

    def report(self, policy: Policy, problems: Sequence[str] = ()) -> dict[str, Any]:
        """What the relay log says about this copy: counts, kinds, vendors, no URLs.

        A new dict each time (callers add to it); the values in it are made once per
        (policy, problems) and shared: nothing changes a report's values."""
        key = (policy, tuple(problems))
        kept = self._reports.get(key)
        if kept is None:
            kept = self._reports[key] = self._report(problems)
        return dict(kept)

    def _report(self, problems: Sequence[str]) -> dict[str, Any]:
        trackers = self.trackers
        out: dict[str, Any] = {"beacons": len(trackers)}
        if trackers:
            out["kinds"] = dict(Counter(i.finding.element for i in trackers))
            out["vendors"] = sorted({i.finding.vendor for i in trackers if i.finding.vendor})
        if trackers or self.layout:
            out["actions"] = dict(Counter(i.action.value for i in (*trackers, *self.layout)))
        if self.calendar:
            out["calendar_loads"] = self.calendar
        if problems or self.problems:
            out["rewrite_problems"] = [*problems, *self.problems]
        return out


class _Where:
    """How a problem names its part (formatted only when a problem is reported)."""

    __slots__ = ("part",)

    def __init__(self, part: MimePart) -> None:
        self.part = part

    def __str__(self) -> str:
        path = ".".join(str(i + 1) for i in self.part.path) or "1"
        return f"part {path} ({self.part.content_type})"


def _escape_text(raw: bytes) -> bytes:
    """An attribute value's raw bytes, safe as text content."""
    return raw.replace(b"<", b"&lt;").replace(b">", b"&gt;")


class Engine:
    """The tracker rules and a bounded cache of recent scans
    (:class:`~beacon_proxy.rewrite.rescan.ScanCache`, which never changes a result);
    safe to share between threads."""

    def __init__(self, rules: TrackerRules, *, max_depth: int = MAX_DEPTH,
                 max_parts: int = MAX_PARTS,
                 max_tags: int = 200_000, templates: int = MAX_TEMPLATES) -> None:
        self.rules = rules
        self._max_depth = max_depth
        self._max_parts = max_parts
        self._max_tags = max_tags
        # The last scans, so that a campaign's further copies are scanned only where they
        # differ (rewrite/rescan.py): the same result, a fraction of the work.
        self._templates = ScanCache(templates)  # 0: every message scanned in full
        # Other readers' checks (well-formed markup, Roundcube's washer, stray URLs), a
        # campaign's next copies checked from the last that passed (rewrite/readers.py).
        self._readers = ReaderChecks(self.rules, max_tags, templates)
        # Quoted-printable bodies read one way, so that a copy is searched where it differs.
        self._qp = QpChecks(templates)
        self._learn = templates > 0

    @property
    def fingerprint(self) -> bytes:
        """What an analysis depends on besides the message: the rules' fingerprint and the
        limits (the scan cache never changes a result), for
        :class:`~beacon_proxy.rewrite.known.AnalysisCache`."""
        limits = f"{self._max_depth}/{self._max_parts}/{self._max_tags}/{_MAX_HTML_PART}"
        return self.rules.fingerprint + limits.encode("ascii")

    # -- once per message ---------------------------------------------------

    def analyse(self, data: bytes) -> Analysis:
        tree = parse_message(data, max_depth=self._max_depth, max_parts=self._max_parts)
        problems = list(tree.problems)
        unhandled = list(tree.problems)
        parts: list[HtmlPart] = []
        calendars: list[CalendarChange] = []
        based = _remote_bases(tree) if tree.modifiable else frozenset()
        if tree.modifiable:
            for part in tree.parts:
                if part.is_multipart:
                    if part.content_type in OPAQUE_TYPES:
                        unhandled.append(f"{_Where(part)}: encrypted content")
                    continue
                if not part.signed and is_calendar(tree, part):
                    change = calendar_change(tree, part) if part.content_type not in (
                        RENDERED_TYPES) else "a calendar in a part read as markup too"
                    if isinstance(change, str):
                        unhandled.append(f"{_Where(part)}: {change}")
                    else:
                        calendars.append(change)
                if part.content_type in HTML_TYPES:
                    scanned = self._scan_part(tree, part, problems, based)
                    if scanned is not None:
                        parts.append(scanned)
                    elif not part.signed:
                        unhandled.append(problems[-1])
                elif part.signed:
                    continue
                elif part.content_type == "text/plain" and hide_encoded_files(
                        tree.body(part))[1]:
                    unhandled.append(f"{_Where(part)}: an encoded HTML file in plain text")
                elif part.content_type in RENDERED_TYPES:
                    unhandled.append(f"{_Where(part)}: not scanned by the precise path")
                elif part.content_type in OPAQUE_TYPES or is_message(part.content_type):
                    # message/delivery-status and the like are not rendered as HTML
                    unhandled.append(f"{_Where(part)}: {part.reason or 'opaque content'}")
        urls = "\n".join([e.url for p in parts for e in p.entries if e.remote])
        strays = "\n".join([url for p in parts for url in p.strays])
        return Analysis(data, tree, tuple(parts), tuple(problems), list_id(data), urls,
                        tuple(unhandled), has_signed_parts(tree), tuple(calendars), strays)

    def rebase(self, analysis: Analysis, data: bytes, split: int) -> Analysis | None:
        """``analysis`` made the analysis of ``data``, a message with the same body
        (``data[split:]``) and another header; None unless proven (then analyse ``data``).

        Real senders personalise the header (``To``, ``Message-ID``, ids): every copy of a
        newsletter would miss :class:`~beacon_proxy.rewrite.known.AnalysisCache` and cost
        a round trip to the analysis pool (~2 ms CPU for 70 KB) for the analysis it has.
        Nothing here trusts that the header does not matter; it is proven, from the
        cheap part of the real analysis (~0.2 ms for 70 KB, half of it the parse):

        * the bodies are compared byte for byte (not a digest), and the old analysis's
          message body starts at its root's body (``len(body)`` from the end);
        * ``data`` is parsed again by the real parser with the same limits, and its tree
          must be the old one shifted by ``delta`` (the difference of the headers'
          lengths): every :class:`~beacon_proxy.rewrite.mime.MimePart` field equal but
          the spans, which are the old ones plus ``delta`` (the root's header span
          excepted: it is the header), its root's body starting at ``split``, every
          other part's spans inside the body, and the same problems, notes and
          ``modifiable``.  So every part reads the same bytes with the same type,
          charset, transfer encoding, disposition, boundary and signed-ness: the
          scan (:meth:`_scan_part`: decoding, charset reading, references, rules) and
          the plain-text and opaque checks of :meth:`analyse` give the same result
          (these two proofs: :func:`~beacon_proxy.rewrite.mime.reparse_shifted`, shared
          with the footer's :func:`~beacon_proxy.rewrite.footerplan.rebase_plan`);
        * what else :meth:`analyse` reads from the header is computed again and
          compared: the remote ``Content-Base``/``Content-Location`` of every part, the
          root's included (:func:`_remote_bases`), and :func:`has_signed_parts`.  The
          ``List-Id`` (:func:`~beacon_proxy.headerfacts.list_id`) is read from ``data``,
          as :meth:`analyse` does: nothing else in an analysis depends on it.

        Audit of :meth:`analyse` (keep it in step when it reads anything new): the tree
        (``parse_message``: the root's header gives its Content-* fields, problems such
        as a bare CR anywhere or a missing blank line), ``_remote_bases`` (header bytes
        of every part), ``part.body`` via spans, ``hide_encoded_files`` of plain-text
        bodies, :meth:`_scan_part` (``modifiable``, ``signed``, the remote bases,
        ``transfer_encoding``, ``charset``, the body bytes; the rules and limits are the
        cache's context), ``list_id(data)``, ``has_signed_parts(tree)``.  Held to a fresh
        analysis by ``tests/rewrite/test_known_header_fuzz.py`` (a differential fuzzer:
        run it with a large ``REBASE_FUZZ`` after changing anything above).

        The result shares the old analysis's recipient-independent work: each
        :class:`HtmlPart`'s decoded bytes, entries, findings and lazily built
        references (their spans are offsets into the decoded part, not the message),
        with its shifted :class:`~beacon_proxy.rewrite.mime.MimePart`; its memo of
        refused copies starts empty (a copy holds the header), and is filled from the
        old analysis's when it has one (:func:`_rebased_refused`: the new header, then
        the old copy from the body on; not for a message whose root is an HTML part).
        """
        old_tree = analysis.tree
        tree = reparse_shifted(old_tree, data, split, max_depth=self._max_depth,
                               max_parts=self._max_parts)
        if tree is None:
            return None
        if has_signed_parts(tree) != analysis.signed or (
                tree.modifiable and _remote_bases(tree) != _remote_bases(old_tree)):
            return None
        if not tree.root.is_multipart and is_calendar(tree, tree.root) != is_calendar(
                old_tree, old_tree.root):
            return None  # a single-part message named .ics in one header only
        by_path = {part.path: part for part in tree.parts}
        parts = tuple([replace(p, part=by_path[p.part.path]) for p in analysis.parts])
        derived = Analysis(data, tree, parts, analysis.problems, list_id(data), analysis.urls,
                           analysis.unhandled, analysis.signed, analysis.calendars,
                           analysis.strays)
        object.__setattr__(derived, "_origin", analysis._origin or analysis)
        return derived

    def _scan_part(self, tree: MimeTree, part: MimePart, problems: list[str],
                   based: frozenset[tuple[int, ...]] = frozenset()) -> HtmlPart | None:
        where = _Where(part)
        if not part.modifiable:
            problems.append(f"{where}: {part.reason}")
            return None
        if part.signed:
            problems.append(f"{where}: signed, left unmodified")
            return None
        if based and any(part.path[:i] in based for i in range(len(part.path) + 1)):
            problems.append(f"{where}: a remote Content-Base/Content-Location, relative URLs "
                            "load from it")
            return None
        body = tree.body(part)
        qp_index: QpIndex = ()
        try:
            if part.transfer_encoding == "base64":  # one decode, and whether it has two
                decoded, raw = decode_base64(body)
            else:
                (decoded, qp_index), raw = decode_indexed(body, part.transfer_encoding), False
        except (TransferError, ValueError) as exc:
            problems.append(f"{where}: cannot decode: {exc}")
            return None
        if raw:  # the fallback writes it back decodable, so no client shows the raw text
            problems.append(f"{where}: base64 that clients read in two ways (its length, "
                            "data after its padding, base64url's '-' and '_', or bytes "
                            "over 0x7F), not scanned precisely")
            return None
        if qp_index and self._qp.two_readings(body):  # the fallback writes it back canonically
            problems.append(f"{where}: quoted-printable that decoders read in two ways "
                            "('==', blanks or a bare CR after a soft line break's '=', "
                            "an escape cut by one, or bytes over 0x7F), not scanned "
                            "precisely")
            return None
        if len(decoded) > _MAX_HTML_PART:
            problems.append(f"{where}: larger than {_MAX_HTML_PART} bytes, not scanned")
            return None
        read = reading(decoded, part.charset_label)
        if read is None:
            problems.append(f"{where}: text that clients decode differently ({part.charset})")
            return None
        if read.transcoded is not None:  # edited as UTF-8, written back whole
            qp_index = ()
        decoded, view, charset = read.text, read.view, read.charset
        learn = self._learn and not read.others  # read in several ways: scanned in full
        rescanned = (self._templates.rescan(view, charset, self._max_tags) if learn
                     else None)
        noted: dict[int, Finding] | None = None
        if rescanned is not None:  # a further copy of a campaign: only what differs
            entries, _, incomplete = finish_scan(rescanned)
            noted = rescanned.findings(entries, self._classify)
        else:
            low = view.lower()  # once, for both checks below
            unmodelled = unmodelled_markup(low)
            if unmodelled is not None:
                problems.append(f"{where}: {unmodelled}, not scanned precisely")
                return None
            entries, _, incomplete = scan_entries(
                view, max_tags=self._max_tags, charset=charset, low=low,
                learner=self._templates if learn else None)
        if incomplete is not None:
            problems.append(f"{where}: {incomplete}, left unmodified")
            return None
        strays = self._readers.check(decoded, view, charset, entries, rescanned)
        if isinstance(strays, ReadersDiffer):
            problems.append(f"{where}: {strays.reason}, not scanned precisely")
            return None
        if read.others and (otherwise := read_otherwise(read.others, entries, charset,
                                                        self._max_tags)) is not None:
            problems.append(f"{where}: text that clients decode differently "
                            f"({part.charset}): {otherwise}")
            return None
        if noted is None:
            noted = classify_entries(entries, self.rules)
            if rescanned is None:
                self._templates.classified(view, charset, noted)
        if any(finding.reasons[:1] == _EMBEDDED for finding in noted.values()):
            problems.append(f"{where}: a data: URL loaded as a document or style sheet "
                            "(iframe, object, embed, link, @import), not scanned precisely")
            return None
        trackers = tuple([i for i, finding in noted.items() if finding.tracker])
        layout = tuple([i for i, finding in noted.items() if is_neutralised(finding)])
        return HtmlPart(part, decoded, charset, entries, noted, trackers, qp_index,
                        read.transcoded, read.bom, layout, read.foreign, strays)

    def _classify(self, entries: Sequence[Entry]) -> dict[int, Finding]:
        return classify_entries(entries, self.rules)

    # -- once per recipient ---------------------------------------------------

    def items(self, analysis: Analysis, recipient: str | None, policy: Policy,
              diffed: Collection[tuple[int, int]] = ()) -> list[Item]:
        """Every reference with its finding for this recipient and the policy's action."""
        return self._all_items(analysis.parts,
                               self._decide(analysis, recipient, policy, diffed))

    def _decide(self, analysis: Analysis, recipient: str | None, policy: Policy,
                diffed: Collection[tuple[int, int]] = ()) -> _Decided:
        """Items of the trackers and of the references that identify the recipient.

        Every other reference is kept as it is, with its recipient-free finding.
        ``diffed``: ``(part, index)`` of references that campaign diffing found
        personal (:mod:`~beacon_proxy.rewrite.campaign`), trackers here.
        """
        identity = _identity(recipient) if recipient else None
        personal = identity is not None and bool(identity.find(analysis.urls))
        by_part = diffed_by_part(diffed) if diffed else {}
        refused = policy is Policy.REFUSED
        out: _Decided = []
        for index, part in enumerate(analysis.parts):
            mine: set[int] = set()  # references whose URL identifies this recipient
            if personal and identity is not None:
                mine = {i for i, entry in enumerate(part.entries)
                        if entry.remote and identity.find(entry.url)}
            compared: set[int] = set()  # found personal by campaign diffing
            if by_part and index in by_part:
                compared = {i for i in by_part[index] if 0 <= i < len(part.entries)
                            and part.entries[i].remote}
                mine |= compared
            if refused and part.layout:
                mine.update(part.layout)  # not personal: classify() below finds out
            for i in sorted(mine.union(part.trackers)):
                ref = part.reference(i)
                # Without the recipient in any URL, the recipient-free finding is the one
                # classify() would give.
                finding = (classify(ref, self.rules, identity)
                           if personal and i in mine else part.finding(i))
                if i in compared:
                    finding = diff_finding(finding, ref)
                out.append((index, i, _new(Item, (index, ref, finding,
                                                  self._action(ref, finding, policy)))))
        return out

    @staticmethod
    def _all_items(parts: tuple[HtmlPart, ...], decided: _Decided) -> list[Item]:
        """Every reference of ``parts`` as an item: ``decided`` 's, the others kept.

        Given the parts, not their analysis: a :class:`Rendered` keeps this call for its
        :attr:`~Rendered.items`, and the analysis keeps its shared refused copy; holding
        the analysis there made each analysis a reference cycle, freed by the garbage
        collector's passes rather than when its last user drops it (~60 us per new
        70 KB newsletter, a twentieth of its analyse + render).
        """
        out: list[Item] = []
        first: list[int] = []  # each part's first item in out
        keep = Action.KEEP
        for index, part in enumerate(parts):
            first.append(len(out))
            out += [_new(Item, (index, ref, finding, keep))
                    for ref, finding in zip(part.references, part.findings, strict=True)]
        for index, i, item in decided:
            out[first[index] + i] = item
        return out

    @staticmethod
    def _action(ref: Reference, finding: Finding, policy: Policy) -> Action:
        if policy is Policy.REFUSED and is_layout_shaped(finding):
            # A layout image (also one campaign diffing found personal) keeps its size.
            # AMP for Email allows only https images: a data: URI would invalidate the
            # AMP part (clients then show the HTML one), so an AMP image goes instead.
            inline = ref.rewritable and not ref.tag.startswith("amp-")
            return Action.INLINE if inline else Action.STRIP
        if not finding.tracker:
            return (Action.STRIP if policy is Policy.REFUSED and is_neutralised(finding)
                    else Action.KEEP)
        if policy is Policy.REFUSED:
            return Action.STRIP
        if finding.personalised_visible:
            return Action.KEEP
        return Action.REWRITE if ref.rewritable else Action.STRIP

    def names_astray(self, analysis: Analysis, recipient: str | None) -> bool:
        """Whether a URL inside markup where browsers load nothing names ``recipient``
        (:mod:`~beacon_proxy.rewrite.stray`): that refused copy takes the fallback."""
        return bool(analysis.strays and recipient
                    and _identity(recipient).find(analysis.strays))

    def render(self, analysis: Analysis, recipient: str | None, policy: Policy,
               link: Link | None = None, *,
               diffed: Collection[tuple[int, int]] = ()) -> Rendered:
        """One recipient's copy; ``diffed``: references found personal by campaign
        diffing, as ``(part, index into its entries)``, stripped or rewritten as trackers.

        A refused copy for a recipient that no URL of the message names is the same copy
        for every such recipient: it is rendered once per analysis (and ``diffed``) and
        the same :class:`Rendered` returned for the others."""
        if policy is Policy.REFUSED and not (
                recipient and _identity(recipient).find(analysis.urls)):
            key = frozenset(diffed)
            memo = analysis._refused
            shared = memo.get(key)
            if shared is None:
                shared = _rebased_refused(analysis, key) or self._render(
                    analysis, None, policy, None, diffed)
                if len(memo) >= _REFUSED_KEPT:
                    memo.clear()
                memo[key] = shared
            return shared
        return self._render(analysis, recipient, policy, link, diffed)

    def _render(self, analysis: Analysis, recipient: str | None, policy: Policy,
                link: Link | None, diffed: Collection[tuple[int, int]]) -> Rendered:
        decided = self._decide(analysis, recipient, policy, diffed)
        trackers = tuple([item for _, _, item in decided if item.finding.tracker])
        layout = tuple([item for _, _, item in decided
                        if not item.finding.tracker and item.action is not Action.KEEP])
        everything = partial(self._all_items, analysis.parts, decided)  # not the analysis
        edits: dict[int, list[Edit]] = {}
        for index, _, item in decided:
            edit = self._edit(analysis.parts[index], item, link)
            if edit is not None:
                edits.setdefault(index, []).append(edit)
        calendars = [c for c in analysis.calendars if c.new is not None] \
            if policy is not Policy.GRANTED else []
        if not edits and not calendars:
            return Rendered(analysis.data, trackers, False, (), layout, everything)
        changes = self._calendars(analysis.tree, calendars)
        notes: list[str] = []
        # A granted copy says where it differs from the others (step.Spliced): the
        # stretches written per part, and its shape, the places of the edits
        shape: list[tuple[int, int, int]] | None = [] if policy is Policy.GRANTED else None
        written: list[tuple[tuple[int, ...], tuple[tuple[int, int], ...]]] = []
        for index, part_edits in edits.items():
            part = analysis.parts[index]
            merged = _separated(_merge(part_edits), part.decoded)
            stretches: list[tuple[int, int]] | None = None
            if shape is not None and part.transcoded is None \
                    and part.part.transfer_encoding in _WRITTEN:
                stretches = []
                shape += [(index, edit.start, edit.end) for edit in merged]
            try:
                body, header = self._encode(analysis.tree, part, merged, stretches)
            except ValueError as exc:  # TransferError, bad edits: never send it half-done
                raise RenderError(f"{_Where(part.part)}: {exc}") from exc
            if header is not None:
                notes.append(f"{_Where(part.part)}: re-encoded as quoted-printable"
                             if part.transcoded is None else
                             f"{_Where(part.part)}: re-encoded whole in {part.transcoded}")
            if stretches is None or header is not None:
                shape = None  # not known for this part: for none
            else:
                written.append((part.part.path, tuple(stretches)))
            changes.append((part.part, body, header))
        known = None
        if shape is not None:
            origin = analysis.shared("granted shape", _new_shape)
            known = ((origin, tuple(shape)), tuple(written))
        return Rendered(analysis.tree.replace_parts(changes), trackers, True,
                        tuple(notes), layout, everything, written=known,
                        calendar=sum(c.count for c in calendars))

    @staticmethod
    def _calendars(tree: MimeTree, calendars: list[CalendarChange]
                   ) -> list[tuple[MimePart, bytes, bytes | None]]:
        """The refused form of each calendar part that has one, re-encoded."""
        changes = []
        by_path = {part.path: part for part in tree.parts} if calendars else {}
        for calendar in calendars:
            part = by_path[calendar.path]
            try:
                body, header = reencode(tree, part, calendar.new or b"", part.transfer_encoding)
            except ValueError as exc:  # never send it half-done
                raise RenderError(f"{_Where(part)}: {exc}") from exc
            changes.append((part, body, header))
        return changes

    @staticmethod
    def _encode(tree: MimeTree, part: HtmlPart, edits: list[Edit],
                written: list[tuple[int, int]] | None = None) -> tuple[bytes, bytes | None]:
        """The part's new body, and its new header when the transfer encoding changes;
        ``written`` gets the stretches of the body written anew (``apply_edits``)."""
        mime = part.part
        cte = mime.transfer_encoding
        if part.transcoded is None:
            try:
                return apply_edits(tree.body(mime), cte, edits, decoded=part.decoded,
                                   qp_index=part.qp_index, written=written), None
            except LineTooLongError:  # a granted link made a 7bit/8bit line too long
                new = splice(part.decoded, edits)
        else:
            new = from_utf8(splice(part.decoded, edits), part.transcoded, bom=part.bom)
            if part.foreign and opens_tags(new):
                raise ValueError("the edited bytes open a tag for clients that read them "
                                 "as ASCII")
        return reencode(tree, mime, new, cte)

    @staticmethod
    def _edit(part: HtmlPart, item: Item, link: Link | None) -> Edit | None:
        ref = item.reference
        if item.action is Action.STRIP:
            if item.finding.personalised_visible and ref.element == "img":
                alt = part.decoded[ref.alt_span[0]:ref.alt_span[1]] if ref.alt_span else b""
                return Edit(ref.tag_span[0], ref.tag_span[1], _escape_text(alt))
            return Edit(ref.removal_span[0], ref.removal_span[1], ref.neutral)
        if item.action is Action.INLINE:
            return Edit(ref.url_span[0], ref.url_span[1], _inline_image(ref).encode("ascii"))
        if item.action is Action.REWRITE:
            if link is None:  # no open endpoint configured: nothing may load
                return Edit(ref.removal_span[0], ref.removal_span[1], ref.neutral)
            return Edit(ref.url_span[0], ref.url_span[1], link(ref.url).encode("ascii"))
        return None


def _rebased_refused(analysis: Analysis, key: frozenset[tuple[int, int]]) -> Rendered | None:
    """The shared refused copy of a derived analysis (:meth:`Engine.rebase`) made from
    its origin's, when the origin has one for ``key``: the new header, then the origin's
    copy from its body on.  None: render it.

    Why: the refused copy of every personalised message of a newsletter differs from
    the first one's in the header only, yet each derived analysis starts with an empty
    memo and rendered it again (0.07 ms of the 70 KB newsletter's ~1 ms per message).

    Why it is the same bytes: a refused copy for a recipient no URL names depends on
    the analysis's parts, their decoded bytes and findings (shared by the derived
    analysis), ``diffed`` (the key) and each edited part's body bytes, transfer
    encoding and header (:meth:`Engine._encode`: a part re-encoded whole takes its
    line ending from its header, and a new transfer encoding rewrites it).  The rebase
    proved the trees equal but shifted, and every part but the root lies in the body:
    so only a message whose root is itself an HTML part (a single-part message) could
    render its body differently under another header, and it is rendered instead (the
    differential fuzzer found the case: a UTF-16 part re-encoded whole after an LF
    header).  Otherwise the edits replace bodies or headers of parts in the body, at
    or after the root's body start, so the bytes before it are the origin's header
    (checked too) and the rest is the origin's copy.  The trackers, layout images and
    items are recipient-free and equal (the same parts' references and findings).
    """
    origin = analysis._origin
    shared = None if origin is None else origin._refused.get(key)
    if origin is None or shared is None or any(not p.part.path for p in analysis.parts) or any(
            not c.path for c in analysis.calendars):
        return None
    if not shared.changed:
        data = analysis.data
    else:
        old_split = origin.tree.root.body_span.start
        if not shared.data.startswith(memoryview(origin.data)[:old_split]):
            return None
        data = b"".join((memoryview(analysis.data)[:analysis.tree.root.body_span.start],
                         memoryview(shared.data)[old_split:]))
    return Rendered(data, shared.trackers, shared.changed, shared.problems, shared.layout,
                    shared._all, shared._items, calendar=shared.calendar)


def _new_shape(origin: Analysis) -> object:
    """What the granted copies of one analysis and those rebased from it have in common
    (``Rendered.written``): an object of their own, compared by identity."""
    return object()


def _inline_image(ref: Reference) -> str:
    """The transparent image that takes a layout image's place: its declared size."""
    box = ref.box
    width: float = 1
    height: float = 1
    if box is not None:
        width = declared_px(box.width, box.css_width) or 1
        height = declared_px(box.height, box.css_height) or 1
    return transparent_png(round(width), round(height))


def _separated(edits: list[Edit], decoded: bytes) -> list[Edit]:
    """``edits`` (sorted, not overlapping), changed where one would join the bytes
    before it to the bytes after it into markup.

    A removed tag is in the data state, so text before it is text: only a ``<`` there
    can make markup of what follows (``<<img src=T1>img src=T2>`` would become
    ``<img src=T2>``, a tag the original shows as text; ``<`` then ``!--`` would open a
    comment that hides a ``<style>`` start tag, and turns the style sheet's text into
    markup).  ``< `` is text in every state that matters: such a ``<`` gets a space
    after it.  In a style sheet a removed ``@import`` leaves two blanks
    (:mod:`~beacon_proxy.rewrite.css`: ``u@import 'T1';rl(T2)`` is no ``url()``), which
    after a ``</style`` the style sheet's text held (``</style@import 'T1';>`` is
    text) would end the ``<style>``: there a ``_`` goes first.

    >>> [e.replacement for e in _separated([Edit(1, 16, b"")], b"<<img src=//t/o>img src=//t/p>")]
    [b' ']
    >>> [e.replacement for e in _separated([Edit(0, 3, b""), Edit(3, 5, b"x")], b"<ab<cdef")]
    [b'', b'x']
    >>> _separated([Edit(7, 22, b"  ")], b"</STYLE@import 'T1';>")[0].replacement
    b'_  '
    """
    out = edits
    tail = b""  # the output's last bytes before the current edit (up to 7)
    pos = 0
    for i, edit in enumerate(edits):
        if edit.start - pos >= _TAIL:
            tail = decoded[edit.start - _TAIL:edit.start]
        else:
            tail = (tail + decoded[pos:edit.start])[-_TAIL:]
        replacement = edit.replacement
        if edit.start < edit.end:
            after = replacement[:1] or decoded[edit.end:edit.end + 1]
            if tail[-1:] == b"<" and not replacement[:1].isspace():
                replacement = b" " + replacement
            elif after in _ENDS_TAG_NAME and tail.lower() == b"</style":
                replacement = b"_" + replacement
            elif tail[-1:] in b"-!" and _ends_comment(
                    tail[-3:], (replacement + decoded[edit.end:edit.end + 3])[:3]):
                replacement = b" " + replacement
            if replacement and _ends_comment(replacement[-3:], decoded[edit.end:edit.end + 3]):
                replacement += b" "  # an alt text ending "--" before ">"
        if replacement is not edit.replacement:
            if out is edits:
                out = list(edits)
            out[i] = Edit(edit.start, edit.end, replacement)
        tail = (tail + replacement)[-_TAIL:]
        pos = edit.end
    return out


def _ends_comment(left: bytes, right: bytes) -> bool:
    """Whether ``left`` + ``right`` make a comment's end (``-->``, ``--!>``) that neither
    has alone: a tag removed inside an Outlook conditional comment, which a browser reads
    as a comment, between ``--`` and ``>`` would end it early, and what follows in the
    conditional (read only as Outlook's markup) would load in the browser."""
    joined = left + right
    return any(end in joined and end not in left and end not in right
               for end in (b"-->", b"--!>"))


_TAIL: Final = len(b"</style")
#: What ends a tag name (an end tag's too): HTML whitespace, "/" and ">".
_ENDS_TAG_NAME: Final = frozenset([b"\t", b"\n", b"\f", b"\r", b" ", b"/", b">"])


def _merge(edits: list[Edit]) -> list[Edit]:
    """Sorted, non-overlapping edits: an enclosing edit wins, touching ones join.

    Nested spans occur (a ``srcset`` candidate inside a removed ``<img>``);
    neighbouring ``srcset`` candidates share their comma.
    """
    edits.sort(key=lambda e: (e.start, -e.end))
    out: list[Edit] = []
    for edit in edits:
        if out and edit.start < out[-1].end:
            last = out[-1]
            if edit.end <= last.end:
                continue  # inside an edit already made
            out[-1] = Edit(last.start, edit.end, last.replacement + edit.replacement)
        else:
            out.append(edit)
    return out
