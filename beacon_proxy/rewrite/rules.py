r"""Known tracker rules: vendor URL patterns, matched without running them all.

The list ships as data (``beacon_proxy/data/trackers.json``, documented copy in
``config/trackers.json``), derived from MailTrackerBlocker by
``tools/derive_trackers.py``.  Patterns are case-insensitive ASCII regular
expressions searched in a URL (a pattern may scope case back in with
``(?-i:...)``, as the anchored Pepipost rule does).

>>> rules = load_rules()
>>> rules.match("https://u123.ct.sendgrid.net/wf/open?upn=abc")
'SendGrid'
>>> rules.match("https://cdn.example.com/logo.png?v=3") is None
True

Matching never runs hundreds of regular expressions per URL.  At load time
each pattern gets an index key from its literal text:

* a *word*: a run of letters that every match contains whole, bounded by
  punctuation or digits inside the pattern (``trk\.klaviyomail\.com`` ->
  ``klaviyomail``, ``createsend[0-9]+`` -> ``createsend``), the rarest one;
  a URL is split into its words in C (``bytes.translate`` + ``split``) and
  one set intersection yields the few candidate patterns;
* the two patterns without such a word (``/1\.gif`` and Ongage's) are
  preselected by a substring test of their longest literal.

Candidates are then searched - only if the URL contains the pattern's
longest literal run, a substring test that spares most searches - the most
specific match wins (see :meth:`TrackerRules.match`), and results are
memoised per URL, so a campaign sent to many recipients pays once.

An allow-list of URL prefixes (the proxy's own ``web.public_url``: its
``/o/<token>`` pixel in a message that comes through again, e.g. forwarded)
is never labelled a vendor: ``load_rules(allow=[public_url])``.  It costs one
``bytes.startswith`` per URL not yet memoised.  A word at the start of a
pattern counts as a whole word: upstream's unanchored ``demdex.net`` would
also match ``notdemdex.net``, this index does not (a test checks every
pattern against a sample URL, and random URLs against brute force).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["Rule", "RulesError", "TrackerRules", "literal_runs", "load_rules", "rules_text"]

_FLAGS = re.IGNORECASE | re.ASCII
_WORD = frozenset(b"abcdefghijklmnopqrstuvwxyz")
#: Maps every byte that is not a lower-case ASCII letter to a space (digits split words).
_SPLIT = bytes(c if c in _WORD else 0x20 for c in range(256))
#: Words of ordinary image URLs, most common first: poor index keys, chosen only
#: when a pattern has no other word.
_COMMON = [
    "s", "i", "v", "w", "h", "c", "a", "p", "e", "t", "o", "u", "d", "r", "l", "https", "http",
    "www", "com", "net", "org", "de", "co", "uk", "jp", "io", "images", "image", "img", "png",
    "jpg", "jpeg", "gif", "webp", "cdn", "static", "media", "assets", "files", "file",
    "products", "product", "content", "uploads", "email", "mail", "news", "id", "en", "us", "in",
    "me", "info",
]
_CACHE_SIZE = 8192
_CACHE_URL = 8192  # characters: a longer URL is matched each time, not kept in the memo
#: Top-level wildcard runs ("gaps") that :func:`_searcher` splits a pattern at, and how many
#: characters each takes at least.
_GAPS = {".+": 1, ".+?": 1, ".*": 0, ".*?": 0, "(.+)": 1, "(.*)": 0, "(?:.+)": 1, "(?:.*)": 0}
#: Anchors, lookarounds, back-references (and, to be safe, any "^" or "$"): a pattern with
#: one is searched as it is.
_CONTEXT = re.compile(r"\\[bBAZ0-9]|[\^$]|\(\?[=!<P(]")
_MAX_VARIANTS = 16


class RulesError(ValueError):
    """The rules file is missing, malformed, or holds a pattern that cannot compile."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One vendor pattern and the index key (a word, or a literal) that preselects it."""

    vendor: str
    pattern: str
    key: str  # the URL word or the literal (lower-cased) that preselects this pattern


#: Searches a URL from an offset; what it returns is truthy when the rule matches.
_Search = Callable[[str, int], object]
# (rule rank, the rule's search, start offset, a literal every match contains, lower-case)
_Entry = tuple[int, _Search, int, bytes]
_Atom = tuple[str, str, str]  # (kind: "lit" | "digit" | "other", literal text, quantifier)


def _atoms(pattern: str) -> list[_Atom]:
    """Split a pattern into atoms; classes and groups are opaque.

    >>> _atoms(r"a\\.[0-9]+(x|y)?")
    [('lit', 'a', ''), ('lit', '.', ''), ('digit', '', '+'), ('other', '', '?')]
    """
    return [atom for atom, _, _ in _tokens(pattern)]


def _tokens(pattern: str) -> list[tuple[_Atom, str, str]]:
    """:func:`_atoms` with each atom's text, and the same text without its quantifier."""
    out: list[tuple[_Atom, str, str]] = []
    i, n = 0, len(pattern)
    while i < n:
        c, start = pattern[i], i
        kind, lit = "other", ""
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            kind, lit = ("digit", "") if nxt == "d" else ("other", "") if nxt.isalnum() else (
                "lit", nxt)
            i += 2
        elif c == "[":
            i = pattern.index("]", i + 2 if pattern.startswith(("[]", "[^]"), i) else i + 1) + 1
            kind = "digit" if pattern[start:i] in ("[0-9]", "[\\d]") else "other"
        elif c == "(":
            depth = 0
            while i < n:
                if pattern[i] == "\\":
                    i += 2
                    continue
                depth += {"(": 1, ")": -1}.get(pattern[i], 0)
                i += 1
                if depth == 0:
                    break
        elif c == "|":
            raise RulesError("a top-level alternation has no single literal")
        elif c in ".^$":
            i += 1
        else:
            kind, lit, i = "lit", c, i + 1
        core = i
        quant = ""
        if i < n and pattern[i] in "?*+":
            quant, i = pattern[i], i + 1
        elif i < n and pattern[i] == "{":
            end = pattern.index("}", i) + 1
            quant, i = pattern[i:end], end
        if quant and i < n and pattern[i] in "?+":
            i += 1  # lazy or possessive suffix
        out.append(((kind, lit, quant), pattern[start:i], pattern[start:core]))
    return out


def _leading_dots(pattern: str) -> int:
    """How many unquantified ``.`` open the pattern (searched from that offset instead)."""
    k = 0
    while k < len(pattern) and pattern[k] == "." and pattern[k + 1 : k + 2] not in ("*", "+",
                                                                                 "?", "{"):
        k += 1
    return k


def literal_runs(pattern: str) -> list[tuple[str, bool, bool]]:
    """Literal runs every match contains: (text, bounded on the left, on the right).

    The pattern's start and a digit class bound a run; its end does not, since
    patterns often stop inside a word (Mailgun's ``/o/eJ`` matches ``/o/eJwN...``).

    >>> literal_runs(r"cmail[0-9][0-9]?.com/t/")
    [('cmail', True, True), ('com/t/', False, False)]
    """
    atoms = _atoms(pattern[_leading_dots(pattern) :])
    runs: list[tuple[str, bool, bool]] = []
    cur: list[str] = []
    left = True
    for kind, lit, quant in atoms:
        required = quant in ("", "+") or (quant.startswith("{") and not quant.startswith("{0"))
        if kind == "lit" and required:
            cur.append(lit)
        if kind != "lit" or quant:
            if cur:
                runs.append(("".join(cur), left, kind == "digit"))
            cur = []
            left = kind == "digit"
    if cur:
        runs.append(("".join(cur), left, False))
    return runs


def _words(run: str, left: bool, right: bool) -> list[str]:
    """Whole alphabetic words of a run (digits and punctuation separate words).

    >>> _words("t.strk", True, True), _words("/e2t/o", False, False)
    (['t', 'strk'], ['e', 't'])
    """
    parts = re.split(r"[^a-z]", run.lower())
    last = len(parts) - 1
    keep = [(k > 0 or left) and (k < last or right) for k in range(len(parts))]
    return [w for w, ok in zip(parts, keep, strict=True) if ok and w]


def _specificity(pattern: str) -> int:
    return sum(len(text) for text, _, _ in literal_runs(pattern))


def _key(pattern: str) -> tuple[str | None, str]:
    """(index word, or None when the pattern has no whole word; its longest literal)."""
    runs = literal_runs(pattern)
    words = [w for text, left, right in runs for w in _words(text, left, right)]
    longest = max((text for text, _, _ in runs), key=len, default="").lower()
    if not words:
        return None, longest
    rank = {w: i for i, w in enumerate(_COMMON)}
    return max(words, key=lambda w: (rank.get(w, len(_COMMON)), len(w))), longest


def _variants(tokens: list[tuple[_Atom, str, str]]) -> list[str] | None:
    """The fixed-width patterns a run of atoms stands for (``x?`` taken both ways), or None
    when the run has a variable width otherwise (or too many variants).

    >>> _variants(_tokens("sellercentral(-europe)?.amazon"))
    ['sellercentral(-europe).amazon', 'sellercentral.amazon']
    """
    out = [""]
    for (_, _, quant), text, core in tokens:
        if quant == "" or (quant[0] == "{" and "," not in quant):
            options = [text]
        elif quant == "?":
            options = [core, ""]
        else:
            return None
        out = [head + option for head in out for option in options]
        if len(out) > _MAX_VARIANTS:
            return None
    for variant in out:
        try:  # a look-behind must have a fixed width: re checks it for us
            re.compile("(?<=" + variant + ")", _FLAGS)
        except re.error:
            return None
    return out


def _searcher(pattern: str, compiled: re.Pattern[str]) -> _Search:
    """``compiled.search``, or the same answer in linear time for a pattern with gaps.

    A gap is a top-level ``.+`` or ``.*``.  ``re`` searching ``A.+B`` tries every later
    position for ``B`` after every match of ``A``: quadratic in a URL that repeats ``A``
    without a ``B`` (``/mo/`` twenty thousand times against ``/mo/.+.gif``: seconds),
    cubic with two gaps (``/CI0/.+/.+=[0-9]{3}``).  But the match of ``A`` that *ends*
    first leaves the rest the most room, so the pieces between gaps are searched in
    turn, each once: a piece ends where the earliest-ending match of its fixed-width
    variants ends (for a fixed width, that is the leftmost match), the next is searched
    from there plus the gap's minimum, and the last one anywhere after.  ``.`` does not
    match a line feed, so a URL with one (never a scanned URL) is searched as it is.
    Patterns with anchors, lookarounds or pieces of variable width keep ``re``'s search.
    """
    plain = compiled.search
    if _CONTEXT.search(pattern):
        return plain
    pieces: list[list[tuple[_Atom, str, str]]] = [[]]
    gaps: list[int] = []
    for token in _tokens(pattern):
        gap = _GAPS.get(token[1])
        if gap is None:
            pieces[-1].append(token)
        else:
            gaps.append(gap)
            pieces.append([])
    if not gaps:
        return plain
    heads: list[tuple[re.Pattern[str], ...]] = []
    for piece in pieces[:-1]:
        variants = _variants(piece)
        if variants is None:
            return plain
        heads.append(tuple(re.compile(v, _FLAGS) for v in dict.fromkeys(variants)))
    last = re.compile("".join(text for _, text, _ in pieces[-1]), _FLAGS)
    steps = tuple(zip(heads, gaps, strict=True))

    def search(url: str, pos: int) -> object:
        if "\n" in url:
            return plain(url, pos)
        for variants, gap in steps:
            end = -1
            for variant in variants:
                m = variant.search(url, pos)
                if m is not None and (end < 0 or m.end() < end):
                    end = m.end()
            if end < 0:
                return None
            pos = end + gap
        return pos <= len(url) and last.search(url, pos) is not None

    return search


class TrackerRules:
    """Compiled vendor patterns with a word index; see the module docstring."""

    def __init__(self, vendors: Mapping[str, Iterable[str]], *, source: str = "",
                 allow: Iterable[str] = ()) -> None:
        self.source = source
        self.allow = tuple(_allow_prefix(url) for url in allow)
        self._allow = tuple(p.encode("ascii", "replace") for p in self.allow)
        rules: list[Rule] = []
        by_word: dict[bytes, list[_Entry]] = {}
        by_literal: dict[bytes, list[_Entry]] = {}
        for vendor, patterns in vendors.items():
            for pattern in patterns:
                try:
                    skip = _leading_dots(pattern)
                    compiled = re.compile(pattern[skip:], _FLAGS)
                    word, literal = _key(pattern)
                except (re.error, RulesError, ValueError) as exc:
                    raise RulesError(f"{vendor}: cannot use pattern {pattern!r}: {exc}") from exc
                if word is None and len(literal) < 3:
                    raise RulesError(f"{vendor}: pattern {pattern!r} has no literal to index")
                must = max((text for text, _, _ in literal_runs(pattern)), key=len, default="")
                entry = (len(rules), _searcher(pattern[skip:], compiled), skip,
                         must.lower().encode("ascii"))  # ranked below
                if word is not None:
                    by_word.setdefault(word.encode("ascii"), []).append(entry)
                else:
                    by_literal.setdefault(literal.encode("ascii"), []).append(entry)
                rules.append(Rule(vendor, pattern, word or literal))
        self.rules: tuple[Rule, ...] = tuple(rules)
        # Rank: the most specific rule (most literal text) first, then file order.
        order = sorted(range(len(rules)), key=lambda i: (-_specificity(rules[i].pattern), i))
        rank = {index: r for r, index in enumerate(order)}
        self._ranked = tuple(rules[i] for i in order)

        def ranked(entries: list[_Entry]) -> tuple[_Entry, ...]:
            return tuple(sorted(((rank[i], c, skip, must) for i, c, skip, must in entries),
                                key=lambda entry: entry[0]))

        self._by_word = {word: ranked(entries) for word, entries in by_word.items()}
        self._words = frozenset(by_word)
        self._by_literal = tuple((lit, ranked(entries)) for lit, entries in by_literal.items())
        self._cache: dict[str, str | None] = {}

    def __len__(self) -> int:
        return len(self.rules)

    @property
    def fingerprint(self) -> bytes:
        """A digest of everything a match depends on: every rule (vendor and pattern, in
        order), the allow-list and the matching flags; equal rules, equal fingerprints."""
        text = json.dumps([self.source, [[r.vendor, r.pattern] for r in self.rules],
                           list(self.allow), int(_FLAGS)])
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=32).digest()

    def match(self, url: str) -> str | None:
        """The vendor of the most specific rule found in ``url``, else None.

        Most specific: the rule with the most literal text (``trk\\.klaviyomail\\.com``
        before Epsilon's catch-all ``/O/[a-z0-9_-]+``); file order breaks ties.
        """
        cache = self._cache
        if url in cache:
            return cache[url]
        found = self._match(url)
        if len(url) <= _CACHE_URL:  # the memo outlives the message: it holds no huge URLs
            if len(cache) >= _CACHE_SIZE:
                cache.clear()
            cache[url] = found
        return found

    @property
    def matched(self) -> Mapping[str, str | None]:
        """The memo of :meth:`match` (URL -> vendor), to read before calling it for a URL."""
        return self._cache

    def _match(self, url: str) -> str | None:
        raw = url.encode("ascii", "replace").lower()
        if self._allow and raw.startswith(self._allow):
            return None
        best = len(self.rules)
        for word in self._words.intersection(raw.translate(_SPLIT).split()):
            for index, search, skip, must in self._by_word[word]:
                if index < best and must in raw and search(url, skip):
                    best = index
        for literal, entries in self._by_literal:
            if literal in raw:
                for index, search, skip, must in entries:
                    if index < best and must in raw and search(url, skip):
                        best = index
        return self._ranked[best].vendor if best < len(self._ranked) else None

    def explain(self, url: str) -> list[Rule]:
        """Every rule whose pattern matches ``url``, most specific first, by brute force."""
        return [r for r in self._ranked if re.search(r.pattern, url, _FLAGS)]


def _allow_prefix(url: str) -> str:
    """``https://Relay.Example/x`` -> ``https://relay.example/x/``: lower case, one slash."""
    text = url.strip().lower().rstrip("/")
    if not re.match(r"https?://[^/?#]+", text):
        raise RulesError(f"allow-list entry {url!r} is not an http(s) URL")
    return text + "/"


def _packaged() -> str:
    return resources.files("beacon_proxy").joinpath("data/trackers.json").read_text("utf-8")


def rules_text(path: str | Path | None = None) -> str:
    """The rules file's text (the packaged copy when ``path`` is None): read once by a
    process that hands the same rules to processes it starts later (the analysis pool's
    workers are restarted at any time; an upgraded package or an edited file must not
    give them other rules than the cache's fingerprint names)."""
    try:
        return _packaged() if path is None else Path(path).read_text("utf-8")
    except (OSError, ValueError) as exc:
        raise RulesError(f"cannot load tracker rules from {path or 'package'}: {exc}") from exc


def load_rules(path: str | Path | None = None, *, allow: Iterable[str] = (),
               text: str | None = None) -> TrackerRules:
    """Load and compile the tracker rules (the packaged copy when ``path`` is None; the
    given ``text`` of a rules file, as :func:`rules_text` read it, when not None).

    ``allow``: URL prefixes no rule may match (the proxy's own ``public_url``).
    """
    if text is None:
        text = rules_text(path)
    try:
        data = json.loads(text)
        vendors = data["vendors"]
        if not isinstance(vendors, dict):
            raise TypeError("'vendors' must be an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise RulesError(f"cannot load tracker rules from {path or 'package'}: {exc}") from exc
    return TrackerRules(vendors, source=str(data.get("source", "")), allow=allow)
