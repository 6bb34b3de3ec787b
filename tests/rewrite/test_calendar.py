"""Calendar parts: a refused copy's invitation loads nothing; the rest stays as it was."""

from __future__ import annotations

import base64
import contextlib
import email
import email.policy
import quopri
import re
from email.message import EmailMessage

import icalendar
import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.calendar import is_calendar, neutralise_calendar
from beacon_proxy.rewrite.copies import CopyPolicy, Outcome, decide, prepare
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.fallback import neutralise_message
from beacon_proxy.rewrite.markup import MAX_CONSTRUCTS
from beacon_proxy.rewrite.mime import parse_message
from beacon_proxy.rewrite.rules import load_rules
from tests.rewrite import oracle

ENGINE = Engine(load_rules())
RCPT = "reader@example.org"
PIXEL = "https://trk.example/open/p.gif"


def ics(*lines: str, eol: str = "\r\n") -> bytes:
    body = ["BEGIN:VCALENDAR", "VERSION:2.0", "METHOD:REQUEST", "BEGIN:VEVENT",
            "UID:1@example.org", "DTSTART:20270101T100000Z", *lines, "END:VEVENT",
            "END:VCALENDAR"]
    return (eol.join(body) + eol).encode("utf-8")


def neutral(data: bytes, label: str = "utf-8") -> tuple[bytes, int]:
    result = neutralise_calendar(data, label)
    assert not isinstance(result, str), result
    return result


# -- an independent reader: what clients fetch from a calendar --------------------------------
# icalendar (a lenient RFC 5545 parser, as Thunderbird's and Apple's are), and a naive reader
# in several variants: lines split at any line end str.splitlines knows, unfolded three
# ways, split at the first ":" and ";", "\n" decoded before or after "\\", a line with
# "quoted-printable" anywhere joined to the next when it ends in "=" (vobject) and values
# decoded by their ENCODING.  A value loads when html5lib finds a remote load in it (any
# client may show it as HTML); a fetched-URI property when its value is not inline.

_FETCHED = {"IMAGE", "ATTACH", "TZURL", "SOURCE", "STRUCTURED-DATA"}
_LOCAL = ("cid:", "mid:", "data:")


def _markup_loads(value: str) -> bool:
    return "<" in value and bool(oracle.loads(value, "html5lib"))


def _property_loads(name: str, params: dict[str, str], value: str) -> bool:
    name = name.rsplit(".", 1)[-1].strip().upper()
    if any(k.strip().upper() == "ALTREP" for k in params):
        return True
    encoding = next((v.strip().strip('"').upper() for k, v in params.items()
                     if k.strip().upper() == "ENCODING"), None)
    if encoding is None and any(k.strip().upper() == "QUOTED-PRINTABLE" for k in params):
        encoding = "QUOTED-PRINTABLE"
    binary = any(k.strip().upper() == "VALUE" and v.strip().upper() == "BINARY"
                 for k, v in params.items())
    if encoding in ("QUOTED-PRINTABLE", "B", "BASE64") and not (binary and name in _FETCHED):
        raw = value.encode("latin-1", "replace")
        with contextlib.suppress(ValueError):
            value = (quopri.decodestring(raw) if encoding == "QUOTED-PRINTABLE"
                     else base64.b64decode(raw + b"==")).decode("latin-1")
    if name in _FETCHED:
        return not binary and not value.strip().lower().startswith(_LOCAL)
    if name in ("X-ALT-DESC", "STYLED-DESCRIPTION") and re.match(
            r"\s*https?:", value, re.I):
        return True
    return _markup_loads(value)


def _naive(text: str, unfold: str, unescape_first: bool) -> list[str]:
    lines: list[str] = []
    for line in text.splitlines():
        if lines and line[:1] in (" ", "\t") and unfold != "none":
            lines[-1] += line[1:] if unfold == "rfc" else line
        elif not line and unfold == "cross-empty":
            continue
        elif (lines and lines[-1].endswith("=")
              and "quoted-printable" in lines[-1].lower()):
            lines[-1] = lines[-1] + "\n" + line  # vobject: a soft line break
        else:
            lines.append(line)
    found = []
    for line in lines:
        head, _, value = line.partition(":")
        name, *params = head.split(";")
        pairs = dict(p.partition("=")[::2] for p in params)
        if unescape_first:
            value = value.replace("\\n", "\n").replace("\\\\", "\\")
        else:
            value = value.replace("\\\\", "\\").replace("\\n", "\n")
        if _property_loads(name, pairs, value):
            found.append(line)
    return found


def _icalendar(text: str) -> list[str]:
    try:
        calendars = icalendar.Calendar.from_ical(text, multiple=True)
    except Exception:  # a reader that fails shows nothing
        return []
    found = []
    for calendar in calendars:
        for component in calendar.walk():
            for name, prop in component.property_items(recursive=False):
                params = {k: str(v) for k, v in getattr(prop, "params", {}).items()}
                value = prop.to_ical().decode("utf-8", "replace") if hasattr(
                    prop, "to_ical") else str(prop)
                if isinstance(prop, icalendar.vText):
                    value = str(prop)
                if _property_loads(name, params, value):
                    found.append(name)
    return found


def loads_left(data: bytes) -> list[str]:
    """What any of the readers fetches from the calendar ``data`` (UTF-8)."""
    text = data.decode("utf-8", "replace")
    found = [f"icalendar: {x}" for x in _icalendar(text)]
    for unfold in ("rfc", "keep-blank", "cross-empty", "none"):
        for first in (True, False):
            found += [f"{unfold}/{first}: {x}" for x in _naive(text, unfold, first)]
    return found


U = "https://trk.example/p"

HOSTILE: dict[str, bytes] = {
    "html": ics(f'X-ALT-DESC;FMTTYPE=text/html:<html><body><img src="{U}"></body></html>'),
    "html_css": ics(f'X-ALT-DESC:<p style="background:url({U})">'),
    "html_import": ics(f"x-alt-desc;fmttype=text/html:<style>@import '{U}';</style>"),
    "styled_uri": ics(f"STYLED-DESCRIPTION;VALUE=URI:{U}"),
    "comment_html": ics(f'COMMENT;FMTTYPE=text/html:<link rel=stylesheet href="{U}">'),
    "description_html": ics(f'DESCRIPTION:Hello\\n<img\\nsrc="{U}"> (online)'),
    "image": ics(f"IMAGE;VALUE=URI;DISPLAY=BADGE:{U}"),
    "attach": ics(f"ATTACH;FMTTYPE=image/png:{U}"),
    "attach_bare": ics(f"ATTACH:{U}"),
    "tzurl": ics(f"TZURL:{U}"),
    "source": ics(f"SOURCE;VALUE=URI:{U}"),
    "structured_data": ics(f"STRUCTURED-DATA;VALUE=URI:{U}"),
    "quoted_colon": ics(f'IMAGE;X=":{U}";Y=1:cid:logo@example.org'),
    "quoted_binary": ics(f'ATTACH;X=":";VALUE=BINARY;ENCODING=BASE64:{U}'),
    "unclosed_quote": ics(f'IMAGE;X="cid:{U}'),
    "altrep": ics(f'SUMMARY;LANGUAGE=en;ALTREP="{U}":Launch'),
    "altrep_folded": ics('SUMMARY;ALTREP="https://trk.exa\r\n mple/a";LANGUAGE=en:Launch'),
    "x_altrep": ics(f'SUMMARY;X-ALTREP="{U}";ALTREP="{U}":Launch'),
    "folded_html": ics(f'X-ALT-DESC;FMTTYPE=text/html:<p>Hi</p><img s\r\n rc="{U}">'),
    "cr_fold": ics(f'X-ALT-DESC;FMTTYPE=text/html:<img\r src="{U}">'),
    "blank_kept": ics(f'X-ALT-DESC;FMTTYPE=text/html:<img\r\n src="{U}">'),
    "empty_lines_fold": ics(f'X-ALT-DESC;FMTTYPE=text/html:<img\r\n\r\n  src="{U}">'),
    "empty_lines_name": ics(f"IM\r\n\r\n AGE;VALUE=URI:{U}"),
    "value_binary_fake": ics(f"IMAGE;X-VALUE=BINARY:{U}"),
    "value_binary_in_value": ics(f"ATTACH;X-FOO=value=binary:{U}"),
    "encoding_alone": ics(f"ATTACH;ENCODING=BASE64:{U}"),
    "group_prefix": ics(f"item1.IMAGE;VALUE=URI:{U}"),
    "vobject_join": ics(f'X-ALT-DESC;FMTTYPE=text/html:<img alt="quoted-printable=\r\n'
                        f'" src="{U}">'),
    "line_separator": ics(f"DESCRIPTION:hi\u2028IMAGE:{U}"),
    "vertical_tab": ics(f"DESCRIPTION:hi\x0bIMAGE:{U}"),
    "nel": ics(f"DESCRIPTION:hi\x85IMAGE:{U}"),
    "naive_unescape": ics(f'X-ALT-DESC;FMTTYPE=text/html:<img alt=x\\\\nsrc="{U}">'),
    "qp_value": ics("DESCRIPTION;ENCODING=QUOTED-PRINTABLE:=3Cimg s=",
                    f'rc=3D"{U}"=3E'),
    "qp_smuggled_line": ics("DESCRIPTION;ENCODING=QUOTED-PRINTABLE:hello=", f"IMAGE:{U}"),
    "qp_bare": ics(f'X-ALT-DESC;FMTTYPE=text/html;QUOTED-PRINTABLE:=3Cimg src=3D"{U}"=3E'),
    "base64_value": ics("DESCRIPTION;ENCODING=BASE64:"
                        + base64.b64encode(f'<img src="{U}">'.encode()).decode()),
    "qp_in_quotes": ics('DESCRIPTION;X=";QUOTED-PRINTABLE":hi=', f"IMAGE:{U}"),
    # session 26: a hex escape takes one blank as its end, so "ur\\6c" + blank + "(" is url(
    "escape_before_paren": ics(f'DESCRIPTION:<p style="background:ur&#92;6c({U})">Offers</p>'),
}


#: The second attack's cases (on the insertion-only version): other separators inside
#: HTML, a separator before "(", names readers clean up, parameters read otherwise.
SECOND: dict[str, bytes] = {
    "ff_in_html": ics(f'X-ALT-DESC;FMTTYPE=text/html:<img\x0csrc="{U}">'),
    "cr_in_html": ics(f'X-ALT-DESC;FMTTYPE=text/html:<img\rsrc="{U}">').replace(
        b"\r\n", b"\n"),
    "ls_in_alt": ics(f'DESCRIPTION:<img alt="\u2028" src="{U}">'),
    "ff_in_style": ics(f"DESCRIPTION:<style>\x0cp{{background:url({U})}}\x0c</style>"),
    "ff_before_paren": ics(f'DESCRIPTION:<p style="background:url\x0c({U})"><b>x</b>'),
    "blank_in_name": ics(f"IM AGE;VALUE=URI:{U}"),
    "tab_in_name": ics(f"AT\tTACH:{U}"),
    "nbsp_name": ics(f"\u00a0IMAGE;VALUE=URI:{U}"),
    "unit_separator_name": ics(f"IMAGE\x1f;VALUE=URI:{U}"),
    "escaped_colon_param": ics(f"IMAGE;X=a\\:cid:{U}"),
    "escaped_semicolon_param": ics(f"ATTACH;X=a\\;VALUE=BINARY:{U}"),
    "duplicate_value": ics(f"ATTACH;VALUE=BINARY;VALUE=URI:{U}"),
    "dotless_i": ics(f"\u0131MAGE;VALUE=URI:{U}"),
    "long_s": ics(f"\u017fOURCE:{U}"),
    "groups": ics(f"a.b.IMAGE:{U}"),
    "underscore_name": ics(f"STRUCTURED_DATA:{U}"),
    "caret_in_cn": ics(f"ORGANIZER;CN=\"<img^nsrc=^'{U}^'>\":mailto:a@example.org"),
    "qp_words_in_text": ics("DESCRIPTION:quoted-printable =3Cimg src=3D" + U + "=3E="),
    # the third attack (on the rebuild): a CSS escape that takes the blank before "(",
    # "\n" in a value that is not text
    "css_escape_blank": ics(f'DESCRIPTION:<p style="background:u&#92\\;72&#92\\;6c ({U})">'
                            "x</p>"),
    "escape_in_uid": ics(f"UID:<img\\nsrc={U}>"),
    "escape_in_mailto": ics(f"ORGANIZER:mailto:a@b.example?<img\\nsrc={U}>"),
}


@pytest.mark.parametrize(("text", "charset"), [
    # kanji whose JIS bytes spell <IMG/SRC=HTTPS:\\TRK.EXAMPLE\P> (browsers read \ as /)
    (b"\x1b$B0<IMG/SRC=HTTPS:\\\\TRK.EXAMPLE\\P>\x1b(B".decode("iso2022_jp"), "iso-2022-jp"),
    ("<img \u8868nsrc=https://trk.example/p>", "shift_jis"),  # a second byte "\\"
    ("<img \u529fnsrc=https://trk.example/p>", "big5"),
])
def test_a_calendar_whose_bytes_read_as_ascii_load_is_held_even_unchanged(
        text: str, charset: str) -> None:
    data = ics("DESCRIPTION:" + text).decode().encode(charset)
    assert loads_left(data.decode("latin-1").encode()), "it loads read as ASCII"
    assert isinstance(neutralise_calendar(data, charset), str)


@pytest.mark.parametrize("name", sorted(SECOND))
def test_the_rebuilt_form_reads_alike_for_every_reader(name: str) -> None:
    new, _ = neutral(SECOND[name])
    assert loads_left(new) == []
    lines = new.decode().split("\r\n")
    assert all(line.split(":")[0].split(";")[0] in {
        "BEGIN", "END", "VERSION", "METHOD", "UID", "DTSTART", "DESCRIPTION", "ORGANIZER",
        ""} for line in lines), lines


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_no_reader_fetches_anything_from_a_refused_copy(name: str) -> None:
    data = HOSTILE[name]
    assert loads_left(data), "the case loads something to begin with"
    new, _ = neutral(data)
    assert new != data
    assert loads_left(new) == []
    assert loads_left(neutral(new)[0]) == []


@pytest.mark.parametrize("line", [
    "DESCRIPTION:Join us (online) at 10:00\\, bring a friend\\; see https://example.org",
    "DESCRIPTION:Image: the venue\\nSource: the organisers",
    "URL:https://example.org/event",
    "ORGANIZER;CN=News:mailto:news@example.org",
    'ATTENDEE;CN="Reader, Ann";ROLE=REQ-PARTICIPANT;RSVP=TRUE:mailto:ann@example.org',
    "DTEND;TZID=Europe/Paris:20270101T120000",
    "RRULE:FREQ=WEEKLY;COUNT=4;BYDAY=MO",
    "CATEGORIES:Webinar,Launch",
    "LOCATION:Hall A\\, first floor",
])
def test_a_calendar_in_the_rebuilt_form_is_kept_byte_for_byte(line: str) -> None:
    data = ics("SUMMARY:Launch", line)
    assert loads_left(data) == []
    assert neutral(data) == (data, 0)


@pytest.mark.parametrize(("line", "rebuilt", "count"), [
    ("SUMMARY:Launch\r\n  continued", "SUMMARY:Launch continued", 0),  # unfolded
    ("DESCRIPTION:a; b", "DESCRIPTION:a\\; b", 0),
    ("DESCRIPTION:C:\\\\Temp\\x", "DESCRIPTION:C:/Tempx", 0),  # no backslash stays
    ("X-ALT-DESC;FMTTYPE=text/html:<b>Bold</b>", None, 1),  # not on the list
    ("IMAGE;VALUE=URI:cid:logo@example.org", None, 1),
    ("ATTACH;ENCODING=BASE64;VALUE=BINARY:aGVsbG8=", None, 1),
    ("CONFERENCE;VALUE=URI;FEATURE=VIDEO:https://meet.example.org/x", None, 1),
    ("URL;VALUE=URI:https://example.org/e", "URL:https://example.org/e", 1),
    ("ATTENDEE;CN=Ann;DIR=\"https://t.example/d\":mailto:a@example.org",
     "ATTENDEE;CN=Ann:mailto:a@example.org", 1),
    ("ATTENDEE:https://t.example/a", None, 1),
    ('ORGANIZER;CN="<img src=x>":mailto:a@example.org',
     'ORGANIZER;CN=img src=x:mailto:a@example.org', 1),
    ("summary:Launch", "SUMMARY:Launch", 0),
])
def test_what_the_rebuilt_form_keeps(line: str, rebuilt: str | None, count: int) -> None:
    new, counted = neutral(ics("SUMMARY:A", line, eol="\n"))
    assert new == ics("SUMMARY:A", *([rebuilt] if rebuilt else []))
    assert counted == count


def test_an_html_description_becomes_the_plain_one() -> None:
    data = ics(f'SUMMARY;ALTREP="{U}":Launch', f"IMAGE;VALUE=URI:{U}",
               f'X-ALT-DESC;FMTTYPE=text/html:<p>Join</p><img src="{U}">',
               f'DESCRIPTION:Join us.\\n<img src="{U}">')
    new, count = neutral(data)
    assert count == 4
    assert new == ics("SUMMARY:Launch", f'DESCRIPTION:Join us.\\n<img x-bp-src="{U}">')
    calendar = icalendar.Calendar.from_ical(new.decode())
    (event,) = calendar.walk("VEVENT")
    assert str(event["SUMMARY"]) == "Launch"


def test_an_unknown_component_goes_with_what_it_holds() -> None:
    data = ics("SUMMARY:A", "BEGIN:X-THING", f"IMAGE:{U}", "BEGIN:VALARM", "END:VALARM",
               "END:X-THING", "LOCATION:B")
    assert neutral(data) == (ics("SUMMARY:A", "LOCATION:B"), 5)


def test_utf16_is_read_through_its_transcoding_and_written_back() -> None:
    text = ics("SUMMARY:Lancement \u2013 été", f"IMAGE:{U}").decode("utf-8")
    new, count = neutral(text.encode("utf-16"), "utf-16")
    assert count == 1
    assert new == ics("SUMMARY:Lancement \u2013 été").decode("utf-8").encode("utf-16")


def test_a_charset_whose_bytes_read_as_ascii_load_nothing_either() -> None:
    # UTF-7 and ISO-2022-JP, read as ASCII by a client that ignores the label
    data = ics(f'DESCRIPTION:<img src="{U}">', "X-A:+ADw-")
    result = neutralise_calendar(data, "utf-7")
    assert isinstance(result, str) or loads_left(result[0]) == []
    kanji = ics("SUMMARY:\u65e5\u672c", f'ORGANIZER;CN="x";ALTREP="{U}":mailto:a@b.example')
    new, _ = neutral(kanji.decode().encode("iso-2022-jp"), "iso-2022-jp")
    assert loads_left(new) == []


@pytest.mark.parametrize("charset", ["iso-2022-jp", "shift_jis", "x-unknown"])
def test_a_charset_s_escapes_hide_nothing(charset: str) -> None:
    data = ics(f'X-ALT-DESC;FMTTYPE=text/html:\x1b$B<img src="{U}">')
    result = neutralise_calendar(data, charset)
    assert isinstance(result, str) or loads_left(result[0]) == []


@pytest.mark.parametrize(("content_type", "header", "expected"), [
    ("text/calendar", b"", True),
    ("text/x-vcalendar", b"", True),
    ("application/ics", b"", True),
    ("application/octet-stream", b'Content-Disposition: attachment; filename="invite.ics"', True),
    ("application/octet-stream", b"Content-Type: application/octet-stream; name=a.VCS", True),
    ("application/octet-stream", b"Content-Disposition: attachment; filename*=UTF-8''a%2Eics",
     True),
    ("application/octet-stream", b'Content-Disposition: attachment; filename="a.icsx"', False),
    ("application/octet-stream", b'Content-Disposition: attachment;\r\n filename*0="invite.";'
     b'\r\n filename*1="ics"', True),
    ("application/octet-stream", b'Content-Disposition: attachment; filename="invite\r\n .ics"',
     True),
    ("application/pdf", b'Content-Disposition: attachment; filename="physics.pdf"', False),
    ("text/html", b'Content-Disposition: attachment; filename="invite.ics"', True),
    ("application/octet-stream", b'Content-Disposition: attachment; '
     b'filename="=?utf-8?Q?invite=2Eics?="', True),
    ("application/octet-stream", b'Content-Disposition: attachment; '
     b'filename="=?utf-8?B?aW52aXRlLmljcw==?="', True),
    ("application/octet-stream", b"Content-Disposition: attachment; "
     b"filename*=utf-8''invite%2E%69cs", True),
    ("application/octet-stream", b'Content-Disposition: attachment; filename*1="ics"; '
     b'filename*0="invite."', True),
    ("application/calendar+xml", b"", False),
])
def test_which_parts_are_calendars(content_type: str, header: bytes, expected: bool) -> None:
    tree = parse_message(b"Content-Type: " + content_type.encode() + b"\r\n" + header
                         + b"\r\n\r\nx")
    assert is_calendar(tree, tree.root) is expected


@pytest.mark.parametrize(("cte", "body"), [
    ("7bit", b"\r\nBEGIN:VCALENDAR\r\n"),
    ("base64", base64.encodebytes(b"\xef\xbb\xbfbegin:vcalendar\r\n" + b"x" * 300)),
    ("quoted-printable", b"BEGIN=3AVCALENDAR\r\n"),
    ("8bit", "BEGIN:VCALENDAR\r\n".encode("utf-16")),
    ("base64", base64.encodebytes(b"\r\n" * 3000 + b"BEGIN:VCALENDAR\r\n")),
    ("quoted-printable", b"=0D=0A" * 2000 + b"\r\n" * 100 + b"BEGIN:VCALENDAR\r\n"),
], ids=["7bit", "base64-bom", "qp", "utf-16", "base64-blank-lines", "qp-blank-lines"])
def test_a_calendar_is_known_by_its_content_too(cte: str, body: bytes) -> None:
    tree = parse_message(b"Content-Type: application/octet-stream; name=data.bin\r\n"
                         b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body)
    assert is_calendar(tree, tree.root)


# -- in the relay's copies -----------------------------------------------------------------

def _message(calendar: bytes, *, attach: bool = False) -> bytes:
    msg = EmailMessage()
    msg["From"] = "news@example.org"
    msg["To"] = RCPT
    msg["Subject"] = "Webinar"
    msg.set_content("Join the webinar.")
    msg.add_alternative('<html><body><p>Join the webinar.</p>'
                        '<img src="https://img.example.org/logo.png" width="200" height="80">'
                        '</body></html>', subtype="html")
    if attach:
        msg.add_attachment(calendar, maintype="application", subtype="octet-stream",
                           filename="invite.ics")
    else:
        msg.add_alternative(calendar, maintype="text", subtype="calendar",
                            params={"method": "REQUEST"})
    return msg.as_bytes(policy=email.policy.SMTP)


def _calendar_of(data: bytes) -> bytes:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    for part in parsed.walk():
        if part.get_content_type() == "text/calendar" or part.get_filename() == "invite.ics":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload
    raise AssertionError("no calendar part")


def _html_of(data: bytes) -> str:
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    html = [p for p in parsed.walk() if p.get_content_type() == "text/html"]
    content = html[0].get_content()
    assert isinstance(content, str)
    return content


CALENDAR = ics("SUMMARY:Webinar",
               f'X-ALT-DESC;FMTTYPE=text/html:<html><body><img src="{PIXEL}"></body></html>',
               "DESCRIPTION:Join the webinar.")


@pytest.mark.parametrize("attach", [False, True], ids=["alternative", "attachment"])
def test_a_refused_copy_is_precise_and_its_calendar_loads_nothing(attach: bool) -> None:
    data = _message(CALENDAR, attach=attach)
    prepared = prepare(ENGINE, data, CopyPolicy())
    copy = decide(ENGINE, prepared, RCPT, Policy.REFUSED, CopyPolicy())
    assert copy.outcome is Outcome.STRIPPED, copy.problems  # not the fallback
    assert copy.data is not None and loads_left(_calendar_of(copy.data)) == []
    assert _calendar_of(copy.data) == ics("SUMMARY:Webinar", "DESCRIPTION:Join the webinar.")
    assert "img.example.org/logo.png" in _html_of(copy.data)  # the HTML's image stays
    assert copy.rendered is not None
    assert copy.rendered.report(Policy.REFUSED)["calendar_loads"] == 1


def test_a_granted_copy_keeps_its_calendar() -> None:
    data = _message(CALENDAR)
    prepared = prepare(ENGINE, data, CopyPolicy())
    copy = decide(ENGINE, prepared, RCPT, Policy.GRANTED, CopyPolicy(),
                  lambda url: "https://prefs.example/o/TOKEN")
    assert copy.data is not None and _calendar_of(copy.data) == CALENDAR


def test_a_calendar_that_loads_nothing_leaves_the_copy_as_it_was() -> None:
    data = _message(ics("SUMMARY:Webinar", "DESCRIPTION:Join the webinar."))
    copy = decide(ENGINE, prepare(ENGINE, data, CopyPolicy()), RCPT, Policy.REFUSED,
                  CopyPolicy())
    assert copy.outcome is Outcome.STRIPPED and copy.data == data


def test_a_calendar_alone_in_a_message_is_neutralised() -> None:
    data = (b"From: news@example.org\r\nTo: reader@example.org\r\nSubject: Invite\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/calendar; method=REQUEST\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(CALENDAR).replace(b"\n", b"\r\n"))
    copy = decide(ENGINE, prepare(ENGINE, data, CopyPolicy()), RCPT, Policy.REFUSED,
                  CopyPolicy())
    assert copy.outcome is Outcome.STRIPPED and copy.data is not None
    body = email.message_from_bytes(copy.data, policy=email.policy.default).get_payload(
        decode=True)
    assert isinstance(body, bytes) and loads_left(CALENDAR) and loads_left(body) == []


def test_the_header_only_path_keeps_the_calendar_change() -> None:
    # a campaign's further copies (another header, the same body) are rebased, not analysed
    first = _message(CALENDAR)
    second = first.replace(b"Subject: Webinar", b"Subject: Webinar for you", 1)
    origin = ENGINE.analyse(first)
    split = second.index(b"\r\n\r\n") + 4
    derived = ENGINE.rebase(origin, second, split)
    assert derived is not None and derived.calendars == origin.calendars
    ENGINE.render(origin, None, Policy.REFUSED)  # the origin's shared refused copy first
    copy = ENGINE.render(derived, RCPT, Policy.REFUSED)
    assert copy.data == ENGINE.render(ENGINE.analyse(second), RCPT, Policy.REFUSED).data
    assert loads_left(_calendar_of(copy.data)) == [] and copy.calendar == 1


def test_the_fallback_neutralises_calendars_too() -> None:
    data = _message(CALENDAR).replace(b"text/html", b"application/xhtml+xml")  # unscanned
    prepared = prepare(ENGINE, data, CopyPolicy())
    copy = decide(ENGINE, prepared, RCPT, Policy.REFUSED, CopyPolicy())
    assert copy.outcome is Outcome.FALLBACK and copy.data is not None
    assert loads_left(_calendar_of(copy.data)) == []
    assert neutralise_message(data).data == copy.data


def test_a_calendar_the_precise_path_cannot_read_goes_to_the_fallback() -> None:
    data = _message(CALENDAR, attach=True)
    start = data.index(b'filename="invite.ics"')
    body_at = data.index(b"\r\n\r\n", start) + 4
    # quoted-printable with a blank after a soft break: decoders join it two ways
    qp = b"BEGIN:VCALENDAR\r\nIMAGE:https://trk.exa= \r\nmple/p\r\nEND:VCALENDAR\r\n"
    end = data.index(b"\r\n--", body_at)
    data = (data[:body_at].replace(b"Content-Transfer-Encoding: base64",
                                   b"Content-Transfer-Encoding: quoted-printable")
            + qp + data[end:])
    prepared = prepare(ENGINE, data, CopyPolicy())
    assert prepared.original.analysis is not None
    assert any("calendar in quoted-printable" in p
               for p in prepared.original.analysis.unhandled)
    copy = decide(ENGINE, prepared, RCPT, Policy.REFUSED, CopyPolicy())
    assert copy.outcome is Outcome.FALLBACK and copy.data is not None
    assert loads_left(_calendar_of(copy.data)) == []


def test_a_calendar_value_with_more_constructs_than_the_fallback_reads_is_held() -> None:
    """The rebuild reads a value holding markup as the fallback does, within its bound."""
    data = ics("DESCRIPTION:<p>" + "(" * (MAX_CONSTRUCTS + 1))
    assert neutralise_calendar(data, "utf-8") == (
        f"calendar part with more than {MAX_CONSTRUCTS} constructs that may load")
    copy = decide(ENGINE, prepare(ENGINE, _message(data), CopyPolicy()), RCPT,
                  Policy.REFUSED, CopyPolicy())
    assert copy.outcome is Outcome.HELD and copy.data is None
