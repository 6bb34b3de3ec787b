"""Decide which references are beacons, and say why.

>>> from beacon_proxy.rewrite.html import scan_html
>>> from beacon_proxy.rewrite.rules import load_rules
>>> view = b'<img src="https://x.example/o.gif?id=7" width="1" height="1">'
>>> ref = scan_html(view).references[0]
>>> classify(ref, load_rules(), RecipientIdentity("a@b.example"))
Finding(url='https://x.example/o.gif?id=7', element='img', tracker=True, vendor=None, \
reasons=('tiny',), personalised_visible=False)

A remote reference is a tracker when any of these hold (each adds a reason):

``rule:<vendor>``
    its URL matches a known tracker rule (:mod:`beacon_proxy.rewrite.rules`);
``tiny``
    an image (``img``, ``srcset``, ``input type=image``, SVG ``image``,
    ``amp-img``, ``amp-anim``, VML ``v:image``, a ``video`` and its ``poster``, a
    ``<picture>`` ``<source>``, which takes its ``<img>`` 's box, a media element's
    ``<source>`` and ``<track>``, which take its ``<video>`` 's or ``<audio>`` 's box,
    an ``<audio>`` without ``controls`` being hidden; and an ``<iframe>``,
    ``<object>`` or ``<embed>``, which loads in a 0 x 0 box all the same) whose width or
    height is 0-2 px by attribute (``1``, ``2px``, ``0``, ``0%``) or CSS
    ``width``/``height``/``max-width``/``max-height`` (:func:`~.boxes.css_range`: CSS
    number syntax, absolute units, em/rem at 16 px, viewport units on a 320 x 480
    screen, ``calc()``/``min()``/``max()``/``clamp()`` at their largest, any zero);
``hidden``
    such an image with ``display:none``, ``visibility:hidden|collapse``,
    an ``opacity`` below 0.1, ``max-height:0``/``max-width:0`` or ``mso-hide:all`` (its
    style read as CSS tokenizes it: comments, escapes), or with a
    ``hidden`` attribute, or inside an element that hides its content (a style or a
    ``hidden`` attribute, :mod:`.hiding`);
``pixel-element``
    ``amp-pixel`` and ``amp-analytics``, which exist only to report;
``malformed``
    a URL spelled in an image's attribute *names* (element ``url-in-name``:
    ``<img alt=" src="https://t.example/o/abc">``, a quote too many, see
    :func:`~.htmlrefs.name_url`).  No browser loads it, a lenient client might, and
    the sender meant it to load: a refused copy loses the names (nothing else of the
    tag), and so does a granted one (there is no attribute to point at the open
    endpoint);
``identifies-recipient``
    followed by the form, e.g. ``address-md5`` (:mod:`.identity`).

Layout images: a tiny or hidden image with no rule match, no pixel element
and no form of the recipient's address is *not* a tracker (reason
``tiny-layout``, or ``hidden-layout``) when its URL carries no identifier.
For a single message that means: ``http(s)``, no query string or fragment, no
host label holding an identifier-like run of letters and digits (16 or more
characters, or 8 or more mixing letters and digits, or 7 or more digits; in a
host a run of letters alone is a word, ``fidelityinvestments``), and

* either a well-known spacer file name (``spacer.gif``, ``blank.gif``,
  ``clear.gif``, ``s.gif``, ``transparent.png``, ``pixel-transparent.gif``,
  ``1x1.gif``, ``gmail_fix.gif`` ..., optionally with a size like
  ``spacer_1x1.gif``, the longer names also with a prefix like ``pi_svc_``)
  whose directories hold no identifier-like run other than a *content id*: a
  whole segment of 16 or more hex digits (a content hash or a CDN's library id)
  or a UUID (an asset library's name for an image);
* or a *strut*: one declared dimension 0-2 px and the other larger (Inxmail's
  780 x 1 ``gmail_fix``, a 265 x 1 editor line, LivingSocial's 1 x 23
  ``/imgs/<uuid>``), with no identifier-like run in its path other than content
  ids;
* or a *descriptive name*: an image extension and a stem of two or more words of
  three or more letters (``fedex_collective_logo_mobile.png``, the mobile logo a
  media query reveals), with no identifier-like run in its directories other
  than content ids.

A strut or a descriptive name with a word that names a tracking endpoint in its
host or path (``open``, ``track``, ``pixel``, ``beacon``, ``stats``, ...) stays a
tracker.  A 1 x 1 image with any other name (``track.png``, ``open.gif``, a
single word ``logo.png``, a token ``xyzsdfji``) stays a tracker.
The engine neutralises layout images in refused copies without changing the
layout (action ``inline``: the URL becomes a transparent ``data:`` image, see
:mod:`.inline`) and leaves them as they are in granted copies.  Nothing of
them loads in a refused copy whichever way this test goes; what it decides is
only whether the image counts as a beacon and, in granted copies, whether it
loads from its own host.  Campaign diffing (an identifier is what differs
between recipients' copies) refines it.  A rule or identity match always makes
an image a tracker.  Local references (``cid:``, ``data:``, fragments,
relative URLs without a remote base) are never trackers; a ``data:`` URL that a
browser loads as a document or a style sheet (``iframe``, ``object``, ``embed``,
``link``, ``@import``: :func:`~.htmlrefs.embeds_document`) is noted with the
reason ``embedded-document`` by :func:`classify_entries`, and the engine leaves
its part to the fallback: what it loads in turn was not scanned.

Invisible loads: a ``<link>`` that loads but is no style sheet (element
``link-hint``: a resource hint such as ``preconnect``, ``dns-prefetch``,
``prefetch``, ``preload``, an icon, a manifest) with no rule match and no form of
the recipient's address is *not* a tracker either (reason ``invisible-load``).  It
shows nothing, yet tells its host the mail is open: the engine strips it from
refused copies (action ``strip``) and leaves it in granted ones.

``personalised_visible`` marks an image the recipient sees whose URL
identifies them: the renderer replaces it with its ``alt`` text when beacons
are refused.

``Finding`` is a ``NamedTuple`` for the same reason as ``Reference``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from beacon_proxy.rewrite.boxes import attr_px, css_px, is_hidden, is_tiny
from beacon_proxy.rewrite.html import Box, Entry, PendingImg, Reference
from beacon_proxy.rewrite.htmlrefs import (
    EMBEDDED_DOCUMENT,
    LINK_HINT,
    META_REFRESH,
    URL_IN_NAME,
    embeds_document,
)
from beacon_proxy.rewrite.identity import RecipientIdentity
from beacon_proxy.rewrite.rules import TrackerRules

__all__ = ["INVISIBLE_LOAD", "LAYOUT_REASONS", "Finding", "classify", "classify_all",
           "classify_entries", "classify_entry", "declared_px", "is_descriptive", "is_hidden",
           "is_layout", "is_layout_finding", "is_layout_shaped", "is_neutralised", "is_spacer",
           "is_tiny", "plain_finding"]

_PIXEL_ELEMENTS = frozenset({"amp-pixel", "amp-analytics"})
#: Elements that are trackers whatever their URL and box.
_ALWAYS = _PIXEL_ELEMENTS | {URL_IN_NAME}
#: Elements that load nothing a reader sees (a resource hint, a refresh): stripped from
#: refused copies as ``invisible-load`` when nothing else marks them.
_HINTS = frozenset({LINK_HINT, META_REFRESH})
#: Elements whose finding says something whatever their URL and box.
_NOTED = _ALWAYS | _HINTS
_UNSEEN: str | None = "\x00unseen"  # not in the rules' memo (no vendor name has a NUL)
_SPACER = re.compile(
    # the unmistakable names may carry a prefix ("pi_svc_spacer.gif"), the short ones not
    r"(?:(?:[a-z0-9]+[-_])*(?:spacer|blank|clear|clearpixel|clear[-_]pixel|transparent|"
    r"transparent[-_]pixel|pixel[-_]transparent|pixel[-_]clear|shim|gmail[-_]?fix)"
    r"|trans|spc|space|s|dot|empty|1x1|1px)"
    r"(?:[-_]?[0-9]{1,3}(?:x[0-9]{1,3}|px)?)?\.(?:gif|png)",
    re.IGNORECASE,
)
#: A content id as a whole path segment: a run of hex digits (a content hash, a CDN
#: library id such as Salesforce's ``/lib/fe90157070640d7a7c/``) or a UUID (an asset
#: library's name for an image, LivingSocial's ``/imgs/4922d873-8315-4f8e-...``).
#: Allowed in a layout image's path; the recipient's own address hashed this way is
#: found by :mod:`.identity` first, and a per-recipient UUID by campaign diffing.
_RESOURCE_HASH = re.compile(
    r"[0-9a-f]{16,128}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    re.IGNORECASE)
#: Words that name a tracking endpoint: in the host or path of a strut or of an image
#: with a descriptive name, they keep it a tracker (``/open/8f3a2b1c.gif``, ``pixel.``).
_TRACKING_WORDS = frozenset({
    "open", "opens", "opened", "track", "tracks", "tracking", "tracker", "trk", "trck",
    "pixel", "pixels", "pxl", "beacon", "beacons", "bug", "webbug", "imp", "impression",
    "impressions", "view", "views", "viewed", "read", "stat", "stats", "count", "counter",
    "hit", "hits", "log", "logger", "ping", "analytics", "collect", "event", "events",
    "click", "clicks", "wf", "notify", "receipt",
})
_WORD = re.compile(r"[a-z]+")
#: The stem of a descriptive file name: words of three or more letters, separated by
#: ``-``, ``_`` or ``.``, with short parts such as ``2x`` or ``v2`` between them.
_DESCRIPTIVE_PART = re.compile(r"[a-z]{3,}|[a-z0-9]{1,3}")
_IMAGE_EXTENSIONS = frozenset({"gif", "png", "jpg", "jpeg", "webp", "svg", "bmp"})
LAYOUT_REASONS = ("tiny-layout", "hidden-layout")  # by is_hidden: False, True
_LAYOUT_FIRST = (("tiny-layout",), ("hidden-layout",))
#: The reason of a resource hint, icon or manifest ``<link>`` that is no tracker.
INVISIBLE_LOAD = "invisible-load"
_NEUTRALISED_FIRST = (*_LAYOUT_FIRST, (INVISIBLE_LOAD,))
_URL_PARTS = re.compile(r"https?://([^/?#]*)([^?#]*)(\?[^#]*)?", re.IGNORECASE)
_RUN = re.compile(r"[A-Za-z0-9]+")


_new = tuple.__new__
#: (tiny, hidden) per Box: newsletters repeat a few sizes hundreds of times (and the
#: scanner shares one Box per size: the last one is checked first, by identity).
_VERDICTS: dict[Box, tuple[bool, bool]] = {}
_VERDICTS_SIZE = 4096
_VERDICT_KEY = 1024  # characters: a box with longer values is not kept (memory across messages)
_LAST_VERDICT: tuple[Box | None, tuple[bool, bool]] = (None, (False, False))


class Finding(NamedTuple):
    """What the classifier says about one reference."""

    url: str
    element: str
    tracker: bool
    vendor: str | None
    reasons: tuple[str, ...]
    personalised_visible: bool = False


def _identifier_like(text: str, words: bool = False) -> bool:
    """A run of 16+ letters and digits, 8+ mixing both, or 7+ digits (``words``: a run of
    letters alone is a word, as in host names like ``fidelityinvestments``)."""
    for run in _RUN.findall(text):
        digits = sum(c.isdigit() for c in run)
        if (len(run) >= 16 and not (words and digits == 0)) or (
                len(run) >= 8 and 0 < digits < len(run)) or digits >= 7:
            return True
    return False


def is_spacer(url: str) -> bool:
    """A well-known spacer image whose URL carries no identifier (see the module docstring).

    >>> is_spacer("https://cdn.example.com/img/spacer.gif"), is_spacer("https://t.co/s.gif?u=1")
    (True, False)
    """
    m = _URL_PARTS.match(url)
    if m is None or (m.group(3) or "?") != "?":
        return False
    host, path = m.group(1), m.group(2)
    *dirs, name = path.split("/")
    if _SPACER.fullmatch(name) is None:
        return False
    return not _identifier_like(host) and not any(_identifier_like(d) for d in dirs)


def declared_px(attr: str | None, css: str | None) -> float | None:
    """A dimension as the image is laid out: the CSS length wins over the attribute."""
    px = css_px(css)
    return attr_px(attr) if px is None else px


def _is_strut(box: Box) -> bool:
    """A line of layout: one declared dimension 0-2 px, the other larger (e.g. 780 x 1)."""
    width = declared_px(box.width, box.css_width)
    height = declared_px(box.height, box.css_height)
    if width is None or height is None:
        return False
    return min(width, height) <= 2 < max(width, height)


def _content_ids_only(segments: Iterable[str]) -> bool:
    """No segment holds an identifier-like run, unless it is a content id as a whole."""
    return not any(_identifier_like(s) and not _RESOURCE_HASH.fullmatch(s) for s in segments)


def _tracking_word(host: str, segments: Iterable[str]) -> bool:
    """A word of the host or of a path segment names a tracking endpoint."""
    return any(w in _TRACKING_WORDS for text in (host, *segments)
               for w in _WORD.findall(text.lower()))


def is_descriptive(name: str) -> bool:
    """A file name that describes content: an image extension, and a stem of two or more
    words of three or more letters separated by ``-``, ``_`` or ``.`` (short parts such as
    ``2x`` or ``v2`` between them), none of them a tracking word.  A single word
    (``logo.png``, MailTrackerBlocker's ``xyzsdfji``) may be a token and explains nothing.

    >>> is_descriptive("fedex_collective_logo_mobile.png"), is_descriptive("open_pixel.gif")
    (True, False)
    """
    stem, dot, extension = name.lower().rpartition(".")
    if not dot or extension not in _IMAGE_EXTENSIONS:
        return False
    parts = re.split(r"[-_.]+", stem)
    if not all(_DESCRIPTIVE_PART.fullmatch(part) for part in parts):
        return False
    words = [part for part in parts if len(part) >= 3 and part.isalpha()]
    return len(words) >= 2 and not any(w in _TRACKING_WORDS for w in words)


def is_layout(url: str, box: Box) -> bool:
    """A tiny or hidden image whose URL carries no identifier (see the module docstring).

    Only the URL and the box are looked at: the caller has already ruled out a
    tracker rule, a pixel element and the recipient's address.

    >>> is_layout("https://cdn.example/gmail_fix.gif", Box("780", "1"))
    True
    >>> is_layout("https://t.example/open/8f3a2b1c9d7e.gif", Box("780", "1"))
    False
    >>> is_layout("https://a5.lscdn.net/imgs/4922d873-8315-4f8e-8587-169eebb74dd0", Box("1", "23"))
    True
    """
    m = _URL_PARTS.match(url)
    if m is None or (m.group(3) or "?") != "?" or m.end() != len(url):
        return False  # a query string or a fragment: where per-recipient ids live
    host, path = m.group(1), m.group(2)
    *dirs, name = path.split("/")
    if _identifier_like(host, words=True):
        return False
    if _SPACER.fullmatch(name) is not None:
        return _content_ids_only(dirs)
    stem = name.rpartition(".")[0] if "." in name else name
    if _tracking_word(host, (*dirs, stem)):
        return False
    if _is_strut(box):
        return _content_ids_only((*dirs, stem))
    return is_descriptive(name) and _content_ids_only(dirs)


def is_layout_finding(finding: Finding) -> bool:
    """Whether ``finding`` is a layout image (inlined in refused copies, see above)."""
    return not finding.tracker and finding.reasons[:1] in _LAYOUT_FIRST


def is_neutralised(finding: Finding) -> bool:
    """Whether ``finding`` is no tracker yet loads nothing in a refused copy: a layout
    image (inlined) or an invisible load (stripped)."""
    return not finding.tracker and finding.reasons[:1] in _NEUTRALISED_FIRST


def is_layout_shaped(finding: Finding) -> bool:
    """Whether ``finding`` was first judged a layout image - a tracker now only if
    campaign diffing found it personal - so refused copies keep its size (inline)."""
    return finding.reasons[:1] in _LAYOUT_FIRST


def _verdict(box: Box) -> tuple[bool, bool]:
    """(is_tiny, is_hidden) of a box, memoised."""
    global _LAST_VERDICT
    last = _LAST_VERDICT  # one read: another thread may replace it
    if last[0] is box:
        return last[1]
    verdict = _VERDICTS.get(box)
    if verdict is None:
        verdict = (is_tiny(box), is_hidden(box))
        if sum(len(value) for value in box if value) <= _VERDICT_KEY:
            if len(_VERDICTS) >= _VERDICTS_SIZE:
                _VERDICTS.clear()
            _VERDICTS[box] = verdict
    _LAST_VERDICT = (box, verdict)
    return verdict


def classify(ref: Reference, rules: TrackerRules,
             identity: RecipientIdentity | None = None) -> Finding:
    """The finding for one reference (``identity`` None: no recipient-specific check)."""
    vendor = rules.match(ref.url) if ref.remote else None
    return _classify(ref.url, ref.element, ref.remote, ref.box, vendor, identity)


def classify_entry(entry: Entry, rules: TrackerRules,
                   identity: RecipientIdentity | None = None) -> Finding:
    """:func:`classify` for an entry of :func:`~.html.scan_entries`, without materializing it."""
    vendor = rules.match(entry.url) if entry.remote else None
    if isinstance(entry, PendingImg):
        return _classify(entry.url, "img", entry.remote, entry.box, vendor, identity)
    return _classify(entry.url, entry.element, entry.remote, entry.box, vendor, identity)


def classify_entries(entries: Sequence[Entry], rules: TrackerRules) -> dict[int, Finding]:
    """:func:`classify_entry` for each entry, without a recipient: the findings that say
    something, by index.  The others - no reason at all, not a tracker - are
    :func:`plain_finding` of their entry (most of a newsletter: nothing is built for them).
    """
    match, known = rules.match, rules.matched.get
    out: dict[int, Finding] = {}
    last_box, small, hidden = None, False, False  # most boxes are the previous one
    for index, entry in enumerate(entries):
        if not entry.remote:
            if entry.__class__ is PendingImg:
                continue
            if entry.element == META_REFRESH:  # type: ignore[union-attr]
                out[index] = _classify(entry.url, META_REFRESH, False, None, None, None)
            elif embeds_document(entry.element, entry.url):  # type: ignore[union-attr]
                out[index] = _new(Finding, (entry.url, entry.element, False,  # type: ignore[union-attr]
                                            None, (EMBEDDED_DOCUMENT,), False))
            continue
        url = entry.url
        vendor = known(url, _UNSEEN)  # the memo without a Python call (one lookup: threads)
        if vendor is _UNSEEN:
            vendor = match(url)
        box = entry.box
        if box is not last_box:
            last_box = box
            small, hidden = (False, False) if box is None else _verdict(box)
        pending = entry.__class__ is PendingImg
        if vendor is None and not small and not hidden and (
                pending or entry.element not in _NOTED):  # type: ignore[union-attr]
            continue
        element = "img" if pending else entry.element  # type: ignore[union-attr]
        out[index] = _classify(url, element, True, box, vendor, None)
    return out


def plain_finding(entry: Entry) -> Finding:
    """The finding of an entry that :func:`classify_entries` left out."""
    element = "img" if isinstance(entry, PendingImg) else entry.element
    return _new(Finding, (entry.url, element, False, None, (), False))


def _classify(url: str, element: str, remote: bool, box: Box | None, vendor: str | None,
              identity: RecipientIdentity | None) -> Finding:
    """The finding; ``vendor`` is ``rules.match(url)`` (None for a local reference).
    A refresh is a load whatever its URL looks like here (:data:`~.htmlrefs.META_REFRESH`)."""
    if not remote and element != META_REFRESH:
        return _new(Finding, (url, element, False, None, (), False))
    small, hidden = (False, False) if box is None else _verdict(box)
    forms = identity.find(url) if identity is not None else []
    if vendor is None and not small and not hidden and not forms and element not in _NOTED:
        return _new(Finding, (url, element, False, None, (), False))  # most references
    reasons: list[str] = []
    if vendor is not None:
        reasons.append("rule:" + vendor)
    if element in _PIXEL_ELEMENTS:
        reasons.append("pixel-element")
    elif element == URL_IN_NAME:
        reasons.append("malformed")
    if not reasons and not forms and box is not None and is_layout(url, box):
        # neutralised in refused copies (action "inline"), kept in granted ones
        return Finding(url, element, False, None, (LAYOUT_REASONS[hidden],), False)
    if not reasons and not forms and element in _HINTS:
        # stripped from refused copies, kept in granted ones
        return Finding(url, element, False, None, (INVISIBLE_LOAD,), False)
    reasons += ["tiny"] * small + ["hidden"] * hidden
    if forms:
        reasons.append("identifies-recipient")
        reasons += forms
    visible = box is not None and not small and not hidden
    return Finding(url, element, True, vendor, tuple(reasons), bool(forms) and visible)


def classify_all(refs: Iterable[Reference], rules: TrackerRules,
                 identity: RecipientIdentity | None = None) -> tuple[Finding, ...]:
    """:func:`classify` for each reference, in the same order."""
    return tuple(classify(ref, rules, identity) for ref in refs)
