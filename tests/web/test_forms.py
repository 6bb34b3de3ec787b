"""Form bodies (RFC 8058 one-click and page actions) are parsed strictly and in bounds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from beacon_proxy.web.forms import MAX_FIELDS, FormError, parse_form, read_form

MP = "multipart/form-data; boundary=b0und"


def _mp(*parts: bytes, close: bool = True) -> bytes:
    body = b"".join(b"--b0und\r\n" + p + b"\r\n" for p in parts)
    return body + (b"--b0und--\r\n" if close else b"")


def _field(name: str, value: str) -> bytes:
    return (f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}').encode()


def test_urlencoded() -> None:
    assert parse_form("application/x-www-form-urlencoded; charset=UTF-8",
                      b"action=resume&x=%E3%81%82+b\r\n") == [("action", "resume"), ("x", "あ b")]
    assert parse_form("application/x-www-form-urlencoded", b"") == []


def test_multipart_with_preamble_padding_and_epilogue() -> None:
    body = (b"preamble\r\n--b0und  \r\n" + _field("List-Unsubscribe", "One-Click")
            + b"\r\n--b0und\r\nContent-Type: text/plain; charset=utf-8\r\n"
            + _field("x", "y") + b"\r\n--b0und--\r\nepilogue")
    assert parse_form(MP, body) == [("List-Unsubscribe", "One-Click"), ("x", "y")]
    assert parse_form('multipart/form-data; boundary="a b:c"',
                      b"--a b:c\r\n" + _field("k", "v") + b"\r\n--a b:c--") == [("k", "v")]


@pytest.mark.parametrize(("content_type", "body", "status"), [
    ("text/plain", b"a=b", 415),
    ("", b"a=b", 415),
    ("application/x-www-form-urlencoded", b"a=%C3%28", 400),
    ("application/x-www-form-urlencoded", b"a=\xc3\x28", 400),
    ("application/x-www-form-urlencoded", b"novalue", 400),
    ("application/x-www-form-urlencoded", b"&".join([b"a=b"] * (MAX_FIELDS + 1)), 400),
    ("multipart/form-data", _mp(_field("a", "b")), 400),
    ("multipart/form-data; boundary=" + "x" * 71, b"", 400),
    ("multipart/form-data; boundary=bad\x01", b"", 400),
    (MP, _mp(_field("a", "b"), close=False), 400),
    (MP, _mp(b'Content-Disposition: attachment; name="a"\r\n\r\nb'), 400),
    (MP, _mp(b"Content-Disposition: form-data\r\n\r\nb"), 400),
    (MP, _mp(b"no colon here\r\n\r\nb"), 400),
    (MP, _mp(b'Content-Disposition: form-data; name="a"\r\n'
             b'Content-Disposition: form-data; name="b"\r\n\r\nc'), 400),
    (MP, _mp(b'Content-Disposition: form-data; name="a"\r\n\r\n\xff'), 400),
    (MP, b"--b0undX\r\n" + _field("a", "b") + b"\r\n--b0und--", 400),
    (MP, _mp(*[_field("a", "b")] * (MAX_FIELDS + 1)), 400),
])
def test_refusals(content_type: str, body: bytes, status: int) -> None:
    with pytest.raises(FormError) as info:
        parse_form(content_type, body)
    assert info.value.status == status
    assert info.value.message


async def test_a_trickling_body_is_cut_off() -> None:
    async def handler(request: web.Request) -> web.Response:
        try:
            await read_form(request, timeout=0.2)
        except FormError as exc:
            return web.Response(status=exc.status, text=exc.message)
        return web.Response(text="read")

    app = web.Application()
    app.router.add_post("/", handler)
    never = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b"List-Unsubscribe="
        await never.wait()  # the rest never comes
        yield b"One-Click"

    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/", data=trickle(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert resp.status == 408
        never.set()
