from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from beacon_proxy.config import ConfigError, Endpoint, load_config
from beacon_proxy.smtpd.passwords import hash_password


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path, environ=env or {})


def test_defaults_without_a_file() -> None:
    cfg = load_config(None, environ={})
    assert cfg.smtp.listen == Endpoint("127.0.0.1", 2525)
    assert cfg.web.listen == Endpoint("127.0.0.1", 8025)
    assert cfg.delivery.upstream.kind == "maildir"
    assert str(cfg.delivery.upstream.path) == "var/outbox"
    assert (cfg.delivery.retry_min, cfg.delivery.retry_max) == (300, 4000)
    assert cfg.delivery.queue_lifetime == 5 * 86400
    assert cfg.policy.unknown == "refused"
    assert ipaddress.ip_address("127.0.0.5") in cfg.smtp.allow_networks[0]


def test_full_example_file_loads() -> None:
    example = Path(__file__).parent.parent / "config" / "beacon-proxy.example.toml"
    cfg = load_config(example, environ={})
    assert cfg.source == example


def test_values_are_parsed(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """
[smtp]
listen = "[::1]:2526"
allow_networks = ["10.0.0.0/8", "2001:db8::/32"]
[delivery]
upstream = "smtp://mx.example.org:2600"
starttls = "required"
retry_min = 1
retry_max = 2.5
queue_lifetime = 10
""")
    assert cfg.smtp.listen == Endpoint("::1", 2526)
    assert str(cfg.smtp.listen) == "[::1]:2526"
    assert cfg.delivery.upstream.host == "mx.example.org"
    assert cfg.delivery.upstream.port == 2600
    assert cfg.delivery.retry_max == 2.5


def test_campaign_settings(tmp_path: Path) -> None:
    assert load_config(None, environ={}).campaign.hold == 60.0  # the documented defaults
    cfg = _load(tmp_path, "[campaign]\nenabled = false\nhold = 0\nlearn = 8\nexpire = 86400")
    assert (cfg.campaign.enabled, cfg.campaign.hold, cfg.campaign.learn,
            cfg.campaign.expire) == (False, 0.0, 8, 86400.0)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[smtp]\nlisten = 'nowhere'", "smtp.listen"),
        ("[smtp]\nlisten = '127.0.0.1:99999'", "smtp.listen"),
        ("[smtp]\nlistne = '127.0.0.1:25'", "smtp.listne"),
        ("[smpt]\nlisten = '127.0.0.1:25'", "smpt"),
        ("[smtp]\nallow_networks = ['10.0.0.0/33']", "smtp.allow_networks"),
        ("[smtp]\nallow_networks = '10.0.0.0/8'", "smtp.allow_networks"),
        ("[smtp]\nmax_message_size = -1", "smtp.max_message_size"),
        ("[campaign]\nhold = 7200", "campaign.hold"),
        ("[campaign]\nhold = -1", "campaign.hold"),
        ("[campaign]\nlearn = 1", "campaign.learn"),
        ("[campaign]\nexpire = 60", "campaign.expire"),
        ("[campaign]\nenabled = 'yes please'", "campaign.enabled"),
        ("[smtp]\nmax_message_size = 'big'", "smtp.max_message_size"),
        ("[smtp]\ntls_cert = 'x.pem'", "smtp.tls_key"),
        ("[smtp]\nauth_users = { bob = 'plaintext' }", "smtp.auth_users.bob"),
        ("[delivery]\nupstream = 'http://x'", "delivery.upstream"),
        ("[delivery]\nupstream = 'smtp://x:notaport'", "delivery.upstream"),
        ("[delivery]\nstarttls = 'maybe'", "delivery.starttls"),
        ("[delivery]\nretry_min = 0", "delivery.retry_min"),
        ("[delivery]\nretry_min = true", "delivery.retry_min"),
        ("[delivery]\nretry_min = 100\nretry_max = 10", "delivery.retry_max"),
        ("[delivery]\nconcurrency = 0", "delivery.concurrency"),
        ("[store]\nurl = 'mysql://x'", "store.url"),
        ("[web]\npublic_url = 'mail-prefs.example.com'", "web.public_url"),
        ("[policy]\nunknown = 'maybe'", "policy.unknown"),
        ("smtp = 1", "smtp"),
        ("[tokens]\nsecret_file = '/nonexistent/secret'", "tokens.secret_file"),
        ("[tokens]\nsecret = 'short'", "tokens.secret"),
        ("[tokens]\nprevious = ['old-secret-0123456789']", "tokens.previous"),
        ("[web]\npublic_url = 'https://x.example/a\"b'", "web.public_url"),
        ("[web]\npublic_url = 'https://x.example/?q=1'", "web.public_url"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert info.value.key == key
    assert str(info.value).startswith(key + ": ")


def test_auth_users_need_tls(tmp_path: Path) -> None:
    h = hash_password("pw", n=2**10)
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, f"[smtp]\nauth_users = {{ bob = '{h}' }}")
    assert info.value.key == "smtp.auth_users"


def test_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, environ={})
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe[smtp]")
    with pytest.raises(ConfigError):
        load_config(binary, environ={})


def test_environment_overrides(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "[smtp]\nlisten = '127.0.0.1:2525'", {
        "BEACON_PROXY_SMTP_LISTEN": "127.0.0.1:2600",
        "BEACON_PROXY_DELIVERY_RETRY_MIN": "5",
        "BEACON_PROXY_SECRET": "s3cret-s3cret-s3cret",
        "BEACON_PROXY_UNRELATED": "x",
    })
    assert cfg.smtp.listen.port == 2600
    assert cfg.delivery.retry_min == 5
    assert cfg.tokens.secret == "s3cret-s3cret-s3cret"
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"BEACON_PROXY_SMTP_LISTNE": "x"})
    assert info.value.key == "smtp.listne"


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[policy]\nunknown = 'granted'\n")
    cfg = load_config(None, environ={"BEACON_PROXY_CONFIG": str(path)})
    assert cfg.policy.unknown == "granted"


# [dkim]: the keys are read and checked at start-up (tests/rewrite/test_dkim.py).


def test_dkim_defaults_to_no_keys() -> None:
    assert load_config(None, environ={}).dkim.all_keys == ()


def test_dkim_short_form_and_keys(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """
[dkim]
domain = "Example.COM."
selector = "news2026"
private_key_file = "/etc/beacon-proxy/dkim/news2026.pem"
keys = [
{domain = "shop.example", selector = "ed1", private_key_file = "e", algorithm = "ed25519-sha256"},
    {domain = "xn--bcher-kva.example", selector = "a.b-c", private_key_file = "rsa.pem"},
]
""")
    keys = cfg.dkim.all_keys
    assert [(k.domain, k.selector, str(k.private_key_file), k.algorithm, k.key) for k in keys] == [
        ("example.com", "news2026", "/etc/beacon-proxy/dkim/news2026.pem", None, "dkim"),
        ("shop.example", "ed1", "e", "ed25519-sha256", "dkim.keys[0]"),
        ("xn--bcher-kva.example", "a.b-c", "rsa.pem", None, "dkim.keys[1]"),
    ]
    only_keys = _load(tmp_path, "[[dkim.keys]]\ndomain = 'a.example'\nselector = 's'\n"
                      "private_key_file = 'k.pem'\n")
    assert [k.key for k in only_keys.dkim.all_keys] == ["dkim.keys[0]"]


def test_dkim_from_the_environment(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "[dkim]\ndomain = 'example.com'\nselector = 's1'\n", {
        "BEACON_PROXY_DKIM_PRIVATE_KEY_FILE": "/run/secrets/dkim.pem"})
    assert str(cfg.dkim.all_keys[0].private_key_file) == "/run/secrets/dkim.pem"


KEY = "domain = 'example.com', selector = 's', private_key_file = 'k.pem'"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[dkim]\ndomain = 'example.com'\nselector = 's'", "dkim.private_key_file"),
        ("[dkim]\ndomain = 'example.com'\nprivate_key_file = 'k.pem'", "dkim.selector"),
        ("[dkim]\nselector = 's'\nprivate_key_file = 'k.pem'", "dkim.domain"),
        ("[dkim]\nalgorithm = 'rsa-sha256'", "dkim.algorithm"),
        ("[dkim]\nalgorithm = 'rsa-sha1'", "dkim.algorithm"),
        ("[dkim]\ndomain = 'bücher.example'", "dkim.domain"),
        ("[dkim]\ndomain = 'exa mple.com'", "dkim.domain"),
        ("[dkim]\ndomain = '-bad.example'", "dkim.domain"),
        ("[dkim]\nselector = 's_1'", "dkim.selector"),
        ("[dkim]\nselector = ''", "dkim.selector"),
        ("[dkim]\nkeys = 'k.pem'", "dkim.keys"),
        ("[dkim]\nkeys = ['k.pem']", "dkim.keys[0]"),
        ("[dkim]\nkeys = [{domain = 'example.com', selector = 's'}]",
         "dkim.keys[0].private_key_file"),
        (f"[dkim]\nkeys = [{{{KEY}}}, {{{KEY}, sign = true}}]", "dkim.keys[1].sign"),
        (f"[dkim]\nkeys = [{{{KEY}, algorithm = 'ed448'}}]", "dkim.keys[0].algorithm"),
        ("[dkim]\nkeys = [{domain = 'a.example', selector = 's;x', private_key_file = 'k'}]",
         "dkim.keys[0].selector"),
        (f"[dkim]\nkeys = [{{{KEY}}}, {{{KEY}}}]", "dkim.keys[1]"),
        (f"[dkim]\ndomain = 'example.com'\nselector = 's'\nprivate_key_file = 'a.pem'\n"
         f"keys = [{{{KEY}}}]", "dkim.keys[0]"),
        ("[dkim]\nprivate_keyfile = 'k.pem'", "dkim.private_keyfile"),
    ],
)
def test_dkim_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert info.value.key == key
