"""Footer texts: the shipped files load, and bad edits fail at load with the file and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from beacon_proxy.rewrite.charsets import encode_text
from beacon_proxy.rewrite.footertext import FooterText, FooterTexts

HTML = '<p style="color:#595959">Hi <a href="{url}">prefs</a></p>'


def test_shipped_texts_are_english_and_japanese_in_every_japanese_charset() -> None:
    texts = FooterTexts.load()
    assert texts.languages == {"en", "ja"}
    assert "Stop read-tracking or suspend delivery" in texts.get("en").html
    for charset in ("iso-2022-jp", "shift_jis", "euc-jp"):
        for template in (texts.get("ja").html, texts.get("ja").text):
            assert b"&#" not in encode_text(template, charset), charset  # JIS X 0208 only
    assert texts.get("fr") == texts.get("en")


def _write(directory: Path, name: str, content: str) -> None:
    (directory / name).write_text(content, "utf-8")


def _toml(html: str = HTML, text: str = "Prefs: {url}") -> str:
    return f"html = '''{html}'''\ntext = '''{text}'''\n"


def test_load_from_a_directory(tmp_path: Path) -> None:
    _write(tmp_path, "en.toml", _toml())
    _write(tmp_path, "de.toml", _toml(text="Einstellungen: {url}"))
    _write(tmp_path, "README", "not a text")
    texts = FooterTexts.load(tmp_path)
    assert texts.languages == {"en", "de"}
    assert texts.get("de") == FooterText(HTML, "Einstellungen: {url}")


@pytest.mark.parametrize(("files", "message"), [
    ({"ja.toml": _toml()}, "need English"),
    ({"en.toml": _toml(text="Préférences : {url}")}, "must be ASCII"),
    ({"en.toml": _toml(text="no link")}, r"en.toml: the text template must hold \{url\}"),
    ({"en.toml": _toml(html=HTML + "{url}")}, "exactly once"),
    ({"en.toml": _toml(html='<img src="https://t.example/p.gif">{url}')}, "must not load"),
    ({"en.toml": _toml(html='<p style="background:url(x)">{url}</p>')}, "must not load"),
    ({"en.toml": _toml(html="<link rel=stylesheet href=x>{url}")}, "must not load"),
    ({"en.toml": _toml(text="x" * 600 + "{url}")}, "longer than 500 bytes"),
    ({"en.toml": "html = '{url}'\n"}, "en.toml: missing key 'text'"),
    ({"en.toml": "html = 1\ntext = '{url}'\n"}, "must be strings"),
    ({"en.toml": "html = \n"}, "en.toml: "),
    ({"en.toml": _toml(), "EN_gb.toml": _toml()}, "not a language code"),
])
def test_bad_texts_are_refused_with_the_reason(tmp_path: Path, files: dict[str, str],
                                               message: str) -> None:
    for name, content in files.items():
        _write(tmp_path, name, content)
    with pytest.raises(ValueError, match=message):
        FooterTexts.load(tmp_path)
