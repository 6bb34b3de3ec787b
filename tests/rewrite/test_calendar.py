"""Calendar parts: a refused copy's invitation loads nothing; the rest stays as it was."""

from __future__ import annotations

import base64
import email
import email.policy
from email.message import EmailMessage

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.calendar import is_calendar, neutralise_calendar
from beacon_proxy.rewrite.copies import CopyPolicy, Outcome, decide, prepare
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.fallback import neutralise_message
from beacon_proxy.rewrite.mime import parse_message
from beacon_proxy.rewrite.rules import load_rules

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


# -- what loads goes -------------------------------------------------------------------------

@pytest.mark.parametrize("line", [
    f'X-ALT-DESC;FMTTYPE=text/html:<html><body><img src="{PIXEL}"></body></html>',
    f"X-ALT-DESC:<p style=\"background:url({PIXEL})\">",
    f"STYLED-DESCRIPTION;VALUE=URI:{PIXEL}",
    f'STYLED-DESCRIPTION;FMTTYPE=text/html:<img src="{PIXEL}">',
    f'COMMENT;FMTTYPE=text/html:<link rel=stylesheet href="{PIXEL}">',
    f"x-alt-desc;fmttype=text/html:<style>@import '{PIXEL}';</style>",
    f"IMAGE;VALUE=URI;DISPLAY=BADGE:{PIXEL}",
    f"ATTACH;FMTTYPE=image/png:{PIXEL}",
    f"ATTACH:{PIXEL}",
    f"TZURL:{PIXEL}",
    f"SOURCE;VALUE=URI:{PIXEL}",
    f"STRUCTURED-DATA;VALUE=URI:{PIXEL}",
    # quoted parameters a client may split at the first ":" (then the value is a URL)
    f'IMAGE;X=":{PIXEL}";Y=1:cid:logo@example.org',
    f'ATTACH;X=":";VALUE=BINARY;ENCODING=BASE64:{PIXEL}',
    # an unclosed quote: no value this reading can be sure of
    f'IMAGE;X="cid:{PIXEL}',
])
def test_a_property_that_loads_is_removed_whole(line: str) -> None:
    data = ics("SUMMARY:Launch", line, "DESCRIPTION:See you there")
    new, count = neutral(data)
    assert count == 1
    assert new == ics("SUMMARY:Launch", "DESCRIPTION:See you there")


def test_a_folded_property_goes_with_every_line_and_the_rest_is_byte_identical() -> None:
    html = f'<html><body><p>Hello</p><img src="{PIXEL}"></body></html>'
    folded = "X-ALT-DESC;FMTTYPE=text/html:" + html[:30] + "\r\n " + html[30:60] + \
        "\r\n\t" + html[60:]
    data = ics("SUMMARY:Launch", folded, "DESCRIPTION:Plain text")
    assert neutral(data) == (ics("SUMMARY:Launch", "DESCRIPTION:Plain text"), 1)


@pytest.mark.parametrize("line", [
    "X-ALT-DESC;FMTTYPE=text/html:<html><body><b>Bold</b> and <i>kind</i></body></html>",
    "IMAGE;VALUE=URI:cid:logo@example.org",
    "IMAGE;VALUE=URI:data:image/png;base64\\,iVBORw0KGgo=",
    "ATTACH;FMTTYPE=text/plain;ENCODING=BASE64;VALUE=BINARY:aGVsbG8=",
    "ATTACH:mid:1@example.org",
    "URL:https://example.org/event",
    "CONFERENCE;VALUE=URI;FEATURE=VIDEO:https://meet.example.org/x",
    "ORGANIZER;CN=News:mailto:news@example.org",
    "DESCRIPTION:Join us (online) at 10:00\\, bring a friend; see https://example.org",
])
def test_what_does_not_load_is_kept_byte_for_byte(line: str) -> None:
    data = ics("SUMMARY:Launch", line)
    assert neutral(data) == (data, 0)


def test_altrep_parameters_are_removed_the_property_stays() -> None:
    data = ics(f'SUMMARY;LANGUAGE=en;ALTREP="{PIXEL}":Launch',
               f'LOCATION;ALTREP="{PIXEL}";X=1:Hall A',
               "COMMENT;ALTREP=cid-less;X=2:Note",
               "DESCRIPTION;ALTREP=\"cid:part3@example.org\":Details")
    new, count = neutral(data)
    assert count == 4
    assert new == ics("SUMMARY;LANGUAGE=en:Launch", "LOCATION;X=1:Hall A", "COMMENT;X=2:Note",
                      "DESCRIPTION:Details")


def test_an_altrep_across_a_fold_is_removed_and_the_fold_stays() -> None:
    data = ics('SUMMARY;ALTREP="https://trk.exa\r\n mple/a";LANGUAGE=en:Launch')
    new, count = neutral(data)
    assert count == 1
    assert new == ics("SUMMARY\r\n ;LANGUAGE=en:Launch")
    assert b"trk" not in new


def test_an_altrep_that_cannot_be_taken_out_alone_takes_the_property() -> None:
    # "altrep" in the parameters, but no ALTREP parameter this reads: the whole property
    data = ics(f'SUMMARY;X-ALTREP="{PIXEL}":Launch', "DESCRIPTION:kept")
    new, count = neutral(data)
    assert count == 1 and new == ics("DESCRIPTION:kept")


def test_markup_in_a_plain_value_is_neutralised_in_place() -> None:
    # \n is the newline a client that shows the description as HTML reads before src
    data = ics('DESCRIPTION:Hello\\n<img\\nsrc="https://trk.exa\r\n mple/p.gif"> (online)')
    new, count = neutral(data)
    assert count == 2  # the "(" too: the fallback's reading cannot tell text from CSS
    assert new == ics('DESCRIPTION:Hello\\n<img\\nx-bp-src="https://trk.exa\r\n'
                      ' mple/p.gif">  (online)')


# -- vCalendar 1.0 (.vcs): values in quoted-printable (with soft line breaks) or base64 --

_QP = "DESCRIPTION;ENCODING=QUOTED-PRINTABLE:"


@pytest.mark.parametrize("lines", [
    [_QP + "=3Cimg s=", 'rc=3D"https://trk.example/p"=3E'],  # "<img src=" only decoded
    [_QP + "hello=", f"IMAGE:{PIXEL}"],  # a property of its own to iCalendar 2.0 clients
    ['X-ALT-DESC;FMTTYPE=text/html;QUOTED-PRINTABLE:=3Cimg src=3D"https://trk.examp=',
     'le/p"=3E'],
    ["DESCRIPTION;ENCODING=BASE64:"
     + base64.b64encode(f'<img src="{PIXEL}">'.encode()).decode()],
    [f"IMAGE;ENCODING=QUOTED-PRINTABLE:{PIXEL}"],
    [f'<img src="{PIXEL}">'.join(["DESCRIPTION;ENCODING=BASE64:", ""])],  # plain reading
])
def test_an_encoded_value_that_loads_takes_the_property_and_its_lines(lines: list[str]
                                                                       ) -> None:
    data = ics("SUMMARY:Launch", *lines, "LOCATION:Hall A")
    new, count = neutral(data)
    assert (new, count) == (ics("SUMMARY:Launch", "LOCATION:Hall A"), 1)


def test_a_quoted_printable_parameter_inside_quotes_is_read_both_ways() -> None:
    # one client reads a soft line break (the next line is in the value), another a
    # quoted parameter value (the next line is a property): both lines go
    data = ics('DESCRIPTION;X=";QUOTED-PRINTABLE":hi=', f"IMAGE:{PIXEL}", "LOCATION:Hall A")
    new, count = neutral(data)
    assert (new, count) == (ics("LOCATION:Hall A"), 2)


def test_plain_encoded_values_are_kept() -> None:
    data = ics(_QP + "Caf=C3=A9 =", "au lait", "ATTACH;ENCODING=BASE64;VALUE=BINARY:aGVsbG8=",
               "DESCRIPTION;ENCODING=BASE64:" + base64.b64encode(b"Plain (text)").decode())
    assert neutral(data) == (data, 0)


def test_lf_line_ends_and_an_unknown_property_case() -> None:
    data = ics("summary:Launch", f"image:{PIXEL}", eol="\n")
    assert neutral(data) == (ics("summary:Launch", eol="\n"), 1)


def test_utf16_is_read_through_its_transcoding_and_written_back() -> None:
    text = ics("SUMMARY:Lancement \u2013 été", f"IMAGE:{PIXEL}").decode("utf-8")
    new, count = neutral(text.encode("utf-16"), "utf-16")
    assert count == 1
    assert new == ics("SUMMARY:Lancement \u2013 été").decode("utf-8").encode("utf-16")


def test_a_multibyte_charset_is_read_on_its_ascii_view() -> None:
    # Shift_JIS: the second byte of a character may be "\" (0x5C), never an escape
    data = "SUMMARY:ソ表\r\nIMAGE:https://trk.example/p\r\n".encode("shift_jis")
    new, count = neutral(data, "shift_jis")
    assert count == 1 and new == "SUMMARY:ソ表\r\n".encode("shift_jis")


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
    ("text/html", b'Content-Disposition: attachment; filename="invite.ics"', False),
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
])
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
    assert copy.data is not None and b"trk.example" not in _calendar_of(copy.data)
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
    assert body == ics("SUMMARY:Webinar", "DESCRIPTION:Join the webinar.")


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
    assert b"trk.example" not in _calendar_of(copy.data) and copy.calendar == 1


def test_the_fallback_neutralises_calendars_too() -> None:
    data = _message(CALENDAR).replace(b"text/html", b"application/xhtml+xml")  # unscanned
    prepared = prepare(ENGINE, data, CopyPolicy())
    copy = decide(ENGINE, prepared, RCPT, Policy.REFUSED, CopyPolicy())
    assert copy.outcome is Outcome.FALLBACK and copy.data is not None
    assert _calendar_of(copy.data) == ics("SUMMARY:Webinar", "DESCRIPTION:Join the webinar.")
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
    assert b"trk.exa" not in copy.data
