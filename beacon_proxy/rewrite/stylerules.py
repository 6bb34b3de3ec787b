"""Rules of a ``<style>`` block that hide an element: a pixel hidden by its class.

A sender need not hide a pixel in its own ``style``: ``<style>.p{display:none}</style>
<img class="p" src="https://t.example/o/8f3a...">`` hides it as well in every client that
reads style blocks (Gmail, Apple Mail, Outlook.com, Thunderbird).  :func:`read_rules` reads
a part's style blocks once, as CSS tokenizes them (:func:`~.css.plain_css`: comments,
escapes), into the rules that hide - ``display:none``, ``visibility:hidden|collapse``,
``content-visibility:hidden``, an ``opacity`` below 0.1, an overflow that clips to 0-2 px,
and for an image a size of 0-2 px - keyed by the last compound selector of each selector
(``td .p`` is ``.p``: the element it styles, whatever its ancestors; a rule that may not
apply is read as applying, the refusal's side).  :mod:`.hiding` then judges every element
whose class, id, attribute or tag such a rule names (:meth:`HidingRules.words_searched`)
with :meth:`HidingRules.hides`.

>>> rules = read_rules([b"p{color:red} .px,td .q{display:none} img.t{width:1px}"])
>>> sorted(rules.words_searched())
[b'px', b'q', b't']
>>> rules.hides(b"img", b"a px", b"", {}, image=True), rules.hides(b"img", b"t", b"", {})
(True, False)

What shows an element again, so that the rule does not count:

* its own ``style`` setting the property (``style="display:block"`` beats a rule that is
  not ``!important``);
* a rule of a single compound selector that matches it - nothing in the selector the
  element does not have, no pseudo-class, no attribute value - and sets the property to
  something else, with more weight in CSS's cascade (``!important``, then specificity,
  then order: ``.p{display:none} img.p{display:block}``);
* any rule inside ``@media`` that sets the property on a compound matching it (the
  responsive idiom: ``@media (max-width:600px){.mobile{display:block !important}}`` reveals
  mobile-only content on some screen).  A query that every screen from 320 to 2560 px
  meets (``screen``, ``all``, ``(min-width:100px)``, ``not print``) is no condition: its
  rules hide and show as top-level ones do.  Rules inside ``@supports``, ``@layer``,
  ``@container`` and ``@scope`` count as top-level ones.

Where a rule stands decides what it may do (:func:`_read_sheet`): at the top level it
hides and shows; in ``@media`` that some screens meet it only shows (on some screen); in
``@supports``, ``@layer``, ``@container`` and ``@scope`` (conditions not evaluated) it
only hides; in ``@media print``, a ``<style media=print>``, a ``<style type>`` that is not
CSS or after a stray ``}`` it does nothing.  Rules nested in a rule are skipped, its own
declarations kept.

Not read (each hides less than a browser may, so a refused copy may keep such a pixel;
``docs/rewriting.md``, "Not detected"): a container element named by its tag in a context
(``img.x + div``, ``td > span``: every element of its kind would count as hidden, and the
images in it; an image named so, ``body img``, is read), a compound with neither tag,
class, id nor attribute (``*``, ``:root``, ``:is(.p)``), rules inside ``@font-face``,
``@keyframes`` or ``@page``, selectors with a state (``:hover``) or a pseudo-element,
custom properties (``var()``), an overflow and a size from two rules, the case of class
and id names (compared lower-cased, as in quirks mode: in standards mode ``.p`` does not
match ``class="P"``, and such a reveal is believed), sheets a refused
copy does not load (``@import``, ``<link>``), and which sheets a client ignores beyond
``media`` and ``type`` (an Outlook-only sheet, a ``<template>``'s, an alternate one).
Bounded: :data:`MAX_RULES` rules that set a property read here, :data:`MAX_WORDS` names
to search for; past either the part counts as truncated (refused copies take the fallback).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from beacon_proxy.rewrite.boxes import at_most, clips, faint
from beacon_proxy.rewrite.css import css_unescape, plain_css, weighted_declarations

__all__ = ["MAX_RULES", "MAX_WORDS", "HidingRules", "RulesLimitError", "read_rules",
           "sheet_mode"]

#: Tags, classes and ids the hiding rules of one part may name: each is searched for in
#: the part.  Past it the part counts as truncated (refused copies take the fallback).
MAX_WORDS = 64
#: Rules that hide or show which one part's style blocks may hold (each is read once per
#: element it may style): past it, :class:`RulesLimitError`.
MAX_RULES = 2048


class RulesLimitError(ValueError):
    """More than :data:`MAX_RULES` rules that hide or show."""


#: What opens or ends a block, or a string (skipped whole: a brace in a string is text).
_NEXT = re.compile(rb"[{}\"']")
#: A CSS escape in a selector's name (CSS Syntax 4.3.7): any character.
_ESCAPE = rb"\\(?:[0-9a-f]{1,6}(?:\r\n|[\t\n\f\r ])?|[^\n\r\f0-9a-f])"
#: Text without a brace outside a string: a prelude, a flat declaration block.
_FLAT = re.compile(rb'(?:[^{}"\'\\u]++|"(?:[^"\\\n]++|\\[\s\S])*+"?'
                   rb"|'(?:[^'\\\n]++|\\[\s\S])*+'?|\\[\s\S]?|url\((?:[^)\\]++|\\[\s\S])*+\)?|u)*+")
#: A block that may hide or show: one of the properties read is named in it.
_PROPERTY = re.compile(rb"display|visibility|opacity|overflow|width|height|size|\\")
#: A block that may hide: a value that hides, or a size that may be 0-2 px (what
#: :func:`_hiding` and :func:`~.boxes.clips` read, found faster).
_MAY_HIDE = re.compile(
    rb"none|hidden|collapse|contents|opacity|\\|(?:width|height|size)[\t\n\f\r ]*+:"
    rb"[\t\n\f\r ]*+(?:0*(?:[0-2](?![0-9])|\.)|[-+(]|calc|min|max|clamp|var"
    rb"|[0-9]++(?:\.[0-9]*+)?e)")
_ATTRIBUTE_NAME = re.compile(rb"\[[\t\n\f\r ]*+([-_a-z0-9:]++)")
#: A string (to its quote or the line's end); one, or a ";" that ends a statement.
_STRING = re.compile(rb'"(?:[^"\\\n]++|\\[\s\S])*+"?|\'(?:[^\'\\\n]++|\\[\s\S])*+\'?')
_STATEMENT_END = re.compile(rb'"(?:[^"\\\n]++|\\[\s\S])*+"?|\'(?:[^\'\\\n]++|\\[\s\S])*+\'?|;')
#: At-rules whose conditions are not evaluated: their rules hide (the refusal's side)
#: and reveal nothing (:data:`_CONDITIONAL`).
_TRANSPARENT = (b"@supports", b"@layer", b"@container", b"@document", b"@-moz-document",
                b"@scope")
_MEDIA = b"@media"
_MEDIA_RULE = re.compile(rb"@media(?![-_a-z0-9\x80-\xff\\])")
#: CSS's CDO and CDC tokens, which a sheet's top level ignores (``<style><!-- ... -->``).
_CDO_CDC = re.compile(rb"<!--|-->")
#: A selector :func:`_compound` does not understand (CSS may drop the whole rule).
_UNREAD = b"unread"
#: The hiding of ``display:contents``: an image's box is none then (an element's
#: content shows).
_CONTENTS = "display-contents"
#: A selector list's parts (commas outside brackets and parentheses are read by
#: :func:`_selectors`); a compound's pieces.
_PIECE = re.compile(
    rb"(\*|(?:[a-z]|" + _ESCAPE + rb")(?:[-a-z0-9]|" + _ESCAPE + rb")*+)"
    rb"|\.((?:[-_a-z0-9\x80-\xff]|" + _ESCAPE + rb")++)"
    rb"|#((?:[-_a-z0-9\x80-\xff]|" + _ESCAPE + rb")++)"
    rb"|\[[\t\n\f\r ]*+([-_a-z0-9:]++)[^\]]*+\]|(::?)([-a-z]++)(\((?:[^()]++|\([^()]*+\))*+\))?")
_COMBINATOR = re.compile(rb"[\t\n\f\r ]*+[>+~][\t\n\f\r ]*+|[\t\n\f\r ]++")
#: Pseudo-classes of a moment (the rule applies while a reader does something), outside
#: a ``:not()``: such a selector hides nothing.
_NOT = re.compile(rb":not\((?:[^()]++|\([^()]*+\))*+\)")
_STATE = re.compile(rb":(?:hover|focus|active|focus-within|focus-visible|target|checked"
                    rb"|visited)(?![-a-z])")
#: The properties whose hiding value hides an image only (a box of 0-2 px: its content
#: overflows and shows unless it clips, which "overflow" stands for).
_SIZES = frozenset({"width", "height", "max-width", "max-height"})
#: Elements that load what they show: a rule on one in any context (``body img``) is read
#: as on every one.  A container in a context (``img.x + div``, ``td > span``) is not read:
#: every element of its kind would count as hidden, and the images in it.
_LOADING = frozenset({b"img", b"image", b"input", b"video", b"audio", b"iframe", b"embed",
                      b"object", b"source", b"track"})


@dataclass(frozen=True, slots=True)
class _Compound:
    """The last compound selector of a selector: what the element itself must have."""

    tag: bytes | None
    classes: frozenset[bytes]
    ids: frozenset[bytes]
    attributes: frozenset[bytes]
    exact: bool  # nothing else in the selector: no combinator, attribute value, pseudo-class
    specificity: tuple[int, int, int]

    def matches(self, tag: bytes, classes: set[bytes], ids: set[bytes],
                attributes: Iterable[bytes]) -> bool:
        return (self.tag is None or self.tag == tag) and self.classes <= classes and (
            self.ids <= ids) and self.attributes <= set(attributes)


@dataclass(frozen=True, slots=True)
class _Rule:
    compound: _Compound
    order: int
    hides: dict[str, bool]  # property -> !important, for the properties that hide
    shows: dict[str, bool]  # property -> !important, for those that set another value
    media: bool  # inside @media


#: Where a rule stands: at the top level (or in a query every screen meets), in
#: ``@media`` that some screens meet (it may show, on some screen; it hides nothing), in
#: a condition not evaluated (``@supports``, ``@layer``, ``@container``, ``@scope``: it
#: hides, the refusal's side, and shows nothing), or where no screen reads it (``@media
#: print``, ``@media (max-width:100px)``, a ``<style media=print>``, a dropped rule).
_TOP, _MEDIA_SOME, _CONDITIONAL, _NEVER = b"top", b"media", b"conditional", b"never"


def _inside(outer: bytes, inner: bytes) -> bytes:
    """The mode of a block of mode ``inner`` inside one of mode ``outer``."""
    if _NEVER in (outer, inner) or {outer, inner} == {_MEDIA_SOME, _CONDITIONAL}:
        return _NEVER  # (hides nothing as media, shows nothing as a condition)
    return inner if outer == _TOP else outer


@dataclass(slots=True)
class _Block:
    """A style rule as written, read into :class:`_Rule` s on first need."""

    selectors: bytes
    mode: bytes
    body: bytes
    order: int
    rules: list[_Rule] | None = None


@dataclass(slots=True)
class HidingRules:
    """The rules of a part's style blocks that hide, and those that may show what they
    hide (see the module docstring).  Only a rule whose text can hide is read at once; a
    rule that may show is read when an element it may name is judged."""

    hiding: list[_Rule] = field(default_factory=list)
    blocks: list[_Block] = field(default_factory=list)  # every rule that sets a property
    words: set[bytes] = field(default_factory=set)  # classes, ids, attribute names
    tags: set[bytes] = field(default_factory=set)  # tag names a rule names alone
    attributes: set[bytes] = field(default_factory=set)  # named by attribute selectors
    index: dict[bytes, list[_Rule]] = field(default_factory=dict)  # hiding, by _key()

    def words_searched(self) -> set[bytes]:
        """What finds every element a hiding rule may hide: its classes, ids and
        attribute names, and ``<`` with each tag named alone (``b"<img"``)."""
        return self.words | {b"<" + tag for tag in self.tags}

    def _showing(self, tag: bytes, keys: list[bytes], names: set[bytes], marks: set[bytes],
                 present: set[bytes]) -> list[_Rule]:
        """The rules that set a property of the element (of the blocks whose selectors
        hold one of ``keys`` as text: read on first need)."""
        out: list[_Rule] = []
        for block in self.blocks:
            if not any(key in block.selectors for key in keys):
                continue
            if block.rules is None:
                block.rules = _read_block(block)
            out.extend(rule for rule in block.rules if rule.shows and rule.compound.matches(
                tag, names, marks, present))
        return out

    def revealed(self, tag: bytes, classes: bytes, ids: bytes,
                 attributes: Iterable[bytes] = (), props: Iterable[str] = ()) -> bool:
        """Whether a rule inside ``@media`` sets one of ``props`` on the element (on some
        screen it may show what its own style or a ``hidden`` attribute hides)."""
        names, marks, present = set(classes.split()), set(ids.split()), set(attributes)
        keys = [*names, *marks, *present, tag]
        wanted = set(props)
        return any(rule.media and wanted.intersection(rule.shows)
                   for rule in self._showing(tag, keys, names, marks, present))

    def hides(self, tag: bytes, classes: bytes, ids: bytes, own: dict[str, str],
              image: bool = False, attributes: Iterable[bytes] = (),
              own_strong: Iterable[str] = ()) -> bool:
        """Whether a rule hides the element ``tag`` with these ``class`` and ``id``
        values and its own style's declarations ``own`` (``own_strong``: those that are
        ``!important``, which beat even an important rule; a size counts for an
        ``image``).  Linear in the rules that may match it."""
        if tag == b"image":
            tag = b"img"  # (the parser's name for it)
        names, marks, present = set(classes.split()), set(ids.split()), set(attributes)
        strong_own = set(own_strong)
        index = self.index
        matching = [rule for key in (b"<" + tag, *(b"." + n for n in names),
                                     *(b"#" + n for n in marks), *(b"[" + n for n in present))
                    for rule in index.get(key, ()) if rule.compound.matches(
                        tag, names, marks, present)]
        if not matching:
            return False
        # What shows each property, per the cascade: a rule in @media (any screen), and
        # the strongest exact rule as (!important, specificity, order).
        anywhere: set[str] = set()
        strongest: dict[str, tuple[bool, tuple[int, int, int], int]] = {}
        for rule in self._showing(tag, [*names, *marks, *present, tag], names, marks,
                                  present):
            for prop, important in rule.shows.items():
                if rule.media:
                    anywhere.add(prop)
                elif rule.compound.exact:
                    weight = (important, rule.compound.specificity, rule.order)
                    if prop not in strongest or strongest[prop] < weight:
                        strongest[prop] = weight
        for rule in matching:
            for prop, important in rule.hides.items():
                real = "display" if prop == _CONTENTS else prop
                if not image and (prop in _SIZES or prop == _CONTENTS):
                    continue  # a size, display:contents: they hide an image only
                if real in own and (not important or real in strong_own):
                    continue  # the element's own style wins
                if real in anywhere:
                    continue  # a media query may show it (on some screen)
                shown = strongest.get(real)
                if shown is None or shown < (important, rule.compound.specificity,
                                             rule.order):
                    return True
        return False


def read_rules(sheets: Iterable[bytes | tuple[bytes, bytes]]) -> HidingRules:
    """The hiding rules of the style blocks' texts ``sheets`` (lower-cased), in order.
    Linear: one pass of two patterns per sheet; a rule whose text may hide is read at
    once (:data:`_MAY_HIDE`), any other that sets a property read here when needed."""
    rules = HidingRules()
    order = 0
    for sheet in sheets:  # a sheet's text, or (its text, the mode its <style> gives it)
        css, mode = (sheet, _TOP) if isinstance(sheet, bytes) else sheet
        order = _read_sheet(rules, plain_css(css, escapes=True).lower(), order, mode)
    if sum(block.selectors.count(b",") + 1 for block in rules.blocks) > MAX_RULES:
        raise RulesLimitError(f"more than {MAX_RULES} rules that hide or show")
    for block in rules.blocks:
        if block.mode not in (_TOP, _CONDITIONAL) or not _MAY_HIDE.search(block.body):
            continue
        block.rules = _read_block(block)
        for rule in block.rules:
            if not rule.hides:
                continue
            rules.hiding.append(rule)
            rules.index.setdefault(_key(rule.compound), []).append(rule)
            compound = rule.compound  # what the element must hold: one finds it
            if compound.classes or compound.ids:
                rules.words.add(min(compound.classes or compound.ids))
            elif compound.attributes:
                rules.words.add(min(compound.attributes))
            elif compound.tag is not None:
                rules.tags.add(compound.tag)
                if compound.tag == b"img":
                    rules.tags.add(b"image")  # (<image> is an <img> to the parser)
            rules.attributes.update(compound.attributes)
    for block in rules.blocks:  # (an attribute a showing rule needs is read too)
        if b"[" in block.selectors:
            rules.attributes.update(_ATTRIBUTE_NAME.findall(block.selectors))
    return rules


def _read_sheet(rules: HidingRules, text: bytes, order: int, mode: bytes = _TOP) -> int:
    """The rules of one sheet that set a property read here, numbered on from ``order``
    (the last number given).  Each prelude and each flat declaration block is one match
    of a possessive pattern; only blocks inside blocks (CSS nesting, at-rules not read)
    are walked brace by brace."""
    stack: list[bytes] = []  # the mode of each open @media/@supports... block
    pos, n = 0, len(text)
    stray = False  # a "}" the top level does not close: the next rule's prelude is bad
    while pos < n:
        brace = _flat_end(text, pos)  # the prelude, to a "{" or "}"
        if brace >= n:
            break
        if text[brace] == 0x7D:  # "}": the end of an at-rule's block (or a stray one)
            if stack:
                stack.pop()
            else:
                stray = True
            pos = brace + 1
            continue
        prelude = _after_statements(_CDO_CDC.sub(b" ", text[pos:brace])).strip()
        outer = stack[-1] if stack else mode
        if _MEDIA_RULE.match(prelude):
            stack.append(_inside(outer, _screens(prelude)))
            pos = brace + 1
            continue
        if prelude.startswith(_TRANSPARENT):
            stack.append(_inside(outer, _CONDITIONAL))
            pos = brace + 1
            continue
        end = _flat_end(text, brace + 1)  # the declarations, to a "}" or "{"
        nested = end < n and text[end] == 0x7B  # "{": a rule inside (nesting)
        last = _past_block(text, brace + 1) if nested else end + 1
        if not prelude.startswith(b"@") and _PROPERTY.search(text, brace + 1, last):
            order += 1
            body = _unnested(text[brace + 1 : last - 1]) if nested else text[brace + 1 : end]
            rules.blocks.append(_Block(prelude, _NEVER if stray else outer, body, order))
        stray = False
        pos = last  # (the sheet's end closes what is open)
    return order


def _unnested(body: bytes) -> bytes:
    """A declaration block without the rules nested in it (their preludes and blocks):
    the block's own declarations, which still apply."""
    out, pos, n = [], 0, len(body)
    while pos < n:
        brace = _flat_end(body, pos)
        if brace >= n or body[brace] == 0x7D:
            out.append(body[pos:brace])
            pos = brace + 1
            continue
        head = body[pos:brace]
        cut = head.rfind(b";")  # the nested rule's prelude starts after the last ";"
        out.append(head[: cut + 1] if cut >= 0 else b"")
        pos = _past_block(body, brace + 1)
    return b";".join(out)


def _flat_end(text: bytes, pos: int) -> int:
    """Where the text without a brace outside a string that starts at ``pos`` ends."""
    m = _FLAT.match(text, pos)
    return pos if m is None else m.end()


def _past_block(text: bytes, pos: int) -> int:
    """Where the block whose content starts at ``pos`` ends (past its ``}``), blocks
    inside it and strings skipped."""
    depth = 1
    while (m := _NEXT.search(text, pos)) is not None:
        token = m.group()
        pos = m.end()
        if token in b"\"'":
            string = _STRING.match(text, m.start())
            pos = pos if string is None else string.end()
        elif token == b"{":
            depth += 1
        else:
            depth -= 1
            if not depth:
                return pos
    return len(text)


def _after_statements(prelude: bytes) -> bytes:
    """A rule's prelude without the at-rule statements before it (``@import 'x'; .p``:
    ``.p``): each ends at a ``;`` outside a string.  A ``;`` after anything else stays
    (``x; .p`` is one bad selector to CSS)."""
    while b";" in prelude and prelude.lstrip().startswith(b"@"):
        cut = -1
        for m in _STATEMENT_END.finditer(prelude):
            if m.group() == b";":
                cut = m.end()
                break
        if cut < 0:
            break
        prelude = prelude[cut:]
    return prelude


def _read_block(block: _Block) -> list[_Rule]:
    """A style rule's :class:`_Rule` per selector: what it hides, what it sets otherwise
    (by its mode: in ``@media`` anything it sets may show, on some screen, and it hides
    nothing).  A selector list with a selector not understood shows nothing (CSS drops
    the whole rule when one is invalid)."""
    values, strong = weighted_declarations(block.body, lower=True)
    if not values or block.mode == _NEVER:
        return []
    hides = {prop: prop in strong for prop, value in values.items() if _hiding(prop, value)}
    if clips(values):  # (overflow and the size that clips, in one rule)
        hides["overflow"] = bool(strong & {"overflow", "overflow-x", "overflow-y"})
    if values.get("display") == "contents":  # an image's box is none then
        hides[_CONTENTS] = "display" in strong
    shows = {prop: prop in strong for prop in values
             if prop not in hides and not (prop == "display" and _CONTENTS in hides)}
    if block.mode == _MEDIA_SOME:
        hides = {}
    selectors = _ESCAPES.sub(_plain_escape, block.selectors)
    compounds = [_compound(selector) for selector in _selectors(selectors)]
    if block.mode == _CONDITIONAL or _UNREAD in compounds:
        shows = {}
    return [_Rule(c, block.order, hides, shows, block.mode == _MEDIA_SOME)
            for c in compounds if isinstance(c, _Compound) and (hides or shows)]


def _key(compound: _Compound) -> bytes:
    """The one thing a compound requires that its rule is filed under."""
    if compound.classes:
        return b"." + min(compound.classes)
    if compound.ids:
        return b"#" + min(compound.ids)
    if compound.attributes:
        return b"[" + min(compound.attributes)
    return b"<" + (compound.tag or b"")


def sheet_mode(media: bytes | None, kind: bytes | None) -> bytes:
    """The mode a ``<style>`` element's ``media`` and ``type`` attributes give its sheet
    (a type other than CSS: no browser reads it)."""
    if kind is not None and kind.strip() not in (b"", b"text/css"):
        return _NEVER
    return _TOP if media is None or not media.strip() else _screens(_MEDIA + b" " + media)


def _screens(prelude: bytes) -> bytes:
    """Which screens from 320 to 2560 px wide an ``@media`` prelude's query list meets:
    every one (:data:`_TOP`: ``screen``, ``(min-width:100px)``, ``not print``), none
    (:data:`_NEVER`: ``print``, ``(max-width:100px)``), or some (:data:`_MEDIA_SOME`;
    anything not understood counts as some)."""
    kinds = {_query(query) for query in prelude[len(_MEDIA):].split(b",")}
    if _TOP in kinds:
        return _TOP
    return _NEVER if kinds == {_NEVER} else _MEDIA_SOME


_OPERATOR = re.compile(rb"(>=|<=|[()<>=:])")


def _query(query: bytes) -> bytes:
    words = _OPERATOR.sub(rb" \1 ", query).split()
    if words in ([b"not", b"print"], [b"not", b"speech"]):
        return _TOP
    if words[:1] in ([b"print"], [b"speech"]) or words[:2] in ([b"not", b"screen"],
                                                              [b"not", b"all"]):
        return _NEVER
    words = [w for w in words if w not in (b"only", b"and")]
    if words[:1] and words[0] in (b"screen", b"all"):
        words = words[1:]
    text = _RANGE.sub(_as_feature, b" ".join(words))
    features = [_feature(m) for m in _FEATURE.finditer(text)]
    if _NEVER in features:
        return _NEVER
    if _FEATURE.sub(b"", text).strip() or _MEDIA_SOME in features:
        return _MEDIA_SOME
    return _TOP


_FEATURE = re.compile(rb"\( ([-a-z]++) (?:: ([-+]?[0-9.]++(?:e[-+]?[0-9]++)?)(px|em|rem)? )?\)")
#: A range (``(width >= 600px)``): written as the min-/max- feature it is.
_RANGE = re.compile(rb"\( (width|device-width) (>=|<=|>|<|=) ([-+]?[0-9.]++(?:e[-+]?[0-9]++)?)"
                    rb"(px|em|rem)? \)")


def _as_feature(m: re.Match[bytes]) -> bytes:
    op = m.group(2)
    prefix = b"min-" if op in (b">=", b">") else b"max-" if op in (b"<=", b"<") else b""
    return b"( " + prefix + m.group(1) + b" : " + m.group(3) + (m.group(4) or b"") + b" )"


def _feature(m: re.Match[bytes]) -> bytes:
    """A width condition on screens from 320 to 2560 px: met by all, none or some."""
    name, number, unit = m.group(1), m.group(2), m.group(3)
    if number is None:  # a feature alone: true when not zero or none
        return _TOP if name in (b"color", b"width", b"height", b"device-width",
                                b"device-height") else _MEDIA_SOME
    try:
        px = float(number) * (16.0 if unit in (b"em", b"rem") else 1.0)
    except ValueError:
        return _MEDIA_SOME
    if name in (b"min-width", b"min-device-width"):
        return _TOP if px <= 320 else _NEVER if px > 2560 else _MEDIA_SOME
    if name in (b"max-width", b"max-device-width"):
        return _TOP if px >= 2560 else _NEVER if px < 320 else _MEDIA_SOME
    return _MEDIA_SOME


def _hiding(prop: str, value: str) -> bool:
    """Whether a winning declaration hides the element (a size: only an image)."""
    if prop == "display":
        return value == "none"
    if prop == "visibility":
        return value in ("hidden", "collapse")
    if prop == "content-visibility":
        return value == "hidden"
    if prop == "opacity":
        return faint(value)
    if prop in ("width", "height"):
        return at_most(value, 2)
    if prop in ("max-width", "max-height"):
        return at_most(value, 2)
    return False


def _selectors(text: bytes) -> list[bytes]:
    """A selector list's selectors: split at the commas outside brackets and parentheses."""
    if b"(" not in text and b"[" not in text:
        return [s for s in (part.strip() for part in text.split(b",")) if s]
    out, depth, start = [], 0, 0
    for i, byte in enumerate(text):
        if byte in b"([":
            depth += 1
        elif byte in b")]":
            depth = max(0, depth - 1)
        elif byte == 0x2C and not depth:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return [s for s in out if s]


def _plain_escape(m: re.Match[bytes]) -> bytes:
    """An escape in a selector as a name's byte where it is one (the whitespace that ends
    a hex escape is no combinator: ``i\\6d g`` is ``img``), else in its six-digit form,
    which ends by itself (no whitespace, no comma or ``:`` to split a selector at)."""
    text = css_unescape(m.group().decode("latin-1"))
    if len(text) == 1 and (text.isalnum() or text in "-_") and text.isascii():
        return text.lower().encode()
    if len(text) == 1 and not text.isascii():
        return text.encode("utf-8").lower()
    return b"".join(b"\\%06x" % ord(c) for c in text)


_ESCAPES = re.compile(_ESCAPE)


def _name(raw: bytes) -> bytes:
    """A class or id name with its escapes decoded (UTF-8, lower-cased: as a ``class``
    value stands in the lower-cased view of a UTF-8 part)."""
    if b"\\" not in raw:
        return raw
    return css_unescape(raw.decode("utf-8", "replace")).lower().encode("utf-8", "replace")


def _specificity(text: bytes) -> tuple[int, int, int]:
    """Ids, classes (attributes, pseudo-classes), types in a compound or selector text."""
    counts = [0, 0, 0]
    for m in _PIECE.finditer(text):
        if m.group(3) is not None:
            counts[0] += 1
        elif m.group(1) is not None:
            counts[2] += m.group(1) != b"*"
        elif m.group(6) == b"where":
            continue
        elif m.group(6) in (b"not", b"is", b"has") and m.group(7):
            inner = [_specificity(a) for a in _selectors(m.group(7)[1:-1])]
            best = max(inner, default=(0, 0, 0))
            counts = [x + y for x, y in zip(counts, best, strict=True)]
        elif m.group(5) != b"::":
            counts[1] += 1
    return counts[0], counts[1], counts[2]


def _compound(selector: bytes) -> _Compound | bytes | None:
    """The last compound of a selector (None: nothing of the element named, a state or a
    pseudo-element, or a selector not read)."""
    selector = selector.replace(b"*|", b"")  # (any namespace: HTML's)
    parts = [p for p in _COMBINATOR.split(selector) if p]
    if not parts or _STATE.search(_NOT.sub(b"", selector)):
        return None
    last = parts[-1]
    tag: bytes | None = None
    classes: set[bytes] = set()
    ids: set[bytes] = set()
    attributes: set[bytes] = set()
    exact = len(parts) == 1
    counts = [0, 0, 0]
    pos = 0
    while pos < len(last):
        m = _PIECE.match(last, pos)
        if m is None or m.end() == pos:
            return _UNREAD  # not understood (a namespace, a bad selector): no rule
        pos = m.end()
        if m.group(1) is not None:
            if m.start():
                return None  # a type selector only first
            tag = None if m.group(1) == b"*" else _name(m.group(1))
            counts[2] += tag is not None
        elif m.group(2) is not None:
            classes.add(_name(m.group(2)))
            counts[1] += 1
        elif m.group(3) is not None:
            ids.add(_name(m.group(3)))
            counts[0] += 1
        elif m.group(4) is not None:
            attributes.add(m.group(4))
            counts[1] += 1
            exact = exact and m.group().rstrip(b"]").strip(b"[\t\n\f\r ") == m.group(4)
        else:
            name = m.group(6)
            if m.group(5) == b"::" or name in (b"before", b"after", b"first-line",
                                               b"first-letter"):
                return None
            if name in (b"not", b"is", b"has", b"where") and m.group(7):
                if name != b"where":  # the most specific of its arguments
                    inner = [_specificity(a) for a in _selectors(m.group(7)[1:-1])]
                    counts = [x + y for x, y in zip(counts, max(inner, default=(0, 0, 0)),
                                                    strict=True)]
            else:
                counts[1] += 1
            exact = False
    if (not classes and not ids and not (tag or attributes)) or (
            len(parts) > 1 and not classes and not ids and tag not in _LOADING):
        return None  # "img.x + div", "td > p": a container in a context only (not read)
    for part in parts[:-1]:  # the specificity is the whole selector's
        counts = [x + y for x, y in zip(counts, _specificity(part), strict=True)]
    return _Compound(tag, frozenset(classes), frozenset(ids), frozenset(attributes), exact,
                     (counts[0], counts[1], counts[2]))
