"""The private internals of aiosmtpd and aiosmtplib the relay uses are still there."""

from __future__ import annotations

import asyncio
import inspect
import tomllib
from pathlib import Path
from typing import Any

import aiosmtpd.smtp
import pytest

from beacon_proxy import internals
from beacon_proxy.internals import missing_internals
from beacon_proxy.smtpd.protocol import Connections, SmtpProtocol


def test_the_installed_libraries_have_every_internal_the_relay_uses() -> None:
    missing = missing_internals()
    assert missing == [], (
        "the installed aiosmtpd/aiosmtplib lack private internals beacon-proxy relies on "
        f"(see beacon_proxy/internals.py): {missing}")


def test_a_missing_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals, "AIOSMTPD", (*internals.AIOSMTPD, "_gone_in_2_0"))
    monkeypatch.delattr(aiosmtpd.smtp.SMTP, "_create_envelope")
    missing = missing_internals()
    assert [m.split(": ")[1] for m in missing] == ["SMTP._create_envelope", "SMTP._gone_in_2_0"]
    assert missing[0].startswith("aiosmtpd 1.")


def test_a_missing_aiosmtplib_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals, "AIOSMTPLIB", (*internals.AIOSMTPLIB, "read_replies"))
    monkeypatch.setattr(internals, "AIOSMTPLIB_SMTP", (*internals.AIOSMTPLIB_SMTP, "pipe"))
    missing = missing_internals()
    assert [m.split(": ")[1] for m in missing] == ["SMTPProtocol.read_replies", "SMTP.pipe"]
    assert missing[0].startswith("aiosmtplib 5.")


def test_both_libraries_are_bounded_to_the_series_tested() -> None:
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    pins = {d.split(">")[0].split("<")[0]: d for d in project["project"]["dependencies"]}
    assert "<1.5" in pins["aiosmtpd"] and "<6" in pins["aiosmtplib"]


def test_serve_refuses_to_start_without_them(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from beacon_proxy.cli.main import main

    monkeypatch.setattr(internals, "missing_internals",
                        lambda: ["aiosmtpd 9.0: SMTP._reader"])
    assert main(["serve"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "aiosmtpd 9.0: SMTP._reader" in err[0]


def _both(auth_users: dict[str, str], loop: asyncio.AbstractEventLoop
          ) -> tuple[aiosmtpd.smtp.SMTP, SmtpProtocol]:
    """aiosmtpd's own SMTP and the relay's SmtpProtocol, built with the same
    arguments and handler as SmtpServer builds a connection."""
    from beacon_proxy.config import Endpoint, SmtpConfig
    from beacon_proxy.smtpd.handler import SmtpHandler

    async def enqueue(envelope: object, data: bytes) -> None:
        return None

    handler = SmtpHandler(SmtpConfig(listen=Endpoint("127.0.0.1", 0), auth_users=auth_users),
                          enqueue)
    kwargs: dict[str, Any] = {
        "hostname": "mx.test", "data_size_limit": 1000, "enable_SMTPUTF8": True, "timeout": 30,
        "auth_require_tls": True, "loop": loop,
        "auth_exclude_mechanism": () if auth_users else ("PLAIN", "LOGIN")}
    theirs = aiosmtpd.smtp.SMTP(handler, **kwargs)
    ours = SmtpProtocol(handler, Connections(10), idle_timeout_untrusted=5.0, **kwargs)
    return theirs, ours


@pytest.mark.parametrize("auth_users", [{}, {"u": "hash"}])
def test_the_relays_init_builds_what_aiosmtpds_builds(auth_users: dict[str, str]) -> None:
    loop = asyncio.new_event_loop()
    try:
        theirs, ours = _both(auth_users, loop)
        assert set(vars(theirs)) <= set(vars(ours))
        assert list(ours._smtp_methods) == list(theirs._smtp_methods)
        for name, method in ours._smtp_methods.items():
            assert method.__self__ is ours
            assert (getattr(method, "__smtp_syntax__", None)
                    == getattr(theirs._smtp_methods[name], "__smtp_syntax__", None))
        def auth(smtp: aiosmtpd.smtp.SMTP) -> dict[str, tuple[object, bool]]:
            return {m: (getattr(a.method, "__func__", None), a.is_builtin)
                    for m, a in smtp._auth_methods.items()}

        assert auth(ours) == auth(theirs)
        assert bool(ours._auth_methods) == bool(auth_users)
        assert ours._handle_hooks == theirs._handle_hooks
        assert ours._ehlo_hook_ver == theirs._ehlo_hook_ver
        plain = {k: v for k, v in vars(theirs).items()
                 if isinstance(v, (bool, int, float, str, type(None)))}
        assert {k: vars(ours)[k] for k in plain} == plain
    finally:
        loop.close()


@pytest.mark.parametrize("exclude", [(), ("PLAIN",), ("LOGIN",), ("LOGIN", "PLAIN"),
                                     ("XTEST",), ("NOPE",)])
@pytest.mark.parametrize("extra", [False, True])
def test_the_auth_table_is_aiosmtpds_in_its_order(exclude: tuple[str, ...], extra: bool) -> None:
    """The built-in mechanisms (PLAIN and LOGIN, bound to the connection), the
    handler's replacing them in place or added after, the excluded ones left out:
    the same mechanisms, methods and order as aiosmtpd's ``__init__`` builds."""
    from beacon_proxy.config import Endpoint, SmtpConfig
    from beacon_proxy.smtpd.handler import SmtpHandler

    async def enqueue(envelope: object, data: bytes) -> None:
        return None

    class Extra(SmtpHandler):
        async def auth_XTEST(self, server: object, args: list[str]) -> object:
            return None

    class Builtin:  # no auth_ methods: aiosmtpd's own PLAIN and LOGIN stay
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            return "250 OK"

    cfg = SmtpConfig(listen=Endpoint("127.0.0.1", 0), auth_users={"u": "hash"})
    loop = asyncio.new_event_loop()
    try:
        for handler in (Extra(cfg, enqueue) if extra else SmtpHandler(cfg, enqueue), Builtin()):
            kwargs: dict[str, Any] = {"hostname": "mx.test", "loop": loop,
                                      "auth_exclude_mechanism": exclude}
            theirs = aiosmtpd.smtp.SMTP(handler, **kwargs)
            ours = SmtpProtocol(handler, Connections(10), **kwargs)

            def auth(smtp: aiosmtpd.smtp.SMTP) -> list[tuple[str, object, object, bool]]:
                return [(m, getattr(a.method, "__func__", a.method),
                         getattr(a.method, "__self__", None), a.is_builtin)
                        for m, a in smtp._auth_methods.items()]

            assert [(m, f, ours if s is ours else s, b) for m, f, s, b in auth(ours)] == [
                (m, f, ours if s is theirs else s, b) for m, f, s, b in auth(theirs)]
    finally:
        loop.close()


def test_a_connection_does_not_introspect_its_class(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.new_event_loop()
    try:
        _both({"u": "hash"}, loop)  # the first one may build the tables
        calls: list[object] = []
        real = inspect.getmembers

        def getmembers(obj: object, *args: Any) -> Any:
            calls.append(obj)
            return real(obj, *args)

        monkeypatch.setattr(inspect, "getmembers", getmembers)
        from beacon_proxy.config import Endpoint, SmtpConfig
        from beacon_proxy.smtpd.handler import SmtpHandler

        async def enqueue(envelope: object, data: bytes) -> None:
            return None

        handler = SmtpHandler(SmtpConfig(listen=Endpoint("127.0.0.1", 0)), enqueue)
        SmtpProtocol(handler, Connections(10), hostname="mx.test", loop=loop)  # new handler
        assert calls == [handler]
        for _ in range(3):
            SmtpProtocol(handler, Connections(10), hostname="mx.test", loop=loop)
        assert calls == [handler]
    finally:
        loop.close()


def test_an_attribute_aiosmtpd_adds_to_its_init_is_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    real_init = aiosmtpd.smtp.SMTP.__init__

    def init(self: aiosmtpd.smtp.SMTP, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        vars(self)["_new_in_1_4_7"] = True

    monkeypatch.setattr(aiosmtpd.smtp.SMTP, "__init__", init)
    missing = missing_internals()
    assert len(missing) == 1
    assert missing[0].endswith("SMTP.__init__ sets _new_in_1_4_7, SmtpProtocol.__init__ does not")


def test_the_command_loops_needs_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """The relay replaces aiosmtpd's command loop: the constants it reads, and that
    ``connection_made`` still runs ``_handle_client``, are checked too."""
    monkeypatch.delattr(aiosmtpd.smtp, "BOGUS_LIMIT")

    def connection_made(self: aiosmtpd.smtp.SMTP, transport: object) -> None:
        self._handler_coroutine = self.loop.create_task(self._serve())  # type: ignore[attr-defined]

    monkeypatch.setattr(aiosmtpd.smtp.SMTP, "connection_made", connection_made)
    missing = [m.split(": ")[1] for m in missing_internals()]
    assert missing == ["aiosmtpd.smtp.BOGUS_LIMIT", "SMTP.connection_made runs _handle_client"]


def test_a_missing_stream_reader_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals, "STREAM_READER", (*internals.STREAM_READER, "_gone"))
    missing = missing_internals()
    assert [m.split(": ")[1] for m in missing] == ["asyncio.StreamReader._gone"]
    assert missing[0].startswith("Python 3.")


def test_a_missing_stream_reader_protocol_internal_is_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals, "STREAM_READER_PROTOCOL",
                        (*internals.STREAM_READER_PROTOCOL, "_gone_in_3_99"))
    missing = missing_internals()
    assert [m.split(": ")[1] for m in missing] == ["asyncio.StreamReaderProtocol._gone_in_3_99"]


class _Base:
    def __init__(self) -> None:
        self._set_in_base = 1

    @property
    def prop(self) -> int:
        return self._read_only  # type: ignore[attr-defined, no-any-return]

    @prop.setter
    def prop(self, value: int) -> None:
        self._set_by_setter = value


class _Derived(_Base):
    def start(self) -> None:
        def later() -> None:
            self._set_in_nested = 2
        later()
        print(self._only_read)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "found"), [
    ("_set_in_base", True), ("_set_by_setter", True), ("_set_in_nested", True),
    ("start", True), ("_read_only", False), ("_only_read", False), ("_nowhere", False)])
def test_an_attribute_is_found_where_the_classes_code_assigns_it(name: str, found: bool) -> None:
    """Read from the bytecode of the class's methods and their bases' (start-up took ~0.5 s a
    worker with ``inspect.getsource``): an attribute only read is not there."""
    assert internals._assigned_or_defined(_Derived, name) is found


class _NotItsOwn:
    """Attributes a method touches without assigning them on its own instance."""

    __slots__ = ("_slot_never_set", "_slot_set")

    def __init__(self) -> None:
        self._slot_set = 1

    def other(self, peer: _Base) -> None:
        peer._stored_on_another = 1  # type: ignore[attr-defined]
        alias = self
        alias._stored_through_an_alias = 2  # type: ignore[attr-defined]
        del self._deleted  # type: ignore[attr-defined]
        self._augmented += 1  # type: ignore[attr-defined]

    @staticmethod
    def helper(peer: _Base) -> None:
        peer._stored_by_a_static_method = 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "found"), [
    ("_slot_set", True), ("_slot_never_set", False), ("_stored_on_another", False),
    ("_stored_through_an_alias", False), ("_deleted", False), ("_augmented", False),
    ("_stored_by_a_static_method", False)])
def test_an_attribute_is_its_own_only_where_self_is_assigned(name: str, found: bool) -> None:
    """Only ``self.<name> = ...`` counts: a library whose own assignment went away, leaving
    another object's, a deletion, an increment or an empty slot, lacks the attribute."""
    assert internals._assigned_or_defined(_NotItsOwn, name) is found
