"""Does a URL carry the recipient's address?  In which form?

>>> me = RecipientIdentity("Jane.Doe@Example.com")
>>> me.find("https://t.example/o.gif?e=jane.doe%40example.com")
['address-urlencoded']
>>> me.find("https://t.example/p/9E107D9D372BB6826BD81D3542A419D6.gif")  # md5 of another text
[]
>>> import hashlib
>>> me.find("https://t.example/o?h=" + hashlib.sha256(b"jane.doe@example.com").hexdigest())
['address-sha256']

Detected, each under its reason:

``address``
    the address itself, in any letter case;
``address-urlencoded``
    the address in a decoded reading of the URL, in any letter case: percent-decoded up
    to four times (``%40``, ``%2540``, ``%252540``, any hex case), with ``+`` for
    spaces, without line ends (base64 as MIME wraps it), or with its escapes read - HTML
    character references (``&#64;``, also once percent-decoded: ``%26%2364%3B``),
    ``\\u0040``, ``%u0040``, ``\\x40`` - and its compatibility forms folded (NFKC: a
    full-width at sign; zero-width characters and soft hyphens dropped);
``address-base64``
    standard or URL-safe base64, padded or not, of the address as given, lower-cased,
    with its domain lower-cased (how the consent store keeps it) or
    percent-encoded (``btoa(encodeURIComponent(address))``) - alone, at the start of,
    or anywhere inside a longer base64 string (all three byte alignments; the few
    characters that mix with the neighbouring bytes are left out), in any reading;
``address-hex``, ``address-base32``
    the address's bytes in hex (any case) or in base32 (any case, padded or not: at the
    start of a base32 string or alone), as given, lower-cased or with its domain
    lower-cased;
``address-md5`` ... ``address-sha512``
    hex MD5, SHA-1, SHA-224, SHA-256, SHA-384 or SHA-512 of the trimmed,
    lower-cased address (and of the address as given and with its domain
    lower-cased, when they differ), in any letter case, in any reading, also
    with ``-``, ``:``, ``.`` or ``/`` between its digits (a UUID's dashes, path
    segments).

Each is looked for in every spelling of the same mailbox: an internationalised
domain as its A-label (``xn--``, what senders hash and put in URLs) and as its
U-label (``bücher.example``), whichever the envelope used, and a quoted local part
that is a plain dot-string (``"ann.lee"@...``) without its quotes - the forms
:func:`~beacon_proxy.consent.address.parse_address` treats as one recipient.

Not detected: salted or keyed hashes, other hash functions (SHA-3, BLAKE2), truncated
digests, digests of the address with a line end (``echo address | md5sum``), digests in
base64 or base32, hashes of other normalisations (Gmail dots, ``+tags``, an arbitrary
mix of letter cases), base64 of other wrappers (UTF-16, base64 twice), the address
reversed, in ROT13 or spelled out (``reader at example dot org``), split across
parameters or path segments (``u=reader&d=example.org``), encrypted or opaque subscriber
IDs. Opaque IDs are why tiny images and vendor rules are checked too, and why campaign
diffing compares copies.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import html
import re
import threading
import unicodedata
from typing import Literal
from urllib.parse import quote, unquote, unquote_plus

import idna

from beacon_proxy.address import plain_local_part
from beacon_proxy.rewrite.htmlattr import html_unescape

__all__ = ["HASHES", "RecipientIdentity", "base64_cores", "spellings"]

HASHES = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512")
_MIN_CORE = 6  # shorter base64 fragments would match by chance
_MIN_CODED = 8  # bytes: a shorter address's hex or base32 would match by chance
_HASH_NEW = tuple((getattr(hashlib, name), "address-" + name) for name in HASHES)
#: Each hash's hex length, in the order of HASHES (growing: 32, 40, 56, 64, 96, 128).
_HEX_LENGTHS = tuple(getattr(hashlib, name)().digest_size * 2 for name in HASHES)
_MIN_HEX = min(_HEX_LENGTHS)
#: bytes.translate: a lower-case hex digit -> "x", any other byte -> " ".
_HEX_MARKS = bytes(0x78 if c in b"0123456789abcdef" else 0x20 for c in range(256))
_HEX_RUN = b"x" * _MIN_HEX
_SEPARATED = b"x" * 5  # two hex digits, a separator, two hex digits
#: Characters quote() never escapes, and "@": such an address needs no quote() calls.
_PLAIN = re.compile(r"[A-Za-z0-9_.~@-]*")
#: Percent-decoding rounds at most (each reading that changes the text is searched).
_ROUNDS = 4
#: JavaScript's, JSON's and IIS's escapes of a character.
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|%u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")
#: Characters a browser or a sender's template drops or that show as nothing.
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")
#: What separates hex digits in a formatted digest (a UUID, colons, path segments).
_HEX_SEPARATOR = re.compile(r"(?<=[0-9a-f]{2})[-:./](?=[0-9a-f]{2})")


def spellings(address: str) -> list[str]:
    """``address`` and the other spellings of the same mailbox: the domain as A-label and
    as U-label, the local part without quotes when it is a plain dot-string (first:
    ``address`` itself; no duplicates; an address that is none of these: itself alone).

    >>> spellings("ann@b\u00fccher.example")
    ['ann@bücher.example', 'ann@xn--bcher-kva.example']
    >>> spellings('"Ann"@XN--BCHER-KVA.example')[3:]
    ['Ann@XN--BCHER-KVA.example', 'Ann@xn--bcher-kva.example', 'Ann@bücher.example']
    >>> spellings("ann@example.org")
    ['ann@example.org']
    """
    local, at, domain = address.rpartition("@")
    if not at:
        return [address]
    locals_ = dict.fromkeys((local, plain_local_part(local)))
    domains = dict.fromkeys((domain,))
    if not domain.isascii() or "xn--" in domain.lower():
        for convert in (_a_label, _u_label):
            other = convert(domain)
            if other is not None:
                domains[other] = None
    return list(dict.fromkeys(f"{lp}@{d}" for lp in locals_ for d in domains))


def _a_label(domain: str) -> str | None:
    try:
        return idna.encode(unicodedata.normalize("NFC", domain), uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def _u_label(domain: str) -> str | None:
    try:
        return idna.decode(domain.lower())
    except (idna.IDNAError, UnicodeError, ValueError):
        return None


def _domain_lowered(address: str) -> str:
    """``address`` with its domain lower-cased, its local part as given."""
    local, at, domain = address.rpartition("@")
    return f"{local}{at}{domain.lower()}"


def base64_cores(data: bytes) -> list[str]:
    """The base64 text of ``data`` that is the same wherever ``data`` sits in a longer blob.

    One string per byte alignment (0, 1, 2 bytes before it), standard alphabet,
    without the characters that also depend on neighbouring bytes.

    >>> base64_cores(b"a@b.example")[0] == binascii.b2a_base64(b"a@b.example").decode()[:14]
    True
    """
    cores = []
    for before in range(3):
        text = binascii.b2a_base64(b"\0" * before + data, newline=False).decode("ascii")
        drop = (0, 2, 3)[before]
        total = before + len(data)
        keep = 4 * (total // 3) + (0, 1, 2)[total % 3]
        core = text[drop:keep]
        if len(core) >= _MIN_CORE:
            cores.append(core)
    return cores


class _Text:
    """A searched text and what the search makes of it once, for every recipient: the
    text lower-cased (``low``), its ``readings`` (:meth:`_readings`) and, when first
    asked, those lower-cased (:attr:`lows`), their runs that may hold an address in hex
    or base32 (:meth:`coded`) and their runs long enough to hold a hex digest
    (:meth:`hex_runs`).  A refused copy searches the message's joined URLs
    (``Analysis.urls``, some KB) and its stray URLs (``Analysis.strays``) for each
    recipient: the same objects each time, so :func:`_searched` keeps the last few.
    Copies may render in threads: a race fills a field twice with equal values."""

    __slots__ = ("_coded", "_joined", "_lows", "_raws", "_runs", "low", "readings", "url")

    def __init__(self, url: str) -> None:
        self.url = url
        self.low = url.lower()
        self.readings = self._readings(url)
        self._lows: tuple[str, ...] | None = None
        self._raws: tuple[bytes, ...] | None = None
        self._coded: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._runs: tuple[str, ...] | None = None
        self._joined: dict[str, tuple[str, int]] = {}  # joined() by which

    @staticmethod
    def _readings(url: str) -> tuple[str, ...]:
        """``url`` itself, then (when it has a ``%`` or ``+``) percent-decoded once,
        twice, up to :data:`_ROUNDS` times (while that changes it) and form-decoded,
        then each of those with its escapes read (when it has any: :func:`_unescaped`),
        and those with line ends without them; no reading twice."""
        texts = [url]
        if "%" in url or "+" in url:
            text = url
            for _ in range(_ROUNDS):
                decoded = unquote(text)
                if decoded == text:
                    break
                texts.append(decoded)
                text = decoded
            texts.append(unquote_plus(url))
        texts += [_unescaped(text) for text in texts]
        # line ends dropped: base64 as MIME wraps it (76 characters a line), "%0A" apart
        texts += [text.replace("\r", "").replace("\n", "") for text in texts
                  if "\n" in text or "\r" in text]
        return tuple(dict.fromkeys(texts))

    @property
    def lows(self) -> tuple[str, ...]:
        """Each reading lower-cased (the first: ``low``), no one twice."""
        lows = self._lows
        if lows is None:
            lows = tuple(dict.fromkeys((self.low, *(t.lower() for t in self.readings[1:]))))
            self._lows = lows
        return lows

    @property
    def raws(self) -> tuple[bytes, ...]:
        """:attr:`lows` as bytes (UTF-8; a lone surrogate passed: bytes >= 0x80, which no
        run of digits holds), for the searches of :meth:`coded` and :meth:`hex_runs`."""
        raws = self._raws
        if raws is None:
            raws = self._raws = tuple(low.encode("utf-8", "surrogatepass") for low in self.lows)
        return raws

    def coded(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The runs of :data:`_HEX_CODED` and :data:`_B32_CODED` in the lower-cased
        readings: an address's hex or base32 is in a reading only inside one of them (a
        few runs, most texts none: a recipient's forms are compared with these instead
        of searched for in every reading)."""
        coded = self._coded
        if coded is None:
            raws = self.raws
            coded = (tuple(run for raw in raws for run in _runs(
                         raw, raw.translate(_HEX_MARKS), _HEX_CODED_RUN)),
                     tuple(run for raw in raws for run in _runs(
                         raw, raw.translate(_B32_MARKS), _B32_CODED_RUN)))
            self._coded = coded
        return coded

    def joined(self, which: Literal["hex", "base32", "digest"]) -> tuple[str, int]:
        """The runs of :meth:`coded` (``"hex"``, ``"base32"``) or of :meth:`hex_runs`
        (``"digest"``), each joined by a line feed (which no run holds), and the longest's
        length: a form without one is in a run exactly when it is in the joined text, so
        a recipient's form is searched once, in C, where a loop over the runs compared it
        with each in Python (a message's URLs of thousands of runs: 0.5 s a recipient)."""
        joined = self._joined.get(which)
        if joined is None:
            runs = (self.hex_runs() if which == "digest"
                    else self.coded()[0 if which == "hex" else 1])
            joined = self._joined[which] = ("\n".join(runs), max(map(len, runs), default=0))
        return joined

    def hex_runs(self) -> tuple[str, ...]:
        """The maximal runs of ``[0-9a-f]`` of at least :data:`_MIN_HEX` characters in
        ``low`` (with the other lower-cased readings, and all of them again without the
        separators of a formatted digest, when there are any).  A hex digest (lower-case
        hex) is in a reading exactly when it is in one of them: every occurrence lies
        inside a maximal run at least as long.  A few microseconds for a message's
        joined URLs (one ``translate`` and a search for the marks of a long run), so a
        recipient's digests are compared with these few runs instead of searched for in
        the whole text, and only the digests that fit the longest run are made."""
        runs = self._runs
        if runs is None:
            runs = self._runs = _hex_runs(self.raws)
        return runs


def _searched(url: str) -> _Text:
    """The :class:`_Text` of ``url``: one made earlier of this very object (its readings
    cannot have changed), else a new one, kept.

    The last :data:`_KEPT` made are kept, by the object's identity (a kept text holds
    its object, so no other object can take that ``id``).  A copy searches its
    message's URLs and its stray URLs, two texts, and the relay renders several
    messages' copies in turn: with one text kept, the two evicted each other and
    every copy made both again (a fifth of the relay's event loop in session 19's
    profile of the benchmark newsletter, whose doctype holds stray URLs)."""
    text = _kept.get(id(url))
    if text is None or text.url is not url:
        text = _Text(url)
        with _kept_lock:
            if len(_kept) >= _KEPT:
                del _kept[next(iter(_kept))]  # the oldest
            _kept[id(url)] = text
    return text


#: How many searched texts :func:`_searched` keeps: two per message whose copies are
#: rendering (each some KB with its readings).
_KEPT = 64
_kept: dict[int, _Text] = {}
_kept_lock = threading.Lock()


def _unescaped(text: str) -> str:
    """``text`` with its escapes read: ``\\uXXXX``, ``%uXXXX`` and ``\\xXX``, HTML character
    references, compatibility forms folded (NFKC) and invisible characters dropped;
    ``text`` itself when it has none (the usual URL: a few searches)."""
    if "\\" in text or "%u" in text or "%U" in text:
        text = _ESCAPE.sub(_escaped_char, text)
    if "&" in text:
        text = _CHARREF.sub(_charref, text)  # html.unescape, each reference's answer kept
    if not text.isascii():
        text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))
    return text


#: What ``html.unescape`` reads as a character reference (the HTML standard's, as
#: CPython's ``html`` module spells it).
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")


def _charref(match: re.Match[str]) -> str:
    """What ``html.unescape`` makes of one reference (:func:`_reference` for the short
    ones: the table holds no long number a sender wrote to fill it)."""
    text = match.group()
    return _reference(text) if len(text) <= _KEPT_REFERENCE else html_unescape(text)


#: The longest reference :func:`_reference` keeps (a name's 32 characters, "&" and ";";
#: numbers have no bound: 4096 of 200 KB each pinned 800 MB).
_KEPT_REFERENCE = 40


@functools.lru_cache(maxsize=4096)
def _reference(text: str) -> str:
    """``html.unescape`` of one character reference, kept: a newsletter's URLs repeat the
    same ones (``&utm_source=...``), which ``html.unescape`` looks up anew each time (a
    name that is none is tried at each of its lengths: up to 30 lookups), so a new
    message's joined URLs took 0.1 ms.  The same answer: the reference, alone, is
    matched again whole (the pattern's greedy match ended where it ends)."""
    return html.unescape(text)


def _escaped_char(match: re.Match[str]) -> str:
    code = int(match.group(1) or match.group(2) or match.group(3), 16)
    return chr(code) if not 0xD800 <= code <= 0xDFFF else match.group()


#: Maximal runs of hex digits and of base32 digits in a lower-cased text, long enough to
#: hold the hex (2 per byte) or base32 (8 per 5 bytes) of an address of _MIN_CODED bytes:
#: ``[0-9a-f]{16,}`` and ``[a-z2-7]{12,}``, found as runs of marks (:func:`_runs`; the
#: regular expressions tried each start in a run of letters again: 0.35 ms for a
#: newsletter's 6 KB of URLs read two ways, against a few microseconds).
_HEX_CODED_RUN = b"x" * (2 * _MIN_CODED)
_B32_CODED_RUN = b"x" * (_MIN_CODED * 8 // 5)
#: bytes.translate: a lower-case base32 digit -> "x", any other byte -> " ".
_B32_MARKS = bytes(0x78 if c in b"abcdefghijklmnopqrstuvwxyz234567" else 0x20
                   for c in range(256))
#: ... a lower-case hex digit or a separator of a formatted digest -> "x".
_HEX_OR_SEPARATOR_MARKS = bytes(0x78 if c in b"0123456789abcdef-:./" else 0x20
                                for c in range(256))


def _runs(raw: bytes, marks: bytes, least: bytes) -> list[str]:
    """The maximal runs of ``raw`` (ASCII where marked) whose bytes ``marks`` (its
    translation) marks "x", at least as long as ``least`` (that many "x"): the first
    window of ``least`` found at or after a byte not marked starts a run there.

    >>> _runs(b"ab12-cdef0123", b"xxxx xxxxxxxx", b"xxxx")
    ['ab12', 'cdef0123']
    """
    out: list[str] = []
    start = marks.find(least)
    while start >= 0:
        end = marks.find(b" ", start + len(least))
        if end < 0:
            end = len(marks)
        out.append(raw[start:end].decode("ascii"))
        start = marks.find(least, end)
    return out


def _b32(data: bytes) -> str:
    """``data`` in base32, lower-case, without the padding and the last character when
    it also depends on the byte after ``data`` (as at the start of a longer string)."""
    return base64.b32encode(data)[: len(data) * 8 // 5].decode("ascii").lower()


def _hex_runs(raws: tuple[bytes, ...]) -> tuple[str, ...]:
    """:meth:`_Text.hex_runs` of the lower-cased readings ``raws`` (the text itself
    first): the runs of every reading, then (with several readings,
    or a separator between hex digits) of every reading without the separators, in order.

    A run in a reading, or in one without the separators, lies in a maximal stretch of
    hex digits and separators at least as long, and the separators' search (two hex
    digits on either side) reads no further than its stretch: so the stretches alone
    are searched (a newsletter's URLs: one ``translate`` a reading, where the search and
    removal over the whole text cost ~0.2 ms)."""
    marks = [raw.translate(_HEX_OR_SEPARATOR_MARKS) for raw in raws]
    stretches = [_runs(raw, mark, _HEX_RUN) for raw, mark in zip(raws, marks, strict=True)]
    if not any(stretches):
        return ()
    runs = [run for found in stretches for stretch in found for run in _hex_in(stretch)]
    # every reading; digits joined too (one reading: when a separator stands between hex
    # digits anywhere, in a stretch of five at least, "a1-b2")
    if len(raws) > 1 or any(_HEX_SEPARATOR.search(stretch)
                            for stretch in _runs(raws[0], marks[0], _SEPARATED)):
        runs += (run for found in stretches for stretch in found
                 for run in _hex_in(_HEX_SEPARATOR.sub("", stretch)))
    return tuple(runs)


def _hex_in(text: str) -> list[str]:
    """The maximal runs of at least :data:`_MIN_HEX` hex digits in ASCII ``text``."""
    raw = text.encode("ascii")
    return _runs(raw, raw.translate(_HEX_MARKS), _HEX_RUN)


class RecipientIdentity:
    """The forms of one recipient's address that can appear in a URL.

    The digests are made when a searched text first has a run of hex digits long
    enough to hold them (most URL texts have none, or only MD5-long ones), shortest
    hash first, and kept: the same answers as making them all up front."""

    __slots__ = ("_b64", "_coded", "_folded", "_hashes", "_lowers", "_variants", "address")

    def __init__(self, address: str) -> None:
        self.address = address.strip()
        lower = self.address.lower()
        # An address of the characters quote() leaves alone, with no "xn--", is its only
        # spelling (no quotes to drop, an ASCII domain that is no A-label): spellings()
        # would say so after its splits and dictionaries (3 us of a new recipient's 14).
        plain = _PLAIN.fullmatch(lower) is not None
        given = ([self.address] if plain and "xn--" not in lower else spellings(self.address)) \
            if self.address else []
        # every spelling of the mailbox, lower-cased (the first: the address as given)
        self._lowers = tuple(dict.fromkeys(s.lower() for s in given))
        # as given, lower-cased, and with the domain lower-cased (the consent store's form)
        variants = dict.fromkeys((*self._lowers, *given, *(
            map(_domain_lowered, given) if given and given[0] != self._lowers[0] else ())))
        variants.pop("", None)
        if plain:  # the usual address: quote() would change only "@"
            quoted = (lower, lower, lower.replace("@", "%40"))
        else:
            quoted = (lower, quote(lower, safe="@"), quote(lower, safe=""))
        self._folded = tuple(dict.fromkeys(quoted)) if lower else ()
        self._variants = tuple(text.encode("utf-8") for text in variants)  # to hash
        # (n, digests): (digest, reason) of the first n hashes of HASHES, in that order,
        # each over every variant (as one dict made them all: no digest twice); one
        # tuple, replaced whole (copies may render in threads: a race makes equal ones)
        self._hashes: tuple[int, tuple[tuple[str, str], ...]] = (0, ())
        # base64 of the variants and of the address percent-encoded (as given, lower-cased)
        encoded = dict.fromkeys((*variants, *self._folded[1:], *(
            text.replace("@", "%40") if plain else quote(text, safe="") for text in given)))
        b64: dict[str, None] = {}
        for text in encoded:
            for core in base64_cores(text.encode("utf-8")):
                b64[core] = None
                if "+" in core or "/" in core:
                    b64[core.replace("+", "-").replace("/", "_")] = None
        self._b64 = tuple(b64)
        # the variants' bytes, for their hex and base32 (made when a text has a run that
        # can hold one: rarely)
        self._coded = tuple(data for data in self._variants if len(data) >= _MIN_CODED)

    def __repr__(self) -> str:
        return f"RecipientIdentity({self.address!r})"

    def find(self, url: str) -> list[str]:
        """The forms of the address that ``url`` contains (empty when none)."""
        if not self._folded:
            return []
        found: list[str] = []
        text = _searched(url)
        low, lows = text.low, text.lows
        lowers = self._lowers
        if (lowers[0] in low if len(lowers) == 1 else any(form in low for form in lowers)):
            found.append("address")
        if len(lows) > 1 and not found:
            for text_low in lows[1:]:
                if any(form in text_low for form in lowers):
                    found.append("address-urlencoded")
                    break
        for reading in text.readings:
            for core in self._b64:
                if core in reading:
                    found.append("address-base64")
                    break
            else:
                continue
            break
        if self._coded:
            hexes, _ = text.joined("hex")
            if hexes and any(data.hex() in hexes for data in self._coded):
                found.append("address-hex")
            b32s, longest = text.joined("base32")
            if b32s and any(_b32(data) in b32s for data in self._coded
                            if len(data) * 8 // 5 <= longest):  # made only for what fits
                found.append("address-base32")
        if len(low) >= _MIN_HEX:
            runs, longest = text.joined("digest")
            if runs:
                for digest, reason in self._digests(longest):
                    if reason not in found and digest in runs:
                        found.append(reason)
        return found

    def _digests(self, longest: int) -> tuple[tuple[str, str], ...]:
        """The (digest, reason) pairs of the hashes no longer than ``longest`` hex digits,
        in the order of HASHES (made now if not yet).  Longer ones may come too: they
        cannot be in a run shorter than themselves."""
        fit = sum(1 for n in _HEX_LENGTHS if n <= longest)
        made, digests = self._hashes
        if fit > made:
            hashes = dict(digests)
            for new, reason in _HASH_NEW[made:fit]:
                for text in self._variants:
                    hashes[new(text).hexdigest()] = reason
            digests = tuple(hashes.items())
            self._hashes = (fit, digests)
        return digests
