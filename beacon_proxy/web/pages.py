"""The recipient's preference page, rendered on the server in English or Japanese.

A recipient reaches it from a link in a newsletter, often on a phone and
sometimes through a forwarded message, so the page is a plain HTML document:
no cookies, no scripts, nothing from another host (inline CSS, system fonts),
a strict Content-Security-Policy (the one ``<style>`` element is allowed by
its SHA-256 hash, nothing else), every action a POSTed form that works by
keyboard and carries the page's form token (``View.form``).  The address
shows masked (``a***@example.org``): enough for the owner to recognise it,
not enough to harvest from a forwarded link.

Texts are data (``beacon_proxy/data/pages/<lang>.toml``, one file per
language, same keys), the HTML shell is ``page.html``; every value put into
the page is escaped here.

    >>> choose_language(None, "fr-CH, ja;q=0.9, en;q=0.8", "en")
    'ja'
    >>> choose_language("en", "ja", "ja")
    'en'
    >>> mask_address("ann@example.org")
    'a***@example.org'
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import string
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["ACTIONS", "FORM_FIELD", "LANGUAGES", "PAGE_HEADERS", "View", "choose_language",
           "invalid_page", "mask_address", "preferences_page", "read_texts", "texts"]

LANGUAGES = ("en", "ja")
# The page actions, in the order the page offers them (the POSTed ``action`` field).
ACTIONS = ("stop-tracking", "allow-tracking", "suspend-list", "suspend-all", "resume")
FORM_FIELD = "form"  # the form token's field in every page form


@cache
def _shell_text() -> str:
    return resources.files("beacon_proxy").joinpath("data/pages/page.html").read_text("utf-8")


def _style_hash() -> str:
    """The CSP source of the shell's one ``<style>`` element: ``'sha256-...'``."""
    styles = re.findall(r"<style>(.*?)</style>", _shell_text(), re.DOTALL)
    if len(styles) != 1 or "$" in styles[0]:
        raise ValueError("pages/page.html: expected one fixed <style> element")
    digest = hashlib.sha256(styles[0].encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode('ascii')}'"


PAGE_HEADERS = {
    "Content-Security-Policy": f"default-src 'none'; style-src {_style_hash()}; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Vary": "Accept-Language",
}
_MAX_ACCEPT = 1000  # characters of Accept-Language looked at
_MAX_RANGES = 32


@dataclass(frozen=True, slots=True)
class View:
    """What the page shows about one recipient and the token's list."""

    address: str
    list_id: str | None
    tracking: bool  # read-tracking allowed (granted, or unknown with a granted default)
    list_suspended: bool
    all_suspended: bool
    form: str = ""  # the form token every action sends back (Tokens.form_token)


def _quality(params: list[str]) -> float | None:
    for p in params:
        name, _, value = p.partition("=")
        if name.strip().lower() == "q":
            try:
                q = float(value.strip())
            except ValueError:
                return None
            return q if 0.0 <= q <= 1.0 else None
    return 1.0


def choose_language(query: str | None, accept: str | None, default: str) -> str:
    """``?lang=``, else the best of ``Accept-Language`` (q-values), else ``default``."""
    if query in LANGUAGES:
        return query
    best, best_q = default, 0.0
    for item in (accept or "")[:_MAX_ACCEPT].split(",")[:_MAX_RANGES]:
        tag, *params = item.split(";")
        primary = tag.strip().lower().split("-", 1)[0]
        q = _quality(params)
        if q is None or q <= best_q:
            continue
        if primary in LANGUAGES:
            best, best_q = primary, q
        elif primary == "*":
            best, best_q = default, q
    return best


def mask_address(address: str) -> str:
    """The first character of the local part, ``***``, and the domain."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "***"
    return f"{local[0]}***@{domain}"


def read_texts(folder: str, lang: str, what: str) -> dict[str, str]:
    """The strings of one shipped language, ``data/<folder>/<lang>.toml`` (``ValueError``
    for a language not shipped or a value that is not a string); ``what`` names them."""
    if lang not in LANGUAGES:
        raise ValueError(f"no {what} texts for language {lang!r}")
    raw = resources.files("beacon_proxy").joinpath(f"data/{folder}/{lang}.toml").read_text("utf-8")
    doc = tomllib.loads(raw)
    if not all(isinstance(v, str) for v in doc.values()):
        raise ValueError(f"{folder}/{lang}.toml: every value must be a string")
    return dict(doc)


@cache
def texts(lang: str) -> dict[str, str]:
    """The preference page's strings of one language."""
    return read_texts("pages", lang, "preference page")


@cache
def _shell() -> string.Template:
    return string.Template(_shell_text())


def _t(lang: str, key: str, **values: str) -> str:
    """One text, escaped, with escaped values filled in."""
    text = html.escape(texts(lang)[key])
    for name, value in values.items():
        text = text.replace("{" + name + "}", html.escape(value))
    return text


def _language_bar(lang: str) -> str:
    items = []
    for code in LANGUAGES:
        current = ' aria-current="true"' if code == lang else ""
        items.append(f'<li><a href="?lang={code}" hreflang="{code}" lang="{code}"{current}>'
                     f'{_t(code, "name")}</a></li>')
    return (f'<nav class="bar" aria-label="{_t(lang, "language")}"><ul>'
            f'{"".join(items)}</ul></nav>')


def _button(lang: str, action: str, form: str, *, quiet: bool = False) -> str:
    cls = ' class="quiet"' if quiet else ""
    key = action.replace("-", "_")
    return (f'<form method="post" action="?lang={lang}">'
            f'<input type="hidden" name="{FORM_FIELD}" value="{html.escape(form)}">'
            f'<input type="hidden" name="action" value="{action}">'
            f'<button type="submit"{cls}>{_t(lang, key)}</button>'
            "</form>")


def _card(lang: str, heading: str, badge: tuple[str, str], text: str,
          buttons: list[str]) -> str:
    label, style = badge  # style: yes (green), warn (amber) or off (grey)
    return (f'<section class="card" aria-labelledby="h-{heading}">'
            f'<div class="head"><h2 id="h-{heading}">{_t(lang, heading)}</h2>'
            f'<span class="badge {style}">{label}</span></div>'
            f"<p>{text}</p>"
            f'<div class="actions">{"".join(buttons)}</div></section>')


def _page(lang: str, title: str, body: str) -> str:
    return _shell().substitute(lang=lang, title=title, body=body)


def preferences_page(lang: str, view: View, done: tuple[str, bool] | None = None) -> str:
    """The page for ``view``; ``done`` is ``(action, changed)`` after a POSTed action."""
    parts = [_language_bar(lang), f'<h1>{_t(lang, "heading")}</h1>',
             f'<p class="who">{_t(lang, "for_address", address=mask_address(view.address))}'
             "<br>"
             + (_t(lang, "for_list", list=view.list_id) if view.list_id
                else _t(lang, "no_list"))
             + "</p>"]
    if done is not None:
        action, changed = done
        key = "done_" + action.replace("-", "_") if changed else "done_unchanged"
        parts.append(f'<p class="notice" role="status">{_t(lang, key)}</p>')
    tracking = "tracking_on" if view.tracking else "tracking_off"
    parts.append(_card(
        lang, "tracking_heading",
        (_t(lang, "badge_tracking_on" if view.tracking else "badge_tracking_off"),
         "warn" if view.tracking else "yes"),
        _t(lang, tracking),
        [_button(lang, "stop-tracking", view.form) if view.tracking
         else _button(lang, "allow-tracking", view.form, quiet=True)]))
    suspended = view.all_suspended or view.list_suspended
    if view.all_suspended:
        delivery = "delivery_all_off"
    else:
        delivery = "delivery_list_off" if view.list_suspended else "delivery_on"
    buttons = []
    if view.list_id and not suspended:
        buttons.append(_button(lang, "suspend-list", view.form))
    if not view.all_suspended:
        buttons.append(_button(lang, "suspend-all", view.form, quiet=bool(view.list_id)))
    if suspended:
        buttons.append(_button(lang, "resume", view.form, quiet=True))
    parts.append(_card(
        lang, "delivery_heading",
        (_t(lang, "badge_delivery_off" if suspended else "badge_delivery_on"),
         "off" if suspended else "yes"),
        _t(lang, delivery), buttons))
    parts.append(f'<p class="small">{_t(lang, "forwarded")}</p>'
                 f'<p class="small">{_t(lang, "privacy")}</p>')
    return _page(lang, _t(lang, "title"), "\n".join(parts))


def invalid_page(lang: str) -> str:
    """The one page for every bad token (forged, truncated, expired, other purpose)."""
    body = (f'{_language_bar(lang)}<h1>{_t(lang, "invalid_heading")}</h1>'
            f'<section class="card"><p>{_t(lang, "invalid_text")}</p></section>'
            f'<p class="small">{_t(lang, "privacy")}</p>')
    return _page(lang, _t(lang, "invalid_title"), body)
