from __future__ import annotations

import hashlib
import json
import random
import re
import string
from pathlib import Path

import pytest

from beacon_proxy.cli.main import main
from beacon_proxy.rewrite.html import scan_html

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
    assert "no messages found" in capsys.readouterr().err


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


@pytest.mark.parametrize("policy", ["refused", "granted"])
def test_scan_says_a_refused_copy_loses_its_read_receipt_request(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], policy: str) -> None:
    mail = _eml(tmp_path / "n.eml", "<p>Hi</p>")
    mail.write_bytes(b"Disposition-Notification-To: news@shop.example\n" + mail.read_bytes())
    out = tmp_path / "copy.eml"
    assert main(["scan", str(mail), "--json", "--policy", policy, "--output", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    refused = policy == "refused"
    assert report["read_receipt"] == ("removed" if refused else None)
    assert (b"Disposition-Notification-To" in out.read_bytes()) is not refused


@pytest.mark.parametrize("policy", ["refused", "granted"])
def test_scan_says_what_a_refused_copy_s_calendar_lost(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], policy: str) -> None:
    mail = tmp_path / "invite.eml"
    mail.write_bytes(
        b"From: news@shop.example\nTo: ann@example.org\nSubject: Launch\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/alternative; boundary="b"\n\n--b\n'
        b"Content-Type: text/plain\n\nJoin us.\n--b\nContent-Type: text/calendar; "
        b"method=REQUEST\n\nBEGIN:VCALENDAR\nBEGIN:VEVENT\n"
        b'X-ALT-DESC;FMTTYPE=text/html:<img src="' + PIXEL_URL.encode() + b'">\n'
        b"DESCRIPTION:Join us.\nEND:VEVENT\nEND:VCALENDAR\n--b--\n")
    out = tmp_path / "copy.eml"
    assert main(["scan", str(mail), "--json", "--policy", policy, "--output", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    refused = policy == "refused"
    assert report["outcome"] == ("stripped" if refused else "rewritten")
    assert report["calendar_loads"] == (1 if refused else 0)
    assert (PIXEL_URL.encode() in out.read_bytes()) is not refused


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


# -- campaign diffing: several copies of one campaign --------------------------------------

TEMPLATES = Path("/work/shared/data/templates")


def _campaign_copy(path: Path, name: str, html: str, subject: str = "Deals for {name}") -> Path:
    path.write_bytes(
        (f"From: Shop <news@shop.example>\r\nTo: {name} <{name.lower()}@example.org>\r\n"
         f"Subject: {subject.format(name=name)}\r\nMIME-Version: 1.0\r\n"
         "Content-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n").encode())
    return path


def _ids(n: int) -> list[str]:
    rnd = random.Random(3)
    return ["".join(rnd.choice(string.ascii_lowercase) for _ in range(8)) + str(10 + k)
            for k in range(n)]


def _shop(name: str, pid: str) -> str:
    return (f"<p>Hi {name}</p><img src=\"https://cdn.shop.example/banner.png\" width=\"600\">"
            f"<img src=\"https://img.shop.example/hero/{pid}.jpg\" width=\"600\" alt=\"Hero\">"
            "<img src=\"https://cdn.shop.example/a/boots.jpg\" width=\"200\">")


def test_scan_diffs_the_copies_of_a_campaign(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    names = ["Ann", "Bob", "Cleo", "Dara", "Eve", "Finn", "Gus", "Hana", "Ivo", "Jo", "Kai",
             "Lea"]
    ids = _ids(len(names))
    for name, pid in zip(names, ids, strict=True):
        _campaign_copy(tmp_path / f"{name}.eml", name, _shop(name, pid))
    _campaign_copy(tmp_path / "other.eml", "Ann",  # another newsletter: not in the group
                   '<img src="https://img.books.example/x/q8f3k2m9z1.jpg" width="600">',
                   "Books of the week")
    out = tmp_path / "out"
    assert main(["scan", str(tmp_path), "--json", "--output", str(out)]) == 0
    reports = {Path(r["file"]).stem: r for r in map(json.loads,
                                                     capsys.readouterr().out.splitlines())}
    assert reports["other"]["campaign"] is None
    assert all(f["tracker"] is False for f in reports["other"]["findings"])
    for name, pid in zip(names, ids, strict=True):
        report = reports[name]
        assert report["campaign"]["copies"] == 12
        flagged = [f for f in report["findings"] if "campaign-diff" in f["reasons"]]
        assert [f["url"] for f in flagged] == [f"https://img.shop.example/hero/{pid}.jpg"]
        assert flagged[0]["action"] == "strip" and flagged[0]["tracker"] is True
        written = (out / f"{name}.eml").read_bytes()
        assert pid.encode() not in written and b"banner.png" in written
        assert b"boots.jpg" in written


def test_scan_table_names_the_campaign_and_a_single_file_is_as_before(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _campaign_copy(tmp_path / "a.eml", "Ann", _shop("Ann", "k3jdp9xqw2"))
    b = _campaign_copy(tmp_path / "b.eml", "Bob", _shop("Bob", "zr8tqw1vnc"))
    assert main(["scan", str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert text.count("diffed with 1 other") == 2 and "campaign-diff" in text
    assert main(["scan", str(a), "--json"]) == 0
    (report,) = map(json.loads, capsys.readouterr().out.splitlines())
    assert report["campaign"] is None
    assert all(not f["tracker"] for f in report["findings"])


def _inject(html: bytes, chosen: dict[int, str]) -> str:
    """The template with the URLs of the chosen remote references replaced."""
    refs = [r for r in scan_html(html).references if r.remote]
    out, last = [], 0
    for position in sorted(chosen, key=lambda p: refs[p].url_span[0]):
        start, end = refs[position].url_span
        out += [html[last:start], chosen[position].encode()]
        last = end
    out.append(html[last:])
    return b"".join(out).decode("utf-8")


@pytest.mark.parametrize("template", ["cerberus-responsive.html", "sg-special_sale.html"])
def test_two_real_copies_every_per_recipient_url_is_found(
        template: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html = (TEMPLATES / template).read_bytes()
    refs = [r for r in scan_html(html).references if r.remote]
    personal = [1, len(refs) - 1]  # the second and the last image
    if template.startswith("cerberus"):
        personal += [2, 3]  # the background image, in CSS and in VML
    expected: dict[str, set[str]] = {}
    for name, uid in (("Ann", "u7Hq2Lx9Pa"), ("Bob", "b4Nw8Kc1Rz")):
        chosen: dict[int, str] = {}
        for n, position in enumerate(personal):
            url = refs[position].url
            chosen[position] = (url + f"?sid={uid}" if n % 2 == 0
                                else url.rsplit("/", 1)[0] + f"/{uid}{n}.png")
        if template.startswith("cerberus"):
            chosen[3] = chosen[2]  # the VML twin of the CSS background
        expected[name] = set(chosen.values())
        _campaign_copy(tmp_path / f"{name}.eml", name, _inject(html, chosen))
    assert main(["scan", str(tmp_path), "--json"]) == 0
    for report in map(json.loads, capsys.readouterr().out.splitlines()):
        name = Path(report["file"]).stem
        flagged = {f["url"] for f in report["findings"] if "campaign-diff" in f["reasons"]}
        assert flagged == expected[name]
        assert all(f["action"] == "strip" for f in report["findings"]
                   if "campaign-diff" in f["reasons"])


# -- issue 14: inputs, outputs and the table ---------------------------------------------


def test_output_over_an_input_is_refused_without_in_place(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mail = _eml(tmp_path / "news.eml", f'<img src="{PIXEL_URL}" width="1" height="1">')
    original = mail.read_bytes()
    assert main(["scan", str(mail), "--output", str(mail)]) == 2
    assert "--in-place" in capsys.readouterr().err
    assert mail.read_bytes() == original
    # A directory output that would put a copy over an input: refused too.
    assert main(["scan", str(mail), str(_eml(tmp_path / "b.eml", "<p>b</p>")),
                 "--output", str(tmp_path)]) == 2
    assert mail.read_bytes() == original
    assert main(["scan", str(mail), "--output", str(mail), "--in-place"]) == 0
    assert PIXEL_URL.encode() not in mail.read_bytes()
    again = _eml(tmp_path / "again.eml", f'<img src="{PIXEL_URL}" width="1" height="1">')
    assert main(["scan", str(again), "--in-place"]) == 0
    assert PIXEL_URL.encode() not in again.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.eml", "b.eml", "news.eml"]


def test_a_directory_scan_takes_maildir_and_mbox_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    maildir = tmp_path / "outbox"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    _eml(maildir / "new" / "1700000000.M1P2.host", f'<img src="{PIXEL_URL}" width="1">')
    _eml(maildir / "cur" / "1700000001.M3P4.host:2,S", "<p>seen</p>")
    one = ("From: news@shop.example\nSubject: {n}\nContent-Type: text/html\n\n"
           "<p>{n}</p>\n>From the shop\n")
    (tmp_path / "archive.mbox").write_text(
        "".join(f"From news@shop.example Mon Jan  1 00:00:00 2024\n{one.format(n=n)}\n"
                for n in ("first", "second")))
    (tmp_path / "notes.txt").write_text("not a mail\n")
    assert main(["scan", str(tmp_path), "--json", "--output", str(tmp_path / "out")]) == 0
    labels = [json.loads(line)["file"] for line in capsys.readouterr().out.splitlines()]
    assert sorted(Path(label).name for label in labels) == [
        "1700000000.M1P2.host", "1700000001.M3P4.host:2,S", "archive.mbox#1",
        "archive.mbox#2"]
    second = (tmp_path / "out" / "archive.mbox.2.eml").read_bytes()
    assert b"Subject: second" in second and b"\nFrom the shop" in second
    assert b"From news@shop.example Mon" not in second
    assert main(["scan", str(maildir / "new")]) == 0
    assert "1 tracker(s)" in capsys.readouterr().out


@pytest.mark.parametrize(("content", "why"), [(b"", "empty"), (b"\n \n", "empty"),
                                              (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "binary")])
def test_an_empty_or_binary_file_is_not_a_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, why: str) -> None:
    path = tmp_path / "x.eml"
    path.write_bytes(content)
    assert main(["scan", str(path)]) == 1
    out = capsys.readouterr()
    assert "remote reference" not in out.out
    assert f"x.eml: not a message ({why}" in out.err


def test_the_reasons_column_marks_what_it_leaves_out(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mail = _eml(tmp_path / "r.eml", '<img src="https://u123.ct.sendgrid.net/wf/open?'
                                    'upn=ann%40example.org" width="1" height="1">')
    assert main(["scan", str(mail), "--recipient", "ann@example.org"]) == 0
    row = capsys.readouterr().out.splitlines()[-1]
    assert "rule:SendGrid,tiny,+2 " in row
    assert "identifies-reci " not in row


# -- HTML files: a template or a newsletter tool's export, no header section ----------------

HTML_DOC = (f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n</head>\n<body>\n'
            f'<p>Caf\u00e9 deals</p>\n<img src="{PIXEL_URL}" width="1" height="1">\n'
            '<img src="https://cdn.shop.example/logo.png" width="200">\n</body>\n</html>\n')


def test_an_html_file_is_scanned_and_written_back_as_html(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "news.html"
    page.write_bytes(HTML_DOC.encode())
    out = tmp_path / "clean.html"
    assert main(["scan", str(page), "--json", "--output", str(out)]) == 0
    (got,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert got["file"] == str(page) and got["outcome"] == "stripped"
    pixel = next(f for f in got["findings"] if f["url"] == PIXEL_URL)
    assert pixel["tracker"] and pixel["action"] == "strip"
    written = out.read_bytes()
    assert written.startswith(b"<!DOCTYPE html>\n<html>")  # a document, no header section
    assert PIXEL_URL.encode() not in written and b"/u/" in written  # the footer's link
    assert "Caf\u00e9 deals".encode() in written and b"\r\n" not in written  # bytes kept
    # Everything before the pixel is byte for byte the input's.
    assert written.startswith(HTML_DOC.encode()[: HTML_DOC.encode().index(b"<img")])
    assert main(["scan", str(page), "--in-place"]) == 0
    link = re.compile(rb"/u/[\w-]+")  # a new token each run (no [tokens] secret configured)
    assert link.sub(b"/u/T", page.read_bytes()) == link.sub(b"/u/T", written)


@pytest.mark.parametrize(("raw", "charset"), [
    (HTML_DOC.replace('<meta charset="utf-8">', "").encode("utf-8"), "utf-8"),
    (b"\xef\xbb\xbf" + HTML_DOC.replace('<meta charset="utf-8">', "").encode(), "utf-8"),
    (b"\xff\xfe" + HTML_DOC.replace('<meta charset="utf-8">', "").encode("utf-16-le"),
     "utf-16le"),
    (b"\xfe\xff" + HTML_DOC.replace('<meta charset="utf-8">', "").encode("utf-16-be"),
     "utf-16be"),
    (HTML_DOC.replace('<meta charset="utf-8">', "").encode("utf-32"), "utf-32le"),
    (HTML_DOC.replace("utf-8", "iso-8859-1").encode("latin-1"), "iso-8859-1"),
    (HTML_DOC.replace('<meta charset="utf-8">', "").encode("latin-1"), "windows-1252"),
])
def test_an_html_files_charset_is_its_bom_its_meta_or_what_its_bytes_are(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bytes, charset: str) -> None:
    from beacon_proxy.cli.scanning import _html_message

    message = _html_message(raw, named_html=False)
    assert message is not None
    assert f"Content-Type: text/html; charset={charset}\r\n".encode() in message
    page = tmp_path / "page"  # no suffix: found by its content
    page.write_bytes(raw)
    out = tmp_path / "out.html"
    assert main(["scan", str(page), "--output", str(out)]) == 0
    assert "1 tracker(s)" in capsys.readouterr().out
    written = out.read_bytes()
    text = written.decode(charset if charset.startswith("utf") else "latin-1")
    assert "Caf\u00e9 deals" in text and PIXEL_URL not in text
    assert written.startswith(raw[:4])  # the file's own bytes: its BOM, its encoding


def test_a_directory_scan_takes_html_files_and_a_named_fragment(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.html").write_text(HTML_DOC)
    (tmp_path / "b.htm").write_text(f'<img src="{PIXEL_URL}" width="1" height="1">')  # a fragment
    (tmp_path / "notes.txt").write_text(f'<img src="{PIXEL_URL}" width="1" height="1">')
    (tmp_path / "c.eml").write_text("From: a@shop.example\n\n<p>plain</p>\n")
    assert main(["scan", str(tmp_path), "--json"]) == 0
    files = {Path(g["file"]).name: g for g in map(json.loads, capsys.readouterr().out.splitlines())}
    assert sorted(files) == ["a.html", "b.htm", "c.eml"]
    assert [f["action"] for f in files["b.htm"]["findings"]] == ["strip"]
    # A fragment is HTML only by its name: given directly as .txt it is no message.
    assert main(["scan", str(tmp_path / "notes.txt")]) == 1
    assert "not a message (no header section)" in capsys.readouterr().err


def test_an_html_file_that_is_not_utf16_is_no_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "x.html"
    page.write_bytes(b"\xff\xfe<\x00h\x00\x00\xd8")  # a UTF-16 BOM, then a lone surrogate
    assert main(["scan", str(page)]) == 1
    assert "x.html: not a message (binary data)" in capsys.readouterr().err


@pytest.mark.skipif(not TEMPLATES.is_dir(), reason=f"no shared templates at {TEMPLATES}")
def test_real_templates_scanned_as_html_files_change_only_by_the_footer(tmp_path: Path) -> None:
    for template in sorted(TEMPLATES.glob("*.html")):
        out = tmp_path / template.name
        # Granted: trackers are rewritten, not removed; the footer is the only insertion.
        assert main(["scan", str(template), "--policy", "granted", "--output", str(out)]) == 0
        # A granted tracker's first-party URL stands in for the vendor's.
        trackers = re.compile(rb'(?:src|href)="[^"]*"')
        original = trackers.sub(b"U", template.read_bytes())
        written = trackers.sub(b"U", out.read_bytes())
        # The footer is one inserted block: what is before and after it is the input's.
        head = len(_common_prefix(original, written))
        tail = len(_common_prefix(original[head:][::-1], written[head:][::-1]))
        assert head + tail == len(original), template.name
        assert b"You receive this newsletter" in written[head: len(written) - tail]


def _common_prefix(a: bytes, b: bytes) -> bytes:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]
