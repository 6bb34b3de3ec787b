"""Which URLs load from the network (``htmlattr.is_remote``): a Windows share is remote.

A ``file:`` URL with a host, or a UNC path, names a share on another machine: a desktop
client that reads it as a path connects there (SMB), which sees the open and may be
handed the user's NTLM credentials (the adversarial review of session 24 found such an
``<img>`` kept in a refused copy).  A refused recipient's copy loses it like any
remote pixel.
"""

from __future__ import annotations

import pytest

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.htmlattr import is_remote
from tests.rewrite.test_engine import ENGINE, RCPT, _message

HOST = "t.oracle-tracker.example"
SHARES = [
    f"file://{HOST}/share/p.gif",
    f"FILE://{HOST.upper()}/share/p.gif",
    f"file:////{HOST}/share/p.gif",
    f"file://///{HOST}/share/p.gif",
    f"file:\\\\{HOST}\\share\\p.gif",
    f"file:/\\{HOST}\\share\\p.gif",
    f"file:///\\\\{HOST}\\share\\p.gif",
    f"file://user@{HOST}/share/p.gif",
    f"file://{HOST}",
    f"\\\\{HOST}\\share\\p.gif",
    f"smb://{HOST}/share/p.gif",
    f"cifs://{HOST}/share/p.gif",
]
LOCAL = ["file:///C:/mail/p.gif", "file:/C:/p.gif", "file:p.gif", "file://localhost/p.gif",
         "file://", "file:///", "cid:logo@x", "data:image/gif;base64,R0lGOD"]


@pytest.mark.parametrize("url", SHARES)
def test_a_share_on_another_machine_is_remote(url: str) -> None:
    assert is_remote(url) is True


@pytest.mark.parametrize("url", LOCAL)
def test_this_machine_and_the_message_itself_are_not(url: str) -> None:
    assert is_remote(url) is False


@pytest.mark.parametrize("url", SHARES)
def test_a_refused_copy_loses_a_pixel_on_a_share(url: str) -> None:
    pixel = f'<img src="{url}" width="1" height="1">'.encode()
    page = b"<html><body><p>News</p>" + pixel + b"</body></html>"
    out = ENGINE.render(ENGINE.analyse(_message(page, cte="8bit")), RCPT, Policy.REFUSED)
    assert out.changed and url.encode() not in out.data
