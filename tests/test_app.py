"""Start-up checks of the relay: token secrets for several nodes, loopback public URLs."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from beacon_proxy.app import Relay, copy_steps, is_loopback_host, shared_store, start_warnings
from beacon_proxy.config import Config, ConfigError, load_config
from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.step import Copy, Recipient, run_steps
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens


def _config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "beacon-proxy.toml"
    path.write_text(f'[spool]\npath = "{tmp_path / "spool"}"\n' + text)
    return load_config(path, environ={})


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_store_without_a_token_secret_is_a_config_error(
        tmp_path: Path, scheme: str) -> None:
    cfg = _config(tmp_path, f'[store]\nurl = "{scheme}://bp@db.internal/beacon"\n')
    assert shared_store(cfg)
    with pytest.raises(ConfigError) as info:
        Relay(cfg)
    assert info.value.key == "tokens.secret"
    assert "PostgreSQL" in info.value.reason and "\n" not in str(info.value)
    assert not (tmp_path / "spool" / "token.secret").exists()


def test_postgres_store_with_a_shared_secret_starts(tmp_path: Path) -> None:
    cfg = _config(tmp_path, '[store]\nurl = "postgresql://bp@db.internal/beacon"\n'
                            '[tokens]\nsecret = "shared-secret-0123456789"\n')
    relay = Relay(cfg)
    assert not relay._generated_secret


def test_sqlite_single_node_keeps_a_generated_secret(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f'[store]\nurl = "sqlite:///{tmp_path}/consent.db"\n')
    assert not shared_store(cfg)
    relay = Relay(cfg)
    assert relay._generated_secret
    assert (tmp_path / "spool" / "token.secret").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("host", "loopback"), [
    ("localhost", True), ("LOCALHOST.", True), ("app.localhost", True), ("127.0.0.1", True),
    ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("192.0.2.1", False), ("2001:db8::1", False),
    ("mail.example.org", False), ("localhost.example.org", False), ("", False),
])
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(("public_url", "listen", "warned"), [
    ("http://127.0.0.1:8025", "0.0.0.0:25", True),
    ("http://localhost:8025", "[::]:25", True),
    ("http://[::1]:8025", "192.0.2.10:25", True),
    ("https://links.example.org", "0.0.0.0:25", False),
    ("http://127.0.0.1:8025", "127.0.0.1:2525", False),  # the defaults: a local trial
    ("http://localhost:8025", "[::1]:2525", False),
    ("http://127.0.0.1:8025", "localhost:2525", False),
])
def test_loopback_public_url_with_a_public_listener_warns(
        tmp_path: Path, public_url: str, listen: str, warned: bool) -> None:
    cfg = _config(tmp_path, f'[web]\npublic_url = "{public_url}"\n[smtp]\nlisten = "{listen}"\n')
    warnings = start_warnings(cfg)
    assert [key for key, _ in warnings] == (["web.public_url"] if warned else [])
    for key, message in warnings:
        assert key in message and str(cfg.smtp.listen) in message
        assert "\n" not in message


def test_defaults_start_without_warnings() -> None:
    assert start_warnings(load_config(None, environ={})) == []


@pytest.mark.parametrize(("networks", "named"), [
    (["0.0.0.0/0"], ["0.0.0.0/0"]),
    (["::/0", "127.0.0.0/8"], ["::/0"]),
    (["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/48", "fd00::/8"], []),
    (["198.51.100.0/22", "2001:db8::/32", "8.0.0.0/8"], ["8.0.0.0/8"]),
])
def test_an_allow_network_open_to_the_internet_warns(tmp_path: Path, networks: list[str],
                                                      named: list[str]) -> None:
    listed = ", ".join(f'"{n}"' for n in networks)
    warnings = dict(start_warnings(_config(tmp_path, f"[smtp]\nallow_networks = [{listed}]\n")))
    if not named:
        assert "smtp.allow_networks" not in warnings
        return
    message = warnings["smtp.allow_networks"]
    assert message.startswith(f"smtp.allow_networks includes {', '.join(named)}: ")
    assert "open relay" in message


def test_the_proxys_own_pixel_is_allowed_in_the_engine_and_the_workers(tmp_path: Path) -> None:
    cfg = _config(tmp_path, f'[store]\nurl = "sqlite:///{tmp_path}/consent.db"\n'
                            '[web]\npublic_url = "https://links.example.org/bp"\n')
    relay = Relay(cfg)
    assert relay.rewrite.engine.rules.allow == ("https://links.example.org/bp/",)
    worker_engine = relay.analysis._factory()  # what each analysis worker builds
    assert worker_engine.rules.allow == ("https://links.example.org/bp/",)  # type: ignore[attr-defined]
    assert worker_engine.rules.match(  # type: ignore[attr-defined]
        "https://links.example.org/bp/o/An6_Q5G5qkzkGRQOstVSe-ruOAoVnFoA7XtiRedwLVqhwjz5Tq") is None


def test_the_relays_own_bounces_get_no_footer_and_no_unsubscribe_header() -> None:
    steps = copy_steps(Config(), Tokens(["app test secret 0123456789"]), hostname=None)
    data = b"Content-Type: text/plain\r\n\r\nHello\r\n"
    dsn = Envelope("Q2", "", ("news@sender.example",), 0.0, bounce_of="Q1")
    copy = run_steps(steps, Copy(data), Recipient(dsn, "news@sender.example", Policy.REFUSED))
    assert copy.data == data
    mail = Envelope("Q1", "news@sender.example", ("ann@example.org",), 0.0)
    copy = run_steps(steps, Copy(data), Recipient(mail, "ann@example.org", Policy.REFUSED))
    assert copy.data.startswith(b"List-Unsubscribe: <") and b"/u/" in copy.data.split(b"Hello")[1]


def test_an_empty_hostname_takes_the_better_name_than_getfqdns_localhost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # /etc/hosts maps the name to 127.0.0.1 first: getfqdn() says localhost, while
    # `hostname -f` (the canonical name of gethostname()) says mail.example.org.
    monkeypatch.setattr("socket.gethostname", lambda: "mail")
    monkeypatch.setattr("socket.getfqdn", lambda name="": "localhost")

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list[Any]:
        assert host == "mail"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "mail.example.org", ("10.0.0.5", 0))]

    monkeypatch.setattr("socket.getaddrinfo", getaddrinfo)
    cfg = _config(tmp_path, f'[store]\nurl = "sqlite:///{tmp_path}/consent.db"\n')
    assert Relay(cfg).hostname == "mail.example.org"


@pytest.mark.parametrize(("hostname", "warned"), [
    ("localhost", True), ("localhost.localdomain", True), ("mail", True),
    ("127.0.0.1", True), ("mail.example.org", False)])
def test_a_localhost_ehlo_name_warns(hostname: str, warned: bool) -> None:
    cfg = load_config(None, environ={})
    warnings = dict(start_warnings(cfg, hostname))
    assert ("smtp.hostname" in warnings) is warned
    if warned:
        assert repr(hostname) in warnings["smtp.hostname"]


def test_the_relay_caches_analyses_by_its_analyser_and_sighup_empties_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import beacon_proxy.app as app

    cfg = _config(tmp_path, f'[store]\nurl = "sqlite:///{tmp_path}/consent.db"\n'
                            '[web]\npublic_url = "https://prefs.example.org"\n')
    relay = Relay(cfg)
    cache = relay.rewrite.cache
    assert cache is not None and cache.context == relay.rewrite.engine.fingerprint
    # the proxy's own URL is on the engine's allow-list: part of what the cache is keyed by
    assert relay.rewrite.engine.rules.allow == ("https://prefs.example.org/",)
    data = b"Subject: x\r\nContent-Type: text/html\r\n\r\n<img src=\"https://t.example/o\">\r\n"
    cache.put(data, relay.rewrite.engine.analyse(data))
    assert len(cache) == 1
    monkeypatch.setattr(app, "setup_logging", lambda *a, **k: None)  # keep pytest's logging
    relay.reload()
    assert len(cache) == 0


async def test_small_messages_are_analysed_in_the_relay_and_larger_ones_in_the_pool(
        tmp_path: Path) -> None:
    from beacon_proxy.rewrite.pool import INLINE_BYTES

    relay = Relay(_config(tmp_path, f'[store]\nurl = "sqlite:///{tmp_path}/consent.db"\n'))
    head = b"Subject: x\r\nContent-Type: text/html\r\n\r\n<img src=\"https://t.example/o\">"
    small = head + b" " * (INLINE_BYTES - len(head))
    assert len(small) == INLINE_BYTES
    from beacon_proxy.metrics import ANALYSES

    def counts() -> list[float]:
        return [ANALYSES.labels(s)._value.get() for s in ("inline", "known", "pool")]

    before = counts()
    analysis = await relay.rewrite.analyse(small)  # the pool is not started: not used
    assert analysis == relay.rewrite.engine.analyse(small)
    assert await relay.rewrite.analyse(small) is analysis  # known bytes
    assert [a - b for a, b in zip(counts(), before, strict=True)] == [1, 1, 0]
    with pytest.raises(RuntimeError, match="not started"):
        await relay.rewrite.analyse(small + b" ")
    assert [a - b for a, b in zip(counts(), before, strict=True)] == [1, 1, 1]


def test_analysis_workers_build_the_rules_read_at_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pool worker restarted later (a crash, a timeout) builds the rules the relay read
    at start, whatever the package holds by then (an in-place upgrade): the analysis
    cache's fingerprint names them."""
    import pickle

    from beacon_proxy.rewrite import rules

    cfg = _config(tmp_path, f'[store]\nurl = "sqlite:///{tmp_path}/consent.db"\n')
    relay = Relay(cfg)
    started = rules.load_rules(allow=(cfg.web.public_url,)).fingerprint
    monkeypatch.setattr(rules, "_packaged", lambda: '{"vendors": {"New": ["new\\\\.example"]}}')
    assert rules.load_rules(allow=(cfg.web.public_url,)).fingerprint != started  # upgraded
    factory = pickle.loads(pickle.dumps(relay.analysis._factory))  # as a worker gets it
    assert factory().rules.fingerprint == started
