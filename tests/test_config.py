from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import tomllib
from pathlib import Path

import pytest

from beacon_proxy.config import (
    Config,
    ConfigError,
    Endpoint,
    environment_keys,
    find_config,
    load_config,
)
from beacon_proxy.consent.store import sqlite_path
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


EXAMPLE = Path(__file__).parent.parent / "config" / "beacon-proxy.example.toml"


def test_full_example_file_loads() -> None:
    cfg = load_config(EXAMPLE, environ={})
    assert cfg.source == EXAMPLE


def _config_keys() -> dict[str, set[str]]:
    """Every key the configuration accepts, by section (the fields of the sections)."""
    return {f.name: {k.name for k in dataclasses.fields(f.default)}
            for f in dataclasses.fields(Config) if dataclasses.is_dataclass(f.default)}


def _is_toml(lines: list[str]) -> bool:
    """Whether the first of ``lines`` starts a TOML key/value (which may go on over the
    following lines, as a commented-out array does)."""
    for end in range(1, len(lines) + 1):
        try:
            tomllib.loads("\n".join(lines[:end]))
        except tomllib.TOMLDecodeError:
            continue
        return True
    return False


def _example_keys() -> dict[str, set[str]]:
    """The keys the example file shows, set or commented out (``# tls_cert = "..."``,
    ``# [smtp.auth_users]``), by section; a commented line counts when it is TOML."""
    shown: dict[str, set[str]] = {}
    section = ""
    lines = [line.removeprefix("#").strip() for line in EXAMPLE.read_text().splitlines()]
    for i, text in enumerate(lines):
        if match := re.fullmatch(r"\[([a-z_]+)(?:\.([a-z_]+))?\]", text):
            if match[2] is None:
                section = match[1]
            else:
                shown.setdefault(match[1], set()).add(match[2])
        elif (match := re.match(r"([a-z_]+) = ", text)) and _is_toml(lines[i:i + 20]):
            # (not prose in a comment that happens to say "word = ...")
            shown.setdefault(section, set()).add(match[1])
    return shown


def test_the_example_shows_every_key_and_no_other() -> None:
    """config/beacon-proxy.example.toml documents every key config.py accepts (set to
    its default, or commented out when it has none to show), and no key it refuses."""
    keys, shown = _config_keys(), _example_keys()
    assert len(keys) > 10 and sum(map(len, keys.values())) > 60  # the walk finds them
    missing = {f"{s}.{k}" for s, ks in keys.items() for k in ks - shown.get(s, set())}
    unknown = {f"{s}.{k}" for s, ks in shown.items() for k in ks - keys.get(s, set())}
    assert (sorted(missing), sorted(unknown)) == ([], [])


#: Keys the example sets to something other than the built-in default, saying so in
#: its comment: the production setting.
_EXAMPLE_NOT_DEFAULT = {("smtp", "workers")}


def test_the_example_values_are_the_defaults() -> None:
    """Each value the example file sets is the built-in default (as its header says).
    Read through the environment, where paths stay as written (not made relative to the
    file), so they compare with the defaults."""
    defaults = load_config(None, environ={})
    example = tomllib.loads(EXAMPLE.read_text())
    differ = []
    for section, table in example.items():
        for key, value in table.items():
            if (section, key) in _EXAMPLE_NOT_DEFAULT:
                continue
            name = f"BEACON_PROXY_{section}_{key}".upper()
            written = load_config(None, environ={name: json.dumps(value)})
            if getattr(getattr(written, section), key) != getattr(getattr(defaults, section),
                                                                  key):
                differ.append(f"{section}.{key}")
    assert differ == []
    for section, key in _EXAMPLE_NOT_DEFAULT:
        assert getattr(getattr(defaults, section), key) != example[section][key]


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


def test_delivery_idle_timeout_and_pipelining(tmp_path: Path) -> None:
    assert load_config(None, environ={}).delivery.idle_timeout == 30.0
    assert load_config(None, environ={}).delivery.pipelining is True
    assert _load(tmp_path, "[delivery]\npipelining = false").delivery.pipelining is False
    assert _load(tmp_path, "[delivery]\nidle_timeout = 5").delivery.idle_timeout == 5.0
    with pytest.raises(ConfigError, match=r"delivery\.idle_timeout"):
        _load(tmp_path, "[delivery]\nidle_timeout = 0")


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
        ("[policy]\nanalysis_memory_mb = 100", "policy.analysis_memory_mb"),
        ("[policy]\nanalysis_memory_mb = -1", "policy.analysis_memory_mb"),
        ("[smtp]\nmax_message_size = 524288000\n[policy]\nanalysis_memory_mb = 1024",
         "policy.analysis_memory_mb"),
        ("smtp = 1", "smtp"),
        ("[tokens]\nsecret_file = '/nonexistent/secret'", "tokens.secret_file"),
        ("[tokens]\nsecret = 'short'", "tokens.secret"),
        ("[tokens]\nprevious = ['old-secret-0123456789']", "tokens.previous"),
        ("[web]\npublic_url = 'https://x.example/a\"b'", "web.public_url"),
        ("[web]\npublic_url = 'https://x.example/?q=1'", "web.public_url"),
        ("[smtp]\nauth_max_failures = 0", "smtp.auth_max_failures"),
        ("[smtp]\nauth_failure_limit = 0", "smtp.auth_failure_limit"),
        ("[smtp]\nauth_failure_window = 0", "smtp.auth_failure_window"),
        ("[smtp]\nauth_delay_max = -1", "smtp.auth_delay_max"),
        ("[smtp]\nmax_connections_per_client = 0", "smtp.max_connections_per_client"),
        ("[smtp]\nidle_timeout_untrusted = 0", "smtp.idle_timeout_untrusted"),
        ("[smtp]\nidle_timeout_untrusted = 5\nauth_delay_max = 5", "smtp.auth_delay_max"),
        ("[smtp]\ncommand_timeout = 4\nauth_delay_max = 5", "smtp.auth_delay_max"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    assert info.value.key == key
    assert str(info.value).startswith(key + ": ")


def test_the_analysis_memory_limit(tmp_path: Path) -> None:
    assert load_config(None, environ={}).policy.analysis_memory_mb == 1024
    assert _load(tmp_path, "[policy]\nanalysis_memory_mb = 0").policy.analysis_memory_mb == 0
    small = "[smtp]\nmax_message_size = 1048576\n[policy]\nanalysis_memory_mb = 260"
    assert _load(tmp_path, small).policy.analysis_memory_mb == 260  # 256 + 4 x 1 MiB
    with pytest.raises(ConfigError, match="set at least 356, or 0"):  # 256 + 4 x 25 MiB
        _load(tmp_path, "[policy]\nanalysis_memory_mb = 300")
    big = "[smtp]\nmax_message_size = 524288000\n[policy]\nanalysis_memory_mb = "
    assert _load(tmp_path, big + "2256").policy.analysis_memory_mb == 2256  # 256 + 4 x 500
    assert _load(tmp_path, big + "0").policy.analysis_memory_mb == 0
    with pytest.raises(ConfigError, match="set at least 2256, or 0"):
        _load(tmp_path, big + "2255")


def test_smtp_abuse_limits(tmp_path: Path) -> None:
    defaults = load_config(None, environ={}).smtp
    assert (defaults.auth_max_failures, defaults.auth_failure_limit) == (3, 20)
    assert (defaults.auth_failure_window, defaults.auth_delay_max) == (900, 8)
    assert (defaults.max_connections_per_client, defaults.idle_timeout_untrusted) == (20, 30)
    cfg = _load(tmp_path, """
[smtp]
auth_max_failures = 1
auth_failure_window = 60
auth_failure_limit = 5
auth_delay_max = 0
max_connections_per_client = 2
idle_timeout_untrusted = 5
""")
    assert (cfg.smtp.auth_max_failures, cfg.smtp.auth_failure_window) == (1, 60)
    assert (cfg.smtp.auth_failure_limit, cfg.smtp.auth_delay_max) == (5, 0)
    assert (cfg.smtp.max_connections_per_client, cfg.smtp.idle_timeout_untrusted) == (2, 5)


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
        "BEACON_PROXY_TEST_POSTGRES": "postgresql://the-test-suite's",
    })
    assert cfg.smtp.listen.port == 2600
    assert cfg.delivery.retry_min == 5
    assert cfg.tokens.secret == "s3cret-s3cret-s3cret"
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={"BEACON_PROXY_SMTP_LISTNE": "x"})
    assert info.value.key == "smtp.listne"


@pytest.mark.parametrize(("name", "key"), [("BEACON_PROXY_SMPT_LISTEN", "smpt.listen"),
                                           ("BEACON_PROXY_UNRELATED", "unrelated")])
def test_a_mistyped_environment_section_is_refused(name: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, environ={name: "127.0.0.1:2600"})
    assert info.value.key == key
    assert name in str(info.value) and "unknown section" in str(info.value)


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
        # relative key files are relative to the config file's directory
        ("shop.example", "ed1", str(tmp_path / "e"), "ed25519-sha256", "dkim.keys[0]"),
        ("xn--bcher-kva.example", "a.b-c", str(tmp_path / "rsa.pem"), None, "dkim.keys[1]"),
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


# --------------------------------------------------------------------------
# Discovery and paths relative to the file


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the "system" file is looked for in these tests (absent until written)."""
    import beacon_proxy.config

    path = tmp_path / "etc" / "beacon-proxy.toml"
    monkeypatch.setattr(beacon_proxy.config, "SYSTEM_CONFIG", path)
    return path


def test_discovery_order(tmp_path: Path, system: Path) -> None:
    assert find_config(None, {}) == (None, "defaults")
    assert load_config(None, environ={}).source is None
    system.parent.mkdir()
    system.write_text("[policy]\nunknown = 'granted'\n")
    assert find_config(None, {}) == (system, "system")
    assert load_config(None, environ={}).policy.unknown == "granted"
    assert load_config(None, environ={}).source == system
    named = tmp_path / "named.toml"
    named.write_text("[smtp]\nlisten = '127.0.0.1:2600'\n")
    env = {"BEACON_PROXY_CONFIG": str(named)}
    assert find_config(None, env) == (named, "BEACON_PROXY_CONFIG")
    cfg = load_config(None, environ=env)
    assert (cfg.source, cfg.smtp.listen.port, cfg.policy.unknown) == (named, 2600, "refused")
    given = tmp_path / "given.toml"
    given.write_text("")
    assert find_config(given, env) == (given, "--config")
    assert load_config(given, environ=env).source == given
    # A named file that is missing is an error, never a silent fall back to another one.
    with pytest.raises(ConfigError, match="no such file"):
        load_config(None, environ={"BEACON_PROXY_CONFIG": str(tmp_path / "gone.toml")})


def test_source_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "c.toml").write_text("")
    monkeypatch.chdir(tmp_path)
    assert load_config("c.toml", environ={}).source == tmp_path / "c.toml"


def test_relative_paths_are_relative_to_the_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc"
    (etc / "tls").mkdir(parents=True)
    for name in ("tls/cert.pem", "tls/key.pem", "secrets"):
        (etc / name).write_text("x" * 20 + "\n")
    (etc / "c.toml").write_text("""
[smtp]
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"
[spool]
path = "var/spool"
[store]
url = "sqlite:///state/bp.db"
[delivery]
upstream = "maildir:out box"
[tokens]
secret_file = "secrets"
[log]
path = "../log/bp.log"
""")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # checked from another directory: the same files
    cfg = load_config(etc / "c.toml", environ={})
    assert cfg.smtp.tls_cert == etc / "tls" / "cert.pem"
    assert cfg.smtp.tls_key == etc / "tls" / "key.pem"
    assert cfg.spool.path == etc / "var" / "spool"
    assert cfg.delivery.upstream.path == etc / "out box"
    assert cfg.tokens.secret_file == etc / "secrets"
    assert cfg.log.path == etc / ".." / "log" / "bp.log"
    assert sqlite_path(cfg.store.url) == str(etc / "state" / "bp.db")
    assert cfg.store.url.startswith("sqlite:////")


def test_absolute_paths_and_other_urls_are_kept(tmp_path: Path) -> None:
    cfg = _load(tmp_path, """
[spool]
path = "/srv/spool"
[store]
url = "sqlite:////srv/bp.db"
""")
    assert cfg.spool.path == Path("/srv/spool")
    assert cfg.store.url == "sqlite:////srv/bp.db"
    pg = _load(tmp_path, "[store]\nurl = 'postgresql://bp@db/bp'\n")
    assert pg.store.url == "postgresql://bp@db/bp"


def test_defaults_and_environment_stay_relative_to_the_working_directory(
        tmp_path: Path) -> None:
    # The built-in defaults work without a file (and /etc is not writable), values from
    # the environment are not written in the file: both relative to the working directory.
    cfg = _load(tmp_path, "[policy]\nunknown = 'granted'\n",
                {"BEACON_PROXY_SPOOL_PATH": "spool-from-env"})
    assert cfg.spool.path == Path("spool-from-env")
    assert cfg.store.url == "sqlite:///var/beacon-proxy.db"
    assert cfg.delivery.upstream.path == Path("var/outbox")
    assert load_config(None, environ={}).spool.path == Path("var/spool")


def test_a_linked_file_keeps_the_directory_it_is_named_in(tmp_path: Path) -> None:
    # A Kubernetes ConfigMap mounts the file as a link into a hidden, versioned folder.
    real = tmp_path / "..data" / "c.toml"
    real.parent.mkdir()
    real.write_text("[spool]\npath = 'spool'\n")
    link = tmp_path / "c.toml"
    link.symlink_to(real)
    assert load_config(link, environ={}).spool.path == tmp_path / "spool"


def test_admin_listen(tmp_path: Path) -> None:
    assert load_config(None, environ={}).web.admin_listen is None
    cfg = _load(tmp_path, "[web]\nlisten = '0.0.0.0:8025'\nadmin_listen = '127.0.0.1:8026'\n")
    assert cfg.web.admin_listen == Endpoint("127.0.0.1", 8026)
    unset = _load(tmp_path, "[web]\nadmin_listen = '127.0.0.1:8026'\n",
                  {"BEACON_PROXY_WEB_ADMIN_LISTEN": ""})
    assert unset.web.admin_listen is None
    for text in ("[web]\nadmin_listen = '127.0.0.1:8025'",
                 "[web]\nlisten = '0.0.0.0:8025'\nadmin_listen = '127.0.0.1:8025'",
                 "[web]\nadmin_listen = 'nowhere'"):
        with pytest.raises(ConfigError) as info:
            _load(tmp_path, text)
        assert info.value.key == "web.admin_listen"


def test_environment_keys() -> None:
    assert environment_keys({"BEACON_PROXY_SMTP_LISTEN": "x", "BEACON_PROXY_SECRET": "y",
                             "BEACON_PROXY_CONFIG": "z", "BEACON_PROXY_OTHER_THING": "w",
                             "BEACON_PROXY_TEST_POSTGRES": "v", "PATH": "/bin"}) == {
        "smtp.listen": "BEACON_PROXY_SMTP_LISTEN", "tokens.secret": "BEACON_PROXY_SECRET",
        "other.thing": "BEACON_PROXY_OTHER_THING"}


def test_web_abuse_limits(tmp_path: Path) -> None:
    cfg = load_config(None, environ={}).web
    assert (cfg.header_timeout, cfg.rate_limit_pixel, cfg.rate_limit_page,
            cfg.rate_limit_api, cfg.rate_limit_burst) == (20, 100, 20, 100, 10)
    assert ipaddress.ip_address("127.0.0.1") in cfg.trusted_proxies[0]
    cfg = _load(tmp_path, "[web]\nheader_timeout = 5\nrate_limit_page = 0\n"
                          "trusted_proxies = ['10.0.0.0/8']\n").web
    assert (cfg.header_timeout, cfg.rate_limit_page) == (5, 0)
    assert cfg.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)
    for text, key in (("header_timeout = 0", "web.header_timeout"),
                      ("rate_limit_pixel = -1", "web.rate_limit_pixel"),
                      ("rate_limit_api = 1.5", "web.rate_limit_api"),
                      ("rate_limit_burst = 0", "web.rate_limit_burst"),
                      ("trusted_proxies = ['proxy.example']", "web.trusted_proxies")):
        with pytest.raises(ConfigError) as info:
            _load(tmp_path, f"[web]\n{text}\n")
        assert info.value.key == key


def test_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from beacon_proxy.config import usable_cpus, worker_count

    assert load_config(None, environ={}).smtp.workers == 1
    assert worker_count(_load(tmp_path, "[smtp]\nworkers = 3").smtp) == 3
    auto = _load(tmp_path, '[smtp]\nworkers = "auto"').smtp
    assert auto.workers == "auto" and worker_count(auto) == usable_cpus()
    assert load_config(None, environ={"BEACON_PROXY_SMTP_WORKERS": "auto"}).smtp.workers \
        == "auto"
    for bad in ("0", "65", '"many"', "true", "1.5"):
        with pytest.raises(ConfigError) as info:
            _load(tmp_path, f"[smtp]\nworkers = {bad}")
        assert info.value.key == "smtp.workers"
