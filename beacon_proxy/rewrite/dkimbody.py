"""The DKIM body hash (``bh=``), cheap for the further copies of one message.

The relay signs many copies of one message, and each recipient's copy
differs from the previous one in a few places only: the footer link (in the
text part, early, and in the HTML part, late), a rewritten pixel URL.  Three
whole-body passes are then wasted on bytes already seen: the check that every
line end is a CRLF, the check that relaxed canonicalisation (RFC 6376 section
3.4.4) changes nothing, and SHA-256 over the part before the first change.

:class:`BodyHashes` remembers the last *tidy* copy of the last few messages:
its body has CRLF line ends only, no tab, no run of spaces and no space
before a line end, so its relaxed form is the body itself less the empty
lines at its end.  A further copy of the same message is compared with it
(:func:`unseen`): whatever is byte-identical to some stretch of the
remembered body (found with ``memcmp``: ``startswith``/``endswith`` on a
``memoryview``, and ``bytes.find`` to meet again after a change) cannot hold
a bare CR or LF, a tab or a bad blank, because every such fault is one byte
or two adjacent bytes; only the few changed bytes, each with its neighbours,
are searched.  Such a copy is tidy too, so it needs no conversion and its
relaxed form is a prefix of its body: the SHA-256 state over the bytes it
shares with the remembered copy's beginning is ``copy()``-ed and only the
rest is hashed (any byte position will do for a tidy body; an untidy body
would need a line boundary and its own canonical bytes, and takes the
ordinary path instead).

Nothing is trusted that was not compared: the cache is keyed by the
``original`` object the copies were made from (one bytes object per
message, held by the entry, so it cannot be mistaken for another), but only
a byte comparison lets a copy use it.  The whole-body path (``crlf()``,
:func:`relaxed_body`, one SHA-256; the same result) takes a message's first
copy, a copy whose change brings a bare CR or LF, a tab, a run of blanks or a
blank before a line end (or whose body does not end in a CRLF), a copy with
more than :data:`MAX_GAPS` changed stretches, and every copy of a message
whose body is untidy itself (indented text: nothing is remembered) or bigger
than :data:`MAX_KEPT`.  An unrelated body under the same key is no danger,
only slower: its stretches are searched like any change.

Cost (``bench/dkim_sign.py``, the 70 KB newsletter's further copies, idle
core): 0.09 ms for the body of a further copy, instead of 0.13 for the
whole-body path; of the 0.09, SHA-256 from the first change on (2.4 KB into
the body: the footer of the text part) is 0.055 (OpenSSL hashes 1.3 GB/s
here), finding and checking the changed stretches about 0.015.  In a
single-part HTML newsletter the footer is near the end and almost the whole
hash is reused.

>>> hashes = BodyHashes()
>>> first = b"Hello there\\r\\nlink: A1\\r\\nbye\\r\\n\\r\\n"
>>> hashes.digest(first, 0, b"", None) == hashlib.sha256(relaxed_body(first)).digest()
True
>>> second = first.replace(b"A1", b"B2")
>>> like = hashes.like_last(second, 0, b"")
>>> like is not None and hashes.digest(second, 0, b"", like) == hashlib.sha256(
...     relaxed_body(second)).digest()
True
>>> hashes.like_last(second.replace(b"B2", b"B 2 "), 0, b"") is None  # a blank before a line end
True
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeAlias, TypeVar

__all__ = ["MAX_GAPS", "MAX_KEPT", "BodyHashes", "LastCopies", "Likeness", "Piece",
           "crlf_between", "crlf_header_at", "gaps_pass", "matched", "relaxed_body",
           "relaxed_tidy", "unseen"]

_TAB_TO_SPACE: Final = bytes.maketrans(b"\t", b" ")
_SPACE_TO_FIX: Final = re.compile(rb" [ \r]")  # a run of blanks, or one before a line end
_SPACES: Final = re.compile(rb"  +")
_BARE_CR: Final = re.compile(rb"\r(?!\n)")
_T = TypeVar("_T")

_PROBE: Final = 64  # bytes of a copy looked up in the remembered body to meet it again
_FIRST_PROBE: Final = 256  # how far past a difference the first probe starts
_REACH: Final = 4096  # how far past its expected place a probe is looked for
_NEAR: Final = 128  # how closely the end of a common stretch is found
_MAX_SEARCHES: Final = 24  # bytes.find calls per copy; then the rest counts as changed
MAX_GAPS: Final = 32  # changed stretches per copy; more: the whole-body path
MAX_KEPT: Final = 4 << 20  # bigger bodies are not remembered (the entry holds the copy)


def relaxed_tidy(body: bytes) -> tuple[bytes, bool]:
    r"""The relaxed canonical form of a body with CRLF line ends, and whether the body
    was *tidy*: no tab, no run of spaces, no space before a line end (its canonical
    form is then a prefix of it).

    Tabs become spaces first (one ``translate``); runs of spaces are replaced only
    when there is one, and a space before a line end can then only be single: a
    plain ``replace``.  No per-line Python loop.

    >>> relaxed_tidy(b"a b\r\n\r\n")
    (b'a b\r\n', True)
    >>> relaxed_tidy(b"a  b\r\n")
    (b'a b\r\n', False)
    """
    tidy = True
    if b"\t" in body:
        body, tidy = body.translate(_TAB_TO_SPACE), False
    if _SPACE_TO_FIX.search(body):
        body, tidy = _SPACES.sub(b" ", body).replace(b" \r\n", b"\r\n"), False
    end = len(body)
    while end >= 2 and body[end - 2 : end] == b"\r\n":
        end -= 2
    if end == 0:
        return b"", tidy
    if end == len(body):  # no line end at the end (cannot happen after crlf())
        return body + b"\r\n", False
    return body[: end + 2], tidy


def relaxed_body(body: bytes) -> bytes:
    r"""The relaxed canonical form of a body with CRLF line ends.

    Blanks at the end of a line go, other runs of blanks become one space,
    empty lines at the end go; an empty body stays empty.

    >>> relaxed_body(b"a \t b  \r\n\r\nc\t\r\n\r\n\r\n")
    b'a b\r\n\r\nc\r\n'
    >>> relaxed_body(b"\r\n\r\n")
    b''
    """
    return relaxed_tidy(body)[0]


# --------------------------------------------------------------------------
# Comparing a copy with the remembered one


def _common_prefix(new: bytes, i: int, old: memoryview, j: int, limit: int) -> int:
    """How many bytes ``new[i:]`` and ``old[j:]`` share at their start, at most ``limit``,
    give or take :data:`_NEAR` (found shorter, never longer: a difference found too
    early only makes a changed stretch longer).

    Galloping, then halving, with ``bytes.startswith`` on a ``memoryview`` slice:
    a ``memcmp`` that copies neither side (slicing both and ``==`` copies them;
    ``os.path.commonprefix`` loops over the bytes in Python)."""
    done, step = 0, _NEAR
    while done < limit:
        size = min(step, limit - done)
        if not new.startswith(old[j + done : j + done + size], i + done):
            break
        done += size
        step *= 4
    else:
        return done
    lo, hi = 0, size  # new and old agree on lo more bytes, and differ before hi
    while hi - lo > _NEAR:
        mid = (lo + hi) // 2
        if new.startswith(old[j + done + lo : j + done + mid], i + done + lo):
            lo = mid
        else:
            hi = mid
    return done + lo


def _common_suffix(new: bytes, i: int, old: memoryview, j: int, limit: int) -> int:
    """How many bytes ``new[:i]`` and ``old[:j]`` share at their end, at most ``limit``
    (as :func:`_common_prefix`: give or take :data:`_NEAR`, never longer)."""
    done, step = 0, _NEAR
    while done < limit:
        size = min(step, limit - done)
        if not new.endswith(old[j - done - size : j - done], 0, i - done):
            break
        done += size
        step *= 4
    else:
        return done
    lo, hi = 0, size
    while hi - lo > _NEAR:
        mid = (lo + hi) // 2
        if new.endswith(old[j - done - mid : j - done - lo], 0, i - done - lo):
            lo = mid
        else:
            hi = mid
    return done + lo


def unseen(new: bytes, at: int, old: bytes, old_at: int) -> tuple[int, list[tuple[int, int]]]:
    """Where the body ``new[at:]`` differs from the body ``old[old_at:]``.

    Returns the length of their common beginning, and the stretches of
    ``new`` (absolute ``(start, end)``, possibly empty) between pieces that are
    each byte-identical to some stretch of the old body: every byte of the new
    body outside them was compared, and every place where two such pieces meet
    is a stretch (an empty one), so that its neighbours get looked at.  The
    pieces are found greedily: the common beginning and end, then, after each
    difference, a :data:`_PROBE`-byte sample a little further on is looked up in
    the rest of the old body and the match grown both ways.  A sample found in
    the wrong place costs speed, never correctness; past :data:`_MAX_SEARCHES`
    lookups the rest is one stretch.  The ends of common stretches are found to
    within :data:`_NEAR` bytes, on the safe side (a stretch a little longer).

    >>> old = b"H\\r\\n\\r\\n" + b"x" * 1000 + b"A" + b"y" * 1000
    >>> new = b"H\\r\\n\\r\\n" + b"x" * 1000 + b"BB" + b"y" * 1000
    >>> unseen(new, 5, old, 5)  # the change: new[1005:1007]
    (980, [(985, 1082)])
    """
    same, gaps, _ = matched(new, at, old, old_at)
    return same, gaps


Piece: TypeAlias = tuple[int, int, int]
"""A stretch of a new body byte-identical to one of the old: (start in the new,
start in the old, length), absolute offsets."""


def matched(new: bytes, at: int, old: bytes, old_at: int
            ) -> tuple[int, list[tuple[int, int]], list[Piece]]:
    """:func:`unseen`, and the compared pieces themselves (some maybe empty, in no
    particular order): every byte of the body ``new[at:]`` is in exactly one gap or
    one piece."""
    view = memoryview(old)
    end, old_end = len(new), len(old)
    same = _common_prefix(new, at, view, old_at, min(end - at, old_end - old_at))
    i, j = at + same, old_at + same
    tail = _common_suffix(new, end, view, old_end, min(end - i, old_end - j))
    end, old_end = end - tail, old_end - tail
    gaps: list[tuple[int, int]] = []
    pieces: list[Piece] = [(at, old_at, same), (end, old_end, tail)]
    searches = 0
    while i < end:
        x, q = i + _FIRST_PROBE, -1
        while x + _PROBE <= end and searches < _MAX_SEARCHES:
            searches += 1
            # Where new[x:] should be in the old body: as far on as in the new one, give
            # or take the difference in length left, and a margin.
            reach = j + (x - i) + abs((end - i) - (old_end - j)) + _REACH
            q = old.find(new[x : x + _PROBE], j, min(reach, old_end))
            if q >= 0:
                break
            x += 4 * (x - i)
        if q < 0:
            gaps.append((i, end))
            i = end
            break
        back = _common_suffix(new, x, view, q, min(x - i, q - j))
        ahead = _PROBE + _common_prefix(new, x + _PROBE, view, q + _PROBE,
                                        min(end - x, old_end - q) - _PROBE)
        gaps.append((i, x - back))
        pieces.append((x - back, q - back, back + ahead))
        i, j = x + ahead, q + ahead
    if not gaps or gaps[-1][1] != end:
        gaps.append((end, end))  # where the last piece meets the common end
    return same, gaps, pieces


def crlf_between(data: bytes, lo: int, hi: int) -> bool:
    """Whether no two adjacent bytes of ``data[lo:hi]`` make a bad line end: a CR not
    before an LF, an LF not after a CR.  Counting does it without a regular expression
    (which would try each alternative at each byte: 40 ns a byte): as many CRs (but for
    the last byte, whose successor lies outside) as LFs (but for the first byte, whose
    predecessor lies outside) as CRLFs.

    >>> crlf_between(b"a\\r\\nb", 0, 4), crlf_between(b"a\\rb\\n", 0, 4)
    (True, False)
    """
    return (data.count(b"\r", lo, hi - 1) == data.count(b"\r\n", lo, hi)
            == data.count(b"\n", lo + 1, hi))


def _tidy_between(data: bytes, lo: int, hi: int) -> bool:
    """Whether no two adjacent bytes of ``data[lo:hi]`` make a fault (a run of spaces,
    a space before a CR, a bad line end: :func:`crlf_between`) and no byte of it is
    a tab."""
    return (crlf_between(data, lo, hi)
            and data.find(b"\t", lo, hi) < 0 and data.find(b"  ", lo, hi) < 0
            and data.find(b" \r", lo, hi) < 0)


def gaps_pass(new: bytes, at: int, gaps: list[tuple[int, int]],
              between: Callable[[bytes, int, int], bool] = crlf_between) -> bool:
    """Whether no fault lies in or next to the changed stretches of the body
    ``new[at:]`` (:func:`unseen`'s gaps against a remembered body without such
    faults, whose compared pieces therefore have none), and the body itself starts
    and ends well: not with an LF, empty or with a CRLF.  ``between``: the check of
    one stretch with a byte of each neighbour (a fault is one byte or two adjacent
    bytes: one inside a piece is the remembered body's, which has none)."""
    if new.startswith(b"\n", at) or (len(new) > at and not new.endswith(b"\r\n")):
        return False
    end = len(new)
    return all(between(new, max(a - 1, at), min(b + 1, end)) for a, b in gaps)


def crlf_header_at(data: bytes) -> int:
    """Where the body starts when the header block (before the first empty line) is
    not empty and has CRLF line ends only, else -1.

    As many CRs as LFs before the empty line, and no CR there without its LF: then
    every LF has its CR too (two counts and a search over the header only).

    >>> crlf_header_at(b"A: 1\\r\\n\\r\\nbody"), crlf_header_at(b"A: 1\\r\\rB\\n\\r\\n\\r\\n")
    (8, -1)
    """
    end = data.find(b"\r\n\r\n")
    if end <= 0 or data.startswith(b"\r\n") or data.count(b"\r", 0, end) != data.count(
            b"\n", 0, end) or _BARE_CR.search(data, 0, end + 2):
        return -1
    return end + 4


# --------------------------------------------------------------------------
# The remembered copies


@dataclass(frozen=True, slots=True)
class _Seen:
    """The last tidy copy of one message: ``data[at:]`` is its body, and ``state`` a
    SHA-256 over its first ``mark`` bytes (never updated: ``copy()`` it); ``dots``: the
    offsets of its line-start periods, as its signer found them (None: not known)."""

    original: bytes
    data: bytes
    at: int
    mark: int
    state: hashlib._Hash
    dots: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Likeness:
    """A copy found tidy against ``seen``, with which it shares ``same`` first bytes;
    ``gaps`` and ``pieces``: :func:`matched`'s, of the copy's body against ``seen``'s."""

    seen: _Seen
    same: int
    gaps: list[tuple[int, int]]
    pieces: list[Piece]


def _end_of_content(data: bytes, at: int) -> int:
    """The length of the relaxed form of the tidy body ``data[at:]``: the body without
    its empty lines at the end.  A tidy body ends in a CRLF, and the byte before it is
    an LF only when an empty line ends it: only such a body pays for ``rstrip``."""
    size = len(data) - at
    if size >= 3 and data[-3] != 0x0A:
        return size
    content = len(data[at:].rstrip(b"\r\n"))
    return content + 2 if content else 0


class LastCopies(Generic[_T]):
    """What was remembered of the last copy of each of the last ``cache`` messages,
    found by the ``original`` object the copies were made from (the entry holds it,
    so it cannot be mistaken for another message's).

    Threads may share it (big copies are rendered off the event loop): the list
    is an immutable tuple, replaced under a lock; what is kept must not change.
    """

    def __init__(self, cache: int = 4) -> None:
        if cache < 0:
            raise ValueError(f"cache must be 0 or more messages, not {cache}")
        self.cache = cache
        self._lock = threading.Lock()
        self._seen: tuple[tuple[bytes, _T], ...] = ()  # most recent first

    def get(self, original: bytes) -> _T | None:
        """What was kept for the last copy of ``original`` (this very object), or None."""
        return next((kept for o, kept in self._seen if o is original), None)

    def put(self, original: bytes, kept: _T, size: int) -> None:
        """Keep ``kept`` for ``original``'s last copy, whose body is ``size`` bytes
        (over :data:`MAX_KEPT`: nothing is kept, the entry would hold too much)."""
        if not self.cache or size > MAX_KEPT:
            return
        with self._lock:
            others = tuple(item for item in self._seen if item[0] is not original)
            self._seen = ((original, kept), *others[: self.cache - 1])


class BodyHashes:
    """The SHA-256 of each copy's relaxed body, remembering the last tidy copy of
    the last ``cache`` messages (see the module docstring).

    Threads may share it (big copies are rendered off the event loop): see
    :class:`LastCopies`; a remembered state is only ever copied.
    """

    def __init__(self, cache: int = 4) -> None:
        self._last: LastCopies[_Seen] = LastCopies(cache)

    def like_last(self, data: bytes, at: int, original: bytes) -> Likeness | None:
        """The likeness of the body ``data[at:]`` to the last copy of ``original``, when
        that says the body is tidy (CRLF line ends only, nothing for relaxed
        canonicalisation to change but the empty lines at its end); else None."""
        seen = self._last.get(original)
        if seen is None:
            return None
        same, gaps, pieces = matched(data, at, seen.data, seen.at)
        if len(gaps) > MAX_GAPS or not gaps_pass(data, at, gaps, _tidy_between):
            return None
        return Likeness(seen, same, gaps, pieces)

    def digest(self, data: bytes, at: int, original: bytes, like: Likeness | None,
               dots: tuple[int, ...] | None = None) -> bytes:
        """The SHA-256 of the relaxed body ``data[at:]`` (CRLF line ends).  ``like``:
        what :meth:`like_last` found (the same body bytes, ``at`` may differ);
        None: the whole body is canonicalised and hashed.  ``dots``: the offsets of
        ``data``'s line-start periods, remembered with it (None: not known)."""
        if like is None:
            canonical, tidy = relaxed_tidy(data[at:])
            if tidy:
                self._remember(_Seen(original, data, at, 0, hashlib.sha256(), dots))
            return hashlib.sha256(canonical).digest()
        # A tidy body: its relaxed form is its first `content` bytes, of which the first
        # `mark` are the remembered copy's too.
        view = memoryview(data)
        content = _end_of_content(data, at)
        mark = min(like.same, content)
        if like.seen.mark <= mark:
            state = like.seen.state.copy()
            state.update(view[at + like.seen.mark : at + mark])
        else:
            state = hashlib.sha256(view[at : at + mark])
        body_hash = state.copy()
        body_hash.update(view[at + mark : at + content])
        self._remember(_Seen(original, data, at, mark, state, dots))
        return body_hash.digest()

    def _remember(self, seen: _Seen) -> None:
        self._last.put(seen.original, seen, len(seen.data) - seen.at)
