"""The HTML scanner's regular expressions, and why each is shaped the way it is.

:mod:`beacon_proxy.rewrite.html` drives these; everything here is compiled once.

Exact patterns (``_BORING`` and friends) follow the HTML tokenizer for any
input: which ``<`` opens a tag, which quote opens an attribute value, where a
tag ends.  :data:`SKIP` is a faster, *stricter* subset of :data:`BORING` for
the markup that fills real newsletters; a document is scanned with ``SKIP``
first and the exact patterns take over wherever it stops.

Speed notes (CPython's ``re`` is a backtracking interpreter; measured on the
70 KB benchmark newsletter, 2 800 tags):

* every ``|`` alternative that ``re`` has to *enter* costs a stack frame;
  alternatives whose first op is a literal or a character class are skipped
  without one when their first byte does not match.  So the patterns that run
  per tag or per attribute dispatch on literal first bytes (a trie), and run
  on the lower-cased view (:func:`bytes.lower` keeps offsets), never with
  ``(?i:...)``, whose literals defeat that skip;
* a lookahead is an entered frame too: the loader-name test
  ``(?!(?i:img|image|...))`` alone cost 0.25 ms per newsletter;
* one loop iteration per *tag* (the text before it fused in) halves the work
  of alternating ``text | tag`` iterations;
* a negated class of several bytes (``[^\\t\\n\\f\\r />]``) costs ``re`` twice a
  positive one per byte: the tag patterns are compiled with :func:`_positive`,
  which writes each as the class of its complement (the same bytes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "BORING",
    "BORING_TOKEN",
    "BOX_HINT",
    "COMMENT_END",
    "CONDITIONAL",
    "CONDITIONAL_OPEN",
    "CSS_HINT",
    "ENDIF",
    "FAST_TAG",
    "FAST_TAG_GROUPS",
    "IMG_KEYS",
    "IMG_TAG",
    "IMG_TAG_GROUPS",
    "JSON_URL",
    "KEYS",
    "PICTURE_STEP",
    "PRELOADED_ATTRS",
    "RAW_END",
    "RAW_TEXT",
    "SKIP",
    "SKIP_ATTRS",
    "TAG_ATTR",
    "TAG_NAME",
    "script_end",
]

def _positive(source: bytes) -> bytes:
    """``source`` with each negated character class of two or more bytes written as the
    positive class of its complement: the same bytes match, at half the cost.

    Why: ``re`` tests a negated class byte by byte through a nested call (its NEGATE
    op), ~43 instructions a byte for ``[^\\t\\n\\f\\r /=>]`` against ~22 for a positive
    bitmap; tag and attribute names, unquoted values and style values are read by such
    classes.  A pattern of bytes sees only bytes 0-255, so the complement is exact; each
    class's members are found by matching all 256 bytes against it (no parsing of
    class syntax here).  One-byte classes (``[^<]``) stay: ``re`` has a faster op for them.
    For patterns compiled without ``re.IGNORECASE``.  Inside a case-insensitive group
    (``(?i:...)``) a class is rewritten only when its members are closed under ASCII
    case (a letter with its other case, or no letter at all): ``(?i:[^a])`` matches
    neither ``a`` nor ``A``, where its complement there would match both.
    ``tests/rewrite/test_html.py`` compares each compiled pattern with its source as
    written.
    """
    out = bytearray()
    groups: list[bool] = []  # the open groups, each True when case-insensitive
    done = 0
    for m in _SYNTAX.finditer(source):
        token = m.group(0)
        if token == b"(?i:":
            groups.append(True)
        elif token.startswith(b"("):
            groups.append(bool(groups) and groups[-1])
        elif token == b")":
            if groups:
                groups.pop()
        elif token.startswith(b"[^"):
            known = _POSITIVE.get(token)
            if known is None:
                known = _POSITIVE[token] = _complement(token)
            written, case_closed = known
            if case_closed or not (groups and groups[-1]):
                out += source[done:m.start()] + written
                done = m.end()
    return bytes(out + source[done:])


def _complement(negated: bytes) -> tuple[bytes, bool]:
    """The positive class of the bytes a negated class matches (itself if one byte), and
    whether those bytes hold each ASCII letter with its other case."""
    kept = re.compile(negated).findall(_ALL_BYTES)  # its members, in order, in one call
    case_closed = set(kept) == {b.swapcase() for b in kept}
    if len(kept) >= 255:
        return negated, case_closed
    runs: list[list[int]] = []
    for (b,) in kept:
        if runs and runs[-1][1] == b - 1:
            runs[-1][1] = b
        else:
            runs.append([b, b])
    return b"[" + b"".join(_byte(a) if a == z else _byte(a) + b"-" + _byte(z)
                           for a, z in runs) + b"]", case_closed


def _byte(b: int) -> bytes:
    """One byte in a class: a letter or digit as itself (shorter to compile), else escaped."""
    return bytes([b]) if bytes([b]).isalnum() else b"\\x%02x" % b


_ALL_BYTES = bytes(range(256))
#: _complement's answers by negated class (the name tries repeat a few dozen)
_POSITIVE: dict[bytes, tuple[bytes, bool]] = {}
#: What _positive reads of a pattern's syntax: an escape, a negated class, any other
#: class, a group's opening (``(?i:`` apart) and a closing parenthesis.
_SYNTAX = re.compile(rb"\\.|\[\^(?:\\.|[^\]\\])++\]|\[\]?(?:\\.|[^\]\\])*+\]|\(\?i:|\(|\)", re.S)


_SEP = rb"[\t\n\f\r /]"
_WS = rb"[\t\n\f\r ]"
_NAME = rb"[^\t\n\f\r />][^\t\n\f\r /=>]*+"
_VALUE = rb"(?:\"[^\"]*+\"|'[^']*+'|[^\t\n\f\r >\"'][^\t\n\f\r >]*+)"
_EQ_VALUE = rb"(?:" + _WS + rb"*+=" + _WS + rb"*+" + _VALUE + rb")?"
_SAFE_STYLE = rb"(?:[^%s(&]|&(?!#|lpar|bsol))"
_LOADER_NAMES = (
    b"img", b"image", b"input", b"source", b"video", b"audio", b"track", b"iframe", b"frame",
    b"object", b"embed", b"bgsound", b"link", b"meta", b"base", b"style", b"script",
    b"textarea", b"title", b"xmp", b"noembed", b"noframes", b"plaintext", b"use", b"feimage",
)
_LOADER_PREFIXES = (b"v:", b"amp-")  # VML and AMP elements
_LOADERS = b"|".join(_LOADER_NAMES)
_INTERESTING_ATTRS = (
    rb"src|srcset|lowsrc|dynsrc|poster|href|xlink:href|data|background|style|type|rel|"
    rb"http-equiv|content|width|height|alt|srcdoc|config|imagesrcset"
)
_END = rb"(?:[\t\n\f\r /=>]|$)"

#: A run of markup that cannot load anything: text and every tag whose name is not a
#: loader and that has neither a ``background`` attribute nor a ``style`` that could
#: hold ``url(``, honouring quoted attribute values.  Exact for any input.
_BORING_TOKEN = (
    rb"[^<]++"
    rb"|<(?![!/?a-zA-Z])"
    rb"|</[a-zA-Z][^\t\n\f\r />]*+(?:" + _SEP + rb"*+" + _NAME + _EQ_VALUE + rb")*+"
    + _SEP + rb"*+>"
    rb"|<(?!(?i:" + _LOADERS + rb")(?:[\t\n\f\r />]|$)|(?i:v:|amp-))[a-zA-Z][^\t\n\f\r />]*+"
    rb"(?:" + _SEP + rb"*+(?:"
    rb"(?i:style)" + _WS + rb"*+=" + _WS + rb"*+(?:\"" + (_SAFE_STYLE % b'"') + rb"*+\"|'"
    + (_SAFE_STYLE % b"'") + rb"*+'|" + (_SAFE_STYLE % rb"\t\n\f\r >\"'")
    # An unquoted value runs to whitespace or ">": "style=a(b)" is one value, not a
    # value "a" and an attribute "(b)" (which hid url() in unquoted styles).
    + rb"++(?![^\t\n\f\r >]))"
    rb"|(?!(?i:style|background)" + _END + rb")" + _NAME + _EQ_VALUE
    + rb"))*+" + _SEP + rb"*+>"
)
BORING = re.compile(_positive(rb"(?:" + _BORING_TOKEN + rb")*+"))
BORING_TOKEN = re.compile(_positive(_BORING_TOKEN))  # one token of a BORING run
TAG_NAME = re.compile(_positive(rb"</?([a-zA-Z][^\t\n\f\r />]*+)"))
SKIP_ATTRS = re.compile(_positive(
    rb"(?:" + _SEP + rb"*+(?!(?i:" + _INTERESTING_ATTRS + rb")" + _END + rb")" + _NAME
    + _EQ_VALUE + rb")*+"
))
TAG_ATTR = re.compile(_positive(
    _SEP + rb"*+(?:(>)|(" + _NAME + rb")(?:" + _WS + rb"*+=" + _WS
    + rb"*+(?:\"([^\"]*+)(\")?|'([^']*+)(')?|([^\t\n\f\r >]*+)))?)"
))


# -- whole tags with their loader attributes, in one match ------------------------------------

_Groups = tuple[tuple[int, int], ...]
_Trie = dict[int, "_Trie"]  # byte -> subtrie; -1: a word ends here, -2: all below excluded


def _trie(words: Iterable[bytes]) -> _Trie:
    root: _Trie = {}
    for word in words:
        at = root
        for byte in word:
            at = at.setdefault(byte, {})
        at[-1] = {}
    return root


def _keyed_tag(tag: bytes, keys: tuple[bytes, ...], first: int = 1, canonical: bool = False,
               refuse: tuple[bytes, ...] = ()) -> tuple[bytes, _Groups]:
    """A regex reading a whole tag of the *lower-cased* view, with ``keys`` captured.

    Returns the pattern and, per key, its two group numbers (from ``first``): an empty group
    just after the name (the name starts ``len(key)`` before it) and the raw
    value (with quotes).  Both are set by the key's first occurrence with a
    value only, as HTML's first attribute wins.  The value group is the "seen"
    flag: a name group can stay set by an attempt that failed later (``src`` in
    ``srcset``), as ``re`` does not unset a lower group once a higher one is
    set.  Quotes must be closed and names must not start with ``=`` or a quote;
    tags that do not fit fall back to the attribute-by-attribute parser
    (:data:`TAG_ATTR`).  Keys are dispatched on their literal bytes (a trie).
    ``canonical``: only ``name="value"`` with the ``=`` right after the name, or a
    name alone (one alternative less to enter per attribute).  ``refuse``: names
    (with a value or without) that make the tag not match at all; a key among them
    only where it is no key's first occurrence with a value (a duplicate, or a key
    without a value).
    """
    value, eq = (rb"\"[^\"]*+\"", b"=") if canonical else (_VALUE, _WS + rb"*+=" + _WS + rb"*+")
    groups: dict[bytes, tuple[int, int]] = {}

    def node(prefix: bytes, children: _Trie) -> bytes:
        alts = []
        if -1 in children:  # groups are numbered in the order they appear in the pattern
            name_end = 2 * len(groups) + first
            groups[prefix] = (name_end, name_end + 1)
            alts.append(rb"(?(%d)(?!)|()" % (name_end + 1) + eq + rb"(" + value + rb"))")
        for byte, child in sorted((b, c) for b, c in children.items() if b >= 0):
            alts.append(re.escape(bytes([byte])) + node(prefix + bytes([byte]), child))
        return alts[0] if len(alts) == 1 else rb"(?:" + b"|".join(alts) + rb")"

    dispatch = [re.escape(bytes([b])) + node(bytes([b]), c) for b, c in sorted(_trie(keys).items())]
    other = rb"[^\t\n\f\r />=\"'][^\t\n\f\r /=>]*+(?:" + eq + value + rb")?"
    if refuse:  # a whole name: the name bytes run to one of "\t\n\f\r /=>" or the end
        other = (rb"(?!(?:" + b"|".join(map(re.escape, refuse)) + rb")(?![^\t\n\f\r /=>]))"
                 + other)
    pattern = (tag + rb"(?:" + _SEP + rb"*+(?:" + b"|".join([*dispatch, other]) + rb"))*+"
               + _SEP + rb"*+>")
    return pattern, tuple(groups[key] for key in keys)


KEYS = tuple(_INTERESTING_ATTRS.split(b"|"))
#: Attributes Chromium's preload scanner reads, which it may take from a later duplicate
#: (it skips an empty first value; for some, the last one wins), where the tree builder
#: keeps the first: a tag that has one of them twice matches no keyed pattern here, and
#: the attribute-by-attribute reader (TAG_ATTR) tells the scan (TagReader.duplicated).
PRELOADED_ATTRS = (b"src", b"srcset", b"href", b"poster", b"rel", b"type", b"imagesrcset")
_FAST_TAG, FAST_TAG_GROUPS = _keyed_tag(rb"</?[a-z][^\t\n\f\r />]*+", KEYS,
                                        refuse=PRELOADED_ATTRS)
FAST_TAG = re.compile(_positive(_FAST_TAG))
IMG_KEYS = (b"src", b"srcset", b"lowsrc", b"dynsrc", b"style", b"width", b"height", b"alt",
            b"background")
# Group 1 (empty) marks that the <img> matched; the keys' groups follow.
_IMG_TAG, IMG_TAG_GROUPS = _keyed_tag(rb"<img(?=[\t\n\f\r />])", IMG_KEYS, first=2,
                                      refuse=(b"src", b"srcset"))
#: The keys of a plain ``<img>`` (SKIP reads it whole): any of the other loader keys
#: (srcset, lowsrc, dynsrc, style, background) sends it to the general path.
PLAIN_IMG_KEYS = (b"src", b"width", b"height")
_PLAIN_IMG, PLAIN_IMG_GROUPS = _keyed_tag(
    rb"<img(?=[\t\n\f\r />])", PLAIN_IMG_KEYS, first=2, canonical=True,
    refuse=(b"src", *(key for key in IMG_KEYS if key not in PLAIN_IMG_KEYS and key != b"alt")))


# -- the fast pre-skip ------------------------------------------------------------------------

_DELIM = rb"\t\n\f\r />\"'="  # ends a name here; quotes and "=" make a name non-canonical


def _name_except(words: Iterable[bytes], prefixes: Iterable[bytes], end_tag: bytes) -> bytes:
    """A lower-case tag name that is none of ``words`` and starts with none of ``prefixes``.

    A trie with no lookaround: each node offers its children (literals), any
    other name byte (then the free rest of the name) and, where no excluded
    word ends, the end of the name.  The caller must require a delimiter next.
    ``end_tag`` (``/name``) is one more alternative at the root (the first: end
    tags are half of all tags), saving a level.
    """
    root = _trie(words)
    for prefix in prefixes:
        at = root
        for byte in prefix[:-1]:
            at = at.setdefault(byte, {})
        at[prefix[-1]] = {-2: {}}  # every name below is excluded

    def node(children: _Trie, top: bool) -> bytes:
        kids = sorted(b for b in children if b >= 0)
        alts = [end_tag] if top else []
        alts += [re.escape(bytes([b])) + node(children[b], False)
                 for b in kids if -2 not in children[b]]
        taken = re.escape(bytes(kids))
        if top:  # a tag name starts with an ASCII letter
            first = bytes(c for c in range(0x61, 0x7B) if c not in kids)
            alts.append(b"[" + first + rb"][^" + _DELIM + rb"]*+")
        else:
            alts.append(rb"[^" + _DELIM + taken + rb"][^" + _DELIM + rb"]*+")
            if -1 not in children:
                alts.append(b"")
        return rb"(?:" + b"|".join(alts) + rb")"

    return node(root, True)


_NAME_CHARS = rb"[^" + _DELIM + rb"]"
_UNQUOTED = rb"[^\t\n\f\r >\"'=(&]++(?=[\t\n\f\r >])"  # ends at whitespace or ">"
_SAFE = rb"(?:[^%s(&]*+(?:&(?!#|lpar|bsol)[^%s(&]*+)*+)"  # no "(", "&#", "&lpar", "&bsol"
_OTHER_VALUE = rb"(?:='[^']*+'|=" + _UNQUOTED + rb"|)"  # or none at all
_VALUE_SAFE = (rb"=\"" + _SAFE % (b'"', b'"') + rb"\"|='" + _SAFE % (b"'", b"'") + rb"'|="
               + _UNQUOTED)
# One attribute after whitespace or "/", its "=" right after its name.  name="value" first,
# as its own alternative (re enters one frame per alternative taken; a nested choice would
# cost another).  A style value must be safe as in BORING, and a background attribute
# ends the run; names are dispatched on their first byte, so only those starting with "s"
# or "b" pay for these checks.  A quote or "=" anywhere else (in a name, after whitespace,
# inside an unquoted value) matches nothing: SKIP stops and the exact patterns decide.
_ANY_VALUE = rb"(?:=\"[^\"]*+\"|" + _OTHER_VALUE[3:]
_ATTR = (
    rb"(?:[^" + _DELIM + rb"sb]" + _NAME_CHARS + rb"*+=\"[^\"]*+\""
    rb"|[^" + _DELIM + rb"sb]" + _NAME_CHARS + rb"*+" + _OTHER_VALUE
    + rb"|s(?:tyle(?:" + _VALUE_SAFE + rb")|(?!tyle[\t\n\f\r /=>])" + _NAME_CHARS
    + rb"*+" + _ANY_VALUE + rb")"
    + rb"|b(?!ackground[\t\n\f\r /=>])" + _NAME_CHARS + rb"*+" + _ANY_VALUE + rb")"
)
# After the tag name: ">" at once, or a separator run and then attributes or ">"; the same
# after the first attribute (most tags have one: <td class="x">, <a href="...">), then a
# loop.  Each alternative starts with a literal or a class, which re tests without
# entering it: a tag name followed by neither (the "g" after "<im") costs no frame, nor
# a ">" after the first attribute a loop.
_MORE = (_SEP + _SEP + rb"*+(?:" + _ATTR + rb"(?:" + _SEP + rb"++" + _ATTR + rb")*+" + _SEP
         + rb"*+>|>)")
_REST = rb"(?:>|" + _SEP + _SEP + rb"*+(?:" + _ATTR + rb"(?:>|" + _MORE + rb")|>))"
_NAMES = _name_except(_LOADER_NAMES, _LOADER_PREFIXES, end_tag=rb"/[a-z]" + _NAME_CHARS + rb"*+")
# First the tags that need no name trie: a plain end tag, and a start tag whose name has
# one or two characters (<tr>, <td class="x">, <a href="...">; every loader name is longer,
# and "v:" or "am" followed by more fails the delimiter _REST needs).  Not for names
# starting with "i": the trie reads those (<i> included), so that "<img", where SKIP
# stops for every product image, is not tried here first.
_SHORT_TAG = rb"/[a-z]" + _NAME_CHARS + rb"*+>|[a-hj-z][a-z0-9]?+" + _REST
_SKIP = rb"(?:[^<]*+<(?:" + _SHORT_TAG + rb"|" + _NAMES + _REST + rb"))*+[^<]*+"

#: Text and canonical tags that cannot load anything, on the lower-cased view, then maybe
#: a plain canonical ``<img>`` (group 1 marks it; :data:`PLAIN_IMG_GROUPS` are its keys'
#: groups).  Every tag the first part consumes, BORING consumes too and at the same
#: extent; it stops at anything else (comments, loader tags, unusual quoting, "(" in a
#: style, a background attribute, any other ``<img>``).
SKIP = re.compile(_positive(_SKIP + rb"(?:()" + _PLAIN_IMG + rb")?"))
#: Any ``<img>`` (group 1 marks that it matched; :data:`IMG_TAG_GROUPS`), or nothing.
#: Where SKIP reads an ``<img>`` too, both give its src, width and height the same spans.
IMG_TAG = re.compile(_positive(rb"(?:()" + _IMG_TAG + rb")?"))


# -- inside tags and raw text -----------------------------------------------------------------

#: A style attribute without these characters cannot load anything.
CSS_HINT = re.compile(rb"[(@\\&]")
#: A style attribute without a match cannot shrink or hide an image (so is not parsed):
#: a hiding word, a reference, an escape or a comment (what CSS reads otherwise than
#: written), or a size that may be 0-2 px (a number from 0 to 2, a fraction, a sign, an
#: exponent, a bracket or a math function).
BOX_HINT = re.compile(
    rb"none|hidden|collapse|contents|opacity|mso-hide|&|\\|/\*|(?:width|height|size)" + _WS
    + rb"*+:" + _WS
    + rb"*+(?:0*(?:[0-2](?![0-9])|\.)|[-+(]|calc|min|max|clamp|[0-9]++(?:\.[0-9]*+)?e)"
)  # searched in the lower-cased view (re.IGNORECASE is four times slower here)
COMMENT_END = re.compile(rb"--!?>")
#: Matched on the lower-cased view ("[IF mso]" is a condition too).  The condition cannot
#: run past ">", so past the comment it is in: linear without a length limit.
CONDITIONAL = re.compile(rb"<!--\[if([^\]>]*+)\]>(?:<!--+>|<!--" + _WS + rb"*+-->)?")
#: The same without the optional empty comment after it, which the scanner reads as a
#: construct of its own: a token must not look into the next one (an optional tail that
#: fails reads past the token's end, and rewrite/rescan.py resumes at the next construct).
CONDITIONAL_OPEN = re.compile(rb"<!--\[if([^\]>]*+)\]>")
ENDIF = re.compile(rb"(?:<!--)?<!\[endif\]" + _WS + rb"*+(?:--)?>", re.I)
RAW_TEXT = frozenset(
    {"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes"}
)
#: The end tag of a raw-text element, searched in the lower-cased view (a literal prefix
#: lets re skip to each "</" at memchr speed; re.I would test every position).
RAW_END = {
    name: re.compile(b"</" + name.encode() + rb"(?=[\t\n\f\r />]|\Z)")
    for name in (*RAW_TEXT, "amp-analytics")
}
#: What changes the tokenizer's state inside a ``<script>`` (lower-cased view): an escape
#: (``<!--``), its end (``-->``), and ``<script`` / ``</script`` with a delimiter after.
_SCRIPT_EVENT = re.compile(rb"<!--|-->|</?script(?=[\t\n\f\r />]|\Z)")


def script_end(low: bytes, pos: int) -> int:
    """Where the ``</script`` that ends a script's text from ``pos`` starts, or -1 (the text
    runs to the end), as the HTML tokenizer's script data states find it: after ``<!--``
    (escaped) a ``<script`` makes the next ``</script`` text (double escaped) until
    ``-->`` or that ``</script``; ``-->`` ends either.  The first ``</script`` is the end
    only when there is no ``<!--`` before it: ``<script><!--<script></script><b
    title="</script><img src=...>">`` loads that image.  One forward search (linear).

    >>> low = b"<!--<script></script>x</script>"
    >>> script_end(low, 0), low.find(b"</script")
    (22, 12)
    >>> script_end(b"a</script>", 0), script_end(b"<!--><script></script>", 0)
    (1, 13)
    """
    state = 0  # 0 script data, 1 escaped, 2 double escaped
    while (m := _SCRIPT_EVENT.search(low, pos)) is not None:
        token = m.group()
        if token == b"<!--":
            if state == 0:
                state = 1
            pos = m.end() - 2  # its "--" may start a "-->" ("<!-->", "<!--->")
        elif token == b"-->":
            state, pos = 0, m.end()
        elif token[1] == 0x2F:  # "</script"
            if state < 2:
                return m.start()
            state, pos = 1, m.end()
        else:  # "<script"
            if state == 1:
                state = 2
            pos = m.end()
    return -1


#: A URL string in amp-analytics JSON: group 1 its raw text, group 2 the closing quote.
#: Without group 2 the string never ends (its escape-aware run stopped at the end, or at a
#: backslash before a line break or the end): the match still consumes what it read, so
#: ``finditer`` goes on after it.  A required closing quote would make each
#: ``"//`` in that run start another scan to the same failing end (quadratic in
#: ``"//a/\\`` repeated); no such start can succeed, as it meets the first run at one of
#: its token boundaries (what precedes it is ``/``, never an escaping backslash).
JSON_URL = re.compile(rb"\"((?:https?:)?(?:\\?/){2}(?:[^\"\\]++|\\.)*+)(\")?")
#: From the end of a ``<source>`` tag: text, comments and other tags (a browser passes
#: over what is no source when it picks one), then another source (group 1) or the
#: ``<img>`` of the ``<picture>`` (the match ends just after ``<img``); ``</picture``
#: stops it.  Followed source by source (and remembered: a run of sources is read once,
#: not once per source); a source whose tag holds a quoted ">" is not followed (it keeps
#: no box: the safe side).  An ``<img>`` nested in another element is taken too: a box
#: for a source that loads nothing then, never one too few.
_PICTURE_PARTS = (b"/picture", b"source", b"img")
PICTURE_STEP = re.compile(
    rb"(?:[^<]++|<!--(?:[^-]|-(?!->))*+-->|<(?!(?:" + b"|".join(_PICTURE_PARTS) + rb")(?="
    + _SEP + rb"|>))[^>]*+>)*+(?:(<source(?=" + _SEP + rb"|>)[^>]*+>)|<img(?=" + _SEP
    + rb"|>))")
