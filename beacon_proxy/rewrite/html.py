"""Every construct in an HTML part that makes a mail client fetch something.

One bounded, linear pass over *bytes* that keeps offsets:

>>> view = b'<p>Hi</p><img src="https://t.example/o.gif?u=1" width="1" alt="">'
>>> ref = scan_html(view).references[0]
>>> ref.element, ref.url, view[slice(*ref.removal_span)] == view[9:]
('img', 'https://t.example/o.gif?u=1', True)

How the pass works (style guide point 6, "tokenize, then decide"):

* one compiled regex (:data:`_BORING`) consumes, in C, text and every tag
  that cannot load anything (its name is not a loader and it has neither a
  ``background`` attribute nor a ``style`` that could hold ``url(``),
  honouring quoted attribute values;
* Python looks only at what that stops on: comments (skipped), Outlook
  conditional comments (their contents are scanned, references inside get
  ``in_conditional``), ``<!DOCTYPE``/``<![CDATA[``/``<?`` (bogus comments up
  to ``>``, as in HTML), loader tags (attributes parsed, entities decoded for
  the URL string only), and raw-text elements: ``<style>`` is scanned as CSS,
  ``<script>``, ``<textarea>``, ``<title>``, ``<xmp>``, ``<iframe>``,
  ``<noembed>``, ``<noframes>`` are skipped to their end tag;
* anything unterminated at the end (comment, quote, tag) ends the scan, as it
  ends the document for an HTML parser: no backtracking, no re-scan.

Which URLs are remote: ``http:``, ``https:``, ``ftp:``, ``ws(s):`` and
protocol-relative ``//host``.  ``cid:``, ``mid:``, ``data:``, ``#fragment``
and other schemes are local.  A relative URL is local (a mail has no base)
unless the document has a remote ``<base href>``, which then resolves it.

For the renderer: to neutralise a reference, replace ``removal_span`` with
``neutral`` - the whole tag of ``img``/``input``/``source``/``track``/
``embed``/``link``/``meta`` refresh, the attribute (with its leading
whitespace) for ``background``, ``poster``, ``iframe src``, ``srcdoc``, AMP
``src``; one candidate with one separating comma in a ``srcset``; the
``url(...)`` token or whole ``image-set(...)`` (``neutral`` ``none``) or the
whole ``@import`` rule in CSS; only the value of a VML ``src`` (``""`` when
it was unquoted).  To rewrite instead, replace ``url_span`` (when
``rewritable``) with a URL escaped for its context (``&`` as ``&amp;`` in
HTML; no quote, space or parenthesis inside CSS ``url()``).  Spans can nest
(a ``srcset`` candidate or a ``style`` URL inside a removed ``<img>``) and
neighbouring ``srcset`` candidates' spans can overlap by their comma: apply
the outermost span and merge overlapping ones (all with empty ``neutral``).

``Reference`` and ``Box`` are ``NamedTuple`` s rather than frozen dataclasses:
a newsletter yields hundreds, and a frozen 17-field dataclass costs five
times as much to build (2.1 µs against 0.4 µs measured); both are immutable.

Not modelled: SVG/MathML foreign-content parsing (``<svg><style>`` is read as
CSS), ancestors that hide an element, ``data:`` documents in ``iframe`` and
``object``, SVG presentation attributes (``fill="url(...)"``), ``<script
src>`` (mail clients run no script).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urljoin

from beacon_proxy.rewrite.css import CssRef, declarations, scan_css
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

__all__ = ["Box", "HtmlScan", "Reference", "Span", "scan_html"]

DEFAULT_MAX_TAGS = 200_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

_SEP = rb"[\t\n\f\r /]"
_WS = rb"[\t\n\f\r ]"
_NAME = rb"[^\t\n\f\r />][^\t\n\f\r /=>]*+"
_VALUE = rb"(?:\"[^\"]*+\"|'[^']*+'|[^\t\n\f\r >\"'][^\t\n\f\r >]*+)"
_EQ_VALUE = rb"(?:" + _WS + rb"*+=" + _WS + rb"*+" + _VALUE + rb")?"
_SAFE_STYLE = rb"(?:[^%s(&]|&(?!#|lpar|bsol))"
_LOADERS = (
    rb"img|image|input|source|video|audio|track|iframe|frame|object|embed|bgsound|link|meta|"
    rb"base|style|script|textarea|title|xmp|noembed|noframes|plaintext|use|feimage"
)
_INTERESTING_ATTRS = (
    rb"src|srcset|lowsrc|dynsrc|poster|href|xlink:href|data|background|style|type|rel|"
    rb"http-equiv|content|width|height|alt|srcdoc|config|imagesrcset"
)
_END = rb"(?:[\t\n\f\r /=>]|$)"
_BORING = re.compile(
    rb"(?:[^<]++"
    rb"|<(?![!/?a-zA-Z])"
    rb"|</[a-zA-Z][^\t\n\f\r />]*+(?:" + _SEP + rb"*+" + _NAME + _EQ_VALUE + rb")*+"
    + _SEP + rb"*+>"
    rb"|<(?!(?i:" + _LOADERS + rb")(?:[\t\n\f\r />]|$)|(?i:v:|amp-))[a-zA-Z][^\t\n\f\r />]*+"
    rb"(?:" + _SEP + rb"*+(?:"
    rb"(?i:style)" + _WS + rb"*+=" + _WS + rb"*+(?:\"" + (_SAFE_STYLE % b'"') + rb"*+\"|'"
    + (_SAFE_STYLE % b"'") + rb"*+'|" + (_SAFE_STYLE % rb"\t\n\f\r >\"'") + rb"++)"
    rb"|(?!(?i:style|background)" + _END + rb")" + _NAME + _EQ_VALUE
    + rb"))*+" + _SEP + rb"*+>"
    rb")*+"
)
_TAG_NAME = re.compile(rb"</?([a-zA-Z][^\t\n\f\r />]*+)")
_SKIP_ATTRS = re.compile(
    rb"(?:" + _SEP + rb"*+(?!(?i:" + _INTERESTING_ATTRS + rb")" + _END + rb")" + _NAME
    + _EQ_VALUE + rb")*+"
)
_ATTR = re.compile(
    _SEP + rb"*+(?:(>)|(" + _NAME + rb")(?:" + _WS + rb"*+=" + _WS
    + rb"*+(?:\"([^\"]*+)(\")?|'([^']*+)(')?|([^\t\n\f\r >]*+)))?)"
)
_QVALUE = rb"(\"[^\"]*+\"|'[^']*+'|[^\t\n\f\r >\"'][^\t\n\f\r >]*+)"


def _tag_pattern(tag: bytes, keys: tuple[bytes, ...], first: int = 1) -> bytes:
    """A regex reading a whole tag: groups ``first + 2i`` / ``+1`` hold ``keys[i]``'s name / value.

    The first occurrence of a key wins, as in HTML.  Quotes must be closed and
    names must not start with ``=`` or a quote; tags that do not fit fall back
    to the attribute-by-attribute parser.
    """
    branches = [
        rb"(?(%d)(?!)|((?i:%s))" % (first + 2 * i, re.escape(key)) + _WS + rb"*+=" + _WS
        + rb"*+" + _QVALUE + rb")"
        for i, key in enumerate(keys)
    ]
    other = (rb"[^\t\n\f\r />=\"'][^\t\n\f\r /=>]*+(?:" + _WS + rb"*+=" + _WS
             + rb"*+(?:\"[^\"]*+\"|'[^']*+'|[^\t\n\f\r >\"'][^\t\n\f\r >]*+))?")
    return (tag + rb"(?:" + _SEP + rb"*+(?:" + b"|".join([*branches, other]) + rb"))*+" + _SEP
            + rb"*+>")


_KEYS = tuple(_INTERESTING_ATTRS.split(b"|"))
_FAST_TAG = re.compile(_tag_pattern(rb"</?[a-zA-Z][^\t\n\f\r />]*+", _KEYS))
_IMG_KEYS = (b"src", b"srcset", b"lowsrc", b"dynsrc", b"style", b"width", b"height", b"alt",
             b"background")
#: The main loop's regex: a run of boring markup, then maybe a whole <img> (group 1 marks it;
#: groups 2.. are the _IMG_KEYS names and values).
_NEXT = re.compile(_BORING.pattern + rb"(?:()" + _tag_pattern(
    rb"<(?i:img)(?=[\t\n\f\r />])", _IMG_KEYS, first=2) + rb")?")
#: A style attribute without these characters cannot load anything.
_CSS_HINT = re.compile(rb"[(@\\&]")
#: A style attribute without a match cannot shrink or hide an image (so is not parsed).
_BOX_HINT = re.compile(
    rb"none|hidden|collapse|opacity|mso-hide|&|(?:width|height)" + _WS + rb"*+:" + _WS
    + rb"*+0*(?:[0-2](?![0-9])|\.)"
)  # searched in the lower-cased style (re.IGNORECASE is four times slower here)
_COMMENT_END = re.compile(rb"--!?>")
_CONDITIONAL = re.compile(rb"<!--\[if([^\]>]{0,200})\]>(?:<!--+>|<!--" + _WS + rb"*+-->)?")
_ENDIF = re.compile(rb"(?:<!--)?<!\[endif\]" + _WS + rb"*+(?:--)?>", re.I)
_RAW_TEXT = frozenset(
    {"script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes"}
)
_RAW_END = {
    name: re.compile(b"</" + name.encode() + rb"(?=[\t\n\f\r />]|\Z)", re.I)
    for name in (*_RAW_TEXT, "amp-analytics")
}
_JSON_URL = re.compile(rb"\"((?:https?:)?(?:\\?/){2}(?:[^\"\\]++|\\.)*+)\"")

_LOAD_RELS = frozenset({
    "stylesheet", "icon", "apple-touch-icon", "apple-touch-icon-precomposed", "mask-icon",
    "fluid-icon", "prefetch", "preload", "modulepreload", "prerender", "dns-prefetch",
    "preconnect", "manifest",
})
_IMAGE_TAGS = frozenset({"img", "image", "input", "amp-img", "amp-anim", "v:image", "v:imagedata"})
#: Void elements whose whole tag goes when their main URL is a tracker.
_WHOLE_TAG = frozenset({"img", "image", "input", "source", "track", "embed", "bgsound"})
_CSS_ELEMENT = {"url": "css-url", "font": "css-font", "import": "css-import"}
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


@dataclass(frozen=True, slots=True)
class HtmlScan:
    """What :func:`scan_html` found, in document order."""

    references: tuple[Reference, ...]
    base: str | None = None  # the first <base href>, if any
    truncated: bool = False  # a limit was hit: the rest of the part was not scanned

    @property
    def remote(self) -> tuple[Reference, ...]:
        return tuple(r for r in self.references if r.remote)


_Attr = tuple[int, int, int, int, bool]  # (start incl. whitespace, end, value start, end, quoted)


class _Scan:
    def __init__(self, view: bytes, charset: str, budget: int, depth: int = 0) -> None:
        self.view, self.n, self.charset = view, len(view), charset
        self.budget, self.depth = budget, depth
        self.refs: list[Reference] = []
        self.cond: list[str] = []
        self.base: str | None = None
        self.truncated = False
        self.analytics_end = -1

    # -- the loop: skip in C, look in Python -------------------------------------------
    def run(self) -> None:
        view, n, match = self.view, self.n, _NEXT.match
        pos = 0
        while True:
            m = match(view, pos)
            assert m is not None  # the pattern matches the empty string
            self.budget -= 1
            if self.budget < 0:
                self.truncated = True
                return
            img = m.start(1)
            if img >= 0:
                pos = m.end() if self.img(m, img) else self.start_tag(img)
                continue
            pos = m.end()
            if pos >= n:
                return
            nxt = view[pos + 1 : pos + 2]
            if nxt == b"!":
                pos = self.bang(pos)
            elif nxt == b"?":
                pos = self.bogus(pos)
            elif nxt == b"/":
                pos = self.end_tag(pos)
            else:
                pos = self.start_tag(pos)

    def bogus(self, pos: int) -> int:
        end = self.view.find(b">", pos + 2)
        return self.n if end < 0 else end + 1

    def bang(self, pos: int) -> int:
        view = self.view
        endif = _ENDIF.match(view, pos)
        if endif is not None:
            if self.cond:
                self.cond.pop()
            return endif.end()
        if not view.startswith(b"<!--", pos):
            return self.bogus(pos)  # <!DOCTYPE, <![CDATA[ (HTML content), other bogus comments
        cond = _CONDITIONAL.match(view, pos)
        if cond is not None:
            self.cond.append(" ".join(cond.group(1).decode("latin-1").split()))
            return cond.end()
        if view.startswith(b">", pos + 4) or view.startswith(b"->", pos + 4):
            return pos + 5 + (view[pos + 4] == 0x2D)
        end = _COMMENT_END.search(view, pos + 4)
        return self.n if end is None else end.end()  # unterminated: the rest is a comment

    def end_tag(self, pos: int) -> int:
        m = _TAG_NAME.match(self.view, pos)
        if m is None:
            return pos + 3 if self.view.startswith(b"</>", pos) else self.bogus(pos)
        end = self.attributes(m.end())[1]
        return self.n if end < 0 else end

    def attributes(self, pos: int) -> tuple[dict[bytes, _Attr], int]:
        """Loader-relevant attributes (first occurrence wins) and the tag's end (-1 at EOF)."""
        view, skip, match = self.view, _SKIP_ATTRS.match, _ATTR.match
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
            attrs.setdefault(name.lower(), attr)
            pos = m.end()

    def fast_attributes(self, m: re.Match[bytes]) -> dict[bytes, _Attr]:
        """Attributes from one match of :data:`_FAST_TAG` (its groups keep the first one)."""
        view, regs, attrs = self.view, m.regs, {}
        for key, (start, _), (vs, ve) in [
            (key, regs[2 * i + 1], regs[2 * i + 2]) for i, key in enumerate(_KEYS)
            if regs[2 * i + 1][0] >= 0
        ]:
            while view[start - 1] in b"\t\n\f\r /":
                start -= 1
            quoted = view[vs] in b"\"'"
            attrs[key] = (start, ve, vs + quoted, ve - quoted, quoted)
        return attrs

    def img(self, m: re.Match[bytes], start: int) -> bool:
        """The common ``<img>`` (src, size, alt, style) from one match of :data:`_NEXT`."""
        regs = m.regs
        if regs[4][0] >= 0 or regs[6][0] >= 0 or regs[8][0] >= 0 or regs[18][0] >= 0:
            return False  # srcset, lowsrc, dynsrc or background: the general path
        view = self.view
        tag_span = (start, m.end())
        style = self.quoted(regs[11]) if regs[10][0] >= 0 else None
        box = Box(self.number(regs[13]) if regs[12][0] >= 0 else None,
                  self.number(regs[15]) if regs[14][0] >= 0 else None)
        if style is not None and _BOX_HINT.search(view[style[0] : style[1]].lower()):
            d = declarations(Decoded(view, *style).data)
            box = box._replace(
                css_width=d.get("width"), css_height=d.get("height"),
                css_max_width=d.get("max-width"), css_max_height=d.get("max-height"),
                display=d.get("display"), visibility=d.get("visibility"),
                opacity=d.get("opacity"), mso_hide=d.get("mso-hide"))
        alt_span = self.quoted(regs[17]) if regs[16][0] >= 0 else None
        if regs[2][0] >= 0:
            src = self.attr_at(regs[2][0], regs[3])
            self.attr_ref("img", "img", b"src", src, tag_span, tag_span, box, alt_span)
        if style is not None and _CSS_HINT.search(view, *style):
            self.style_attr("img", self.attr_at(regs[10][0], regs[11]), tag_span)
        return True

    def quoted(self, value: Span) -> Span:
        """A raw attribute value's span without its quotes."""
        vs, ve = value
        quoted = self.view[vs] in b"\"'"
        return vs + quoted, ve - quoted

    def number(self, value: Span) -> str:
        """A width or height attribute's text (fast for plain digits)."""
        text = self.view[slice(*self.quoted(value))]
        if text.isdigit():
            return text.decode("ascii")
        return unescape(decode_text(text, self.charset)).strip()

    def attr_at(self, name_start: int, value: Span) -> _Attr:
        """The attribute whose name starts at ``name_start`` (leading whitespace included)."""
        view, start = self.view, name_start
        while view[start - 1] in b"\t\n\f\r /":
            start -= 1
        vs, ve = self.quoted(value)
        return (start, value[1], vs, ve, vs != value[0])

    def start_tag(self, pos: int) -> int:
        m = _TAG_NAME.match(self.view, pos)
        assert m is not None  # the loop stops here only before "<" + letter
        name = m.group(1).decode("latin-1").lower()
        fast = _FAST_TAG.match(self.view, pos)
        if fast is not None:
            attrs, end = self.fast_attributes(fast), fast.end()
        else:
            attrs, end = self.attributes(m.end())
        if end < 0:
            return self.n
        if attrs:
            self.tag(name, attrs, (pos, end))
        if name in _RAW_TEXT:
            return self.raw_text(name, (pos, end))
        if name == "plaintext":
            return self.n
        if name == "amp-analytics":
            close = _RAW_END[name].search(self.view, end)
            self.analytics_end = self.n if close is None else close.start()
        return end

    def raw_text(self, name: str, tag_span: Span) -> int:
        start = tag_span[1]
        close = _RAW_END[name].search(self.view, start)
        end = self.n if close is None else close.start()
        if name == "style":
            for css in scan_css(self.view, start, end):
                self.css_ref(css, "style", tag_span, None, None, True)
        elif name == "script" and start < self.analytics_end:
            for m in _JSON_URL.finditer(self.view, start, end):
                url = decode_text(m.group(1), self.charset).replace("\\/", "/")
                self.add("amp-analytics", url, "script", tag_span, m.span(1), m.span(1))
        return end

    # -- what a tag loads --------------------------------------------------------------
    def tag(self, name: str, attrs: dict[bytes, _Attr], tag_span: Span) -> None:
        get, box, alt_span = attrs.get, None, None
        if name in _IMAGE_TAGS:
            box = self.box(attrs)
            alt = get(b"alt")
            alt_span = (alt[2], alt[3]) if alt is not None and alt[2] >= 0 else None
        if name == "input" and self.value(get(b"type")).strip().lower() != "image":
            return
        if name == "link" and _LOAD_RELS.isdisjoint(self.value(get(b"rel")).lower().split()):
            return
        for key, element in _TAG_URLS.get(name, ()):
            attr = get(key)
            if attr is not None:
                whole = name == "link" or (key == b"src" and name in _WHOLE_TAG)
                self.attr_ref(element, name, key, attr, tag_span if whole else attr[:2],
                              tag_span, box, alt_span)
        if name[:2] == "v:" and b"src" in attrs:
            attr = attrs[b"src"]
            self.attr_ref("vml", name, b"src", attr, attr[2:4], tag_span, box, alt_span,
                          b"" if attr[4] else b'""')
        elif name[:4] == "amp-":
            for key, element in ((b"src", name), (b"poster", "video-poster")):
                if key in attrs:
                    self.attr_ref(element, name, key, attrs[key], attrs[key][:2], tag_span, box,
                                  alt_span)
        if b"background" in attrs:
            attr = attrs[b"background"]
            self.attr_ref("background", name, b"background", attr, attr[:2], tag_span, box,
                          alt_span)
        attr = get(b"style")
        if attr is not None and _CSS_HINT.search(self.view, attr[2], attr[3]):
            self.style_attr(name, attr, tag_span)
        if name in _SRCSET_TAGS:
            for key in (b"srcset", b"imagesrcset"):
                attr = get(key)
                if attr is not None and attr[2] >= 0:
                    self.srcset(name, key, attr, tag_span, box, alt_span)
        elif name == "iframe" and b"srcdoc" in attrs and attrs[b"srcdoc"][2] >= 0:
            self.srcdoc(attrs[b"srcdoc"], tag_span)
        elif name == "meta" and b"content" in attrs and attrs[b"content"][2] >= 0:
            if self.value(get(b"http-equiv")).strip().lower() == "refresh":
                self.refresh(attrs[b"content"], tag_span)
        elif name == "base" and b"href" in attrs and self.base is None:
            self.base = clean_url(self.value(attrs[b"href"]))

    def value(self, attr: _Attr | None) -> str:
        if attr is None or attr[2] < 0:
            return ""
        return unescape(decode_text(self.view[attr[2] : attr[3]], self.charset))

    def box(self, attrs: dict[bytes, _Attr]) -> Box:
        width, height, style = attrs.get(b"width"), attrs.get(b"height"), attrs.get(b"style")
        d = {}
        if style is not None and _BOX_HINT.search(self.view[style[2] : style[3]].lower()):
            d = declarations(Decoded(self.view, style[2], style[3]).data)
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
        url = clean_url(url)
        if not url:
            return
        self.budget -= 1
        if self.budget < 0:
            self.truncated = True
            return
        cond = self.cond
        self.refs.append(Reference(
            element, url, tag, bool(is_remote(url)), tag_span, url_span, removal, neutral,
            None if attr is None else attr.decode("latin-1"), attr_span, value_span,
            bool(cond), cond[-1] if cond else "", in_block, box, alt_span, rewritable,
        ))

    def attr_ref(self, element: str, tag: str, key: bytes, attr: _Attr, removal: Span,
                 tag_span: Span, box: Box | None, alt_span: Span | None,
                 neutral: bytes = b"") -> None:
        if attr[2] < 0:
            return
        url_span = strip_span(self.view, attr[2], attr[3])
        self.add(element, self.value(attr), tag, tag_span, url_span, removal, neutral, key,
                 attr[:2], attr[2:4], False, box, alt_span)

    def srcset(self, tag: str, key: bytes, attr: _Attr, tag_span: Span, box: Box | None,
               alt_span: Span | None) -> None:
        dec = Decoded(self.view, attr[2], attr[3])
        data = dec.data
        cands = srcset_candidates(data)
        for i, (start, url_end, cand_end) in enumerate(cands):
            if i + 1 < len(cands):
                removal = (start, cands[i + 1][0])  # with its comma and the space after
            elif i > 0:
                removal = (cands[i - 1][2], cand_end)  # the last: with the comma before
            else:
                removal = (start, cand_end)
            url = decode_text(data[start:url_end], self.charset)
            self.add("srcset", url, tag, tag_span, dec.span(start, url_end), dec.span(*removal),
                     b"", key, attr[:2], attr[2:4], False, box, alt_span)

    def refresh(self, attr: _Attr, tag_span: Span) -> None:
        dec = Decoded(self.view, attr[2], attr[3])
        a, b = refresh_url(dec.data)
        self.add("meta-refresh", decode_text(dec.data[a:b], self.charset), "meta",
                 tag_span, dec.span(a, b), tag_span, b"", b"content", attr[:2], attr[2:4])

    def style_attr(self, tag: str, attr: _Attr, tag_span: Span) -> None:
        dec = Decoded(self.view, attr[2], attr[3])
        for css in scan_css(dec.data):
            self.css_ref(css, tag, tag_span, attr, dec)

    def css_ref(self, css: CssRef, tag: str, tag_span: Span, attr: _Attr | None,
                dec: Decoded | None, in_block: bool = False) -> None:
        url_span, removal = css.url_span, css.removal_span
        if dec is not None:
            url_span, removal = dec.span(*url_span), dec.span(*removal)
        self.add(_CSS_ELEMENT[css.kind], css.url, tag, tag_span, url_span, removal, css.neutral,
                 None if attr is None else b"style", None if attr is None else attr[:2],
                 None if attr is None else attr[2:4], in_block)

    def srcdoc(self, attr: _Attr, tag_span: Span) -> None:
        if self.depth >= 2:
            return
        inner = _Scan(Decoded(self.view, attr[2], attr[3]).data, self.charset, self.budget,
                      self.depth + 1)
        inner.run()
        self.budget, self.truncated = inner.budget, self.truncated or inner.truncated
        value, whole = attr[2:4], attr[:2]
        for ref in inner.refs:
            if ref.remote:
                self.add("iframe-srcdoc", ref.url, "iframe", tag_span, value, whole, b"",
                         b"srcdoc", whole, value, False, ref.box, None, False)


def scan_html(view: bytes, *, max_tags: int = DEFAULT_MAX_TAGS,
              max_bytes: int = DEFAULT_MAX_BYTES, charset: str = "utf-8") -> HtmlScan:
    """Find every remote-load construct in ``view`` (see the module docstring).

    ``charset`` only decodes URL strings; spans always index ``view``.  Past
    ``max_bytes`` bytes or ``max_tags`` constructs the scan stops and says so
    (``truncated``).
    """
    truncated = len(view) > max_bytes
    scan = _Scan(view[:max_bytes] if truncated else view, charset, max_tags)
    scan.run()
    refs = scan.refs
    base = scan.base
    if base is not None and is_remote(base):
        refs = [r if is_remote(r.url) is not None else
                r._replace(url=urljoin(base, r.url), remote=True) for r in refs]
    refs.sort(key=lambda r: r.url_span[0])
    return HtmlScan(tuple(refs), base, truncated or scan.truncated)
