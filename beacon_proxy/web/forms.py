"""Reading a small HTML form or RFC 8058 one-click body, strictly and within bounds.

The recipient side faces the internet: a body is read only up to ``limit``
bytes (a one-click body is 26 bytes, a page form under 100), whatever
``Content-Length`` or chunking says, and parsed by rules small enough to
check by eye instead of a general multipart machinery.  RFC 8058 says the
one-click POST SHOULD be ``multipart/form-data`` and MAY be
``application/x-www-form-urlencoded``: both are accepted, nothing else.

Every refusal is a :class:`FormError` with an HTTP status (400, 408, 413, 415) and a
short message fit to show to the client.

    >>> parse_form("application/x-www-form-urlencoded", b"List-Unsubscribe=One-Click")
    [('List-Unsubscribe', 'One-Click')]
    >>> body = (b'--xyz\\r\\nContent-Disposition: form-data; name="List-Unsubscribe"\\r\\n'
    ...         b'\\r\\nOne-Click\\r\\n--xyz--\\r\\n')
    >>> parse_form('multipart/form-data; boundary="xyz"', body)
    [('List-Unsubscribe', 'One-Click')]
"""

from __future__ import annotations

import asyncio
import re
from email.message import Message
from urllib.parse import parse_qsl

from aiohttp import web

__all__ = ["BODY_TIMEOUT", "MAX_BODY", "MAX_FIELDS", "FormError", "parse_form", "read_form"]

MAX_BODY = 4096  # bytes
BODY_TIMEOUT = 10.0  # seconds to send it: a client trickling bytes must not hold a handler
MAX_FIELDS = 16
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")  # RFC 2046
_HEADER = re.compile(rb"([!-9;-~]+):[ \t]*(.*)")


class FormError(Exception):
    """The request body is refused: ``status`` (400, 408, 413, 415) and a short reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _params(header: str) -> Message:
    msg = Message()
    msg["Content-Type"] = header
    return msg


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError(400, "the form is not UTF-8") from None


def _urlencoded(body: bytes) -> list[tuple[str, str]]:
    text = _text(body).strip()
    if not text:
        return []
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=True,
                         errors="strict", max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise FormError(400, "the form is not UTF-8") from None
    except ValueError:
        raise FormError(400, "malformed form body") from None


def _part(raw: bytes) -> tuple[str, str]:
    head, sep, value = raw.partition(b"\r\n\r\n")
    if not sep:
        if not raw.startswith(b"\r\n"):
            raise FormError(400, "malformed multipart body")
        head, value = b"", raw[2:]
    name: str | None = None
    for line in head.split(b"\r\n") if head else []:
        m = _HEADER.fullmatch(line)
        if m is None:
            raise FormError(400, "malformed multipart body")
        if m.group(1).lower() == b"content-disposition":
            value_text = _text(m.group(2))
            disposition = Message()
            disposition["Content-Disposition"] = value_text
            param = disposition.get_param("name", header="content-disposition")
            kind = value_text.split(";", 1)[0].strip().lower()
            if kind != "form-data" or not isinstance(param, str) or name is not None:
                raise FormError(400, "multipart part without one form-data name")
            name = param
    if name is None:
        raise FormError(400, "multipart part without one form-data name")
    return name, _text(value)


def _multipart(content_type: str, body: bytes) -> list[tuple[str, str]]:
    boundary = _params(content_type).get_param("boundary")
    if not isinstance(boundary, str) or not _BOUNDARY.fullmatch(boundary):
        raise FormError(400, "multipart/form-data needs a valid boundary")
    delimiter = b"\r\n--" + boundary.encode("ascii")
    chunks = (b"\r\n" + body).split(delimiter)
    fields: list[tuple[str, str]] = []
    for chunk in chunks[1:]:  # chunks[0] is the preamble
        if chunk.startswith(b"--"):  # the close delimiter; what follows is the epilogue
            return fields
        if len(fields) >= MAX_FIELDS:
            raise FormError(400, "too many form fields")
        chunk = chunk.lstrip(b" \t")
        if not chunk.startswith(b"\r\n"):
            raise FormError(400, "malformed multipart body")
        fields.append(_part(chunk[2:]))
    raise FormError(400, "multipart body without its closing boundary")


def parse_form(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """The ``(name, value)`` fields of a body, in order; :class:`FormError` when refused."""
    kind = _params(content_type).get_content_type()
    if kind == URLENCODED:
        return _urlencoded(body)
    if kind == MULTIPART:
        return _multipart(content_type, body)
    raise FormError(415, f"expected {URLENCODED} or {MULTIPART}")


async def read_form(request: web.Request, limit: int = MAX_BODY,
                    timeout: float = BODY_TIMEOUT) -> list[tuple[str, str]]:
    """Read and parse a request's form body, at most ``limit`` bytes in ``timeout`` s."""
    content_type = request.headers.get("Content-Type", "")
    kind = _params(content_type).get_content_type() if content_type else ""
    if kind not in (URLENCODED, MULTIPART):
        raise FormError(415, f"expected {URLENCODED} or {MULTIPART}")
    if request.content_length is not None and request.content_length > limit:
        raise FormError(413, f"the body is larger than {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while len(body) <= limit:  # each pass reads at least one byte, or stops at the end
                chunk = await request.content.readany()
                if not chunk:
                    break
                body += chunk
    except TimeoutError:
        raise FormError(408, "the body took too long to arrive") from None
    if len(body) > limit:
        raise FormError(413, f"the body is larger than {limit} bytes")
    return parse_form(content_type, bytes(body))
