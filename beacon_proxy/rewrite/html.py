"""Every construct in an HTML part that makes a mail client fetch something.

One bounded, linear pass over *bytes* that keeps offsets:

>>> view = b'<p>Hi</p><img src="https://t.example/o.gif?u=1" width="1" alt="">'
>>> ref = scan_html(view).references[0]
>>> ref.element, ref.url, view[slice(*ref.removal_span)] == view[9:]
('img', 'https://t.example/o.gif?u=1', True)

How the pass works (style guide point 6, "tokenize, then decide"):

* compiled regexes (:mod:`~beacon_proxy.rewrite.htmlpatterns`) consume, in C,
  text and every tag that cannot load anything (its name is not a loader and
  it has neither a ``background`` attribute nor a ``style`` that could hold
  ``url(``), honouring quoted attribute values.  A fast pattern (``SKIP``)
  takes the plain tags that fill real newsletters, the exact one (``BORING``)
  whatever else is boring; both agree on every tag the fast one accepts;
* Python looks only at what they stop on: comments (skipped), Outlook
  conditional comments (their contents are scanned, references inside get
  ``in_conditional``; where a browser ends one inside a construct, the scan
  stops: :meth:`_Scan.bang`), ``<!DOCTYPE``/``<![CDATA[``/``<?`` (bogus comments up
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

How to neutralise or rewrite a reference, and what its spans mean:
:mod:`~beacon_proxy.rewrite.htmlrefs`.

``Reference`` and ``Box`` are ``NamedTuple`` s rather than frozen dataclasses:
a newsletter yields hundreds, and a frozen 17-field dataclass costs five
times as much to build (2.1 µs against 0.4 µs measured); both are immutable.
The scanner builds them with ``tuple.__new__`` (no keyword handling: 0.1 µs),
and leaves a plain ``<img>`` as a :class:`PendingImg` until its reference is
wanted (:func:`scan_entries`; :func:`scan_html` builds them all).

After the pass: a ``<picture>`` ``<source>`` takes the box of the ``<img>`` that
draws it, and images inside an element that hides its content get ``display:
none`` in their box (:mod:`~beacon_proxy.rewrite.hiding`, a pass of its own: the
fast patterns never stop on a plain ``<div>``).

Not modelled: SVG/MathML foreign-content parsing (``<svg><style>`` is read as
CSS), ``data:`` documents in ``iframe`` and
``object``, SVG presentation attributes (``fill="url(...)"``), ``<script
src>`` (mail clients run no script).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Protocol
from urllib.parse import urljoin

from beacon_proxy.rewrite.boxes import is_hidden, is_tiny
from beacon_proxy.rewrite.css import preload_imports, scan_css
from beacon_proxy.rewrite.hiding import (
    ENDLESS,
    HidingLimitError,
    attr_values,
    enclosing_tag,
    hidden_ranges,
)
from beacon_proxy.rewrite.htmlattr import (
    _URL_STRIP,
    Decoded,
    Span,
    clean_url,
    decode_text,
    is_remote,
    unescape,
)
from beacon_proxy.rewrite.htmlpatterns import (
    BORING,
    BORING_TOKEN,
    BOX_HINT,
    COMMENT_END,
    CONDITIONAL_OPEN,
    CSS_HINT,
    ENDIF,
    FAST_TAG,
    IMG_TAG,
    JSON_URL,
    PICTURE_STEP,
    RAW_END,
    RAW_TEXT,
    SKIP,
    TAG_NAME,
    script_end,
)
from beacon_proxy.rewrite.htmlrefs import (
    _HTTP,
    _IMG_GROUPS,
    _IMG_HEIGHT,
    _IMG_MARK,
    _IMG_SRC,
    _IMG_STYLE,
    _IMG_STYLE_NAME,
    _IMG_WIDTH,
    _NO_CSS,
    _PLAIN_HEIGHT,
    _PLAIN_SRC,
    _PLAIN_WIDTH,
    _QUOTES,
    BASE_IN_SRCDOC,
    BASE_UNRESOLVED,
    BASES_DIFFER,
    DUPLICATED,
    LIMIT_REACHED,
    PRELOAD_TAGS,
    READINGS_PART,
    Box,
    Entry,
    PendingImg,
    Reference,
    TagReader,
    _Attr,
    _entry_start,
    _new,
    emptied,
    materialize,
)
from beacon_proxy.rewrite.unmodelled import unmodelled_markup

__all__ = ["BASES_DIFFER", "BASE_IN_SRCDOC", "BASE_UNRESOLVED", "LIMIT_REACHED", "READINGS_PART",
           "Box", "Entry", "HtmlScan", "Learner", "Mark", "PendingImg", "Reference", "Span",
           "finish_scan", "materialize", "scan_entries", "scan_html"]

#: Where a construct starts and the scan's state there: (position, references before it,
#: budget left, (comment/raw-text spans before it, style blocks before it, open
#: conditional comments)).  A scan can resume from any of them (:meth:`_Scan.run`).
Mark = tuple[int, int, int, tuple[int, int, tuple[str, ...]]]

#: Open conditional comments a mark holds at most.  A mark keeps the open ones as a tuple
#: of its own: a sender's thousands of ``<!--[if mso]>`` never closed, before tens of
#: thousands of constructs, cost depth x marks in time and memory (212 KB: 2.3 s and
#: 1.3 GB).  Past this depth a scan records no more marks and leaves no template
#: (:mod:`~beacon_proxy.rewrite.rescan`); real newsletters nest two or three.
MAX_MARKED_DEPTH = 32
_NO_STATE: tuple[int, int, tuple[str, ...]] = (0, 0, ())
DEFAULT_MAX_TAGS = 200_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: Resolving relative URLs against a remote ``<base>`` builds a string as long as the base
#: for each of them: at most this many characters per byte scanned (plus
#: ``_RESOLVE_FREE``), or a 100 KB base and 10 000 relative images would build a
#: gigabyte.  Past it nothing is resolved and the scan counts as truncated.
_RESOLVE_PER_BYTE = 32
_RESOLVE_FREE = 1 << 20
_SPECIAL_SCHEMES = frozenset({"http", "https", "ftp", "ws", "wss"})
_SLASHES = frozenset({"//", "\\\\", "/\\", "\\/"})  # a protocol-relative base


@dataclass(frozen=True, slots=True)
class HtmlScan:
    """What :func:`scan_html` found, in document order."""

    references: tuple[Reference, ...]
    base: str | None = None  # the first <base href>, if any
    # A limit was hit: the rest of the part was not scanned (or, past the resolving budget
    # of a long remote <base>, its relative URLs were left unresolved).
    truncated: bool = False

    @property
    def remote(self) -> tuple[Reference, ...]:
        return tuple(r for r in self.references if r.remote)


class _Scan(TagReader):
    """One pass over a view (and its ``<iframe srcdoc>`` documents, depth 2 at most)."""

    def __init__(self, view: bytes, charset: str, budget: int, depth: int = 0,
                 fast: bool = True, low: bytes | None = None) -> None:
        super().__init__(view, charset, budget, depth, low)
        self.fast = fast
        self.analytics_end = -1
        # For :mod:`~beacon_proxy.rewrite.rescan`: where each construct starts, with the
        # state there (recorded when a list is set), and where to stop (the first
        # construct at or past ``stop``; past the end: never).
        self.marks: list[Mark] | None = None
        self.stop = self.n + 1
        # The hidden elements' spans, once known (finish_scan, or a rescan that could
        # reuse its template's), and where hidden_ranges() notes what it read (if set).
        self.hidden: list[Span] | None = None
        self.hidden_reads: list[Span] | None = None
        self.hidden_declarations: list[int] | None = None
        self.hidden_words: list[bytes] | None = None  # what hiding rules are searched by
        # Marks were being recorded and stopped: too many conditional comments open
        # (MAX_MARKED_DEPTH); such a scan leaves no template.
        self.deep = False
        # Where a browser ends the comment that an Outlook conditional comment (or another
        # construct the scanner reads as markup from "<!--") is to it (-1: none pending):
        # the scanner must be between constructs there too (see bang()).  Each such
        # "<!--" with that end, in order, for the template (rescan.py).
        self.comment_end = -1
        self.comment_spans: list[Span] = []

    # -- the loop: skip in C, look in Python -------------------------------------------
    def run(self, pos: int = 0) -> int:
        """Skip boring markup; hand every other construct to Python, one budget unit each.

        In fast mode ``SKIP`` runs first and reads a following plain ``<img>`` in the same
        call; it stops short of anything it is not sure of, and ``BORING_TOKEN`` then
        takes one token the exact way, or confirms that an interesting construct (or
        the end) is reached.  ``<img`` and ``<!`` are never boring.

        ``pos``: where to start, a construct's start with :attr:`cond` as it was there
        (:mod:`~beacon_proxy.rewrite.rescan`).  Returns where the scan stopped: the end,
        or the first construct at or past :attr:`stop`.
        """
        view, low, n = self.view, self.low, self.n
        fast, marks = self.fast, self.marks
        boring = (BORING_TOKEN if fast else BORING).match
        while True:
            if fast:
                pos = self.images(pos)
                if self.truncated or pos >= self.stop:
                    return pos
            # (fast mode stops only before "<"; exact mode may be anywhere in text here)
            nxt = low[pos + 1 : pos + 2] if low.startswith(b"<", pos) else b""
            at_img = nxt == b"i" and low.startswith(b"<img", pos) and (
                low[pos + 4 : pos + 5] in b"\t\n\f\r />")  # b"" at the end: a loader too
            if not at_img and nxt != b"!":  # neither is ever boring
                token = boring(view, pos)
                if token is not None and token.end() > pos:
                    pos = token.end()
                    continue
            if pos >= self.stop:
                return pos
            if marks is not None and pos < n:
                if len(self.cond) > MAX_MARKED_DEPTH:
                    self.unmarked()
                    marks = None
                else:
                    marks.append((pos, len(self.refs), self.budget,
                                  (len(self.opaque), len(self.styles), tuple(self.cond))))
            self.budget -= 1
            if self.budget < 0:
                self.truncated = True
                return pos
            if pos >= n:
                return pos
            if at_img:  # not read by SKIP: exact mode, or SKIP could not read the tag
                m = IMG_TAG.match(low, pos)
                assert m is not None  # IMG_TAG matches ""
                ok = m.start(_IMG_MARK) == pos and self.img(m, pos)
                pos = m.end() if ok else self.start_tag(pos)
            elif nxt == b"!":
                pos = self.bang(pos)
            elif nxt == b"?":
                pos = self.bogus(pos)
            elif nxt == b"/":
                pos = self.end_tag(pos)
            else:
                pos = self.start_tag(pos)

    def unmarked(self) -> None:
        """Stop recording marks (too many conditional comments open): this scan leaves
        no template."""
        self.marks, self.deep = None, True

    def images(self, pos: int) -> int:
        """Read what SKIP finds: boring markup, then maybe an ``<img>``, again and again.

        Returns where it stopped: an interesting construct (any other ``<img>``: a
        style, srcset, lowsrc, dynsrc, background, unusual quoting) or the end.  The
        newsletter hot loop (one pass per product image), so its state lives in locals:
        a plain ``<img>`` costs one match, one group fetch and a :class:`PendingImg`.
        """
        low = self.low
        m: re.Match[bytes] | None = SKIP.match(low, pos)
        assert m is not None  # SKIP matches ""
        if m.start(_IMG_MARK) < 0:  # no <img>: no need for the loop's locals
            return m.end()
        view, boxes, refs, new = self.view, self.boxes, self.refs, _new
        ascii_ok, number, cond = self.ascii, self.number, self.cond
        condition = cond[-1] if cond else None  # constant here: comments stop SKIP
        budget, last_start = self.budget, self.last_start  # as count() keeps them; stored back
        stop, marks = self.stop, self.marks
        if marks is not None and len(cond) > MAX_MARKED_DEPTH:
            self.unmarked()
            marks = None
        state = _NO_STATE if marks is None else (  # for marks
            len(self.opaque), len(self.styles), tuple(cond))
        # After an <img>, a scanner: it goes on where its last match ended, without new
        # matcher state per call (from one product image to the next, all re needs).
        matches = None
        while True:
            if m is None:
                if matches is None:
                    matches = SKIP.scanner(low, pos)  # type: ignore[attr-defined]  # not in typeshed
                m = matches.match()
            assert m is not None  # SKIP matches ""
            pos = m.end()
            start = m.start(_IMG_MARK)
            if start < 0:
                break
            if start >= stop:  # before this <img>: the caller asked to stop here
                pos = start
                break
            if marks is not None:
                marks.append((start, len(refs), budget, state))
            budget -= 1  # the <img> itself: one construct
            if budget < 0:
                self.truncated = True
                break
            img = m
            m = None
            # The box by the raw '"..."' values (or None); a newsletter has a few sizes.
            # Cached only for plain digits, the same in the view: other values are read
            # from the view (entity names are not lower-case).
            sizes = img.group(_PLAIN_WIDTH, _PLAIN_HEIGHT)
            box = boxes.get(sizes)
            if box is None:
                width, height = sizes
                if (width is None or width[1:-1].isdigit()) and (
                        height is None or height[1:-1].isdigit()):
                    box = boxes[sizes] = new(Box, (number(width), number(height), *_NO_CSS))
                else:
                    (ws, we), (hs, he) = img.span(_PLAIN_WIDTH), img.span(_PLAIN_HEIGHT)
                    box = new(Box, (number(None if ws < 0 else view[ws:we]),
                                    number(None if hs < 0 else view[hs:he]), *_NO_CSS))
            vs, ve = img.span(_PLAIN_SRC)
            if vs < 0:  # rare: a URL may be spelled in its attribute names
                self.budget, self.last_start = budget, last_start
                self.url_in_names("img", (start, pos), box)
                budget, last_start = self.budget, self.last_start
                continue
            raw = view[vs + 1 : ve - 1]  # always quoted: '"..."'
            if ascii_ok and raw.isascii():
                url = raw.decode("ascii")
                if "&" in url:
                    url = unescape(url)
            else:
                url = unescape(decode_text(raw, self.charset))
            if not url:  # only an empty value loads nothing (see add())
                continue
            url = url.strip(_URL_STRIP)  # clean_url(url), inline: one call less per image
            if "\t" in url or "\n" in url or "\r" in url:
                url = url.replace("\t", "").replace("\n", "").replace("\r", "")
            budget -= 1  # the reference: as add() does
            if budget < 0:
                self.truncated = True
                break
            if vs < last_start:
                self.ordered = False
            last_start = vs
            refs.append(new(PendingImg, (low, start, url, url.startswith(_HTTP)
                                         or bool(is_remote(url)), box, condition)))
        self.budget, self.last_start = budget, last_start
        return pos

    def img(self, m: re.Match[bytes], start: int) -> bool:
        """An ``<img>`` matched by :data:`IMG_TAG` that :meth:`images` leaves (a style, or
        exact mode); False when it needs the general path (srcset, lowsrc, dynsrc,
        background), whose result this is for every other ``<img>``.
        """
        srcset, lowsrc, dynsrc, background = m.group(*_IMG_GROUPS)
        if srcset is not None or lowsrc is not None or dynsrc is not None or (
                background is not None):
            return False
        view = self.view
        vs, ve = m.span(_IMG_STYLE)
        style = None if vs < 0 else (vs + 1, ve - 1) if view[vs] in _QUOTES else (vs, ve)
        box = self.img_box(m, style)
        vs, ve = m.span(_IMG_SRC)
        if vs >= 0:
            self.pending(start, vs, ve, box)
        if style is not None and CSS_HINT.search(view, *style):
            attr = self.attr_at(m.start(_IMG_STYLE_NAME) - 5, m.span(_IMG_STYLE))
            self.style_attr("img", attr, (start, m.end()))
        if vs < 0:  # a URL may be spelled in its attribute names
            self.url_in_names("img", (start, m.end()), box)
        return True

    def pending(self, start: int, vs: int, ve: int, box: Box) -> None:
        """The src at ``vs:ve`` (raw, with quotes) of the ``<img>`` at ``start``, as add() would
        add it, waiting as a :class:`PendingImg` (:meth:`images` has this inline)."""
        view = self.view
        raw = view[vs + 1 : ve - 1] if view[vs] in _QUOTES else view[vs:ve]
        value = unescape(raw.decode("ascii") if self.ascii and raw.isascii()
                         else decode_text(raw, self.charset))
        url = clean_url(value)
        if value and self.count(vs):  # only an empty value loads nothing (see add())
            cond = self.cond
            self.refs.append(_new(PendingImg, (self.low, start, url, bool(is_remote(url)), box,
                                               cond[-1] if cond else None)))

    def size(self, m: re.Match[bytes]) -> tuple[bytes | None, bytes | None]:
        """An ``<img>`` 's raw width and height from the view (the match is lower-case)."""
        (ws, we), (hs, he) = m.span(_IMG_WIDTH), m.span(_IMG_HEIGHT)
        view = self.view
        return None if ws < 0 else view[ws:we], None if hs < 0 else view[hs:he]

    def img_box(self, m: re.Match[bytes], style: Span | None) -> Box:
        """The box of an ``<img>`` (``style``: its style value's span, without quotes)."""
        width, height = map(self.number, self.size(m))
        if style is None or not BOX_HINT.search(self.low, *style):
            return _new(Box, (width, height, *_NO_CSS))
        d = self.declarations(*style)
        return Box(width, height, d.get("width"), d.get("height"), d.get("max-width"),
                   d.get("max-height"), d.get("display"), d.get("visibility"),
                   d.get("opacity"), d.get("mso-hide"))

    def bogus(self, pos: int) -> int:
        end = self.view.find(b">", pos + 2)
        end = self.n if end < 0 else end + 1
        self.opaque.append((pos, end))
        return end

    def bang(self, pos: int) -> int:
        """A construct from ``<!``, read as Outlook reads it: a conditional comment is
        transparent, its content markup.

        A browser reads the same ``<!--[if mso]>`` as a comment up to the first ``-->``
        or ``--!>``, and from there as markup.  The two readings agree when the scanner
        is between constructs at that point too (a comment or ``<![endif]-->`` ends
        there, the usual case); when a construct it reads runs across it
        (``<!--[if mso]><b title="--><img src=...>"><![endif]-->``: a browser loads that
        image, the scanner reads a title), the readings part: the scan stops, truncated,
        and refused copies take the fallback, which reads no markup.  Checked at the next
        ``<!`` (or a raw-text element's end, or the scan's end): any other construct that
        ends there counts as crossing it, the safe side.
        """
        end = self._bang(pos)
        pending = self.comment_end
        if pending >= 0:
            if pos == pending or end == pending:
                pending = self.comment_end = -1
            elif end > pending:
                return self.stop_scan(READINGS_PART)
        if pending < 0 and end < self.n and self.view.startswith(b"<!--", pos):
            close = self.comment_close(pos)
            if close > end:
                self.comment_end = close
                self.comment_spans.append((pos, close))
        return end

    def comment_close(self, pos: int) -> int:
        """Where a browser's comment from the ``<!--`` at ``pos`` ends (the text's end when
        it does not).  Asked only with none pending: the searches never overlap."""
        view = self.view
        if view.startswith(b">", pos + 4) or view.startswith(b"->", pos + 4):
            return pos + 5 + (view[pos + 4] == 0x2D)
        found = COMMENT_END.search(view, pos + 4)
        return self.n if found is None else found.end()

    def ended(self) -> None:
        """At the end of a whole scan: a browser's comment end still pending was passed
        inside text or a construct other than ``<!`` (the safe side: counted as parted)."""
        if 0 <= self.comment_end < self.n and not self.truncated:
            self.stop_scan(READINGS_PART)

    def _bang(self, pos: int) -> int:
        view = self.view
        if view.startswith(b"<![", pos) or view.startswith(b"<!--<![", pos):
            endif = ENDIF.match(view, pos)
            if endif is not None:
                if self.cond:
                    self.cond.pop()
                return endif.end()
        if not view.startswith(b"<!--", pos):
            return self.bogus(pos)  # <!DOCTYPE, <![CDATA[ (HTML content), other bogus comments
        cond = CONDITIONAL_OPEN.match(self.low, pos)
        if cond is not None:
            self.cond.append(" ".join(view[cond.start(1) : cond.end(1)].decode("latin-1").split()))
            return cond.end()
        if view.startswith(b">", pos + 4) or view.startswith(b"->", pos + 4):
            return pos + 5 + (view[pos + 4] == 0x2D)  # no tag inside: not opaque
        found = COMMENT_END.search(view, pos + 4)
        end = self.n if found is None else found.end()  # unterminated: the rest is a comment
        self.opaque.append((pos, end))
        return end

    def end_tag(self, pos: int) -> int:
        m = TAG_NAME.match(self.view, pos)
        if m is None:
            return pos + 3 if self.view.startswith(b"</>", pos) else self.bogus(pos)
        end = self.attributes(m.end())[1]
        return self.n if end < 0 else end

    def start_tag(self, pos: int) -> int:
        m = TAG_NAME.match(self.low, pos)
        assert m is not None  # the loop stops here only before "<" + letter
        name = m.group(1).decode("latin-1")
        fast = FAST_TAG.match(self.low, pos)
        if fast is not None:
            attrs, end = self.fast_attributes(fast), fast.end()
        else:
            self.duplicated = False
            attrs, end = self.attributes(m.end())
            if self.duplicated and name in PRELOAD_TAGS:  # FAST_TAG refuses such tags
                return self.stop_scan(DUPLICATED)
        if end < 0:
            return self.n
        if name in _BOXED_AFTER:  # (with attributes or not: a media element's fallback)
            self.sources = True  # boxes decided after the scan (_source_boxes)
        if attrs:
            self.tag(name, attrs, (pos, end))
        if name in RAW_TEXT:
            return self.raw_text(name, (pos, end))
        if name == "plaintext":
            self.opaque.append((end, self.n))
            return self.n
        if name == "amp-analytics" and self.analytics_end < end:
            # Searched again only past the end tag found last: from any tag before it the
            # search finds the same one (or, when there was none, none), and a search per
            # <amp-analytics> to the same far end would be quadratic.
            close = RAW_END[name].search(self.low, end)
            self.analytics_end = self.n if close is None else close.start()
        return end

    def raw_text(self, name: str, tag_span: Span) -> int:
        start = tag_span[1]
        if name == "script":  # its escaped states (script_end)
            end = script_end(self.low, start)
            end = self.n if end < 0 else end
        else:
            close = RAW_END[name].search(self.low, start)
            end = self.n if close is None else close.start()
        self.opaque.append((start, end))
        if end == self.comment_end:  # a browser's comment ends here: at its end tag too
            self.comment_end = -1
        if name == "style":
            self.styles.append((start, end))
            imports = set()
            for css in scan_css(self.view, start, end):
                self.css_ref(css, "style", tag_span, None, None, True)
                if css.kind == "import":
                    imports.add((css.removal_span[0], css.url))
            # what Chromium's CSS preload scanner fetches that CSS does not read
            for css in preload_imports(self.view, start, end, frozenset(imports)):
                self.css_ref(css, "style", tag_span, None, None, True)
        elif name == "script" and start < self.analytics_end:
            for m in JSON_URL.finditer(self.view, start, end):
                if m.start(2) < 0:  # never closed: nothing from here to m.end() is a URL
                    continue
                url = decode_text(m.group(1), self.charset).replace("\\/", "/")
                self.add("amp-analytics", url, "script", tag_span, m.span(1), m.span(1))
        return end

    def srcdoc(self, attr: _Attr, tag_span: Span, box: Box | None) -> None:
        """A tiny or hidden frame shows nothing of its document, which loads all the same:
        its references are hidden (a box-less CSS one gets a hidden box).

        Its relative URLs resolve against this document's ``<base>`` (a ``srcdoc``
        document has this one's base URL), so they are kept for :func:`finish_scan` to
        resolve; a ``<base>`` of its own, documents nested deeper than two, or markup
        this scanner does not model (:func:`~beacon_proxy.rewrite.unmodelled.
        unmodelled_markup`, asked of the part's own text before the scan, and of each
        decoded document here: ``&lt;svg>&lt;style>``) make the scan incomplete.
        """
        if self.depth >= 2:
            self.stop_scan(LIMIT_REACHED)
            return
        unseen = box is not None and (is_tiny(box) or is_hidden(box))
        document = Decoded(self.view, attr[2], attr[3]).data
        if (unmodelled := unmodelled_markup(document.lower())) is not None:
            self.stop_scan(f"{unmodelled} in an iframe srcdoc document")
            return
        inner = _Scan(document, self.charset, self.budget, self.depth + 1, self.fast)
        inner.run()
        inner.ended()
        self.budget = inner.budget
        if inner.truncated or inner.base is not None:
            self.stop_scan(inner.incomplete or (
                BASE_IN_SRCDOC if inner.base is not None else LIMIT_REACHED))
            return
        value, whole, neutral = attr[2:4], attr[:2], emptied(attr, b"")
        for ref in inner.refs:
            if ref.url:
                inner_box = ref.box
                if unseen:
                    inner_box = (inner_box or _UNSEEN_BOX)._replace(display="none")
                # the value emptied: an empty srcdoc still wins over the frame's src
                self.add("iframe-srcdoc", ref.url, "iframe", tag_span, value, value, neutral,
                         b"srcdoc", whole, value, False, inner_box, None, False)


def _resolve(base: str, ref: Reference) -> Reference:
    """A relative reference against a remote ``<base href>``.  In an http(s), ftp or ws(s)
    URL a browser reads ``\\`` as ``/`` (WHATWG URL): so does this, in both.  Raises
    ValueError where ``urljoin`` cannot parse the base ("https://[x/"): a browser may
    still (the scan is then incomplete: :func:`finish_scan`).
    """
    url = ref.url
    special = base.partition(":")[0].lower() in _SPECIAL_SCHEMES or base[:2] in _SLASHES
    if special and ("\\" in base or "\\" in url):
        base, url = base.replace("\\", "/"), url.replace("\\", "/")
    return ref._replace(url=urljoin(base, url), remote=True)


class Learner(Protocol):
    """Keeps full scans for the next copies (:class:`~beacon_proxy.rewrite.rescan.ScanCache`)."""

    def learn(self, scan: _Scan, marks: list[Mark], max_tags: int) -> None:
        """Keep a full scan, run with ``marks`` and ``hidden_reads`` recording and
        finished (:func:`finish_scan`), as a template."""


def scan_entries(view: bytes, *, max_tags: int = DEFAULT_MAX_TAGS,
                 max_bytes: int = DEFAULT_MAX_BYTES, charset: str = "utf-8",
                 fast: bool = True, low: bytes | None = None, learner: Learner | None = None
                 ) -> tuple[tuple[Entry, ...], str | None, str | None]:
    """:func:`scan_html` with plain ``<img>`` s left as :class:`PendingImg` (and the base,
    and why the scan is incomplete, None when it is not: :data:`LIMIT_REACHED`,
    :data:`READINGS_PART`).  ``fast=False`` scans with the exact patterns only.
    ``low``: ``view.lower()``, when the caller already has it.  ``learner``: keeps the scan
    so that the next copies of a campaign are scanned only where they differ
    (:mod:`~beacon_proxy.rewrite.rescan`).
    """
    truncated = len(view) > max_bytes
    if truncated:
        view, low = view[:max_bytes], None
    scan = _Scan(view, charset, max_tags, fast=fast, low=low)
    if learner is None or not fast or truncated:
        scan.run()
        scan.ended()
        return finish_scan(scan, truncated)
    marks: list[Mark] = []
    scan.marks, scan.hidden_reads, scan.hidden_declarations = marks, [], []
    scan.hidden_words = []
    scan.run()
    scan.ended()
    result = finish_scan(scan)
    learner.learn(scan, marks, max_tags)
    return result


def finish_scan(scan: _Scan, truncated: bool = False
                ) -> tuple[tuple[Entry, ...], str | None, str | None]:
    """:func:`scan_entries` 's result from a scan that ran (``truncated``: the view was cut):
    a remote base resolved, document order, ``<picture>`` boxes, hidden ancestors."""
    entries = list(scan.refs)  # the scan's own list stays in the order it found them
    base = scan.base
    if base is not None and is_remote(base):
        refs = list(map(materialize, entries))
        relative = [is_remote(r.url) is None for r in refs]
        cost = sum(len(base) + len(r.url) for r, rel in zip(refs, relative, strict=True) if rel)
        if cost > _RESOLVE_PER_BYTE * scan.n + _RESOLVE_FREE:
            truncated = True
        else:
            try:
                entries = [_resolve(base, r) if rel else r
                           for r, rel in zip(refs, relative, strict=True)]
            except ValueError:
                return tuple(entries), base, BASE_UNRESOLVED
    if not scan.ordered:
        entries.sort(key=_entry_start)
    hidden: list[Span] = []
    if not scan.truncated:
        found = scan.hidden
        if found is None:
            try:
                found = hidden_ranges(scan.low, scan.opaque, scan.styles, scan.hidden_reads,
                                      scan.hidden_declarations, scan.hidden_words)
            except HidingLimitError:  # (scan.hidden stays None: no template is kept)
                return tuple(entries), base, LIMIT_REACHED
            scan.hidden = found
        hidden = found
        if hidden:
            entries = _hide(entries, hidden)
    if scan.sources:  # after the hiding: a source takes its <img>'s box as hidden
        entries = _source_boxes(entries, scan, hidden)
    if scan.truncated or truncated:
        return tuple(entries), base, scan.incomplete or LIMIT_REACHED
    return tuple(entries), base, None


def _source_boxes(entries: list[Entry], scan: _Scan, hidden: list[Span]) -> list[Entry]:
    """``<source>``, ``<track>`` and ``<audio>`` references with the box that shows them:
    a picture's source the box of its ``<img>`` (:func:`_picture_boxes`), a media
    element's source or track the box of its ``<video>`` or ``<audio>``, an ``<audio>``
    without ``controls`` none at all (``display: none``: it shows nothing, yet loads
    when the mail is opened), and whatever else loads inside a media element (its
    fallback content, another media element) none either.  A hidden or tiny media
    element's loads are then found as a hidden or tiny image's are.  ``hidden``: the
    hidden elements (:func:`_hide` ran with them): a box found here is hidden inside
    one, as the ``<img>`` 's or the source's."""
    inside = partial(_inside, [start for start, _ in hidden], hidden)
    entries = _picture_boxes(entries, scan, inside)
    return _media_boxes(entries, scan, inside)


def _inside(starts: list[int], hidden: list[Span], at: int) -> bool:
    """Whether ``at`` is inside one of the sorted, disjoint ``hidden`` spans."""
    i = bisect_right(starts, at) - 1
    return i >= 0 and at < hidden[i][1]


_MEDIA_CHILDREN = frozenset({"source", "track"})
_UNSEEN_BOX = Box(None, None, display="none")  # what a hidden frame's document shows
#: Tags whose loads take their box after the scan (:func:`_source_boxes`).
_BOXED_AFTER = frozenset({"source", "track", "video", "audio"})
#: A ``<video>`` or ``<audio>`` start or end tag, on the lower-cased view.
_MEDIA_TAG = re.compile(rb"<(/?)(video|audio)(?=[\t\n\f\r />])")


def _no_note(_: Span) -> None:
    """Where :func:`~.hiding.enclosing_tag` notes what it read: nowhere (media boxes are
    found after every scan, a further copy's too)."""


def _tag_box(scan: _Scan, start: int, name: bytes) -> Box | None:
    """The box of the ``<video>``, ``<audio>`` or ``<img>`` whose start tag is at
    ``start`` (None: a tag that never ends)."""
    budget = scan.budget  # the scan is over: reading a tag again spends nothing
    attrs, end = scan.attributes(start + 1 + len(name))
    scan.budget = budget
    if end < 0:
        return None
    box = scan.box(attrs)
    if name == b"audio" and b"controls" not in attr_values(scan.low, start, end,
                                                           (b"controls",)):
        box = box._replace(display="none")  # no controls: an audio element shows nothing
    return box


def _media_tag(low: bytes, tag: re.Match[bytes], floor: int, opaque_starts: list[int],
               opaque: Sequence[Span]) -> int:
    """-1 when the media tag matched at ``tag`` is one; else where what holds it ends (a
    comment, raw text or the tag in whose value it stands: ``title="</video>"`` closes
    nothing, nor do the media tags after it up to there).  ``floor``: where the last
    media tag starts (a tag around this one starts no earlier).  An end tag is not one
    when that cannot be told, a start tag is (its sources take its box: the safe side).
    """
    pos = tag.start()
    i = bisect_right(opaque_starts, pos) - 1
    if i >= 0 and opaque[i][1] > pos:
        return opaque[i][1]
    try:
        around = enclosing_tag(low, pos + 1, True, floor, _no_note, opaque_starts, opaque,
                               strict=True)
    except HidingLimitError:
        return pos + 1 if tag.group(1) else -1
    if around is None:
        return pos + 1
    if around is ENDLESS:
        return len(low)
    return -1 if around.start() == pos else around.end()


def _media_boxes(entries: list[Entry], scan: _Scan, inside: Callable[[int], bool]
                 ) -> list[Entry]:
    """``entries`` with the boxes media elements give (see :func:`_source_boxes`).

    One pass over the entries and the media tags, with a stack of the open media
    elements: an end tag closes the innermost of its name and what opened inside it, a
    start tag never closes one (a media element left open runs to the end: what follows
    is inside it, the safe side).  Linear: each tag is pushed and popped once, and each
    is told from a tag in a value by looking back no further than the last one."""
    low, opaque = scan.low, scan.opaque
    tags = _MEDIA_TAG.finditer(low)
    pending = next(tags, None)
    if pending is None:
        return entries
    opaque_starts = [a for a, _ in opaque]
    boxes: dict[int, Box | None] = {}
    stack: list[tuple[bytes, int]] = []
    open_ = {b"video": 0, b"audio": 0}  # how many of each the stack holds
    floor = skip = 0  # the last media tag's start; the end of what holds the last fake one
    for index, entry in enumerate(entries):
        at = entry.start if entry.__class__ is PendingImg else entry.tag_span[0]  # type: ignore[union-attr]
        while pending is not None and pending.start() < at:
            held = skip if pending.start() < skip else _media_tag(
                low, pending, floor, opaque_starts, opaque)
            if held >= 0:  # in a comment, raw text or a value: opens and closes nothing
                skip = held
            else:
                floor = pending.start()
                name = pending.group(2)
                if not pending.group(1):
                    stack.append((name, pending.start()))
                    open_[name] += 1
                elif open_[name]:  # (else a stray end tag: no walk down the stack)
                    k = len(stack) - 1
                    while stack[k][0] != name:
                        k -= 1
                    for closed, _ in stack[k:]:
                        open_[closed] -= 1
                    del stack[k:]
            pending = next(tags, None)
        tag = "img" if entry.__class__ is PendingImg else entry.tag  # type: ignore[union-attr]
        box = entry.box
        if tag in _MEDIA_CHILDREN and stack and box is None:
            start = stack[-1][1]
            if start not in boxes:
                boxes[start] = _tag_box(scan, start, b"audio" if low.startswith(
                    b"<audio", start) else b"video")
            box = boxes[start]
            if box is not None and (len(stack) > 1 or inside(at)):
                box = box._replace(display="none")  # inside another media element, hidden
        elif tag == "audio" and box is None:
            if at not in boxes:
                boxes[at] = _tag_box(scan, at, b"audio")
            box = boxes[at]
            if box is not None and (stack or inside(at)):
                box = box._replace(display="none")
        elif stack and box is not None and box.display != "none":
            box = box._replace(display="none")  # fallback content: never shown, it loads
        else:
            continue
        if box is not None:
            entries[index] = entry._replace(box=box)
    return entries


def _picture_boxes(entries: list[Entry], scan: _Scan, inside: Callable[[int], bool]
                   ) -> list[Entry]:
    """``<picture>`` sources with the box of the ``<img>`` that shows them.

    A browser draws the chosen source in the picture's ``<img>`` box, so a source
    followed (past other sources and whitespace) by a 1 x 1 ``<img>`` is a 1 x 1 image,
    and one followed by a hidden ``<img>`` (``<img hidden>``, in a hidden element) a
    hidden one.  An ``<img>`` that is no reference (no ``src``) is read for its box.
    """
    low = scan.low
    boxes: dict[int, Box | None] = {
        entry.start if isinstance(entry, PendingImg) else entry.tag_span[0]: entry.box
        for entry in entries if isinstance(entry, PendingImg) or entry.tag == "img"}
    imgs: dict[int, int] = {}  # a source tag's end -> where its picture's <img starts (-1)
    out: list[Entry] = []
    for entry in entries:
        if not isinstance(entry, PendingImg) and entry.tag == "source" and entry.box is None:
            at = _picture_img(low, entry.tag_span[1], imgs)
            if at >= 0 and at not in boxes:
                box = _tag_box(scan, at, b"img")
                boxes[at] = box if box is None or not inside(at) else box._replace(
                    display="none")
            box = boxes.get(at)
            if box is not None:
                if box.display != "none" and inside(entry.tag_span[0]):
                    box = box._replace(display="none")  # the source itself is hidden
                entry = entry._replace(box=box)
        out.append(entry)
    return out


def _picture_img(low: bytes, pos: int, imgs: dict[int, int]) -> int:
    """Where the ``<img`` that follows the source tag ending at ``pos`` starts, past more
    sources and whitespace (-1: none).  ``imgs`` remembers it for every source tag end on
    the way: a run of n sources costs n steps in all, not n x n (20 000 sources in a
    row, 0.9 MB, took 13 s when each source read the rest of the run)."""
    way: list[int] = []
    found = -1
    while True:
        known = imgs.get(pos)
        if known is not None:
            found = known
            break
        way.append(pos)
        m = PICTURE_STEP.match(low, pos)
        if m is None:
            break
        if m.start(1) < 0:
            found = m.end() - 4
            break
        pos = m.end()
    for at in way:
        imgs[at] = found
    return found


def _hide(entries: list[Entry], hidden: list[Span]) -> list[Entry]:
    """The entries, those with a box inside a hidden element marked ``display: none``.

    Entries are in document order: past the last hidden element the rest is kept
    as it is, without a look (a preheader near the top costs a few entries).
    """
    starts = [start for start, _ in hidden]
    last = hidden[-1][1]
    for index, entry in enumerate(entries):
        at = entry.start if entry.__class__ is PendingImg else entry.tag_span[0]  # type: ignore[union-attr]
        if at >= last:
            break
        box = entry.box
        if box is not None and box.display != "none":
            i = bisect_right(starts, at) - 1
            if i >= 0 and at < hidden[i][1]:
                entries[index] = entry._replace(box=box._replace(display="none"))
    return entries


def scan_html(view: bytes, *, max_tags: int = DEFAULT_MAX_TAGS,
              max_bytes: int = DEFAULT_MAX_BYTES, charset: str = "utf-8") -> HtmlScan:
    """Find every remote-load construct in ``view`` (see the module docstring).

    ``charset`` only decodes URL strings; spans always index ``view``.  Past
    ``max_bytes`` bytes or ``max_tags`` constructs the scan stops and says so
    (``truncated``).
    """
    entries, base, incomplete = scan_entries(view, max_tags=max_tags, max_bytes=max_bytes,
                                             charset=charset)
    return HtmlScan(tuple(map(materialize, entries)), base, incomplete is not None)

