"""The footer's wording per language, read from data files (``beacon_proxy/data/footer``).

Wording is data, not code (style guide point 7): one TOML file per language,
named by its language code (``en.toml``, ``ja.toml``), each with an ``html``
and a ``text`` template holding the recipient's link as ``{url}`` exactly once.
The templates are checked when they are loaded, so a bad edit fails at start-up
with the file's name and the reason, never on a recipient's copy:

* English must be there, and its text must be ASCII: it is what a text part gets
  when its charset cannot hold the message's language;
* the HTML must not load anything (no ``src``, ``url(``, ``@import``,
  ``<link``, ...): a footer must not become a beacon itself.

>>> texts = FooterTexts.load()
>>> sorted(texts.languages), "{url}" in texts.get("ja").html
(['en', 'ja'], True)
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Final

__all__ = ["FooterText", "FooterTexts"]

_LANGUAGE: Final = re.compile(r"[a-z]{2,3}")
_REMOTE: Final = re.compile(
    r"\b(?:src|srcset|lowsrc|background|poster|data|xlink:href)\s*=|url\s*\(|@import|"
    r"<\s*(?:link|img|image|script|style|iframe|object|embed|video|audio|base|meta)\b",
    re.I,
)
_MAX_TEMPLATE: Final = 4000


@dataclass(frozen=True, slots=True)
class FooterText:
    """One language's templates: ``html`` (markup) and ``text`` (plain), ``{url}`` once each.

    Line breaks are LF here; the step writes each part's own line ending.
    """

    html: str
    text: str

    def __post_init__(self) -> None:
        for name, template in (("html", self.html), ("text", self.text)):
            if template.count("{url}") != 1:
                raise ValueError(f"the {name} template must hold {{url}} exactly once")
            if "\r" in template or len(template) > _MAX_TEMPLATE:
                raise ValueError(f"the {name} template must be at most {_MAX_TEMPLATE} "
                                 "characters, with LF line breaks")
            if any(len(line.encode("utf-8")) > 500 for line in template.split("\n")):
                raise ValueError(f"the {name} template has a line longer than 500 bytes")
        if _REMOTE.search(self.html):
            raise ValueError("the html template must not load anything "
                             "(no src, url(), @import, <img>, <link>, ...)")


@dataclass(frozen=True, slots=True)
class FooterTexts:
    """The footer texts by language code; English is always there (the fallback)."""

    by_language: Mapping[str, FooterText]

    def __post_init__(self) -> None:
        english = self.by_language.get("en")
        if english is None:
            raise ValueError("footer texts need English ('en'): the fallback of every language")
        if not english.text.isascii():
            raise ValueError("the English text template must be ASCII (any charset holds it)")
        for language in self.by_language:
            if not _LANGUAGE.fullmatch(language):
                raise ValueError(f"footer language {language!r} is not a language code")

    @property
    def languages(self) -> frozenset[str]:
        return frozenset(self.by_language)

    def get(self, language: str) -> FooterText:
        """The texts for ``language`` (English when there are none)."""
        return self.by_language.get(language) or self.by_language["en"]

    @classmethod
    def load(cls, directory: Path | Traversable | None = None) -> FooterTexts:
        """Read every ``<language>.toml`` in ``directory`` (the shipped texts by default).

        Raises :class:`ValueError` naming the file for a missing key, a wrong type or
        a template that fails the checks above.
        """
        where = files("beacon_proxy").joinpath("data", "footer") if directory is None else (
            directory)
        texts: dict[str, FooterText] = {}
        for entry in sorted(where.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".toml"):
                continue
            language = entry.name.removesuffix(".toml")
            try:
                data = tomllib.loads(entry.read_text("utf-8"))
                templates = {key: data[key] for key in ("html", "text")}
                if not all(isinstance(value, str) for value in templates.values()):
                    raise ValueError("'html' and 'text' must be strings")
                texts[language] = FooterText(templates["html"].strip("\n"),
                                             templates["text"].strip("\n"))
            except KeyError as exc:
                raise ValueError(f"footer text {entry.name}: missing key {exc}") from None
            except (ValueError, tomllib.TOMLDecodeError) as exc:
                raise ValueError(f"footer text {entry.name}: {exc}") from None
        return cls(texts)
