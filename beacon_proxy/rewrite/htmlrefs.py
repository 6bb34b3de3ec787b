"""The references an HTML scan yields, and what each loader tag loads.

:mod:`beacon_proxy.rewrite.html` runs the pass; this module holds what it finds
(:class:`Reference`, :class:`Box`, and :class:`PendingImg` for a plain ``<img>``
whose reference is built only when needed) and :class:`TagReader`, which turns
one loader tag's attributes into references: URLs entity-decoded, CSS in
``style`` scanned, ``srcset`` split, VML, AMP, ``meta`` refresh, ``<base>``.

For the renderer: to neutralise a reference, replace ``removal_span`` with
``neutral`` - the whole tag of ``img``/``input``/``source``/``track``/
``embed``/``link``/``meta`` refresh; only the value for ``background``,
``poster``, ``iframe src``, AMP ``src`` (``data:,``), ``srcdoc`` and VML ``src``
(nothing; quoted where the value was not: :func:`emptied`); one candidate with one separating comma
in a quoted ``srcset``, an unquoted one's whole value; the ``url(...)`` token or
whole ``image-set(...)`` (``neutral`` ``none``) or the whole ``@import`` rule in
CSS (a space); for a URL spelled in an image's attribute names (``url-in-name``,
:func:`name_url`) those names with the separators before them (a space), and it
is never rewritable.  To rewrite instead, replace ``url_span`` (when
``rewritable``) with a URL escaped for its context (``&`` as ``&amp;`` in
HTML; no quote, space or parenthesis inside CSS ``url()``).  Spans can nest
(a ``srcset`` candidate or a ``style`` URL inside a removed ``<img>``) and
neighbouring ``srcset`` candidates' spans can overlap by their comma: apply
the outermost span and merge overlapping ones (all with empty ``neutral``).

``Reference`` and ``Box`` are ``NamedTuple`` s rather than frozen dataclasses:
a newsletter yields hundreds, and a frozen 17-field dataclass costs five
times as much to build (2.1 µs against 0.4 µs measured); both are immutable.
The scanner builds them with ``tuple.__new__`` (no keyword handling: 0.1 µs).
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import compress
from typing import NamedTuple

from beacon_proxy.rewrite.css import SUBSTITUTED, CssRef, declarations, scan_css
from beacon_proxy.rewrite.htmlattr import (
    Decoded,
    Span,
    clean_url,
    decode_text,
    is_remote,
    refresh_url,
    srcset_candidates,
    strip_span,
    unescape,
)
from beacon_proxy.rewrite.htmlpatterns import (
    BOX_HINT,
    CSS_HINT,
    FAST_TAG_GROUPS,
    IMG_KEYS,
    IMG_TAG,
    IMG_TAG_GROUPS,
    KEYS,
    PLAIN_IMG_GROUPS,
    PRELOADED_ATTRS,
    SKIP_ATTRS,
    TAG_ATTR,
    TAG_NAME,
)

__all__ = [
    "BASES_DIFFER",
    "BASE_IN_SRCDOC",
    "BASE_UNRESOLVED",
    "DUPLICATED",
    "EMBEDDED_DOCUMENT",
    "LIMIT_REACHED",
    "LINK_HINT",
    "META_REFRESH",
    "PRELOAD_TAGS",
    "READINGS_PART",
    "URL_IN_NAME",
    "Box",
    "Entry",
    "PendingImg",
    "Reference",
    "Span",
    "TagReader",
    "embeds_document",
    "emptied",
    "materialize",
    "name_url",
]

#: Why a scan is incomplete (refused copies take the fallback): a limit (bytes,
#: constructs, nesting, the resolving budget), or a reading the scanner cannot decide.
LIMIT_REACHED = "scan limit reached"
READINGS_PART = ("a comment that browsers end inside what Outlook reads as markup "
                 "(a conditional comment)")
BASES_DIFFER = "two <base href> that differ (a browser may see only the second)"
BASE_IN_SRCDOC = "a <base> inside an iframe srcdoc document"
SUBSTITUTED_URL = ("a CSS image-set() or src() whose URL a var(), env(), if() or other "
                   "function substitutes")
BASE_UNRESOLVED = "a <base href> that relative URLs cannot be resolved against"
_PRELOADED = frozenset(PRELOADED_ATTRS)
#: The tags Chromium's preload scanner reads (the others' duplicates are the tree
#: builder's alone: the first one wins).
PRELOAD_TAGS = frozenset({"img", "image", "source", "link", "input", "video", "audio",
                          "script", "base", "track", "embed", "object", "iframe", "meta"})
DUPLICATED = ("a loading tag with an attribute twice (Chromium's preload scanner may "
              "read the second)")

_LOAD_RELS = frozenset({
    "stylesheet", "icon", "apple-touch-icon", "apple-touch-icon-precomposed", "mask-icon",
    "fluid-icon", "prefetch", "preload", "modulepreload", "prerender", "dns-prefetch",
    "preconnect", "manifest", "compression-dictionary",
})
#: A style sheet that loads: no ``type``, or a CSS one.
_CSS_TYPES = frozenset({"", "text/css"})
#: The element of a ``<link>`` that loads but is no style sheet: a resource hint
#: (``preconnect``, ``dns-prefetch``, ``prefetch``, ``preload``, ...), an icon or a
#: manifest.  A mail client shows nothing of it, yet it tells its host that the mail is
#: open (classified ``invisible-load``, see :mod:`.classify`); its ``imagesrcset``
#: candidates (a preloaded image) are this element too.
LINK_HINT = "link-hint"
#: The element of a ``<meta http-equiv=refresh>`` with something after its delay: a
#: navigation when the mail is shown, never content.  Browsers read its URL in ways of
#: their own (:func:`~.htmlattr.refresh_url`), so it loads whether or not the URL found
#: here is remote (:mod:`.classify` takes it for an ``invisible-load`` at least).
META_REFRESH = "meta-refresh"

_IMAGE_TAGS = frozenset({"img", "image", "input", "amp-img", "amp-anim", "v:image", "v:imagedata",
                         "video"})

#: Elements that show a document or a plug-in in a box of their own: a tiny or hidden one
#: loads all the same (a 0 x 0 ``<iframe>`` is a pixel), so it gets a box as an image does.
_FRAME_TAGS = frozenset({"iframe", "frame", "object", "embed"})

#: Void elements whose whole tag goes when their main URL is a tracker.
_WHOLE_TAG = frozenset({"img", "image", "input", "source", "track", "embed", "bgsound"})

_CSS_ELEMENT = {"url": "css-url", "font": "css-font", "import": "css-import"}

#: Elements whose URL a browser loads as a document or a style sheet, which loads in
#: turn what it names: ``<iframe src="data:text/html,<img src=//t.example/o>">``,
#: ``<link rel=stylesheet href="data:text/css,@import url(//t.example/o)">`` load the
#: tracker in Chromium (images, ``poster``, CSS images and SVG resources such as
#: ``filter:url(data:image/svg+xml,...#f)`` load nothing from inside a ``data:`` URL).
_DOCUMENT_ELEMENTS = frozenset({"iframe", "iframe-srcdoc", "object", "embed", "link",
                                "css-import", "svg-image", "amp-iframe"})
#: References to another part of the message (RFC 2392).
_PART_SCHEMES = frozenset({"cid:", "mid:"})
#: The reason of a finding for a ``data:`` URL in such an element (see :func:`embeds_document`).
EMBEDDED_DOCUMENT = "embedded-document"


def embeds_document(element: str, url: str) -> bool:
    """Whether a local reference is a ``data:`` URL, or a ``cid:``/``mid:`` reference
    to another part of the message, that a browser loads as a document or a style
    sheet: what it loads in turn the scan does not see (the part goes to the fallback,
    which renames the attribute or breaks the ``@import`` of a ``data:`` URL, and
    neutralises every part a ``cid:`` can load as a document: HTML, CSS, SVG, XML).
    ``<img src="cid:...">`` shows an image, which loads nothing (an SVG one neither).

    >>> embeds_document("iframe", "DATA:text/html,<img src=//t.example/o>")
    True
    >>> embeds_document("embed", "cid:part1@x"), embeds_document("img", "cid:part1@x")
    (True, False)
    >>> embeds_document("img", "data:image/svg+xml,<svg/>"), embeds_document("iframe", "data/a")
    (False, False)
    """
    return element in _DOCUMENT_ELEMENTS and (url[:5].lower() == "data:"
                                              or url[:4].lower() in _PART_SCHEMES)

def emptied(attr: _Attr, value: bytes = b"data:,") -> bytes:
    """What replaces an attribute's value to neutralise it in place: ``value``
    (``data:,``, an empty ``data:`` URL, by default), quoted when the value was not.

    An attribute is neutralised by its value, never removed: the first of two attributes
    of one name is the one a browser reads (``<iframe src=T1 src=T2>``: removing the first
    makes the second count), and a removal with the blanks before it would join what
    stood on either side (``<im background=T1 g src=T2>`` would become ``<img src=T2>``).
    Not emptied to nothing: Chromium's preload scanner takes a later duplicate where the
    first value is empty (``<video poster="" poster=T2>`` loads ``T2``), and an empty
    unquoted value would take what follows as its value.

    >>> emptied((0, 9, 5, 8, True)), emptied((0, 9, 5, 9, False)), emptied((0, 9, 5, 9, False), b"")
    (b'data:,', b'"data:,"', b'""')
    """
    return value if attr[4] else b'"' + value + b'"'


_TAG_URLS: dict[str, tuple[tuple[bytes, str], ...]] = {
    # tag -> (attribute, element); srcset, style, background, VML and AMP are handled apart.
    "img": ((b"src", "img"), (b"lowsrc", "img"), (b"dynsrc", "img")),
    "image": ((b"src", "img"), (b"href", "svg-image"), (b"xlink:href", "svg-image")),
    "input": ((b"src", "input"),),
    "source": ((b"src", "source"),),
    "video": ((b"src", "video"), (b"poster", "video-poster")),
    "audio": ((b"src", "audio"),),
    "track": ((b"src", "track"),),
    "iframe": ((b"src", "iframe"),),
    "frame": ((b"src", "iframe"),),
    "object": ((b"data", "object"),),
    "embed": ((b"src", "embed"),),
    "bgsound": ((b"src", "bgsound"),),
    "use": ((b"href", "svg-image"), (b"xlink:href", "svg-image")),
    "feimage": ((b"href", "svg-image"), (b"xlink:href", "svg-image")),
    "link": ((b"href", "link"),),
    "amp-analytics": ((b"config", "amp-analytics"),),
}

_SRCSET_TAGS = frozenset({"img", "source", "link", "amp-img"})

#: The element of a URL spelled in an image's attribute *names* (:func:`name_url`).
URL_IN_NAME = "url-in-name"
_SCHEME_NAME = re.compile(rb"(?:https?|ftp|wss?):")
_HOST_NAME = re.compile(rb"(?:[a-z0-9][a-z0-9-]*+\.)++[a-z]{2,63}(?::[0-9]{1,5})?")
_SLASHES = re.compile(rb"/++")


def name_url(low: bytes, start: int, end: int) -> tuple[Span, bool] | None:
    """A URL spelled in the attribute names of the start tag ``low[start:end]``.

    ``<img alt=" src="https://t.example/o/abc">`` (a quote too many) gives ``alt`` the
    value ``" src="`` and leaves the URL to the tokenizer as the attribute names
    ``https:``, ``t.example``, ``o`` and ``abc"`` (``/`` separates attributes): no
    browser loads it, a lenient client might.  A URL here is a name that is a web
    scheme (``https:``) followed by ``/`` and a host name, or a host name with a dot
    and a top-level label followed by ``/`` and another name; it runs over the names
    that follow with nothing but ``/`` between them, and ends after the name that holds
    the quote the author meant as its closing one.

    Returns the span to remove (the names, with the separators before them) and
    whether the URL has a scheme, or None.

    >>> low = b'<img width="1" alt=" src="http://t.example/o/abc">'
    >>> (a, b), scheme = name_url(low, 0, len(low))
    >>> low[a:b], scheme
    (b'http://t.example/o/abc"', True)
    >>> name_url(b'<img alt="x" class="a" data-x>', 0, 30) is None
    True
    """
    m = TAG_NAME.match(low, start)
    if m is None:
        return None
    pos = m.end()
    tokens: list[tuple[int, int, int, int]] = []  # (separator start, name start, end, token end)
    while True:
        t = TAG_ATTR.match(low, pos, end)
        if t is None or t.group(1) is not None or t.group(2) is None:
            break
        tokens.append((pos, t.start(2), t.end(2), t.end()))
        pos = t.end()
    for i in range(len(tokens) - 1):
        sep, ns, ne, te = tokens[i]
        nxt = tokens[i + 1]
        if te != ne or not _SLASHES.fullmatch(low, nxt[0], nxt[1]):
            continue  # a URL's first name has no value and "/" follows
        scheme = _SCHEME_NAME.fullmatch(low, ns, ne) is not None
        if scheme:
            if _HOST_NAME.fullmatch(low, nxt[1], nxt[2]) is None:
                continue
        elif _HOST_NAME.fullmatch(low, ns, ne) is None:
            continue
        last = i + 1
        while (low.find(b'"', tokens[last][1], tokens[last][3]) < 0
               and low.find(b"'", tokens[last][1], tokens[last][3]) < 0
               and last + 1 < len(tokens)
               and _SLASHES.fullmatch(low, tokens[last + 1][0], tokens[last + 1][1])):
            last += 1
        return (sep, tokens[last][3]), scheme
    return None


class Box(NamedTuple):
    """Size and visibility hints of an image element: attributes and inline style."""

    width: str | None = None  # width="..." (entity-decoded, stripped)
    height: str | None = None
    # From style="...", lower-cased, without !important; None when absent, and all
    # None when the style has no declaration that could shrink or hide the image.
    css_width: str | None = None
    css_height: str | None = None
    css_max_width: str | None = None
    css_max_height: str | None = None
    display: str | None = None
    visibility: str | None = None
    opacity: str | None = None
    mso_hide: str | None = None


class Reference(NamedTuple):
    """One remote-load construct; spans are ``(start, end)`` offsets into the scanned bytes."""

    element: str  # product-page name: "img", "srcset", "css-url", "vml", ...
    url: str  # entity- and CSS-unescaped, stripped; resolved against a remote <base>
    tag: str  # lower-cased tag name ("style" for <style> blocks)
    remote: bool  # False for cid:, data:, #fragment, relative URLs without a remote base
    tag_span: Span  # the whole start tag
    url_span: Span  # the URL's raw bytes (inside quotes, url( ) or a srcset candidate)
    removal_span: Span  # cut this and insert ``neutral`` to neutralise only this reference
    neutral: bytes = b""  # b"", b"none" (CSS) or b'""' (unquoted VML src)
    attr: str | None = None  # attribute name; None inside <style> blocks and JSON
    attr_span: Span | None = None  # the attribute with its leading whitespace
    value_span: Span | None = None  # the attribute value, inside quotes
    in_conditional: bool = False  # inside an Outlook conditional comment
    condition: str = ""  # the innermost condition, e.g. "mso", "gte mso 9", "!mso"
    in_style_block: bool = False  # inside <style>...</style>
    box: Box | None = None  # image elements only
    alt_span: Span | None = None  # raw value of alt="..." on the same tag
    rewritable: bool = True  # url_span can take a replacement URL (False inside srcdoc)


class PendingImg(NamedTuple):
    """An ``<img src>`` read by the fast path: a :class:`Reference` once :func:`materialize` d.

    Everything the classifier needs is here; the spans are computed only when
    someone asks for the reference (a relay copy needs only the trackers').
    """

    view: bytes  # the lower-cased view (IMG_TAG matches the tag at ``start`` again)
    start: int
    url: str
    remote: bool
    box: Box
    condition: str | None  # the innermost conditional comment, None outside one


Entry = Reference | PendingImg


def materialize(entry: Entry) -> Reference:
    """The reference an entry of :func:`scan_entries` stands for."""
    if not isinstance(entry, PendingImg):
        return entry
    view = entry.view  # lower-case: only quotes and spaces matter here
    m = IMG_TAG.match(view, entry.start)
    assert m is not None and m.start(_IMG_MARK) == entry.start  # as when it was read
    tag_span = (entry.start, m.end())
    vs, ve = m.span(_IMG_ALT)
    alt_span = None if vs < 0 else (vs + 1, ve - 1) if view[vs] in _QUOTES else (vs, ve)
    vs, ve = m.span(_IMG_SRC)
    attr_start = m.start(_IMG_SRC_NAME) - 3  # the group ends "src"
    while view[attr_start - 1] in _SPACE:
        attr_start -= 1
    attr_span = (attr_start, ve)
    if view[vs] in _QUOTES:
        vs, ve = vs + 1, ve - 1
    cond = entry.condition
    return _new(Reference, (
        "img", entry.url, "img", entry.remote, tag_span, strip_span(view, vs, ve), tag_span,
        b"", "src", attr_span, (vs, ve), cond is not None, cond or "", False, entry.box,
        alt_span, True))


def _entry_start(entry: Entry) -> int:
    """Sort key: url_span start (a pending src's raw value start: no reference between)."""
    if isinstance(entry, PendingImg):
        m = IMG_TAG.match(entry.view, entry.start)
        assert m is not None
        return m.start(_IMG_SRC)
    return entry.url_span[0]


_Attr = tuple[int, int, int, int, bool]  # (start incl. whitespace, end, value start, end, quoted)
_SPACE = b"\t\n\f\r /"
_QUOTES = b"\"'"  # view[i] in _QUOTES: an int in bytes
_QUOTE_BYTES = (b'"', b"'")
_HTTP = ("https:", "http:")  # is_remote()'s first test
_new = tuple.__new__  # builds a NamedTuple without keyword handling (0.1 us, not 0.3)
_NO_CSS = (None,) * 8  # Box fields after width and height
_FAST_KEYS = tuple((key, len(key), groups) for key, groups in zip(KEYS, FAST_TAG_GROUPS,
                                                                   strict=True))
_FAST_VALUES = tuple(value for _, value in FAST_TAG_GROUPS)
_ATTR_NAMES = {key: key.decode("ascii") for key in KEYS}
_IMG_MARK = 1  # SKIP's group for the start of its <img>
_IMG = dict(zip(IMG_KEYS, IMG_TAG_GROUPS, strict=True))
_IMG_SRC_NAME, _IMG_SRC = _IMG[b"src"]
_IMG_STYLE_NAME, _IMG_STYLE = _IMG[b"style"]
_IMG_WIDTH, _IMG_HEIGHT, _IMG_ALT = _IMG[b"width"][1], _IMG[b"height"][1], _IMG[b"alt"][1]
#: Value groups img() reads: srcset, lowsrc, dynsrc, background (any of them sends the
#: <img> to the general path).
_IMG_GROUPS = tuple(_IMG[key][1] for key in (b"srcset", b"lowsrc", b"dynsrc", b"background"))
#: SKIP's value groups for a plain <img>: src, width, height.
_PLAIN_SRC, _PLAIN_WIDTH, _PLAIN_HEIGHT = (value for _, value in PLAIN_IMG_GROUPS)


@lru_cache(maxsize=64)
def _ascii_transparent(charset: str) -> bool:
    """Whether ``charset`` decodes ASCII bytes to the same text (not ISO-2022, HZ, UTF-7)."""
    probe = bytes(range(128)) + b"\x1b$B\x1b(B~{~}+AGE-"
    return decode_text(probe, charset) == probe.decode("ascii")


class TagReader:
    """The state of a scan and what one loader tag loads (:mod:`~.html` runs the pass)."""

    def __init__(self, view: bytes, charset: str, budget: int, depth: int = 0,
                 low: bytes | None = None) -> None:
        self.view, self.n, self.charset = view, len(view), charset
        # same offsets; the tag patterns match lower-case names (``low``: the caller has it)
        self.low = view.lower() if low is None else low
        self.ascii = _ascii_transparent(charset)
        self.budget, self.depth = budget, depth
        self.refs: list[Entry] = []
        self.boxes: dict[tuple[bytes | None, ...], Box] = {}  # by raw width, height
        self.ordered = True  # refs were appended in url_span order (no sort needed)
        self.last_start = -1
        self.cond: list[str] = []
        self.base: str | None = None
        self.truncated = False
        self.incomplete: str | None = None  # why truncated, when not a limit (stop_scan)
        self.opaque: list[Span] = []  # comments and raw text, in document order
        self.styles: list[Span] = []  # <style> contents
        self.sources = False  # a <source>, <track>, <video> or <audio> (html.start_tag)
        self.duplicated = False  # the last tag read had a PRELOADED_ATTRS name twice

    def attributes(self, pos: int) -> tuple[dict[bytes, _Attr], int]:
        """Loader-relevant attributes (first occurrence wins) and the tag's end (-1 at EOF).

        One of :data:`PRELOADED_ATTRS` twice sets ``duplicated`` (the keyed fast patterns
        leave such a tag to this reader)."""
        view, skip, match = self.view, SKIP_ATTRS.match, TAG_ATTR.match
        attrs: dict[bytes, _Attr] = {}
        while True:
            pos = skip(view, pos).end()  # type: ignore[union-attr]  # matches ""
            m = match(view, pos)
            if m is None:
                return attrs, -1
            close, name, dq, dq_end, sq, sq_end, unq = m.groups()
            if close:
                return attrs, m.end()
            self.budget -= 1
            if dq is not None:
                if dq_end is None:
                    return attrs, -1
                attr = (m.start(), m.end(), m.start(3), m.end(3), True)
            elif sq is not None:
                if sq_end is None:
                    return attrs, -1
                attr = (m.start(), m.end(), m.start(5), m.end(5), True)
            elif unq is not None:
                attr = (m.start(), m.end(), m.start(7), m.end(7), False)
            else:
                attr = (m.start(), m.end(), -1, -1, False)
            key = name.lower()
            if key not in attrs:
                attrs[key] = attr
            elif key in _PRELOADED:
                self.duplicated = True
            pos = m.end()

    def fast_attributes(self, m: re.Match[bytes]) -> dict[bytes, _Attr]:
        """Attributes from one match of :data:`FAST_TAG` (its groups keep the first one)."""
        view, attrs = self.view, {}
        # The keys with a value (a value is never b""; m.regs would build all 42 spans).
        for key, size, (name_end, value) in compress(_FAST_KEYS, m.group(*_FAST_VALUES)):
            vs, ve = m.span(value)
            start = m.start(name_end) - size
            while view[start - 1] in _SPACE:
                start -= 1
            quoted = view[vs] in b"\"'"
            attrs[key] = (start, ve, vs + quoted, ve - quoted, quoted)
        return attrs

    def quoted(self, value: Span) -> Span:
        """A raw attribute value's span without its quotes."""
        vs, ve = value
        quoted = self.view[vs] in b"\"'"
        return vs + quoted, ve - quoted

    def declarations(self, start: int, end: int) -> dict[str, str]:
        """The sizing and visibility declarations of the style value at ``start:end``."""
        if self.view.find(b"&", start, end) < 0:  # no entity: the lower-case view will do
            return declarations(self.low, start, end, lower=True)
        return declarations(Decoded(self.view, start, end).data)

    def number(self, raw: bytes | None) -> str | None:
        """A width or height attribute's text from its raw value (with quotes)."""
        if raw is None:
            return None
        if raw[:1] in _QUOTE_BYTES:
            raw = raw[1:-1]
        if raw.isdigit():
            return raw.decode("ascii")
        return unescape(decode_text(raw, self.charset)).strip()

    def attr_at(self, name_start: int, value: Span) -> _Attr:
        """The attribute whose name starts at ``name_start`` (leading whitespace included)."""
        view, start = self.view, name_start
        while view[start - 1] in _SPACE:
            start -= 1
        vs, ve = self.quoted(value)
        return (start, value[1], vs, ve, vs != value[0])

    def tag(self, name: str, attrs: dict[bytes, _Attr], tag_span: Span) -> None:
        get, box, alt_span = attrs.get, None, None
        if name in _IMAGE_TAGS:
            box = self.box(attrs)
            alt = get(b"alt")
            alt_span = (alt[2], alt[3]) if alt is not None and alt[2] >= 0 else None
        elif name in _FRAME_TAGS:
            box = self.box(attrs)
        if name == "input" and self.value(get(b"type")).strip().lower() != "image":
            return
        hint = False
        if name == "link":
            rels = self.value(get(b"rel")).lower().split()
            if _LOAD_RELS.isdisjoint(rels):
                return
            # a style sheet shows, and its hints (rel="stylesheet preconnect") load nothing
            # more; one that never loads (type="text/plain") shows nothing: only hints
            hint = "stylesheet" not in rels or (
                self.value(get(b"type")).split(";")[0].strip().lower() not in _CSS_TYPES)
        for key, element in _TAG_URLS.get(name, ()):
            attr = get(key)
            if attr is not None:
                if name == "link" or (key == b"src" and name in _WHOLE_TAG):
                    self.attr_ref(LINK_HINT if hint else element, name, key, attr, tag_span,
                                  tag_span, box, alt_span)
                else:
                    self.attr_ref(element, name, key, attr, attr[2:4], tag_span, box, alt_span,
                                  emptied(attr))
        if box is not None and b"src" not in attrs and name not in _FRAME_TAGS:
            self.url_in_names(name, tag_span, box)
        if name[:2] == "v:" and b"src" in attrs:
            attr = attrs[b"src"]
            self.attr_ref("vml", name, b"src", attr, attr[2:4], tag_span, box, alt_span,
                          emptied(attr, b""))  # Word's VML: emptied as it always was
        elif name[:4] == "amp-":
            for key, element in ((b"src", name), (b"poster", "video-poster")):
                if key in attrs:
                    self.attr_ref(element, name, key, attrs[key], attrs[key][2:4], tag_span,
                                  box, alt_span, emptied(attrs[key]))
        if b"background" in attrs:
            attr = attrs[b"background"]
            self.attr_ref("background", name, b"background", attr, attr[2:4], tag_span, box,
                          alt_span, emptied(attr))
        attr = get(b"style")
        if attr is not None and CSS_HINT.search(self.view, attr[2], attr[3]):
            self.style_attr(name, attr, tag_span)
        if name in _SRCSET_TAGS:
            for key in (b"srcset", b"imagesrcset"):
                attr = get(key)
                if attr is not None and attr[2] >= 0:
                    self.srcset(name, key, attr, tag_span, box, alt_span,
                                LINK_HINT if hint else "srcset")
        elif name == "iframe" and b"srcdoc" in attrs and attrs[b"srcdoc"][2] >= 0:
            self.srcdoc(attrs[b"srcdoc"], tag_span, box)
        elif name == "meta" and b"content" in attrs and attrs[b"content"][2] >= 0:
            if self.value(get(b"http-equiv")).strip().lower() == "refresh":
                self.refresh(attrs[b"content"], tag_span)
        elif name == "base" and b"href" in attrs:
            # The first <base href> is a browser's base; the scanner's first may be one a
            # browser never sees (in a conditional comment, a <template>, a <noscript>):
            # with two that differ it cannot tell which.
            href = clean_url(self.value(attrs[b"href"]))
            if self.base is None:
                self.base = href
            elif href != self.base:
                self.stop_scan(BASES_DIFFER)

    def stop_scan(self, reason: str) -> int:
        """End the scan here, incomplete for ``reason`` (the first one given stays)."""
        if self.incomplete is None:
            self.incomplete = reason
        self.truncated = True
        return self.n

    def value(self, attr: _Attr | None) -> str:
        if attr is None or attr[2] < 0:
            return ""
        raw = self.view[attr[2] : attr[3]]
        if self.ascii and raw.isascii():  # the common case: no codec lookup
            return unescape(raw.decode("ascii"))
        return unescape(decode_text(raw, self.charset))

    def box(self, attrs: dict[bytes, _Attr]) -> Box:
        width, height, style = attrs.get(b"width"), attrs.get(b"height"), attrs.get(b"style")
        d = {}
        if style is not None and BOX_HINT.search(self.low, style[2], style[3]):
            d = self.declarations(style[2], style[3])
        return Box(
            self.value(width).strip() if width is not None else None,
            self.value(height).strip() if height is not None else None,
            d.get("width"), d.get("height"), d.get("max-width"), d.get("max-height"),
            d.get("display"), d.get("visibility"), d.get("opacity"), d.get("mso-hide"),
        )

    def add(self, element: str, url: str, tag: str, tag_span: Span, url_span: Span,
            removal: Span, neutral: bytes = b"", attr: bytes | None = None,
            attr_span: Span | None = None, value_span: Span | None = None,
            in_block: bool = False, box: Box | None = None, alt_span: Span | None = None,
            rewritable: bool = True) -> None:
        # Only a value that is empty loads nothing: one the URL parser trims to nothing
        # (" ", "\x1c", an escaped tab in CSS) is the base URL (relative, "")
        if not url or not self.count(url_span[0]):
            return
        url = clean_url(url)
        cond = self.cond
        self.refs.append(_new(Reference, (
            element, url, tag, bool(is_remote(url)), tag_span, url_span, removal, neutral,
            None if attr is None else _ATTR_NAMES[attr], attr_span, value_span,
            bool(cond), cond[-1] if cond else "", in_block, box, alt_span, rewritable,
        )))

    def count(self, start: int) -> bool:
        """Take a unit of the budget for a reference at ``start``; False when it ran out."""
        self.budget -= 1
        if self.budget < 0:
            self.truncated = True
            return False
        if start < self.last_start:
            self.ordered = False
        self.last_start = start
        return True

    def url_in_names(self, tag: str, tag_span: Span, box: Box | None) -> None:
        """A URL spelled in the attribute names of an image-like tag without ``src``
        (:func:`name_url`): a reference that loads nothing in a browser, removed from
        refused copies (classified ``malformed``; never rewritten)."""
        found = name_url(self.low, *tag_span)
        if found is None:
            return
        (start, end), scheme = found
        name_start = start
        while self.view[name_start] in _SPACE:
            name_start += 1
        # entities decoded as the author meant it: as an attribute value
        url = clean_url(unescape(decode_text(self.view[name_start:end], self.charset)))
        url = url.rstrip("\"'")
        if not scheme:
            url = "//" + url
        if not self.count(start):
            return
        cond = self.cond
        self.refs.append(_new(Reference, (
            # removed with the separators before it, a space in their place: what stood on
            # either side stays apart (<img sr https://h.example/a="x"c=T> is no src)
            URL_IN_NAME, url, tag, True, tag_span, (name_start, end), (start, end), b" ", None,
            None, None, bool(cond), cond[-1] if cond else "", False, box, None, False,
        )))

    def attr_ref(self, element: str, tag: str, key: bytes, attr: _Attr, removal: Span,
                 tag_span: Span, box: Box | None, alt_span: Span | None,
                 neutral: bytes = b"") -> None:
        if attr[2] < 0:
            return
        url_span = strip_span(self.view, attr[2], attr[3])
        self.add(element, self.value(attr), tag, tag_span, url_span, removal, neutral, key,
                 attr[:2], attr[2:4], False, box, alt_span)

    def srcset(self, tag: str, key: bytes, attr: _Attr, tag_span: Span, box: Box | None,
               alt_span: Span | None, element: str = "srcset") -> None:
        dec = Decoded(self.view, attr[2], attr[3])
        data = dec.data
        cands = srcset_candidates(data)
        for i, (start, url_end, cand_end) in enumerate(cands):
            if not attr[4]:  # unquoted: emptied whole (an empty unquoted value would take
                removal, neutral = (0, len(data)), b'""'  # the next attribute as its value;
                # "" is no null srcset: the preload scanner keeps the first one too)
            elif i + 1 < len(cands):
                removal, neutral = (start, cands[i + 1][0]), b""  # with its comma and space
            elif i > 0:
                removal, neutral = (cands[i - 1][2], cand_end), b""  # the last: comma before
            else:
                removal, neutral = (start, cand_end), b""
            url = decode_text(data[start:url_end], self.charset)
            self.add(element, url, tag, tag_span, dec.span(start, url_end), dec.span(*removal),
                     neutral, key, attr[:2], attr[2:4], False, box, alt_span)

    def refresh(self, attr: _Attr, tag_span: Span) -> None:
        dec = Decoded(self.view, attr[2], attr[3])
        a, b = refresh_url(dec.data)
        self.add(META_REFRESH, decode_text(dec.data[a:b], self.charset), "meta",
                 tag_span, dec.span(a, b), tag_span, b"", b"content", attr[:2], attr[2:4])

    def style_attr(self, tag: str, attr: _Attr, tag_span: Span) -> None:
        """The URLs of a ``style`` attribute.  A background image gets the element's box
        from the same style: a 1 x 1 or ``display:none`` element with a background is a
        pixel like a 1 x 1 image (HTML ``width``/``height`` attributes are not read here).
        """
        dec = Decoded(self.view, attr[2], attr[3])
        box = None
        hinted: bool | None = None  # searched once per attribute, not once per url()
        for css in scan_css(dec.data):
            if css.kind == "url" and box is None and hinted is None:
                hinted = BOX_HINT.search(dec.data.lower()) is not None
            if css.kind == "url" and box is None and hinted:
                d = declarations(dec.data)
                box = Box(None, None, d.get("width"), d.get("height"), d.get("max-width"),
                          d.get("max-height"), d.get("display"), d.get("visibility"),
                          d.get("opacity"), d.get("mso-hide"))
            self.css_ref(css, tag, tag_span, attr, dec, box=box if css.kind == "url" else None)

    def css_ref(self, css: CssRef, tag: str, tag_span: Span, attr: _Attr | None,
                dec: Decoded | None, in_block: bool = False, box: Box | None = None) -> None:
        if css.kind == SUBSTITUTED:
            self.stop_scan(SUBSTITUTED_URL)
            return
        url_span, removal = css.url_span, css.removal_span
        if dec is not None:
            url_span, removal = dec.span(*url_span), dec.span(*removal)
        self.add(_CSS_ELEMENT[css.kind], css.url, tag, tag_span, url_span, removal, css.neutral,
                 None if attr is None else b"style", None if attr is None else attr[:2],
                 None if attr is None else attr[2:4], in_block, box)

    def srcdoc(self, attr: _Attr, tag_span: Span, box: Box | None) -> None:
        """The references of an ``<iframe srcdoc>`` document (the pass scans it);
        ``box``: the frame's."""
        raise NotImplementedError
