"""Campaign diffing: a URL that differs between recipients' copies identifies them.

A single message cannot tell an opaque subscriber id from a file name:
``https://img.shop.example/hero/k3JdP9xQw2Lm.jpg`` may be a photo or a
beacon.  The relay sees every recipient's copy of a campaign, and there the
difference shows: the photo's URL is the same in every copy, the beacon's
changes with the recipient.  This module groups copies into campaigns
(:func:`campaign_key`) and compares their loaded URLs position by position
(:class:`CampaignMemory`, :func:`personal_urls`).

>>> a = [("img", "https://img.shop.example/hero/k3JdP9xQw2Lm.jpg"),
...      ("img", "https://cdn.shop.example/banner.png")]
>>> b = [("img", "https://img.shop.example/hero/Zr8TqW1vNc5e.jpg"),
...      ("img", "https://cdn.shop.example/banner.png")]
>>> personal_urls([a, b])
{0: 'path[1]'}

**The campaign key**: the sender's domain (``From``), the ``List-Id``, the
subject and a fingerprint of the HTML skeleton.  The subject is decoded
(RFC 2047), case-folded, stripped of the words of the ``To`` display names
and of the recipient's local part (merge fields: "Ann, your deals"), digit
runs become ``#`` (order numbers, dates) and punctuation is dropped.  The
skeleton is a hash of the loaded references in document order - their kind
(``img``, ``css-url``, ...) and the last two labels of their host - and the
number of HTML parts: per-recipient text (names, merge fields) does not
change it, a different newsletter does.  Copies whose structure differs by
recipient (a personalised number of product blocks) fall into different
campaigns and are not diffed: content is never lost that way, a beacon may
be missed.

**The rule.** Each loaded reference is a *position*: its ordinal among the
message's loaded references.  Its URL is split into components - the scheme,
each host label, each path segment, each query value (by key, in order), the
fragment - and its *pattern* is the element, the scheme, the number of host
labels and of path segments, the query keys in order and whether there is a
fragment.  A position is *personal by comparison* when, across the copies:

* every copy has the same pattern there (else it is never judged);
* at least one and at most ``max_varying`` components differ, and every
  other component is equal in every copy (so a different article image - a
  different file name *and* a different folder - is not flagged);
* every value of every differing component is identifier-like: a run of
  letters and digits of 6 or more with a digit, of 12 or more letters in
  mixed case, or of 16 or more (file extensions aside; ``summer-dress``,
  ``iphone-15-pro`` are not);
* no value of a differing component was seen in two copies: an id is unique
  per recipient, whereas a content choice (three product variants among
  twelve recipients) or a segment (``?seg=gold``) repeats.

False positives: per-recipient *content* whose only difference is one
identifier-like token and whose values never repeat (a recommended product
per recipient, named ``sku83417.jpg``, across few copies) is flagged and
lost in refused copies.  With two copies a repeat cannot show.  False
negatives: a sender that varies the structure per recipient, a URL longer
than ``max_url`` or with more than ``max_components`` components, more than
``max_varying`` differing components, positions past ``max_positions``, and
the same recipient's copy learned twice (its id then counts as a repeat).

**Bounds** (:class:`CampaignMemory`): values are kept as 8-byte BLAKE2b
hashes, never in clear; at most ``max_positions`` (1024) positions, each with
the first copy's component hashes (at most ``max_components``, 32) and, for
at most ``max_varying`` (4) differing components, at most ``max_values``
(16) distinct value hashes: at most about 1.2 MB as JSON (:meth:`~CampaignMemory.to_json`,
hashes packed in base64) for a hostile campaign, 18 KB for the 125 loaded
references of ``bench/newsletter.py``.  Learning and judging a copy are
linear in its references and the length of their URLs (one hash per
reference whose URL is the first copy's); no regex runs over a document.

**The relay** (a later step) will call it so: for a new message, compute
:func:`campaign_key` from its analysis and load the campaign's memory
(:meth:`CampaignMemory.from_json`, a row shared by the nodes); hold the first
copies of a new campaign briefly, :meth:`~CampaignMemory.learn` each copy
(:func:`loaded` of its analysis), then :meth:`~CampaignMemory.judge` it, map
the positions to references with :func:`references_at` and pass them to
:meth:`~beacon_proxy.rewrite.engine.Engine.render` as ``diffed``.  Each of
them becomes a tracker with the reason ``campaign-diff`` (:func:`diff_finding`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.utils import getaddresses, parseaddr
from functools import lru_cache
from itertools import compress, count
from operator import ne
from typing import TYPE_CHECKING, Any, NamedTuple

from beacon_proxy.headerfacts import field as header_field
from beacon_proxy.headerfacts import header_block
from beacon_proxy.rewrite.classify import Finding, is_layout_finding
from beacon_proxy.rewrite.html import PendingImg, Reference

if TYPE_CHECKING:
    from beacon_proxy.rewrite.engine import Analysis

__all__ = ["REASON", "CampaignKey", "CampaignMemory", "Loaded", "Loads", "campaign_key",
           "diff_finding", "diffed_by_part", "identifier_like", "loaded", "loads",
           "may_be_personal", "normalise_subject", "personal_urls", "references_at", "split_url"]

REASON = "campaign-diff"
MAX_SUBJECT = 1000  # characters of a subject read
_RUN = re.compile(r"[A-Za-z0-9]+")
_WORD = re.compile(r"\w+")
_DIGITS = re.compile(r"[0-9]+")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}\Z")
#: The host of a URL (one match at its start; user info and port left out).
_HOST = re.compile(r"[^/]{0,20}//(?:[^/?#@]{0,256}@)?([^/?#:@]{0,256})")


class Loaded(NamedTuple):
    """One loaded (remote) reference of an analysis: where it is, what, which URL."""

    part: int  # index into Analysis.parts
    entry: int  # index into that part's entries
    element: str
    url: str


def loaded(analysis: Analysis) -> list[Loaded]:
    """The analysis's loaded references in document order; a position is an index here."""
    new = tuple.__new__  # no keyword handling: a newsletter has hundreds
    return [new(Loaded, (p, i, "img" if entry.__class__ is PendingImg
                         else entry.element, entry.url))  # type: ignore[union-attr]
            for p, part in enumerate(analysis.parts)
            for i, entry in enumerate(part.entries) if entry.remote]


@dataclass(frozen=True, slots=True)
class Loads:
    """What campaign diffing reads of an analysis's loaded references, made once per
    analysis (:meth:`~beacon_proxy.rewrite.engine.Analysis.shared`: it depends on the
    parts' entries only): :func:`loaded`, the copy as the memory learns and judges it,
    and :func:`campaign_key`'s skeleton."""

    refs: tuple[Loaded, ...]
    copy: tuple[tuple[str, str], ...]
    skeleton: str


def loads(analysis: Analysis) -> Loads:
    """The analysis's :class:`Loads`, kept on it (about 0.05 ms a message of 125 references).

    >>> from beacon_proxy.rewrite.engine import Engine
    >>> from beacon_proxy.rewrite.rules import load_rules
    >>> analysis = Engine(load_rules()).analyse(b"Content-Type: text/html\\r\\n\\r\\n"
    ...                                         b'<img src="https://t.example/o.gif?u=1">')
    >>> loads(analysis).copy, loads(analysis) is loads(analysis)
    ((('img', 'https://t.example/o.gif?u=1'),), True)
    """
    return analysis.shared("campaign.loads", _make_loads)


def _make_loads(analysis: Analysis) -> Loads:
    refs = tuple(loaded(analysis))
    return Loads(refs, tuple([(r.element, r.url) for r in refs]),
                 _skeleton(len(analysis.parts), refs))


def references_at(refs: Sequence[Loaded], positions: Iterable[int]) -> frozenset[tuple[int, int]]:
    """``(part, index)`` of the references at ``positions`` (for ``Engine.render``)."""
    return frozenset((refs[p].part, refs[p].entry) for p in positions if 0 <= p < len(refs))


# -- the campaign key ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignKey:
    """What makes two messages copies of one campaign."""

    sender: str  # the From domain, lower-cased
    list_id: str  # "" without one
    subject: str  # normalise_subject()
    skeleton: str  # hex hash of the loaded references' kinds and base hosts

    @property
    def digest(self) -> str:
        """A short stable name for the campaign (a storage key)."""
        text = "\n".join((self.sender, self.list_id, self.subject, self.skeleton))
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _decoded(value: str) -> str:
    if "=?" not in value:  # no encoded word: decode_header and make_header change nothing
        return value
    try:
        return str(make_header(decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


@lru_cache(maxsize=1024)
def _subject_words(subject: str) -> tuple[tuple[str, str], ...]:
    """Each word of a subject as :func:`normalise_subject` reads it, with its digits as
    ``#``: the subject of a campaign is the same in every copy, so this is kept."""
    text = unicodedata.normalize("NFKC", _decoded(subject[:MAX_SUBJECT])).casefold()
    return tuple((w, _DIGITS.sub("#", w)) for w in _WORD.findall(text))


def normalise_subject(subject: str, personal_words: Iterable[str] = ()) -> str:
    """The subject as campaigns share it (see the module docstring).

    >>> normalise_subject("=?utf-8?q?Ann=2C_your_12_deals!?=", ["Ann"])
    'your # deals'
    """
    drop = {w.casefold() for w in personal_words if w}
    return " ".join([digits for word, digits in _subject_words(subject) if word not in drop])


def _personal_words(header: bytes, recipient: str | None,
                    subject: Sequence[tuple[str, str]] | None = None) -> list[str]:
    """The words of the ``To`` display names and local parts, and of the recipient's local
    part.  ``subject``: :func:`_subject_words` of the subject, when only the words that
    could be among them matter (an empty list when none of them could be)."""
    to = _decoded((header_field(header, "to") or "")[:MAX_SUBJECT])
    local = recipient.partition("@")[0] if recipient else ""
    if subject is not None:
        # A personal word is a run of word characters of the To field (quotes, escapes
        # and comments aside) or of the local part: none of the subject's words is one
        # unless it occurs in them.  getaddresses is the larger part of the key's cost.
        loose = to.replace("\\", "").casefold() + "\0" + local.casefold()
        if not any(word in loose for word, _ in subject):
            return []
    words: list[str] = []
    for name, address in getaddresses([to]):
        words += _WORD.findall(name)
        words += _WORD.findall(address.partition("@")[0])
    if recipient:
        words += _WORD.findall(local)
    return words


@lru_cache(maxsize=1024)
def _sender_domain(value: str) -> str:
    """The domain of a ``From`` field (the same in every copy of a campaign: kept)."""
    return parseaddr(_decoded(value[:MAX_SUBJECT]))[1].rpartition("@")[2].lower()


def _base_host(url: str) -> str:
    m = _HOST.match(url)
    return ".".join(m.group(1).lower().rsplit(".", 2)[-2:]) if m is not None else ""


#: URL -> "\0" + its base host, for the skeleton: a campaign's copies share most URLs.
_BASES: dict[str, str] = {}
_BASES_SIZE = 16384


def _skeleton(parts: int, refs: Iterable[Loaded]) -> str:
    """The hex hash of the loaded references' kinds and base hosts, and the part count."""
    lines = [str(parts)]
    append, bases = lines.append, _BASES
    for ref in refs:
        url = ref[3]
        base = bases.get(url)
        if base is None:
            end = url.find("/", url.find("//") + 2)
            base = "\0" + _base_host(url[:end if 0 <= end < 300 else 300])
            if len(bases) >= _BASES_SIZE:
                bases.clear()
            bases[url] = base
        append(ref[2] + base)
    text = "\n".join(lines)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


class _HeaderKey(NamedTuple):
    """What :func:`campaign_key` reads of one header, for every recipient alike."""

    header: bytes
    sender: str
    subject: str  # the field as written
    words: tuple[tuple[str, str], ...]  # _subject_words(subject)
    loose: str  # the To field as _personal_words searches it, and "\0"
    plain: str  # the normalised subject when no word of it is a personal one


#: The last header :func:`campaign_key` read (replaced whole: one tuple, no lock needed).
#: A newsletter sent as one message per recipient under one header (a list's ``To``)
#: reads its From, Subject and To fields once, not per message.
_last_header: _HeaderKey | None = None


def _header_key(header: bytes) -> _HeaderKey:
    global _last_header
    last = _last_header
    if last is not None and last.header == header:  # the same bytes: the same fields
        return last
    subject = header_field(header, "subject") or ""
    words = _subject_words(subject)
    to = _decoded((header_field(header, "to") or "")[:MAX_SUBJECT])
    last = _last_header = _HeaderKey(
        header, _sender_domain(header_field(header, "from") or ""), subject, words,
        to.replace("\\", "").casefold() + "\0", normalise_subject(subject))
    return last


def campaign_key(analysis: Analysis, recipient: str | None = None) -> CampaignKey:
    """The campaign of a message (``recipient``: its address, to drop merge fields); the
    skeleton is :func:`loads`'s, kept on the analysis, the header is read each time
    (its fields once for a run of messages with the same header bytes)."""
    header = header_block(analysis.data)
    read = _header_key(header)
    local = recipient.partition("@")[0].casefold() if recipient else ""
    # _personal_words' own test: no subject word in the To field or the local part, no
    # personal word to drop (the usual case), so the subject is the plain one.
    loose = read.loose + local
    if not any(word in loose for word, _ in read.words):
        subject = read.plain
    else:
        subject = normalise_subject(read.subject,
                                    _personal_words(header, recipient, read.words))
    return CampaignKey(read.sender, analysis.list_id or "", subject, loads(analysis).skeleton)


# -- a URL's shape ------------------------------------------------------------------------


def identifier_like(value: str) -> bool:
    """A value that could name a recipient (see the module docstring).

    >>> [identifier_like(v) for v in ("k3JdP9xQw2Lm.jpg", "482913", "summer-dress.jpg",
    ...                               "iphone-15-pro", "QwErTyUiOpAs")]
    [True, True, False, False, True]
    """
    value = _EXTENSION.sub("", value)
    for run in _RUN.findall(value):
        if len(run) >= 16:
            return True
        if len(run) >= 6 and any(c.isdigit() for c in run):
            return True
        if len(run) >= 12 and not run.islower() and not run.isupper():
            return True
    return False


def split_url(url: str, max_components: int = 32) -> tuple[str, list[tuple[str, str]]] | None:
    """The URL's pattern and its named components, or None past ``max_components``.

    >>> url = "https://Img.Shop.example/hero/a1.jpg?sid=9&x=1#top"
    >>> split_url(url)[1]  # doctest: +NORMALIZE_WHITESPACE
    [('scheme', 'https'), ('host[0]', 'img'), ('host[1]', 'shop'), ('host[2]', 'example'),
     ('path[0]', 'hero'), ('path[1]', 'a1.jpg'), ('query sid', '9'), ('query x', '1'),
     ('fragment', 'top')]
    """
    rest, hash_, fragment = url.partition("#")
    rest, question, query = rest.partition("?")
    scheme, _, rest = rest.partition("//")
    scheme = scheme.rstrip(":").lower()
    host, slash, path = rest.partition("/")
    labels = host.lower().split(".")
    segments = path.split("/") if slash else []
    pairs = [pair.partition("=") for pair in query.split("&")] if question else []
    if 1 + len(labels) + len(segments) + len(pairs) + bool(hash_) > max_components:
        return None
    parts = [("scheme", scheme)]
    parts += [(f"host[{i}]", label) for i, label in enumerate(labels)]
    parts += [(f"path[{i}]", segment) for i, segment in enumerate(segments)]
    parts += [(f"query {key}", value) for key, _, value in pairs]
    if hash_:
        parts.append(("fragment", fragment))
    pattern = "\0".join((scheme, str(len(labels)), str(len(segments)),
                         "&".join(key for key, _, _ in pairs), hash_))
    return pattern, parts


def may_be_personal(copy: Sequence[tuple[str, str]], max_components: int = 32) -> bool:
    """Whether comparison could ever find a reference of ``copy`` personal: some URL
    component is identifier-like (else the first copy need not wait for a second).

    >>> may_be_personal([("img", "https://cdn.example/logo.png")])
    False
    >>> may_be_personal([("img", "https://cdn.example/hero/k3JdP9xQw2Lm.jpg")])
    True
    """
    for _, url in copy:
        split = split_url(url, max_components)
        if split is None or any(identifier_like(value) for _, value in split[1]):
            return True  # a URL too long to judge may hold anything
    return False


def _hash(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


# -- the per-campaign memory --------------------------------------------------------------


@dataclass(slots=True)
class _Varying:
    """The values one differing component took (hashed, bounded)."""

    values: set[int]
    token: bool  # every value seen was identifier-like
    repeated: bool  # a value was seen in two copies


@dataclass(slots=True)
class _Position:
    whole: int  # hash of the first copy's element and URL: most copies repeat it
    pattern: int  # hash of element and URL pattern (which also fixes the component names)
    first: list[int]  # component value hashes of the first copy
    token: list[bool]  # which of the first copy's values are identifier-like
    varying: dict[int, _Varying] = field(default_factory=dict)
    broken: bool = False  # never judged: patterns differ, too long, too many differences
    # The first copy's (element, URL), once seen in this process (never stored): a copy
    # that repeats it is recognised by comparing strings instead of hashing.
    same: tuple[str, str] | None = None

    def is_first(self, element: str, url: str) -> bool:
        """Whether ``(element, url)`` is the first copy's (its hash is ``whole``)."""
        same = self.same
        if same is not None:
            return same[1] == url and same[0] == element
        if _hash(element + "\0" + url) == self.whole:
            self.same = (element, url)
            return True
        return False


class _Shape(NamedTuple):
    pattern: int
    names: list[str]
    hashes: list[int]
    values: list[str]


class CampaignMemory:
    """What the relay keeps of one campaign's copies (bounds: the module docstring)."""

    def __init__(self, *, max_positions: int = 1024, max_components: int = 32,
                 max_varying: int = 4, max_values: int = 16, max_url: int = 4096) -> None:
        if min(max_positions, max_components, max_varying, max_values, max_url) < 1:
            raise ValueError("campaign memory bounds must be positive")
        self.max_positions = max_positions
        self.max_components = max_components
        self.max_varying = max_varying
        self.max_values = max_values
        self.max_url = max_url
        self.copies = 0
        self._positions: list[_Position | None] = []  # None: not judged (URL too long ...)
        # Per position, the first copy's (element, URL) where a copy that repeats it is
        # judged at once (no varying component, known in this process); None elsewhere.
        # Built on the first judge after a change: a known campaign's copies are compared
        # with it in one C-level pass.
        self._quick: list[tuple[str, str] | None] | None = None

    def _shape(self, element: str, url: str) -> _Shape | None:
        if len(url) > self.max_url:
            return None
        split = split_url(url, self.max_components)
        if split is None:
            return None
        pattern, parts = split
        return _Shape(_hash(element + "\0" + pattern), [n for n, _ in parts],
                      [_hash(v) for _, v in parts], [v for _, v in parts])

    def learn(self, copy: Sequence[tuple[str, str]]) -> None:
        """Remember one recipient's copy: its ``(element, url)`` loaded references in order.

        Call it once per recipient: the same copy learned twice makes its ids repeats.
        """
        self._quick = None
        if self.copies == 0:
            for element, url in copy[:self.max_positions]:
                shape = self._shape(element, url)
                self._positions.append(None if shape is None else _Position(
                    _hash(element + "\0" + url), shape.pattern, shape.hashes,
                    [identifier_like(v) for v in shape.values], same=(element, url)))
        else:
            for position, (element, url) in zip(self._positions, copy, strict=False):
                if position is None or position.broken or (
                        not position.varying and position.is_first(element, url)):
                    continue  # the fast path: the same URL as the first copy's
                self._learn_one(position, self._shape(element, url))
        self.copies += 1

    def _learn_one(self, position: _Position, shape: _Shape | None) -> None:
        if shape is None or shape.pattern != position.pattern:
            position.broken = True
            return
        for i, value_hash in enumerate(shape.hashes):
            varying = position.varying.get(i)
            if varying is None:
                if value_hash == position.first[i]:
                    continue
                if len(position.varying) >= self.max_varying:
                    position.broken = True
                    return
                # Earlier copies all had the first value: two or more is a repeat.
                varying = position.varying[i] = _Varying(
                    {position.first[i]}, position.token[i], self.copies >= 2)
            if value_hash in varying.values:
                varying.repeated = True
            elif len(varying.values) < self.max_values:
                varying.values.add(value_hash)
            varying.token = varying.token and identifier_like(shape.values[i])

    def judge(self, copy: Sequence[tuple[str, str]]) -> dict[int, str]:
        """The positions of ``copy`` that are personal by comparison, with the components
        that differ (e.g. ``"path[1]"``, ``"query sid"``)."""
        out: dict[int, str] = {}
        quick = self._quick
        if quick is None:
            quick = self._quick = [
                p.same if p is not None and not p.broken and not p.varying else None
                for p in self._positions]
        positions = self._positions
        for index in compress(count(), map(ne, quick, copy)):  # not the first copy's
            position = positions[index]
            element, url = copy[index]
            if position is None or position.broken:
                continue
            if not position.varying and position.is_first(element, url):
                quick[index] = position.same  # known by its hash until now: by string next
                continue
            shape = self._shape(element, url)
            if shape is None or shape.pattern != position.pattern:
                continue
            differing = set(position.varying)
            if self.copies < 2:
                differing.update(i for i, h in enumerate(shape.hashes) if h != position.first[i])
            # Else a component where this copy differs from the first but no learned copy
            # did (a copy not learned: the memory is full) had one value in two or more
            # copies: a content variant (a segment's hero), not an id.
            if not differing or len(differing) > self.max_varying:
                continue
            if all(self._personal(position, shape, i) for i in differing):
                out[index] = ",".join(shape.names[i] for i in sorted(differing))
        return out

    @staticmethod
    def _personal(position: _Position, shape: _Shape, i: int) -> bool:
        varying = position.varying.get(i)
        if varying is not None and (varying.repeated or not varying.token):
            return False
        return position.token[i] and identifier_like(shape.values[i])

    # -- what the relay stores ------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable form: hashes only (packed, base64), no URL or value in clear."""
        return {"bounds": [self.max_positions, self.max_components, self.max_varying,
                           self.max_values, self.max_url],
                "copies": self.copies,
                "positions": [None if p is None else
                              [p.whole, p.pattern, _pack(p.first),
                               sum(1 << i for i, t in enumerate(p.token) if t), p.broken,
                               [[i, _pack(sorted(v.values)), v.token, v.repeated]
                                for i, v in sorted(p.varying.items())]]
                              for p in self._positions]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CampaignMemory:
        """The memory :meth:`to_json` gave; ``ValueError`` on anything else (or past
        its own bounds)."""
        try:
            memory = cls(**dict(zip(("max_positions", "max_components", "max_varying",
                                     "max_values", "max_url"),
                                    map(int, data["bounds"]), strict=True)))
            memory.copies = int(data["copies"])
            positions = data["positions"]
            if len(positions) > memory.max_positions:
                raise ValueError("more positions than the bound")
            for item in positions:
                memory._positions.append(None if item is None else memory._load(item))
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise ValueError(f"not a campaign memory: {exc}") from exc
        return memory

    def _load(self, item: Sequence[Any]) -> _Position:
        whole, pattern, first, token, broken, varying = item
        hashes = _unpack(first)
        if len(hashes) > self.max_components or len(varying) > self.max_varying:
            raise ValueError("a position past the bounds")
        position = _Position(int(whole), int(pattern), hashes,
                             [bool(int(token) >> i & 1) for i in range(len(hashes))],
                             broken=bool(broken))
        for i, values, all_token, repeated in varying:
            seen = _unpack(values)
            if not 0 <= int(i) < len(hashes) or len(seen) > self.max_values:
                raise ValueError("a differing component past the bounds")
            position.varying[int(i)] = _Varying(set(seen), bool(all_token), bool(repeated))
        return position


def _pack(hashes: Sequence[int]) -> str:
    return base64.b64encode(b"".join(h.to_bytes(8, "big") for h in hashes)).decode("ascii")


def _unpack(text: str) -> list[int]:
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) % 8:
        raise ValueError("packed hashes are 8 bytes each")
    return [int.from_bytes(raw[i:i + 8], "big") for i in range(0, len(raw), 8)]


def personal_urls(copies: Sequence[Sequence[tuple[str, str]]]) -> dict[int, str]:
    """The positions personal by comparison across ``copies`` of one campaign (at least
    two), each with the components that differ; empty for a single copy."""
    if len(copies) < 2:
        return {}
    memory = CampaignMemory()
    for copy in copies:
        memory.learn(copy)
    out: dict[int, str] = {}
    for copy in copies:
        for position, why in memory.judge(copy).items():
            out.setdefault(position, why)
    return out


def diff_finding(finding: Finding, ref: Reference) -> Finding:
    """``finding`` once comparison showed ``ref`` personal: a tracker with ``campaign-diff``.

    A visible image stays visible for a consenting recipient (as one whose URL
    carries the address does): the open endpoint serves a 1x1 pixel.  A layout
    image (a strut, :data:`~beacon_proxy.rewrite.classify.LAYOUT_REASONS` first)
    is no visible image: a consenting recipient's copy points it at the open
    endpoint, a refused one's replaces it by a transparent inline image of its
    size (``Engine``), so the layout does not move.
    """
    if REASON in finding.reasons:
        return finding
    visible = finding.personalised_visible or (
        not finding.tracker and ref.box is not None and not is_layout_finding(finding))
    return finding._replace(tracker=True, reasons=(*finding.reasons, REASON),
                            personalised_visible=visible)


def diffed_by_part(diffed: Collection[tuple[int, int]]) -> dict[int, set[int]]:
    """``(part, index)`` pairs grouped by part."""
    out: dict[int, set[int]] = {}
    for part, index in diffed:
        out.setdefault(part, set()).add(index)
    return out
