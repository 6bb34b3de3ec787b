"""Image proxies and scanners are told from people by User-Agent and address (data file)."""

from __future__ import annotations

import pytest

from beacon_proxy.web.machines import BROWSER, NO_USER_AGENT, classify, load_machines

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Mobile/15E148")


@pytest.mark.parametrize(("ua", "ip", "expected"), [
    ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com "
     "GoogleImageProxy)", "192.0.2.1", ("gmail-proxy", True)),
    ("YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html", None,
     ("yahoo-proxy", True)),
    ("Mozilla/5.0", "192.0.2.1", ("apple-mpp", True)),
    ("  mozilla/5.0 ", "192.0.2.1", ("apple-mpp", True)),
    (IPHONE, "17.58.100.1", ("apple-mpp", True)),
    (IPHONE, "::ffff:17.58.100.1", ("apple-mpp", True)),
    (IPHONE, "66.249.84.10", ("gmail-proxy", True)),
    (IPHONE, "148.163.130.5", ("scanner", True)),
    (IPHONE, "40.107.22.1", ("scanner", True)),
    ("Mozilla/5.0 (compatible; Mimecast URL Protect)", "198.51.100.9", ("scanner", True)),
    ("python-requests/2.31", "198.51.100.9", ("scanner", True)),
    ("Mozilla/5.0 HeadlessChrome/120", "198.51.100.9", ("scanner", True)),
    (IPHONE, "198.51.100.9", (BROWSER, False)),
    (IPHONE, "2001:db8::1", (BROWSER, False)),
    (IPHONE, "not an address", (BROWSER, False)),
    (IPHONE, None, (BROWSER, False)),
    ("", "198.51.100.9", (NO_USER_AGENT, True)),
    (None, None, (NO_USER_AGENT, True)),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) " + "A" * 5000, "198.51.100.9",
     (BROWSER, False)),
])
def test_classify(ua: str | None, ip: str | None, expected: tuple[str, bool]) -> None:
    assert classify(ua, ip) == expected


def test_a_custom_file() -> None:
    m = load_machines('[[machine]]\nclass = "corp-scanner"\nnetworks = ["10.0.0.0/8"]\n'
                      'user_agent_contains = ["CorpScan"]\n')
    assert m.classify("x CORPSCAN y", "192.0.2.1") == ("corp-scanner", True)
    assert m.classify("Firefox", "10.1.2.3") == ("corp-scanner", True)
    assert m.classify("Firefox", "192.0.2.1") == (BROWSER, False)


@pytest.mark.parametrize(("text", "message"), [
    ("[[machine]]\nclass = 'x'\nnetworks = ['10.0.0.0/33']\n", "machine #1: networks"),
    ("[[machine]]\nclass = 'x'\nuser_agent_contains = 'Bot'\n", "list of non-empty strings"),
    ("[[machine]]\nclass = 'x'\nuser_agent_contains = ['']\n", "list of non-empty strings"),
    ("[[machine]]\nuser_agent_contains = ['Bot']\n", "class must be"),
    ("[[machine]]\nclass = 'browser'\n", "class must be"),
    ("[[machine]]\nclass = 'x'\nagent = ['Bot']\n", "unknown key agent"),
    ("[other]\n", "only [[machine]]"),
    ("[[machine]\n", "machines.toml"),
])
def test_bad_files_are_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        load_machines(text)
