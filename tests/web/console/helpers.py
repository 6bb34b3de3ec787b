"""A console on an aiohttp test client, and logging in to it."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]
TOKEN = "ops-token-0123456789abcdef"
OTHER = "another-token-0123456789"
SAME = {"Sec-Fetch-Site": "same-origin"}
_NONCE = re.compile(r'name="login" value="([^"]+)"')
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def login(client: Client, token: str = TOKEN) -> str:
    """Sign in with ``token``; the session's CSRF token."""
    page = await (await client.get("/console/login")).text()
    nonce = _NONCE.search(page)
    assert nonce is not None
    resp = await client.post("/console/login", data={"login": nonce.group(1), "token": token},
                             headers=SAME, allow_redirects=False)
    assert resp.status == 303, await resp.text()
    return await csrf(client)


async def csrf(client: Client, path: str = "/console") -> str:
    page = await (await client.get(path)).text()
    found = _CSRF.search(page)
    assert found is not None, page
    return found.group(1)
