"""What webmail's HTML washer makes of a part before a browser renders it.

Roundcube does not hand a message's HTML to the browser as it is: its washer
(``rcube_washtml``) first rewrites the text with patterns, then parses and filters
it and writes it out again.  Several of those rewrites turn markup a browser finds
inert into live markup: a tag name with a stray quote or a ``:`` loses them
(``<i"mg`` is ``<img``), an end tag loses its attributes up to the first ``>``
(``</b title="><img src=...>"`` frees the image), ``</ `` becomes ``< ``, a comment
opener followed by letters and ``>`` is deleted, a ``<title>`` is cut at the first
``</title>`` on its line (``<titlex>`` too), a ``<base ... href`` anywhere (in a
comment, ``<basefont``) resolves relative URLs, invalid UTF-8 is deleted
(``s\\xffrc`` is ``src``), a ``style`` value is decoded again (entities twice, CSS
hex escapes, backslashes, comments and tags dropped: ``ur/**/l(`` is ``url(``), and
its older parser (libxml2's HTML 4) reads the content of ``<xmp>``, ``<noembed>``,
``<noframes>``, ``<iframe>``, ``<plaintext>``, a ``<title>`` over several lines,
``<![CDATA[`` and ``<!x ...>`` as markup, and its repair of nested lists moves a list
out of a comment.

:func:`washed` makes that text (this project's model of those rewrites, written from
the washer's documented behaviour; none of its code is used), and
:func:`loads_more` says whether it loads something remote that the text as written
does not: such a part is not read precisely (the fallback neutralises it, and holds
it when even the neutralised text loads once washed: :func:`loads`).

>>> washed('<p>x<i"mg src="https://t/x"></p>')
'<p>x<img src="https://t/x"></p>'
>>> loads_more(b'<p style="background:ur/**/l(https://t/x)">x</p>', "utf-8")
True
>>> loads_more(b'<html lang="en"><head><title>Hi</title></head><img src=a.png>', "utf-8")
False
"""

from __future__ import annotations

import html
import re
from typing import Final

from beacon_proxy.rewrite.charsets import UNKNOWN_CHARSET, decode_text
from beacon_proxy.rewrite.html import scan_html

__all__ = ["loads", "loads_more", "washed"]

_TITLE: Final = re.compile(r"<title[^>]*>.*?</title>", re.IGNORECASE)
_HTML_ATTRS: Final = re.compile(r"<html\s[^>]+>", re.IGNORECASE)
_XML_DECLARATION: Final = re.compile(r"<\?xml[^>]*>", re.IGNORECASE)
_DOCTYPE: Final = re.compile(r"<!doctype[^>]+>[^<]*", re.IGNORECASE)
#: A tag as the washer finds one: "<" (not "<!"), slashes, a name up to a blank or ">",
#: the rest up to ">".
_TAG: Final = re.compile(r"(<(?!!)/*)([^\s>]+)([^>]*)")
_SMART_TAG: Final = re.compile(r":.*$", re.DOTALL)
_NOT_NAME: Final = re.compile(r"[^a-z0-9_\[\]!?-]", re.IGNORECASE)
_ALNUM_COMMENT: Final = re.compile(r"<!--[a-zA-Z0-9]+>")
_META_CHARSET: Final = re.compile(r"<meta[^>]+charset=[a-z0-9_-]+[^>]*>", re.IGNORECASE)
_HEAD: Final = re.compile(r"(<head[^>]*>)", re.IGNORECASE)
_BASE: Final = re.compile(r"<base.*?href=[\"']?([hftps]{3,5}://[a-z0-9/.%-]+)",
                          re.IGNORECASE | re.DOTALL)
_LIBXML_RAW: Final = re.compile(
    r"<(/?)(?:xmp|noembed|noframes|iframe|plaintext|title)(?=[\s/>])", re.IGNORECASE)
_CDATA: Final = re.compile(r"<!\[CDATA\[|\]\]>")
#: "<!" that opens neither a comment, CDATA nor a doctype: HTML 4's parser reads on.
_BOGUS: Final = re.compile(r"<!(?![-\[]|doctype)", re.IGNORECASE)
#: A comment: one holding a list is taken apart when the washer repairs nested lists.
_LIST_COMMENT: Final = re.compile(r"<!--(.*?)-->", re.DOTALL)
_LIST: Final = re.compile(r"<[ou]l[\s>]", re.IGNORECASE)
_STYLE: Final = re.compile(r"(\sstyle\s*=\s*)(\"[^\"]*\"|'[^']*'|[^\s>]+)", re.IGNORECASE)
_CSS_HEX: Final = re.compile(r"\\([0-9a-f]{2,6})\s?", re.IGNORECASE)
_CSS_OTHER: Final = re.compile(r"\\([^0-9a-f])", re.IGNORECASE)
_CSS_COMMENT: Final = re.compile(r"/\*.*?\*/", re.DOTALL)
_ANY_TAG: Final = re.compile(r"<[^>]*>")


def washed(text: str) -> str:
    """``text`` (an HTML part, decoded) as the washer rewrites it before parsing, with
    the content of the elements its HTML 4 parser reads as markup made markup here."""
    text = _TITLE.sub("", text)
    text = _DOCTYPE.sub("", text)
    text = _HTML_ATTRS.sub("<html>", text)
    text = _XML_DECLARATION.sub("", text)
    text = _TAG.sub(_tag, text)
    text = _ALNUM_COMMENT.sub("", text)
    text = _META_CHARSET.sub("", text)
    text = _HEAD.sub(r'\1<meta charset="UTF-8" />', text)
    text = _LIBXML_RAW.sub(r"<\1span", text)
    text = _CDATA.sub("", text)
    text = _BOGUS.sub("", text)
    text = _LIST_COMMENT.sub(_list_comment, text)
    text = _STYLE.sub(_style, text)
    base = _BASE.search(text)
    return text if base is None else f'<base href="{base[1]}">' + text


def _tag(match: re.Match[str]) -> str:
    opener, name, rest = match.groups()
    if rest.endswith("--"):  # the end of a comment: left alone
        return match[0]
    name = _NOT_NAME.sub("", _SMART_TAG.sub("", name))
    return opener + name + ("" if opener.startswith("</") else rest)


def _list_comment(match: re.Match[str]) -> str:
    """A comment holding a list: its content, as markup (the washer moves nested lists,
    comments or not, into the item before them)."""
    return match[1] if _LIST.search(match[1]) else match[0]


def _style(match: re.Match[str]) -> str:
    value = match[2]
    if value[:1] in ("'", '"'):
        value = value[1:-1]
    value = html.unescape(html.unescape(value)).strip()
    value = value.removeprefix("<!--").removesuffix("-->").strip()
    value = _CSS_HEX.sub(lambda m: _char(int(m[1], 16)), value)
    value = _CSS_OTHER.sub(r"\1", value)
    value = _ANY_TAG.sub("", _CSS_COMMENT.sub("", value))
    return match[1] + '"' + html.escape(value, quote=True) + '"'


def _char(code: int) -> str:
    return chr(code) if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"


def _text(data: bytes, charset: str) -> str:
    """The part's text as the washer gets it: UTF-8 with invalid sequences deleted (text
    in another charset is converted first: nothing to delete then)."""
    if charset in _READ_AS_UTF8:
        return data.decode("utf-8", "ignore")
    return decode_text(data, charset)


_READ_AS_UTF8: Final = frozenset({"utf-8", "us-ascii", UNKNOWN_CHARSET, "replacement"})


def _remote_loads(text: str) -> set[str]:
    scan = scan_html(text.encode("utf-8", "replace"))
    return {ref.url for ref in scan.references if ref.remote and ref.element != "a"}


def loads_more(data: bytes, charset: str, mine: set[str] | None = None) -> bool:
    """Whether the washed text of ``data`` (an HTML part's text in ``charset``, the
    scanner's own) loads something remote that the text as written does not (``mine``:
    its remote loads when already known).  Only text with one of the constructs the
    washer rewrites into markup is washed and scanned again (:func:`_rewritten`): a scan
    of a 60 KB newsletter costs milliseconds, the search for them well under one."""
    text = _text(data, charset)
    invalid = charset in _READ_AS_UTF8 and not data.isascii() and "\ufffd" not in text and (
        len(text.encode("utf-8")) != len(data))
    if not invalid and not _rewritten(text):
        return False
    if mine is None:
        mine = _remote_loads(decode_text(data, charset))  # as a browser reads it: U+FFFD
    return not _remote_loads(washed(text)) <= mine


#: What the washer may rewrite into markup: a comment opener with letters and ">", an
#: end tag with more than its name, a title that is no plain one-line title, <base>
#: anywhere, the elements and declarations its HTML 4 parser reads as markup, a comment
#: holding a list.
_TRIGGERS: Final = re.compile(  # in lower-cased text ("<" first: a fast literal search)
    r"<(?:!--[a-z0-9]+>"
    r"|/(?:\s|[^\s>]*[\s\"'=<])"
    r"|title[^\s>]|/title\s|title[^>]*>[^<]*\n"
    r"|base|(?:xmp|noembed|noframes|iframe|plaintext)[\s/>]|!\[cdata\[|!(?![-\[]|doctype)"
    r"|!--(?:(?!-->).)*<[ou]l[\s>])", re.DOTALL)
#: A tag name with a character the washer drops, or a ":" it cuts at (Outlook's <o:p>), in
#: lower-cased text.
_ODD_TAG: Final = re.compile(r"</*([a-z0-9_\[\]!?-]*[^a-z0-9_\[\]!?\s>/-][^\s>]*)")
#: Names that matter when a tag becomes one: what loads, holds raw text or a document.
_ELEMENTS: Final = frozenset({
    "img", "image", "input", "link", "iframe", "frame", "frameset", "object", "embed",
    "video", "audio", "source", "track", "picture", "body", "table", "td", "th", "tr",
    "tbody", "thead", "tfoot", "meta", "base", "basefont", "style", "svg", "math", "script",
    "title", "textarea", "xmp", "noembed", "noframes", "noscript", "plaintext", "template",
    "html", "head", "select", "option", "a", "area", "applet", "bgsound", "layer", "ilayer"})
#: What makes the washer decode a style value otherwise than a browser: an entity, a
#: backslash, a comment or a "<" in it.
_STYLE_HINT: Final = re.compile(r"[&\\<]|/\*")
_LOW_STYLE: Final = re.compile(r"(style\s*=\s*)(\"[^\"]*\"|'[^']*'|[^\s>]+)")  # lower-cased
_FUNCTION: Final = re.compile(r"[a-z_-][a-z0-9_-]*\(", re.IGNORECASE)
#: The washer's deletions that end at the first ">": a quote left open in what they delete
#: joins the rest of the tag to what follows.
_DELETIONS: Final = (_HTML_ATTRS, _META_CHARSET, _HEAD)


def _rewritten(text: str) -> bool:
    """Whether ``text`` holds something the washer may rewrite into a load."""
    low = text.lower()
    if _TRIGGERS.search(low) is not None:
        return True
    for tag in _ODD_TAG.finditer(low):
        if not tag[1].startswith("!") and _NOT_NAME.sub("", _SMART_TAG.sub("", tag[1])) \
                in _ELEMENTS:
            return True
    if "&" not in text and "\\" not in text and "/*" not in text and "<" not in text:
        return False  # (no style value can hold what the washer decodes)
    for style in _LOW_STYLE.finditer(low):
        value = style[2].strip("\"'")
        if _STYLE_HINT.search(value):
            seen = html.unescape(value).replace(" ", "").lower()
            washed_value = _style(style).replace(" ", "").lower()
            if set(_FUNCTION.findall(washed_value)) - set(_FUNCTION.findall(seen)):
                return True
    return any((m[0].count('"') | m[0].count("'")) & 1 or (
        pattern is _HEAD and m[0][5:6] not in (">", " ", "\t", "\n", "\r"))
        for pattern in _DELETIONS for m in pattern.finditer(text))


def loads(data: bytes, charset: str) -> bool:
    """Whether the washed text of ``data`` loads anything remote at all."""
    return bool(_remote_loads(washed(_text(data, charset))))
