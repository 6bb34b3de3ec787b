"""Messages that mail clients render but a strict engine gives up on, each with a tracker.

Shared by the unit tests (tests/rewrite/test_copies.py) and the end-to-end
scenario (tests/e2e/test_fail_closed.py).  Every message carries the same
planted tracker, a 1x1 image on ``TRACKER_HOST``; :func:`tracker_traces`
looks for it in every encoding a client could decode.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import email
import email.policy
import quopri
from collections.abc import Callable
from email.message import EmailMessage

__all__ = ["MESSAGES", "POISON", "TRACKER_HOST", "amp_json_poison", "font_face_poison",
           "tracker_traces"]

TRACKER_HOST = "pixel.tracker-host.example"
TRACKER = f"https://{TRACKER_HOST}/o.gif?u=5f3a9"
PIXEL = f'<img src="{TRACKER}" width="1" height="1" alt="">'
PAGE = (f'<html><body><p>Autumn offers <img src="https://cdn.shop.example/hero.jpg" '
        f'width="600" height="300" alt="Hero"></p><p>See you soon.</p>{PIXEL}</body></html>')
HEAD = ("From: News <news@shop.example>\r\nTo: reader@example.org\r\n"
        "Subject: Autumn offers\r\nMessage-ID: <h1@shop.example>\r\n"
        "List-Id: Shop news <news.shop.example>\r\n")


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode()


def lf_only() -> bytes:
    """What smtplib.sendmail(from, to, msg.as_bytes()) sends: LF line ends."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "news@shop.example", "reader@example.org", "LF"
    msg.set_content("Autumn offers")
    msg.add_alternative(PAGE, subtype="html")
    data = msg.as_bytes()
    assert b"\r\n" not in data
    return data


def missing_close() -> bytes:
    return _crlf(HEAD + 'MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary="b1"\n'
                 "\n--b1\nContent-Type: text/plain\n\nAutumn offers\n--b1\n"
                 "Content-Type: text/html; charset=utf-8\n\n" + PAGE + "\n")


def huge_html_part() -> bytes:
    filler = "<p>offer</p>\n" * ((17 << 20) // 13)
    return _crlf(HEAD + "MIME-Version: 1.0\nContent-Type: text/html; charset=utf-8\n\n"
                 + PAGE.replace("<p>See you soon.</p>", filler) + "\n")


def smime_signed() -> bytes:
    return _crlf(HEAD + 'MIME-Version: 1.0\nContent-Type: multipart/signed; '
                 'protocol="application/pkcs7-signature"; micalg=sha-256; boundary="sig"\n\n'
                 '--sig\nContent-Type: multipart/alternative; boundary="alt"\n\n'
                 "--alt\nContent-Type: text/plain\n\nAutumn offers\n--alt\n"
                 "Content-Type: text/html; charset=utf-8\n\n" + PAGE + "\n--alt--\n\n"
                 '--sig\nContent-Type: application/pkcs7-signature; name="smime.p7s"\n'
                 "Content-Transfer-Encoding: base64\n\nMIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglg\n"
                 "--sig--\n")


def forwarded() -> bytes:
    inner = ("From: News <news@shop.example>\nSubject: Autumn offers\nMIME-Version: 1.0\n"
             'Content-Type: multipart/alternative; boundary="in"\n\n--in\n'
             "Content-Type: text/plain\n\nAutumn\n--in\nContent-Type: text/html; charset=utf-8"
             "\nContent-Transfer-Encoding: quoted-printable\n\n"
             + quopri.encodestring(PAGE.encode()).decode() + "\n--in--\n")
    return _crlf(HEAD + 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="out"\n\n'
                 "--out\nContent-Type: text/plain\n\nForwarded below.\n--out\n"
                 "Content-Type: message/rfc822\nContent-Disposition: inline\n\n" + inner
                 + "\n--out--\n")


def charset_message(label: str, body: bytes, cte: str = "base64") -> bytes:
    encoded = (base64.encodebytes(body) if cte == "base64" else body).decode("latin-1")
    return _crlf(HEAD + f"MIME-Version: 1.0\nContent-Type: text/html; charset={label}\n"
                 f"Content-Transfer-Encoding: {cte}\n\n" + encoded + "\n")


def deep_nesting(levels: int = 120) -> bytes:
    head = "".join(f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n"
                   for i in range(levels))
    tail = "".join(f"\n--b{i}--" for i in reversed(range(levels)))
    return _crlf(HEAD + "MIME-Version: 1.0\n" + head + "Content-Type: text/html\n\n" + PAGE
                 + tail + "\n")


def many_parts(count: int = 1500) -> bytes:
    parts = "".join("--m\nContent-Type: text/plain\n\nx\n" for _ in range(count))
    return _crlf(HEAD + "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=m\n\n"
                 + parts + "--m\nContent-Type: text/html\n\n" + PAGE + "\n--m--\n")


def many_items(count: int = 210_060) -> bytes:
    return _crlf(HEAD + "MIME-Version: 1.0\nContent-Type: text/html\n\n"
                 + ("<!-- x -->" * 90 + "\n") * (count // 90) + PAGE + "\n")


def sloppy_base64_no_mime_version() -> bytes:
    encoded = base64.encodebytes(PAGE.encode()).decode().replace("\n", "  \n!", 3)
    return _crlf(HEAD + "Content-Type: text/html\nContent-Transfer-Encoding: base64\n\n"
                 + encoded[:-2] + "\n")


def svg_foreign_content() -> bytes:
    """In SVG, <style> is not raw text: the <img> inside is a real element to a browser."""
    page = PAGE.replace(PIXEL, "<svg><style>" + PIXEL + "</style></svg>")
    return _crlf(HEAD + "MIME-Version: 1.0\nContent-Type: text/html\n\n" + page + "\n")


def select_raw_text() -> bytes:
    """In <select>, <xmp> is ignored: its "raw text" is markup, and the pixel loads."""
    page = PAGE.replace(PIXEL, "<select><option><xmp>" + PIXEL + "</xmp></select>")
    return _crlf(HEAD + "MIME-Version: 1.0\nContent-Type: text/html\n\n" + page + "\n")


def amp_json_poison(units: int = 20_000) -> bytes:
    """Quadratic in the old engine: JSON_URL over 20 000 x '"//a/\\' (lines stay short)."""
    return _crlf(HEAD + "MIME-Version: 1.0\nContent-Type: text/html\n\n" + PAGE
                 + "<amp-analytics><script>" + ('"//a/\\' * 99 + '"//a/\n\\') * (units // 100)
                 + "\n")


def font_face_poison(units: int = 20_000) -> bytes:
    """Quadratic in the old engine: 20 000 x '@font-face ' without braces."""
    return _crlf(HEAD + "MIME-Version: 1.0\nContent-Type: text/html\n\n" + PAGE
                 + "<style>" + ("@font-face " * 50 + "\n") * (units // 50) + "</style>\n")


MESSAGES: dict[str, Callable[[], bytes]] = {
    "lf_only": lf_only,
    "missing_close": missing_close,
    "huge_html_part": huge_html_part,
    "smime_signed": smime_signed,
    "forwarded_rfc822": forwarded,
    "charset_x_unknown_42": lambda: charset_message("x-unknown-42", PAGE.encode()),
    "charset_unicode11utf8": lambda: charset_message("unicode11utf8", PAGE.encode()),
    "charset_utf16_bom": lambda: charset_message("utf-16", PAGE.encode("utf-16")),
    "charset_utf16be_no_bom": lambda: charset_message("utf-16", PAGE.encode("utf-16-be")),
    "charset_utf7": lambda: charset_message("utf-7", PAGE.encode("utf-7"), cte="7bit"),
    "deep_nesting": deep_nesting,
    "many_parts": many_parts,
    "many_items": many_items,
    "sloppy_base64_no_mime_version": sloppy_base64_no_mime_version,
    "svg_foreign_content": svg_foreign_content,
    "select_raw_text": select_raw_text,
}
#: Messages no copy of which is safe for every reader: a refused recipient's is held.
#: UTF-7 is a label browsers do not know (they read the bytes as windows-1252), and the
#: fallback's UTF-7 writes "<" as itself, markup to that reading too.
HELD_FOR_REFUSED = frozenset({"charset_utf7"})
POISON: dict[str, Callable[[], bytes]] = {
    "amp_json_poison": amp_json_poison,
    "font_face_poison": font_face_poison,
}

def _texts(payload: bytes) -> list[str]:
    """Every way a client could read these bytes."""
    out = [payload.decode("latin-1")]
    for codec in ("utf-16", "utf-16-le", "utf-16-be", "utf-7"):
        with contextlib.suppress(UnicodeDecodeError, ValueError):
            out.append(payload.decode(codec))
    return out


def tracker_traces(data: bytes) -> list[str]:
    """Where the tracker's host still appears, in any encoding a client could decode."""
    found: list[str] = []
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    chunks = [("raw", data)]
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            chunks.append((part.get_content_type(), payload))
        raw = part.get_payload()
        if isinstance(raw, str):
            with contextlib.suppress(binascii.Error, ValueError):
                chunks.append(("base64", binascii.a2b_base64(raw.encode("latin-1"))))
    for where, chunk in chunks:
        for text in _texts(chunk):
            if TRACKER_HOST in text:
                found.append(where)
                break
    return found
