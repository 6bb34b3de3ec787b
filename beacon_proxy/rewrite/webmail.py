"""What webmail's HTML washer makes of a part before a browser renders it.

Roundcube does not hand a message's HTML to the browser as it is.  Before its washer
(``rcube_washtml``) parses and filters the text, it rewrites it with patterns, and
several of those turn markup a browser finds inert into live markup:

* ``rcmail_action_mail_index::wash_html`` deletes every ``<meta ... charset=...>`` up to
  its first ``>`` and writes ``<meta charset="UTF-8" />`` after the first ``>`` of
  every ``<head`` (``<header`` too), so a quote inside those tags moves;
* ``cleanup`` deletes ``<title ...>...</title>`` up to the first ``</title>`` on the
  line and ``<!doctype ...>`` with the text after it, cuts ``<html ...>`` to ``<html>``,
  deletes ``<?xml ...>``, straightens curly quotes, rewrites every tag name (from a
  ``:`` on, and every character but ``[a-z0-9_[]!?-]``, go: ``<i"mg`` is ``<img``),
  deletes an end tag's attributes up to the first ``>``, deletes ``<!--x>``, moves
  a nested list that follows an item (in a comment or an attribute too) into that item,
  and, when a ``<base ... href=http...`` is on one line anywhere, rewrites every
  ``src=``, ``background=``, ``href=`` and ``url(`` in the text (a ``>`` after an
  unquoted value is eaten);
* its older parser (libxml2's HTML 4) reads the content of ``<xmp>``, ``<noembed>``,
  ``<noframes>``, ``<iframe>``, ``<plaintext>``, a ``<title>``, ``<![CDATA[`` and
  ``<!x ...>`` as markup;
* a ``style`` value is decoded again (entities twice, CSS escapes, comments and tags
  dropped: ``ur/**/l(`` is ``url(``); invalid UTF-8 is deleted (``s\\xffrc`` is ``src``).

:func:`washed` is this project's model of Roundcube's own rewrites, written from its
source (none of its code is used), each one linear: a pattern that could rescan the rest
of the text from every start is run as a search for its first anchor per ``>``-bounded
segment or per line.  :func:`readings` adds, as further documents, what its parsers and
filters may make of that text (never in place: a construct read in the wrong context
can add loads but not hide one), and :func:`loads_more` says whether they load
something remote that the text as written does not: such a part is not read precisely
(the fallback neutralises it, and holds it when even the neutralised text loads once
washed: :func:`loads`).

>>> washed(b'<p>x<i"mg src="https://t/x"></p>')
b'<html><head><meta charset="UTF-8" /></head><p>x<img src="https://t/x"></p>'
>>> loads_more(b'<p style="background:ur/**/l(https://t/x)">x</p>', "utf-8")
True
>>> loads_more(b'<html lang="en"><head><title>Hi</title></head><img src=a.png>', "utf-8")
False
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from typing import Final

from beacon_proxy.rewrite.charsets import UNKNOWN_CHARSET, decode_text
from beacon_proxy.rewrite.html import DEFAULT_MAX_TAGS, finish_scan, scan_entries
from beacon_proxy.rewrite.htmlrefs import Entry, PendingImg
from beacon_proxy.rewrite.rescan import ScanCache

__all__ = ["loaded", "loads", "loads_more", "washed"]

_META: Final = b'<meta charset="UTF-8" />'
_TRIM: Final = b" \t\n\r\x00\x0b"  # PHP's trim()

#: Replacements ``(start, end, new)`` in a text, in order and apart.
_Edits = list[tuple[int, int, bytes]]
#: A step of the washer: its replacements in ``(text, lower-cased text)``, or a new text.
_Step = Callable[[bytes, bytes], "_Edits | bytes"]


def washed(data: bytes) -> bytes | None:
    """``data`` (an HTML part as UTF-8) as Roundcube rewrites it before parsing; None
    where that is not modelled (lists nested past what linear work repairs)."""
    low = data.lower()
    try:
        for step in _STEPS:
            result = step(data, low)
            if isinstance(result, list):
                if result:  # (the lower-cased text edited alike: one lower() in all)
                    data = _splice(data, result)
                    low = _splice(low, [(start, end, new.lower()) for start, end, new in result])
            elif result is not data:
                data, low = result, result.lower()
    except _TooNested:
        return None
    return data


def readings(data: bytes) -> list[bytes] | None:
    """What may load once ``data`` is washed, as documents to scan: the washed text;
    when it holds what libxml2's HTML 4 parser reads as markup (a browser does not), that
    text with it made markup; when it holds a ``style`` value, a ``<style>`` element or a
    ``<body background>`` that the washer's filters decode, a document of those as they
    decode them.  None where the washer's reading is not modelled.

    Only the rewrites Roundcube itself makes change the washed text; what this model
    reads more widely than Roundcube (every ``style=``, every ``<style``, libxml2's
    readings of either parser) is added as a further document, never in place, so
    that a construct read in the wrong context can add loads but never hide one."""
    text = washed(data)
    if text is None:
        return None
    low = text.lower()
    out = [text]
    markup = _as_libxml_reads(text, low)
    if markup is not text:
        out.append(markup)
    decoded = _decoded_styles(text, low)
    if decoded:
        out.append(decoded)
    return out


# -- rcmail_action_mail_index::wash_html ---------------------------------------------

_META_CHARSET: Final = re.compile(rb'charset=[a-z0-9_"-]')


def _meta_charsets(data: bytes, low: bytes) -> _Edits:
    """``<meta[^>]+charset=[a-z0-9_"-]+[^>]*>`` deleted."""
    return _each_tag(data, low, b"<meta", lambda s, e: (
        b"" if _META_CHARSET.search(low, s + 6, e) is not None else None))


def _meta_in_head(data: bytes, low: bytes) -> _Edits:
    """``<meta charset>`` written after every ``(<head[^>]*>)``; without one, in a
    ``<head>`` of its own."""
    edits = [(end, end, _META) for _, end, _ in _each_tag(  # (end: after the ">")
        data, low, b"<head", lambda s, e: b"")]
    if edits:
        return edits
    at = low.find(b"<html")
    if at < 0:
        return [(0, 0, b"<html><head>" + _META + b"</head>")]
    at = low.find(b">", at) + 1  # (PHP: false + 1 is 1)
    return [(at, at, b"<head>" + _META + b"</head>")]


def _each_tag(data: bytes, low: bytes, opener: bytes | re.Pattern[bytes],
              replace: Callable[[int, int], bytes | None]) -> _Edits:
    """Each ``opener ... >`` (from ``opener`` to the first ``>`` after it) that
    ``replace(start, end)`` (``end``: the ``>``) gives new bytes for, replaced by them, as
    a PHP ``preg_replace`` of ``opener[^>]*...>`` does (``opener``: bytes, or a pattern
    for ``low``, the lower-cased text).

    The patterns read ``[^>]`` after the opener, so a later opener before the same
    ``>`` can match only where the first one does (it is inside the first one's
    match): one look per ``>``-bounded segment, however many openers it holds."""
    edits = []
    pos = 0
    pattern = re.compile(re.escape(opener)) if isinstance(opener, bytes) else opener
    while (found := pattern.search(low, pos)) is not None:
        start = found.start()
        end = low.find(b">", start + 5)
        if end < 0:
            break
        new = replace(start, end)
        if new is not None:
            edits.append((start, end + 1, new))
        pos = end + 1
    return edits


# -- rcube_washtml::cleanup ------------------------------------------------------------

_NOBR: Final = re.compile(rb"</nobr>([ \t\n\x0b\x0c\r]+)<nobr>")  # in lower-cased text
_HTML_BLANK: Final = re.compile(rb"<html[ \t\n\x0b\x0c\r]")  # "<html\s[^>]+>"
_BOM: Final = re.compile(rb"\A(?:\x00\x00\xfe\xff|\xff\xfe\x00\x00|\xfe\xff|\xff\xfe|\xef\xbb\xbf)")
_WORD_CHARS: Final = {b"\xe2\x80\x98": b"'", b"\xe2\x80\x99": b"'", b"\xe2\x80\x9c": b'"',
                      b"\xe2\x80\x9d": b'"', b"\xe2\x80\x94": b"&mdash;", b"\xe2\x80\xa6": b"..."}
_WORD_CHAR: Final = re.compile(rb"\xe2\x80[\x98\x99\x9c\x9d\x94\xa6]")
#: A tag as the washer finds one: "<" (not "<!"), slashes, a name up to a blank or ">",
#: the rest up to ">" (linear: each match ends at the next ">", the next starts after).
_TAG: Final = re.compile(rb"(<(?!!)/*)([^\s>]+)([^>]*)")
#: A "<" where that pattern, matching there, changes the tag (in lower-cased text): an
#: end tag with more than its name, or only slashes for a name, or a name with a
#: character the washer drops (":" included).  Whether it matches there is checked.
_CHANGING: Final = re.compile(  # (a "<" in a name is a change: no run crosses one)
    rb"<(?:/(?:/*+(?:[\s>]|\Z)|[^/\s><][^\s><]*+\s)"
    rb"|(?!!)/*+[a-z0-9_\[\]!?-]*+[^a-z0-9_\[\]!?\-\s>])")
#: A "<" where that pattern matches (the first such after a ">" starts a match).
_STARTS_TAG: Final = re.compile(rb"<[^!\s>]")
_NOT_NAME: Final = re.compile(rb"[^a-z0-9_\[\]!?-]", re.IGNORECASE)
_ALNUM_COMMENT: Final = re.compile(rb"<!--[a-zA-Z0-9]+>")


def _trim(data: bytes, low: bytes) -> _Edits:
    head = len(data) - len(data.lstrip(_TRIM))
    tail = len(data) - len(data.rstrip(_TRIM))
    if head == len(data):
        return [(0, head, b"")]
    return [(start, end, b"") for start, end in ((0, head), (len(data) - tail, len(data)))
            if end > start]


def _nobr(data: bytes, low: bytes) -> _Edits:
    return [(m.start(1), m.end(1), b" &nbsp; ") for m in _NOBR.finditer(low)]


def _bom(data: bytes, low: bytes) -> _Edits:
    bom = _BOM.match(data)
    return [] if bom is None else [(0, bom.end(), b"")]


def _html_attributes(data: bytes, low: bytes) -> _Edits:
    """``<html\\s[^>]+>`` cut to ``<html>``."""
    return _each_tag(data, low, _HTML_BLANK, lambda s, e: b"<html>" if e > s + 6 else None)


def _xml_declarations(data: bytes, low: bytes) -> _Edits:
    return _each_tag(data, low, b"<?xml", lambda s, e: b"")


def _word_chars(data: bytes, low: bytes) -> _Edits:
    """Curly quotes straightened, dashes and ellipses spelled out."""
    return [(m.start(), m.end(), _WORD_CHARS[m[0]]) for m in _WORD_CHAR.finditer(data)]


def _alnum_comments(data: bytes, low: bytes) -> _Edits:
    """``<!--[a-zA-Z0-9]+>`` deleted (``<!-->`` kept)."""
    return [(m.start(), m.end(), b"") for m in _ALNUM_COMMENT.finditer(data)]


def _titles(data: bytes, low: bytes) -> _Edits:
    """``<title[^>]*>.*</title>`` (ungreedy, ``.`` not a line feed) deleted: from each
    ``<title`` to the first ``</title>`` on the line of its first ``>``.  A search
    that found no end up to a line feed is not made again before it."""
    edits: _Edits = []
    pos = 0
    failed_before = -1  # no "</title>" between a ">" before here and the next "\n"
    while (start := low.find(b"<title", pos)) >= 0:
        gt = low.find(b">", start + 6)
        if gt < 0:
            break
        pos = gt + 1  # (every "<title" before this ">" ends its tag here)
        if gt < failed_before:
            continue
        line_end = low.find(b"\n", gt)
        line_end = len(low) if line_end < 0 else line_end
        end = low.find(b"</title>", gt + 1, line_end)
        if end < 0:
            failed_before = line_end
            continue
        edits.append((start, end + 8, b""))
        pos = end + 8
    return edits


def _doctypes(data: bytes, low: bytes) -> _Edits:
    """``<!doctype[^>]+>[^<]*`` deleted."""
    edits: _Edits = []
    pos = 0
    while (start := low.find(b"<!doctype", pos)) >= 0:
        gt = low.find(b">", start + 9)
        if gt < 0:
            break
        if gt == start + 9:  # "[^>]+": not empty
            pos = gt + 1
            continue
        end = low.find(b"<", gt)
        end = len(low) if end < 0 else end
        edits.append((start, end, b""))
        pos = end
    return edits


def _tags(data: bytes, low: bytes) -> _Edits:
    """``data`` with the washer's tag callback run over every tag (only the tags it
    changes are looked at)."""
    edits = []
    last, first = 0, -1  # the last "<" looked at; the first match in its ">"-segment
    for found in _CHANGING.finditer(low):
        at = found.start()
        gt = low.rfind(b">", last, at)
        if gt >= 0 or first < 0:  # a segment not seen yet: where its match starts
            start = _STARTS_TAG.search(low, gt + 1 if gt >= 0 else last)
            first = -1 if start is None else start.start()
        last = at
        if at == first:
            tag = _TAG.match(data, at)
            assert tag is not None
            edits.append((tag.start(), tag.end(), _tag(tag)))
    return edits


def _splice(data: bytes, edits: Iterable[tuple[int, int, bytes]]) -> bytes:
    """``data`` with each ``(start, end, new)`` of ``edits`` (in order, apart) made."""
    out: list[bytes] = []
    done = 0
    for start, end, new in edits:
        out += (data[done:start], new)
        done = end
    return b"".join(out) + data[done:] if out else data


def _tag(match: re.Match[bytes]) -> bytes:
    opener, name, rest = match.groups()
    if rest.endswith(b"--"):  # maybe the end of a comment: left alone
        return match[0]
    colon = name.find(b":")
    name = _NOT_NAME.sub(b"", name if colon < 0 else name[:colon])
    return opener + name + (b"" if opener == b"</" else rest)


#: How many "<" the list repair may visit per "<" of the text (Roundcube's own loop
#: revisits a nested list's content once per level): past it the washer's reading is
#: not modelled and the part counts as one that loads more.
_LIST_VISITS_PER_TAG: Final = 8


class _TooNested(Exception):
    """The list repair would take more than linear work."""


def _broken_lists(data: bytes, low: bytes) -> bytes:
    """``rcube_washtml::fix_broken_lists``: for each ``<ol`` and then each ``<ul``, a
    list of that kind met after an item's end and outside an item, up to the ``>``
    after its own end tag, is moved to just before that ``</li``."""
    if b"<ol" not in low and b"<ul" not in low:
        return data
    visits = _LIST_VISITS_PER_TAG * (data.count(b"<") + 16)
    for tag in (b"ol", b"ul"):
        data, visits = _fix_lists(data, tag, visits)
    return data


def _fix_lists(data: bytes, tag: bytes, visits: int) -> tuple[bytes, int]:
    lowered = data.lower()
    if b"<" + tag not in lowered:
        return data, visits
    html_ = bytearray(data)
    low = bytearray(lowered)
    opener, closer = b"<" + tag, b"</" + tag
    # The last opener and end tag of each kind: a search that would find none is not made
    # (each would run to the end of the text, once per list).
    last = {name: (low.rfind(b"<" + name), low.rfind(b"</" + name)) for name in (b"ol", b"ul")}
    pos = 0
    while (pos := low.find(opener, pos)) >= 0:
        pos += 1
        if bytes(low[pos + 2 : pos + 3]) not in (b" ", b">"):
            continue
        p, in_li, li_pos = pos, False, 0
        while (p := low.find(b"<", p)) >= 0:
            visits -= 1
            if visits < 0:
                raise _TooNested
            tt = bytes(low[p : p + 4])
            after = bytes(low[p + 4 : p + 5])
            if tt in (b"<li>", b"<li "):
                in_li, p = True, p + 4
            elif tt == b"</li" and after in (b" ", b">"):
                li_pos, in_li, p = p, False, p + 4
            elif tt == closer and after in (b" ", b">"):
                break
            elif not in_li and li_pos and tt in (b"<ol>", b"<ol ", b"<ul>", b"<ul "):
                element = tt[1:3]
                last_open, last_close = last[element]
                tpos = cpos = p
                while True:
                    if cpos + 1 > last_close:
                        cpos = -1
                        break
                    tpos = low.find(b"<" + element, cpos + 1) if cpos < last_open else -1
                    start, cpos = cpos, low.find(b"</" + element, cpos + 1)
                    visits -= 1 + (cpos - start) // 32  # (what the searches read)
                    if visits < 0:
                        raise _TooNested
                    if not (tpos >= 0 and cpos > tpos):
                        break
                if cpos < 0:
                    break
                end = low.find(b">", cpos)
                if end < 0:  # (PHP then restarts its scan at 0: not modelled)
                    raise _TooNested
                moved, moved_low = html_[p : end + 1], low[p : end + 1]
                del html_[p : end + 1], low[p : end + 1]
                html_[li_pos:li_pos] = moved
                low[li_pos:li_pos] = moved_low
                visits -= len(html_) // 128  # the move itself copies the text
                last = {name: (low.rfind(b"<" + name), low.rfind(b"</" + name))
                        for name in (b"ol", b"ul")}
                p = end
            else:
                p += 1
    return (data if html_ == data else bytes(html_)), visits


_BASE: Final = re.compile(rb"<base")
_BASE_HREF: Final = re.compile(rb"""href=["']?([hftps]{3,5}://[a-z0-9/.%-]+)""")
#: What rcube_base_replacer rewrites, one pattern after the other (an unquoted value's
#: end matches the empty group first: only a quote, or a blank in a quoted value, goes).
_BASE_REFS: Final = (
    re.compile(rb"""(src|background|href)=(["']?)([^"'\s>]+)(\2|\s|>)""", re.IGNORECASE),
    re.compile(rb"""(url\s*\()(["']?)([^"')\s]+)(\2)\)""", re.IGNORECASE))


def _resolve_base(data: bytes, low: bytes) -> bytes:
    """``rcube_washtml::resolve_base``: the last ``href=http...`` on the line of the
    first ``<base`` that has one makes every ``src=``, ``background=``, ``href=`` and
    ``url(`` absolute (``rcube_base_replacer``, which drops what ends the value)."""
    pos, base = 0, None
    while base is None and (start := low.find(b"<base", pos)) >= 0:
        line_end = low.find(b"\n", start)
        line_end = len(low) if line_end < 0 else line_end
        for found in _BASE_HREF.finditer(low, start + 5, line_end):
            base = found
        pos = line_end
    if base is None:
        return data
    base_url = data[base.start(1) : base.end(1)]

    def absolute(m: re.Match[bytes]) -> bytes:
        return m[1] + b'="' + _absolute_url(m[3], base_url) + b'"'

    for pattern in _BASE_REFS:
        data = pattern.sub(absolute, data)
    return data


_ABSOLUTE: Final = re.compile(rb"[fhtps]+://")


def _absolute_url(path: bytes, base_url: bytes) -> bytes:
    """``rcube_base_replacer::absolute_url``."""
    if _ABSOLUTE.match(path) or path.startswith(b"cid:"):
        return path
    host_url = base_url
    if base_url.rfind(b"/") > 7:
        cut = base_url.find(b"/", 7)
        host_url = base_url[:cut] if cut >= 0 else base_url
        base_url = base_url[: base_url.rfind(b"/")]
    if path.startswith(b"/"):
        return host_url + path
    path = path.removeprefix(b"./")
    for _ in range(path.count(b"../")):
        cut = base_url.rfind(b"/")
        if cut > 0:
            base_url = base_url[:cut]
        path = path[3:]
    return base_url + b"/" + path


# -- how its parser reads the result -----------------------------------------------------

#: libxml2's HTML 4 parser reads these elements' content as markup (a browser does not);
#: in lower-cased text, as the next three.
_LIBXML_RAW: Final = re.compile(
    rb"</?(xmp|noembed|noframes|iframe|plaintext|title)(?=[\s/>])")
_CDATA: Final = re.compile(rb"<!\[cdata\[|\]\]>")
#: "<!" that opens neither a comment, CDATA nor a doctype: HTML 4's parser reads on.
_BOGUS: Final = re.compile(rb"<!(?![-\[]|doctype)")
#: A style attribute's value (the name after a blank, quote or "/"); a quote left open
#: runs to the end (linear).
_STYLE: Final = re.compile(rb"""style\s*=\s*("[^"]*"?|'[^']*'?|[^\s>"'][^\s>]*)""")
_BEFORE_ATTRIBUTE: Final = frozenset(b' \t\n\x0b\x0c\r"\'/')
_CSS_HEX: Final = re.compile(r"\\([0-9a-f]{2,6})\s*", re.IGNORECASE)
_CSS_OTHER: Final = re.compile(r"\\([^0-9a-f])", re.IGNORECASE)


def _as_libxml_reads(data: bytes, low: bytes) -> bytes:
    """``data`` with the raw-text elements' names changed to ``span`` (their content is
    markup then), CDATA markers and ``<!`` of bogus declarations deleted; ``data``
    itself when it holds none of them."""
    edits = [(m.start(1), m.end(1), b"span") for m in _LIBXML_RAW.finditer(low)]
    if b"<![cdata[" in low or b"]]>" in low:
        edits += [(m.start(), m.end(), b"") for m in _CDATA.finditer(low)]
    edits += [(m.start(), m.end(), b"") for m in _BOGUS.finditer(low)]
    return _splice(data, sorted(edits))


def _decoded_styles(data: bytes, low: bytes) -> bytes:
    """A document of what the washer's filters decode: every ``style`` value that holds
    what they decode otherwise than a browser (``<p style>``), every ``<style>``
    element's text so (``<style>``), every ``<body background>`` as the container's
    ``background-image`` (``<div style>``); empty when there is none."""
    out = [b'<p style="%s"></p>' % _style(data[m.start(1) : m.end(1)])
           for m in _STYLE.finditer(low)
           if m.start() and data[m.start() - 1] in _BEFORE_ATTRIBUTE
           and _DECODED.search(m[1]) is not None]
    out += _style_elements(data, low)
    out += _body_backgrounds(data, low)
    return b"".join(out)


#: What the washer's style decoding reads otherwise than a browser.
_DECODED: Final = re.compile(rb"[&\\<]|/\*|-->")


def _style(raw: bytes) -> bytes:
    """A ``style`` value as the parser (one entity decoding) and
    :func:`_xss_entity_decode` read it, escaped for a double-quoted attribute."""
    value = raw.decode("utf-8", "replace")
    if value[:1] in ("'", '"'):
        value = value[1:-1] if len(value) > 1 and value[-1] == value[0] else value[1:]
    value = _xss_entity_decode(html.unescape(value))
    return html.escape(value, quote=True).encode("utf-8")


def _xss_entity_decode(text: str) -> str:
    """``rcube_utils::xss_entity_decode``: entities decoded twice, ``<!--`` and ``-->``
    around it dropped, CSS escapes decoded, backslashes dropped, comments and tags
    deleted."""
    text = html.unescape(html.unescape(text)).strip()
    text = text.removeprefix("<!--").removesuffix("-->").strip()
    text = _CSS_HEX.sub(lambda m: _char(int(m[1], 16)), text)
    text = _CSS_OTHER.sub(r"\1", text)
    return _strip_tags(_drop_between(text, "/*", "*/"))


def _style_elements(data: bytes, low: bytes) -> list[bytes]:
    """Each ``<style>`` element's text that the washer decodes, as ``washtml_callback``
    and ``rcube_utils::mod_css_styles`` make it: decoded as :func:`_xss_entity_decode`
    twice (a browser decodes nothing there), nothing at all when it imports, holds an
    escape, comment or "expression", and only the URLs that its callback keeps."""
    out = []
    pos = 0
    while (start := low.find(b"<style", pos)) >= 0:
        gt = low.find(b">", start + 6)
        if gt < 0:
            break
        end = low.find(b"</style", gt)
        end = len(low) if end < 0 else end
        if _DECODED.search(low, gt + 1, end) is not None:
            text = _style_element(data[gt + 1 : end].decode("utf-8", "replace"))
            if text:  # (no "<" is left in it: tags are stripped)
                out.append(b"<style>%s</style>" % text.encode("utf-8"))
        pos = end
    return out


_EVIL_STYLE: Final = re.compile(r"expression|behavior|javascript:|import[^a]", re.IGNORECASE)
_NOT_LETTER: Final = re.compile(r"[^a-zA-Z(:;]")
_STYLE_URL: Final = re.compile(r"""url\s*\(\s*['"]?([^'")]*)['"]?\s*\)""", re.IGNORECASE)
_KEPT_URL: Final = re.compile(r"https?://[a-z0-9/._+-]+|data:image.*", re.IGNORECASE | re.DOTALL)


def _style_element(text: str) -> str:
    if text.count("\n") > 5000:
        return ""
    text = _xss_entity_decode(text)
    if _EVIL_STYLE.search(_NOT_LETTER.sub("", text)):
        return ""
    text = _xss_entity_decode(text)  # (mod_css_styles decodes it again)
    if ("@import" in text.lower() or "{" not in text or "/*" in text or "<!--" in text
            or re.search(r"\\[0-9a-fA-F]{2}", text)):
        return ""
    return _STYLE_URL.sub(lambda m: m[0] if _KEPT_URL.fullmatch(m[1]) else "none", text)


_BODY_ATTRIBUTE: Final = re.compile(
    rb"""[\s/]*+([^\s/>"'=][^\s/>=]*+)(?:\s*+=\s*+("[^"]*+"?|'[^']*+'?|[^\s>]*+))?""")


def _body_backgrounds(data: bytes, low: bytes) -> list[bytes]:
    """A ``<body background>`` without blanks, as ``washtml_callback`` writes it:
    ``background-image: url(VALUE)`` (unquoted) on the message's container."""
    found: list[str] = []
    pos = 0
    while (start := low.find(b"<body", pos)) >= 0:
        pos = start + 5
        while (attr := _BODY_ATTRIBUTE.match(data, pos)) is not None and attr.end() > pos:
            pos = attr.end()
            if attr[1].lower() == b"background" and attr[2]:
                value = html.unescape(attr[2].strip(b"\"'").decode("utf-8", "replace"))
                if value and not any(c.isspace() for c in value):
                    found.append(value)
    return [b'<div style="background-image: url(%s)"></div>'
            % html.escape(value, quote=True).encode("utf-8") for value in found]


def _char(code: int) -> str:
    """``mb_chr``: nothing for a code point that is no character."""
    return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else ""


def _drop_between(text: str, opener: str, closer: str) -> str:
    """Each ``opener`` up to the first ``closer`` after it deleted (``#/\\*.*\\*/#Us``)."""
    out: list[str] = []
    done = 0
    while (start := text.find(opener, done)) >= 0:
        end = text.find(closer, start + len(opener))
        if end < 0:
            break
        out.append(text[done:start])
        done = end + len(closer)
    return "".join(out) + text[done:]


def _strip_tags(text: str) -> str:
    """PHP's ``strip_tags``, as far as it matters here: ``<...>`` deleted, an unclosed
    ``<`` to the end."""
    out: list[str] = []
    done = 0
    while (start := text.find("<", done)) >= 0:
        out.append(text[done:start])
        end = text.find(">", start)
        done = len(text) if end < 0 else end + 1
    return "".join(out) + text[done:]


_STEPS: Final[tuple[_Step, ...]] = (
    # rcmail_action_mail_index::wash_html
    _meta_charsets, _meta_in_head,
    # rcube_washtml::cleanup
    _trim, _nobr, _titles, _doctypes, _bom, _html_attributes, _xml_declarations,
    _word_chars, _tags, _alnum_comments, _broken_lists, _resolve_base)


# -- what loads -----------------------------------------------------------------------------

_READ_AS_UTF8: Final = frozenset({"utf-8", "us-ascii", UNKNOWN_CHARSET, "replacement"})


def _text(data: bytes, charset: str) -> bytes:
    """The part's text as the washer gets it: UTF-8 with invalid sequences deleted (text
    in another charset is converted first: nothing to delete then)."""
    if charset in _READ_AS_UTF8:
        return data.decode("utf-8", "ignore").encode("utf-8")
    return decode_text(data, charset).encode("utf-8", "replace")


def _remote_loads(document: bytes, max_tags: int = DEFAULT_MAX_TAGS,
                  templates: ScanCache | None = None) -> set[str] | None:
    """The remote loads of ``document``; None when its scan is incomplete (a limit).
    ``templates``: scans of the texts washed before, so that a campaign's further copies
    are scanned only where they differ (:mod:`~beacon_proxy.rewrite.rescan`)."""
    rescanned = None if templates is None else templates.rescan(document, "utf-8", max_tags)
    if rescanned is not None:
        entries, _, incomplete = finish_scan(rescanned)
    else:
        entries, _, incomplete = scan_entries(document, max_tags=max_tags, learner=templates)
    return None if incomplete is not None else loaded(entries)


def loaded(entries: Iterable[Entry]) -> set[str]:
    """The URLs of the remote loads among a scan's ``entries`` (links are not loads)."""
    return {entry.url for entry in entries if entry.remote and (
        isinstance(entry, PendingImg) or entry.element != "a")}


def _washed_loads(data: bytes, charset: str, max_tags: int = DEFAULT_MAX_TAGS,
                  templates: ScanCache | None = None) -> set[str] | None:
    """The remote loads of the washed text; None when the washer's reading is not
    modelled or a scan of it is incomplete."""
    documents = readings(_text(data, charset))
    if documents is None:
        return None
    found: set[str] = set()
    for index, document in enumerate(documents):
        urls = _remote_loads(document, max_tags, templates if index == 0 else None)
        if urls is None:
            return None
        found |= urls
    return found


def loads_more(data: bytes, charset: str, mine: set[str] | None = None, *,
               max_tags: int = DEFAULT_MAX_TAGS, templates: ScanCache | None = None
               ) -> bool:
    """Whether the washed text of ``data`` (an HTML part's text in ``charset``, the
    scanner's own) loads something remote that the text as written does not (``mine``:
    its remote loads, when already known; ``templates``: as for :func:`_remote_loads`)."""
    theirs = _washed_loads(data, charset, max_tags, templates)
    if theirs is None:
        return True
    if mine is None:
        mine = _remote_loads(decode_text(data, charset).encode("utf-8", "replace"), max_tags)
        if mine is None:
            return True
    return not theirs <= mine


def loads(data: bytes, charset: str) -> bool:
    """Whether the washed text of ``data`` loads anything remote at all (or may: a
    reading not modelled, a scan incomplete)."""
    return _washed_loads(data, charset) != set()
