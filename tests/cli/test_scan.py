from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from beacon_proxy.cli.main import main

PIXEL_URL = "https://t.shop.example/b/42.gif?u=42"


def _eml(path: Path, html: str) -> Path:
    path.write_bytes(
        (
            "From: news@shop.example\nTo: ann@example.org\nSubject: Deals\n"
            "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n" + html + "\n"
        ).encode()
    )
    return path


@pytest.fixture
def newsletters(tmp_path: Path) -> Path:
    d = tmp_path / "mails"
    (d / "sub").mkdir(parents=True)
    _eml(d / "a.eml", f'<p>Hi</p><img src="{PIXEL_URL}" width="1" height="1">'
                      '<img src="https://cdn.shop.example/logo.png" width="200">')
    digest = hashlib.md5(b"ann@example.org").hexdigest()
    _eml(d / "sub" / "b.eml", f'<img src="https://img.shop.example/b?h={digest}" width="300" '
                              'alt="Your deals">')
    (d / "notes.txt").write_text("not a mail")
    return d


def test_json_one_object_per_file(newsletters: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(newsletters), "--json", "--recipient", "ann@example.org"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    a, b = (json.loads(line) for line in lines)
    assert a["file"].endswith("a.eml") and a["policy"] == "refused"
    pixel = next(f for f in a["findings"] if f["url"] == PIXEL_URL)
    assert pixel == {"url": PIXEL_URL, "element": "img", "tracker": True, "vendor": None,
                     "reasons": ["tiny"], "action": "strip"}
    logo = next(f for f in a["findings"] if f["url"].endswith("logo.png"))
    assert logo["tracker"] is False and logo["action"] == "keep"
    (personal,) = b["findings"]
    assert personal["tracker"] and "address-md5" in personal["reasons"]


def test_table_and_output(newsletters: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "clean.eml"
    assert main(["scan", str(newsletters / "a.eml"), "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1 tracker(s)" in text and "strip" in text and PIXEL_URL in text
    assert PIXEL_URL.encode() not in out.read_bytes()
    assert b"logo.png" in out.read_bytes()


def test_granted_policy_rewrites(newsletters: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    outdir = tmp_path / "out"
    assert main(["scan", str(newsletters), "--policy", "granted", "--output", str(outdir),
                 "--json"]) == 0
    capsys.readouterr()
    rewritten = (outdir / "a.eml").read_bytes()
    assert PIXEL_URL.encode() not in rewritten
    assert b"/o/" in rewritten


def test_unreadable_and_missing_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(tmp_path / "missing.eml")]) == 1
    assert "missing.eml" in capsys.readouterr().err
    assert main(["scan", str(tmp_path)]) == 1
    assert "no .eml files" in capsys.readouterr().err


def test_broken_message_is_reported_not_fatal(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.eml"
    bad.write_bytes(b"Content-Type: multipart/mixed; boundary=x\n\n--y\n<img src='a'>\n")
    assert main(["scan", str(bad), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["findings"] == [] and result["problems"]


def test_scan_reports_the_copy_the_relay_would_send(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    deep = tmp_path / "deep.eml"
    head = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n" for i in range(120))
    deep.write_bytes((head + f'Content-Type: text/html\n\n<img src="{PIXEL_URL}" width="1">'
                      '<img src="https://cdn.shop.example/logo.png" width="200">\n').encode())
    out = tmp_path / "out.eml"
    assert main(["scan", str(deep), "--json", "--output", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["outcome"] == "fallback"
    assert any("deeper than 100" in p for p in result["problems"])
    assert PIXEL_URL.encode() not in out.read_bytes()


def test_scan_never_reports_an_action_it_did_not_apply(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    long_line = "<p>" + "x" * 920 + f'<img src="{PIXEL_URL}" width="1" height="1"></p>'
    mail = tmp_path / "long.eml"
    mail.write_bytes(("From: news@shop.example\nMIME-Version: 1.0\nContent-Type: text/html\n"
                      "Content-Transfer-Encoding: 8bit\n\n" + long_line + "\n").encode())
    out = tmp_path / "out.eml"
    assert main(["scan", str(mail), "--json", "--policy", "granted", "--output", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["outcome"] == "rewritten"
    assert [f["action"] for f in result["findings"]] == ["rewrite"]
    written = out.read_bytes()
    assert PIXEL_URL.encode() not in written
    assert b"Content-Transfer-Encoding: quoted-printable" in written


def test_output_is_the_copy_a_recipient_gets(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    mail = _eml(tmp_path / "n.eml", f'<html><body><p>Hi</p><img src="{PIXEL_URL}" width="1">'
                                    "</body></html>")
    out = tmp_path / "copy.eml"
    assert main(["scan", str(mail), "--json", "--recipient", "ann@example.org",
                 "--output", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["footer"] == {"html": 1, "text": 0, "language": "en"}
    assert report["unsubscribe"] == "added"
    copy = out.read_bytes()
    link = copy.split(b"List-Unsubscribe: <", 1)[1].split(b">", 1)[0]
    assert b"/u/" in link
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\n" in copy  # LF like the file
    body = copy.split(b"\n\n", 1)[1]
    assert body.index(link) < body.index(b"</body>")  # the footer, before </body>
    assert PIXEL_URL.encode() not in copy


def test_layout_images_are_inlined_and_not_counted(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    layout = "https://inxmail.example/img/gmail_fix.gif"
    mail = _eml(tmp_path / "l.eml", f'<img src="{layout}" width="780" height="1">'
                                    f'<img src="{PIXEL_URL}" width="1" height="1">')
    out = tmp_path / "out.eml"
    assert main(["scan", str(mail), "--json", "--output", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    found = {f["url"]: f for f in result["findings"]}
    assert found[layout] == {"url": layout, "element": "img", "tracker": False, "vendor": None,
                             "reasons": ["tiny-layout"], "action": "inline"}
    assert found[PIXEL_URL]["action"] == "strip"
    written = out.read_bytes()
    assert layout.encode() not in written and b'width="780" height="1"' in written
    assert main(["scan", str(mail), "--json", "--policy", "granted"]) == 0
    granted = json.loads(capsys.readouterr().out)
    assert {f["url"]: f["action"] for f in granted["findings"]}[layout] == "keep"


def test_the_proxys_own_open_pixel_is_no_vendor(tmp_path: Path, config: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # A copy that comes through again (forwarded): our own /o/ pixel looks like Epsilon's
    # long-token pixel, but it is under web.public_url.
    config.write_text(config.read_text() + '[web]\npublic_url = "https://links.example.org"\n')
    own = "https://links.example.org/o/An6_Q5G5qkzkGRQOstVSe-ruOAoVnFoA7XtiRedwLVqhwjz5Tq"
    other = own.replace("links.example.org", "t.shop.example")
    eml = _eml(tmp_path / "fwd.eml", f'<img src="{own}" width="600"><img src="{other}" '
                                     'width="600">')
    assert main(["scan", str(eml), "--json"]) == 0
    findings = {f["url"]: f for f in json.loads(capsys.readouterr().out)["findings"]}
    assert findings[own]["vendor"] is None and findings[own]["tracker"] is False
    assert findings[other]["vendor"] == "Epsilon"
