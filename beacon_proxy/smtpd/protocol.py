"""One client connection: aiosmtpd's ``SMTP`` protocol plus this stage's bookkeeping.

aiosmtpd parses the commands and calls the handler's hooks; this subclass
adds what a server needs around that, and does some of aiosmtpd's own work
with less CPU per message:

* connection tracking for the session gauge, ``max_connections``,
  ``max_connections_per_client`` (for clients outside ``allow_networks``) and a
  graceful stop (:class:`Connections`);
* a shorter idle timeout (``idle_timeout_untrusted``) for a client outside
  ``allow_networks`` that has not authenticated, while no transaction is open
  (before ``MAIL FROM``, and again after each message);
* knowing when a connection is inside DATA, so stopping can wait for it;
* reading DATA in large chunks (:mod:`beacon_proxy.smtpd.data`), into one
  canonical CRLF form (bare LF line ends accepted, as Postfix does), instead of
  aiosmtpd's line-by-line loop, the main CPU cost of receiving;
* one place where every 4xx/5xx reply is logged and counted, whoever wrote it
  (the handler or aiosmtpd itself), with aiosmtpd's size replies reworded;
* the command loop (:meth:`SmtpProtocol._handle_client`): aiosmtpd's checks and
  replies, byte for byte, its per-line log calls built only when ``mail.log``
  logs them, the command's name noted for the rejection logs, and the idle
  timer re-armed by storing its new deadline (one loop timer a connection,
  rescheduled only when it fires early or a shorter timeout applies);
* the relay verdict by the client's address, judged once per connection
  (:meth:`SmtpProtocol.allowed_by_address`), not at every RCPT, and kept by
  :class:`Connections` for the last addresses seen (:meth:`Connections._verdict`);
* a STARTTLS whose handshake the relay cut short (idle timer, stop) failing,
  so that the connection is released (:meth:`SmtpProtocol.smtp_STARTTLS`);
* QUIT ending the command loop by a flag rather than by cancelling its task
  (:meth:`SmtpProtocol.smtp_QUIT`), and a finished connection leaving no
  reference cycle, so that its objects go by reference counting rather than
  by the cyclic garbage collector (:meth:`SmtpProtocol._forget_writer`).

The aiosmtpd internals this needs are listed, checked and version-bounded in
:mod:`beacon_proxy.internals`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import logging
import math
import socket
import ssl
import types
import warnings
import weakref
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from typing import Any, AnyStr, Final

from aiosmtpd import smtp as aiosmtpd_smtp
from aiosmtpd.smtp import (
    ALLOWED_BEFORE_STARTTLS,
    BOGUS_LIMIT,
    DATA_SIZE_DEFAULT,
    MISSING,
    SMTP,
    AuthCallbackType,
    AuthenticatorType,
    Session,
    TLSSetupException,
    _AuthMechAttr,
    sanitized_log,
    syntax,
)

from beacon_proxy import metrics
from beacon_proxy.address import split_path
from beacon_proxy.clientkey import client_key
from beacon_proxy.smtpd.data import read_data
from beacon_proxy.smtpd.policy import IpNetwork, relay_allowed
from beacon_proxy.smtpd.replies import (
    MESSAGE_TOO_BIG,
    SHUTTING_DOWN,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_FROM_CLIENT,
    log_rejection,
    loggable,
    rewrite_library_reply,
)

__all__ = ["Connections", "SmtpProtocol", "peer_ip"]

_UnboundCommand = Callable[[Any, str | None], Awaitable[None]]
_MAIL_LOG = aiosmtpd_smtp.log  # aiosmtpd's logger ("mail.log")
_DEBUG, _INFO = logging.DEBUG, logging.INFO
#: The commands whose positive replies wait while the client has pipelined more (RFC
#: 2920: they may be in a group).  Not the end of DATA (a message accepted is answered
#: at once: were the connection closed before the next write, the client would send it
#: again), nor QUIT, STARTTLS, AUTH or DATA's 354, after which the client or the relay
#: waits; a reply that is not 2xx writes every reply held back before it.
_BATCHED: Final = frozenset({"EHLO", "HELO", "MAIL", "RCPT", "RSET", "NOOP"})
#: At most this many replies held at once: a client that pipelines without end (a flood
#: of NOOPs it never reads the replies to) gets them written, and waited on (the writer
#: drained), a batch at a time.  (Replies are held only while the command loop has the
#: next line at hand, so the loop never waits for the client with a reply held, but for
#: AUTH's password check, which a shutdown or a cancellation flushes.)
_HELD: Final = 64
_VERDICTS = 1024  # client addresses whose verdicts Connections keeps (see _verdict)


def peer_ip(peer: Any) -> str:
    """The IP address from a socket peer name (``(host, port, ...)``)."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "" if peer is None else str(peer)


class QuietSession(Session):
    """aiosmtpd's session minus the deprecation warning logged on every AUTH.

    aiosmtpd itself sets ``login_data`` after each successful AUTH, and the
    base class logs a warning each time it does.
    """

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class Connections:
    """The open connections of one server: limits, stopping flag, change notices.

    ``limit`` bounds all connections; ``per_client`` bounds those of one client
    address (:func:`~beacon_proxy.clientkey.client_key`) outside ``trusted``.
    """

    def __init__(self, limit: int, per_client: int | None = None,
                 trusted: Sequence[IpNetwork] = ()) -> None:
        self.limit = limit
        self.per_client = limit if per_client is None else per_client
        self.trusted = tuple(trusted)
        self.stopping = False
        self._open: set[SmtpProtocol] = set()
        self._per_client: collections.Counter[str] = collections.Counter()
        self._changed = asyncio.Event()
        # _verdict's table: address -> (allowed by address, client group), and
        # the trusted networks it is for
        self._verdicts: dict[str, tuple[bool, str | None]] = {}
        self._verdicts_for: Sequence[IpNetwork] = self.trusted

    def __len__(self) -> int:
        return len(self._open)

    def from_client(self, ip: str) -> int:
        """Open connections of ``ip``'s group that count against ``per_client``."""
        return self._per_client[client_key(ip)]

    def admit(self, conn: SmtpProtocol, ip: str = "") -> str | None:
        """Register ``conn`` (from ``ip``); returns the refusal reply when it may not stay."""
        if self.stopping:
            return SHUTTING_DOWN
        if len(self._open) >= self.limit:
            return TOO_MANY_CONNECTIONS
        trusted, key = self._verdict(ip)
        conn.keep_verdict(ip, self.trusted, trusted)  # for its RCPTs
        if key is not None:
            if self._per_client[key] >= self.per_client:
                return TOO_MANY_FROM_CLIENT
            self._per_client[key] += 1
        conn.trusted, conn.client_group = trusted, key
        self._open.add(conn)
        metrics.SMTP_SESSIONS.inc()
        return None

    def _verdict(self, ip: str) -> tuple[bool, str | None]:
        """``ip``'s relay verdict by address (``relay_allowed(ip, False, trusted)``)
        and, outside ``trusted``, its :func:`client_key`: both pure functions of
        the address (and ``trusted``), each an ``ipaddress`` parse (~6-13 us a
        connection), kept for the last ``_VERDICTS`` addresses seen.  A client
        usually comes back from the same address; a flood from ever new ones
        (an IPv6 network) only empties the table each ``_VERDICTS`` addresses
        and pays the parses it paid before.  Kept for the ``trusted`` object it
        was computed for: another one starts a new table."""
        if self._verdicts_for is not self.trusted:
            self._verdicts = {}
            self._verdicts_for = self.trusted
        verdict = self._verdicts.get(ip)
        if verdict is None:
            allowed = relay_allowed(ip, False, self.trusted)
            verdict = (allowed, None if allowed else client_key(ip))
            if len(self._verdicts) >= _VERDICTS:
                self._verdicts.clear()
            self._verdicts[ip] = verdict
        return verdict

    def release(self, conn: SmtpProtocol) -> None:
        if conn in self._open:
            self._open.remove(conn)
            key = conn.client_group
            if key is not None:
                self._per_client[key] -= 1
                if self._per_client[key] <= 0:
                    del self._per_client[key]
            metrics.SMTP_SESSIONS.dec()
            self.notify()

    def notify(self) -> None:
        """Wake :meth:`wait_until` to check its condition again."""
        self._changed.set()

    def in_data(self) -> int:
        return sum(1 for conn in self._open if conn.in_data)

    def shutdown(self, *, idle_only: bool) -> None:
        """Answer ``421`` and close every connection (or every one not in DATA)."""
        for conn in list(self._open):
            if not (idle_only and conn.in_data):
                conn.shutdown()

    def abort(self) -> None:
        """Drop every connection still open, unsent replies and all: one closed but
        waiting for a peer that reads nothing to take what is left to send."""
        for conn in list(self._open):
            # asked for by name: uvloop's transports are not asyncio's classes (_send)
            abort: Callable[[], object] | None = getattr(conn.transport, "abort", None)
            if abort is not None:
                abort()

    async def wait_until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``done()`` is true or the loop clock reaches ``deadline``."""
        loop = asyncio.get_running_loop()
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return done()
        return True


class SmtpProtocol(SMTP):
    """aiosmtpd's SMTP protocol for one connection, tracked in :class:`Connections`."""

    # aiosmtpd sizes the stream reader's buffer by this (it pauses the socket at
    # twice the limit); 1001 bytes would make DATA arrive in 2 KB sips.  Command
    # lines keep their own, much smaller, limits.
    line_length_limit = 1 << 16
    # allowed_by_address's kept verdict: (networks, address, allowed)
    _by_address: tuple[Sequence[IpNetwork], str, bool] | None = None
    _quit = False  # QUIT answered: the command loop ends (smtp_QUIT)

    def __init__(self, handler: object, connections: Connections, *,
                 idle_timeout_untrusted: float | None = None,
                 data_size_limit: int | None = DATA_SIZE_DEFAULT,
                 enable_SMTPUTF8: bool = False,
                 decode_data: bool = False,
                 hostname: str | None = None,
                 ident: str | None = None,
                 tls_context: ssl.SSLContext | None = None,
                 require_starttls: bool = False,
                 timeout: float = 300,
                 auth_required: bool = False,
                 auth_require_tls: bool = True,
                 auth_exclude_mechanism: Iterable[str] | None = None,
                 auth_callback: AuthCallbackType | None = None,
                 command_call_limit: int | dict[str, int] | None = None,
                 authenticator: AuthenticatorType | None = None,
                 proxy_protocol_timeout: float | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.connections = connections
        self.trusted = True  # set by Connections.admit: the client is in allow_networks
        self.client_group: str | None = None  # counted per client under this key
        self.idle_timeout_untrusted = idle_timeout_untrusted
        self.auth_failures = 0  # failed AUTH attempts on this connection
        self.in_data = False
        self.stage = ""  # the command being answered ("MAIL"), for rejection logs
        # Replies held back while the client's pipelined commands are read (push()).
        self._pending: list[bytes] = []
        self.log_fields: dict[str, Any] = {}  # context the handler adds to rejection logs
        self.in_flow_wait = 0.0  # seconds this transaction's MAIL FROM waited (handler)
        self._admitted = False
        self._refused = False
        # aiosmtpd's SMTP.__init__, minus its per-connection introspection of the
        # class and the handler (inspect.getmembers, dir(), a signature, an AUTH
        # log line built whether logged or not): those tables are built once per
        # class and per handler (_class_tables, _handler_tables).  It sets the same
        # attributes; internals.missing_internals() compares the two on start-up.
        self.__ident__ = ident or aiosmtpd_smtp.__ident__
        self.loop = loop if loop else aiosmtpd_smtp.make_loop()
        asyncio.StreamReaderProtocol.__init__(
            self, asyncio.StreamReader(loop=self.loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected, loop=self.loop)
        self.event_handler = handler
        assert data_size_limit is None or isinstance(data_size_limit, int)
        self.data_size_limit = data_size_limit
        self.enable_SMTPUTF8 = enable_SMTPUTF8
        self._decode_data = decode_data
        # aiosmtpd keeps these limits in one class-level dict shared by all
        # connections (and grows it on every EHLO); give each connection its own.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self.hostname = hostname or socket.getfqdn()
        self.tls_context = tls_context
        if tls_context:
            if tls_context.verify_mode not in {ssl.CERT_NONE, ssl.CERT_OPTIONAL}:
                aiosmtpd_smtp.log.warning("tls_context.verify_mode not in {CERT_NONE, "
                                          "CERT_OPTIONAL}; this might cause client "
                                          "connection problems")
            elif tls_context.check_hostname:
                aiosmtpd_smtp.log.warning("tls_context.check_hostname == True; "
                                          "this might cause client connection problems")
        self.require_starttls = tls_context and require_starttls
        self._timeout_duration = timeout
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        if not auth_require_tls and auth_required:
            warnings.warn("Requiring AUTH while not requiring TLS "
                          "can lead to security vulnerabilities!", stacklevel=2)
            aiosmtpd_smtp.log.warning("auth_required == True but auth_require_tls == False")
        self._auth_require_tls = auth_require_tls
        if proxy_protocol_timeout is not None:
            # aiosmtpd's PROXY handshake lives in the _handle_client this class
            # replaces; the relay never asks for it.
            raise ValueError("the PROXY protocol is not supported")
        self._proxy_timeout = proxy_protocol_timeout
        # the idle timer (_reset_timeout): the deadline, and the one the loop's
        # timer is set for (inf: none pending)
        self._deadline = 0.0
        self._timer_at = math.inf
        self._authenticator: AuthenticatorType | None
        self._auth_callback: AuthCallbackType | None
        if authenticator is not None:
            self._authenticator = authenticator
            self._auth_callback = None
        else:
            self._auth_callback = auth_callback or aiosmtpd_smtp.login_always_fail
            self._authenticator = None
        self._auth_required = auth_required
        commands, builtin_auth = _class_tables(type(self))
        hooks, ehlo_version, handler_auth = _handler_tables(handler)
        # aiosmtpd's table: the built-in mechanisms, the handler's replacing them
        # in place or added after them, the excluded ones left out; a built-in
        # one is bound only when it stays.
        excluded = auth_exclude_mechanism or ()
        auth_methods: dict[str, _AuthMechAttr] = {}
        for mech, attr in builtin_auth:
            if mech not in excluded:
                auth_methods[mech] = handler_auth.get(mech) or _AuthMechAttr(
                    getattr(self, attr), True)
        for mech, found in handler_auth.items():
            if mech not in excluded and mech not in auth_methods:
                auth_methods[mech] = found
        self._auth_methods = auth_methods
        self._handle_hooks = hooks  # read-only in aiosmtpd: shared by the handler's sessions
        self._ehlo_hook_ver = ehlo_version
        # aiosmtpd's HELP reads the commands through this; the loop calls them from
        # the class's table (no bound method made for each command a connection)
        self._smtp_methods = _BoundCommands(self, commands)  # type: ignore[assignment]  # read only
        if command_call_limit is None:
            self._enforce_call_limit = False
        else:
            self._enforce_call_limit = True
            if isinstance(command_call_limit, int):
                self._call_limit_base = {}
                self._call_limit_default = command_call_limit
            elif isinstance(command_call_limit, dict):
                if not all(map(aiosmtpd_smtp.is_int, command_call_limit.values())):
                    raise TypeError("All command_call_limit values must be int")
                self._call_limit_base = command_call_limit
                self._call_limit_default = command_call_limit.get(
                    "*", aiosmtpd_smtp.CALL_LIMIT_DEFAULT)
            else:
                raise TypeError("command_call_limit must be int or Dict[str, int]")

    def _create_session(self) -> Session:
        return QuietSession(self.loop)

    # -- the command loop -------------------------------------------------------

    async def _handle_client(self) -> None:
        """aiosmtpd's command loop: the same checks, replies and order, less work a line.

        aiosmtpd 1.4's loop builds two sanitized log calls per line whether
        ``mail.log`` logs them or not, re-arms the idle timer for every command,
        and the relay ran each command through a wrapper of its own (the stage
        for rejection logs, the timer re-armed again after it).  Here the
        per-line logs are built only when ``mail.log`` logs at their level, the
        stage is noted in the loop itself, and the idle timer is re-armed (when
        a command arrives and after it) by storing its new deadline
        (:meth:`_reset_timeout`, with the timeout that applies now).  Everything a client
        sees is aiosmtpd's: the
        greeting, the line limits (``500 Command line too long`` after reading
        the whole over-long line), the ASCII and syntax checks, STARTTLS-first
        and failed-handshake refusals, the call limits and the bogus-command
        budget (``421``/``502`` and close), and exceptions answered by
        :meth:`handle_exception`; ``tests/smtpd/test_loop.py`` compares the two
        loops byte for byte.  The PROXY handshake, which aiosmtpd's loop also
        does, is not supported (``__init__`` refuses it).  The aiosmtpd
        attributes this reads are listed in :mod:`beacon_proxy.internals`.
        """
        try:
            log = _MAIL_LOG
            assert self.session is not None
            log.info("%r handling connection", self.session.peer)
            await self.push(f"220 {self.hostname} {self.__ident__}")
            call_limit: MutableMapping[str, int] = (
                collections.defaultdict(lambda: self._call_limit_default, self._call_limit_base)
                if self._enforce_call_limit else {})
            bogus_budget = BOGUS_LIMIT
            commands = _class_tables(type(self))[0]  # what _smtp_methods binds
            while self.transport is not None and not self._quit:
                try:
                    try:
                        line = await self._reader.readuntil()
                    except asyncio.LimitOverrunError as error:
                        await self._discard_long_line(error.consumed)
                        await self.push("500 Command line too long")
                        continue
                    line = self._logged(line)
                    parsed = self._parse(line)
                    if isinstance(parsed, str):
                        await self.push(parsed)
                        continue
                    command, arg = parsed
                    if self._enforce_call_limit:
                        budget = call_limit[command]
                        if budget < 1:
                            log.warning("%r over limit for %s", self.session.peer, command)
                            await self.push(f"421 4.7.0 {command} sent too many times")
                            self.transport.close()
                            continue
                        call_limit[command] = budget - 1
                    method = commands.get(command)
                    if method is None:
                        log.warning("%r unrecognised: %s", self.session.peer, command)
                        bogus_budget -= 1
                        if bogus_budget < 1:
                            log.warning("%r too many bogus commands", self.session.peer)
                            await self.push("502 5.5.1 Too many unrecognized commands, goodbye.")
                            self.transport.close()
                            continue
                        await self.push(f'500 Error: command "{command}" not recognized')
                        continue
                    self._reset_timeout()  # a valid command arrived
                    # The command's name for the rejection logs (a command that
                    # raises keeps it: the reply to its exception is logged under it).
                    self.stage = command
                    envelope = self.envelope
                    self.log_fields = {"sender": _sender(
                        envelope.mail_from if envelope is not None else None)}
                    await method(self, arg)
                    self.stage = ""
                    transport = self.transport
                    if transport is not None and not transport.is_closing():
                        # the command may have changed which timeout applies (MAIL
                        # FROM, AUTH, the end of DATA)
                        self._reset_timeout()
                except (asyncio.CancelledError, ConnectionResetError):
                    # The client went away (aiosmtpd cancels this task), in DATA or not;
                    # or closed its side only: what was held for it goes out first.
                    log.info("%r Connection lost during _handle_client()", self.session.peer)
                    self._flush()
                    self._writer.close()
                    raise
                except Exception as error:
                    await self._answer_exception(error)
        finally:
            if self.transport is None:  # lost: nothing will write to it
                self._forget_writer()

    def _logged(self, line: bytes) -> bytes:
        """The line without its line end; aiosmtpd's two per-line logs, built only
        when ``mail.log`` logs them (AUTH arguments hidden, as aiosmtpd does)."""
        log = _MAIL_LOG
        if log.isEnabledFor(_DEBUG):
            sanitized_log(log.debug, "_handle_client readline: %r", line)
        line = line.rstrip(b"\r\n")
        if log.isEnabledFor(_INFO):
            assert self.session is not None
            sanitized_log(log.info, "%r >> %r", self.session.peer, line)
        return line

    def _parse(self, line: bytes) -> tuple[str, str | None] | str:
        """A command line (line end stripped) as ``(verb, argument)``, or the reply
        refusing it: aiosmtpd's checks, in its order."""
        if not line:
            return "500 Error: bad syntax"
        command_bytes, _, arg_bytes = line.partition(b" ")
        try:
            command = command_bytes.upper().decode("ascii")
        except UnicodeDecodeError:
            return "500 Error: bad syntax"
        arg: str | None = None
        if arg_bytes:
            arg_bytes = arg_bytes.strip()
            if self.enable_SMTPUTF8:  # the raw bytes stay recoverable
                arg = str(arg_bytes, encoding="utf-8", errors="surrogateescape")
            else:
                try:
                    arg = str(arg_bytes, encoding="ascii", errors="strict")
                except UnicodeDecodeError:
                    return "500 Error: strict ASCII mode"
        assert self.session is not None
        limit = (self.command_size_limits[command] if self.session.extended_smtp
                 else self.command_size_limit)
        if len(line) > limit:
            return "500 Command line too long"
        if not self._tls_handshake_okay and command != "QUIT":
            return "554 Command refused due to lack of security"
        if (self.require_starttls and not self._tls_protocol
                and command not in ALLOWED_BEFORE_STARTTLS):
            return "530 Must issue a STARTTLS command first"  # RFC 3207 section 4
        return command, arg

    async def _discard_long_line(self, consumed: int) -> None:
        """Read away a command line longer than the reader's limit, up to its end:
        never more than the limit buffered at once (aiosmtpd's loop does the same)."""
        await self._reader.read(consumed)
        while True:
            try:
                await self._reader.readuntil()
                return
            except asyncio.LimitOverrunError as error:
                await self._reader.read(error.consumed)

    async def _answer_exception(self, error: Exception) -> None:
        """aiosmtpd's answer to an exception from a command: :meth:`handle_exception`'s
        reply (or a ``500`` naming the error it raised in turn); a failed TLS
        handshake closes the connection instead.  (Where ``handle_exception``
        itself is cancelled, aiosmtpd would push ``None`` and fail; here the
        cancellation goes on, with no reply either way.)"""
        status = None
        try:
            status = await self.handle_exception(error)
        except Exception as inner_error:
            try:
                assert self.session is not None
                _MAIL_LOG.exception("%r Exception in handle_exception()", self.session.peer)
                status = f"500 Error: ({inner_error.__class__.__name__}) {inner_error}"
            except Exception:
                status = "500 Error: Cannot describe error"
        finally:
            if isinstance(error, TLSSetupException):
                assert self.transport is not None
                self.transport.close()
                self.connection_lost(error)
            elif status is not None:  # None: handle_exception was cancelled, which goes on
                await self.push(status)

    # -- the idle timer ---------------------------------------------------------

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timer (``duration``, or the one that applies now:
        shorter for an untrusted client outside a transaction), kept lazily.

        aiosmtpd cancels its timer and schedules a new one at every re-arm
        (``cancel`` + ``call_later``: six times a message here).  Here a re-arm
        stores the new deadline (loop time) in ``_deadline``; the loop's timer is
        touched only when the deadline comes earlier than the one it is set for
        (``_timer_at``: a shorter timeout applies again, or no timer is pending).
        When it fires, :meth:`_idle_check` times the connection out if the
        deadline has not moved since, and otherwise sets it for the deadline
        that now applies.  So the timeout comes when aiosmtpd's would: at the
        last re-arm's deadline, by the same loop timer; ``_timeout_cb`` is
        aiosmtpd's own."""
        if duration is None:
            duration = self._idle_duration()
        delay = duration or self._timeout_duration
        loop = self.loop
        deadline = self._deadline = loop.time() + delay
        if deadline < self._timer_at:  # earlier than the pending timer, or none pending
            handle = self._timeout_handle
            if handle is not None:
                handle.cancel()
            self._timeout_handle = loop.call_later(delay, self._idle_check)
            self._timer_at = deadline

    def _idle_check(self) -> None:
        """The idle timer fired: time out if the deadline is the one it was set for
        (or earlier), else wait on for the deadline a later re-arm set."""
        deadline = self._deadline
        if deadline <= self._timer_at:
            self._timer_at = math.inf  # none pending: a later re-arm schedules one
            self._timeout_cb()  # type: ignore[no-untyped-call]  # aiosmtpd: logs, closes
        else:
            self._timeout_handle = self.loop.call_at(deadline, self._idle_check)
            self._timer_at = deadline

    def _idle_duration(self) -> float:
        short = self.idle_timeout_untrusted
        if short is not None and self._untrusted_idle():
            return min(short, self._timeout_duration)
        return self._timeout_duration

    def _untrusted_idle(self) -> bool:
        if self.trusted or self.session is None or self.session.authenticated:
            return False
        return self.envelope is None or self.envelope.mail_from is None

    def keep_verdict(self, ip: str, networks: Sequence[IpNetwork], allowed: bool) -> None:
        """Keep ``allowed`` as ``relay_allowed(ip, False, networks)`` for
        :meth:`allowed_by_address` (:meth:`Connections.admit` knows it already)."""
        self._by_address = (networks, ip, allowed)

    def client_ip(self) -> str:
        return peer_ip(self.session.peer if self.session is not None else None)

    def allowed_by_address(self, ip: str, networks: Sequence[IpNetwork]) -> bool:
        """``relay_allowed(ip, False, networks)``, kept for this connection.

        The answer is kept with the address and the very ``networks`` object it
        was computed for, and given again only for both: a pure function of the
        same arguments.  :meth:`Connections.admit` gives it for
        ``allow_networks`` (:meth:`keep_verdict`; the same tuple the handler's
        configuration holds),
        so a connection's RCPTs parse its address no more (~5 us each: a
        message to 1000 recipients saved 5 ms)."""
        kept = self._by_address
        if kept is not None and kept[0] is networks and kept[1] == ip:
            return kept[2]
        allowed = relay_allowed(ip, False, networks)
        self._by_address = (networks, ip, allowed)
        return allowed

    # -- connection life cycle ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again after STARTTLS with the TLS transport: already admitted.
        if not self._admitted:
            ip = peer_ip(transport.get_extra_info("peername"))
            refusal = self.connections.admit(self, ip)
            if refusal is not None:
                self._refused = True
                if refusal != SHUTTING_DOWN:
                    log_rejection("CONNECT", refusal, client_address=ip)
                _send(transport, refusal.encode("ascii") + b"\r\n")
                transport.close()
                self._client_connected_cb = _streams_made  # no cycle (_forget_writer)
                return
            self._admitted = True
            super().connection_made(transport)
            # The streams are made (_cb_client_connected ran, once: a STARTTLS
            # only swaps their transport); the bound method would keep a cycle.
            self._client_connected_cb = _streams_made
            return
        super().connection_made(transport)

    def eof_received(self) -> bool | None:
        """The client closed its side: aiosmtpd cancels the session's handler and
        (outside TLS) asks to keep the transport half-open, which then nothing
        closes before the idle timeout: the connection keeps its slot against
        ``max_connections`` (uvloop shows it at once, for a client that closes
        right after connecting).  Nothing more will be answered: close it."""
        if not self._refused:
            super().eof_received()
        return False

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return  # aiosmtpd never saw this connection
        self.connections.release(self)
        super().connection_lost(error)  # cancels the idle timer
        self._timer_at = math.inf
        task = self._handler_coroutine
        if task is not None:
            if task.done():  # the command loop has ended (QUIT, or cancelled at EOF)
                _forget_cancellation(task)
                self._forget_writer()
            else:  # aiosmtpd cancelled it: it ends with a CancelledError
                task.add_done_callback(_forget_cancellation)

    def _forget_writer(self) -> None:
        """Drop the connection's ``StreamWriter`` once the connection is lost and
        its command loop has ended (whichever comes last calls this): nothing
        writes to it again.  The writer refers back to this protocol; with that
        cycle (and the two :meth:`connection_made` and :class:`_BoundCommands`
        avoid) every connection's objects (~25: the protocol, its reader and
        writer, session, envelope, timer, task, transport) were left to the
        cyclic garbage collector, whose collections they also triggered;
        without, reference counting frees them when the connection ends."""
        self.__dict__.pop("_writer", None)

    def shutdown(self) -> None:
        """Answer ``421 4.3.2`` and close, whatever the session is doing."""
        self._flush()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        _send(transport, SHUTTING_DOWN.encode("ascii") + b"\r\n")
        transport.close()

    async def close_with(self, reply: str) -> None:
        """Send ``reply`` (logged like every refusal) and close the connection."""
        await self.push(reply)
        if self.transport is not None:
            self.transport.close()

    # -- commands ---------------------------------------------------------------

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """MAIL/RCPT: the path's address exactly as written (``(None, None)``: no
        closing ``>``); the handler judges it by the shared RFC 5321 rule."""
        return split_path(arg) or (None, None)

    @syntax("DATA")  # as aiosmtpd's own: HELP lists it
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA command with a chunked reader (same checks, same hooks)."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        self.in_data = True
        try:
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            try:
                content, _ = await read_data(self._reader, self.data_size_limit)
            except asyncio.IncompleteReadError:
                raise ConnectionResetError("client closed the connection in DATA") from None
            if content is None:
                self.envelope = self._create_envelope()  # aiosmtpd's post-DATA reset
                await self.push(MESSAGE_TOO_BIG)
                return
            self.envelope.content = self.envelope.original_content = content
            status = await self._call_handler_hook("DATA")
            self.envelope = self._create_envelope()  # aiosmtpd's post-DATA reset
            await self.push("250 OK" if status is MISSING else status)
        finally:
            self.in_data = False
            self.connections.notify()
            if self.connections.stopping:
                self.shutdown()

    @syntax("QUIT")  # as aiosmtpd's own
    async def smtp_QUIT(self, arg: str) -> None:
        """aiosmtpd's QUIT (``221``, close), ending the command loop by a flag
        instead of cancelling the loop's own task.

        aiosmtpd cancels the running loop task: the task goes on to its next
        read, which the cancellation then interrupts, and a ``CancelledError``
        unwinds through the loop (another turn of the event loop and an
        exception a connection).  The loop here stops at its next turn instead
        (``_quit``) and nothing more is read or answered, as with aiosmtpd's
        (``tests/smtpd/test_loop.py`` plays QUIT, pipelined or not, against
        aiosmtpd's loop and QUIT)."""
        if arg:
            await self.push("501 Syntax: QUIT")
            return
        status = await self._call_handler_hook("QUIT")
        await self.push("221 Bye" if status is MISSING else status)
        self._quit = True
        assert self.transport is not None
        self.transport.close()

    @syntax("STARTTLS", when="tls_context")  # as aiosmtpd's own
    async def smtp_STARTTLS(self, arg: str) -> None:
        """aiosmtpd's STARTTLS, failing when the handshake never completed.

        When the relay itself closes the connection during the handshake (the
        idle timer, a stop), asyncio's ``SSLProtocol`` completes aiosmtpd's
        handshake waiter without an error and never calls this protocol's
        ``connection_lost``: aiosmtpd's STARTTLS returned as if secured, the
        loop waited for a line that could never come, and the connection held
        its slot against ``max_connections`` for good (a slow-handshake client
        could use up every slot).  A new ``SSLProtocol`` but the session not
        replaced (a completed handshake's ``connection_made`` replaces it) is
        that case: a failed handshake, which closes the connection and releases it.
        """
        session, tls_protocol = self.session, self._tls_protocol
        await super().smtp_STARTTLS(arg)
        if self._tls_protocol is not tls_protocol and self.session is session:
            raise TLSSetupException() from ConnectionAbortedError(
                "connection closed during the TLS handshake")

    async def push(self, status: AnyStr) -> None:
        """aiosmtpd's ``push`` (the reply encoded, written, debug-logged, drained),
        in one coroutine with the relay's part: every 4xx/5xx reply is logged
        and counted, aiosmtpd's size replies reworded."""
        response: bytes
        if isinstance(status, str):
            reply: str = status
            if reply[:1] in ("4", "5"):
                reply = rewrite_library_reply(reply)
                log_rejection(self.stage or "COMMAND", reply,
                              **{"client_address": self.client_ip(), **self.log_fields})
            response = bytes(reply, "utf-8" if self.enable_SMTPUTF8 else "ascii")
        else:
            response = status
        if _MAIL_LOG.isEnabledFor(_DEBUG):
            assert self.session is not None
            _MAIL_LOG.debug("%r << %r", self.session.peer, response)
        pending = self._pending
        if (response[:1] == b"2" and self.stage in _BATCHED and len(pending) < _HELD
                and self._reader._buffer.find(b"\n") >= 0):  # type: ignore[attr-defined]
            # RFC 2920 section 3.2: the client pipelined more commands; their replies
            # go out with this one, in one write (the next command is read at once)
            pending.append(response + b"\r\n")
            return
        writer = self._writer
        writer.write(self._taken(response + b"\r\n"))
        await writer.drain()

    def _taken(self, reply: bytes = b"") -> bytes:
        """The replies held back for pipelined commands, then ``reply``, as one write
        (none held: ``reply`` itself); none held any more."""
        pending = self._pending
        if not pending:
            return reply
        pending.append(reply)
        data = b"".join(pending)
        pending.clear()
        return data

    def _flush(self) -> None:
        """Write the replies held back for pipelined commands (see :meth:`push`)."""
        data = self._taken()
        transport = self.transport
        if data and transport is not None and not transport.is_closing():
            _send(transport, data)


class _BoundCommands(Mapping[str, Callable[[str | None], Awaitable[None]]]):
    """A connection's commands by name, as aiosmtpd's ``_smtp_methods`` dict (the
    same names, the same order), each bound to the connection when looked up:
    aiosmtpd's ``__init__`` binds all of them (~20) for every connection, where
    only its HELP reads them."""

    __slots__ = ("_conn", "_table")

    def __init__(self, conn: SmtpProtocol, table: dict[str, _UnboundCommand]) -> None:
        self._conn = weakref.ref(conn)  # no cycle (SmtpProtocol._forget_writer)
        self._table = table

    def __getitem__(self, name: str) -> Callable[[str | None], Awaitable[None]]:
        conn = self._conn()
        if conn is None:
            raise ReferenceError("the connection is gone")
        return types.MethodType(self._table[name], conn)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)


_Tables = tuple[dict[str, _UnboundCommand], tuple[tuple[str, str], ...]]
_CLASS_TABLES: dict[type, _Tables] = {}
_HandlerTables = tuple[dict[str, Callable[..., Any]], str | None, dict[str, _AuthMechAttr]]
#: Where a handler keeps its tables (_handler_tables): in its own ``__dict__``.
_HANDLER_TABLES = "_beacon_proxy_smtp_tables"


def _class_tables(cls: type[SmtpProtocol]) -> _Tables:
    """A protocol class's commands (``smtp_*``) and
    built-in AUTH mechanisms (``auth_*``), as aiosmtpd's ``__init__`` finds them
    on every connection; computed once per class."""
    tables = _CLASS_TABLES.get(cls)
    if tables is None:
        commands = {attr.replace("smtp_", ""): getattr(cls, attr)
                    for attr in dir(cls) if attr.startswith("smtp_")}
        builtin_auth = tuple(
            (getattr(func, "__auth_mechanism_name__",
                     attr.replace("auth_", "").replace("__", "-")), attr)
            for attr, func in inspect.getmembers(cls) if attr.startswith("auth_"))
        tables = _CLASS_TABLES[cls] = (commands, builtin_auth)
    return tables


def _handler_tables(handler: object) -> _HandlerTables:
    """A handler's hooks (``handle_*``), its EHLO hook's version and its AUTH
    mechanisms (``auth_*``), as aiosmtpd's ``__init__`` finds them; computed once
    per handler (the server has one for all its connections).

    Kept in the handler's own ``__dict__``: the hooks are its bound methods, so a
    table kept elsewhere, even by a weak reference to the handler (a
    ``WeakKeyDictionary``, as it was), refers to the handler and
    kept it, and all it refers to (the configuration, the enqueue and what that
    holds), alive for good.  Kept in the handler, they form one reference cycle
    that the cyclic collector frees with the handler when the server is gone."""
    kept: MutableMapping[str, Any]
    try:
        kept = vars(handler)
    except TypeError:  # no __dict__: nothing to keep them in, made for each connection
        kept = {}
    tables: _HandlerTables | None = kept.get(_HANDLER_TABLES)
    if tables is not None:
        return tables
    hooks = {attr.replace("handle_", ""): getattr(handler, attr)
             for attr in dir(handler) if attr.startswith("handle_")}
    ehlo = hooks.get("EHLO")
    if ehlo is None:
        version = None
    else:
        params = len(inspect.signature(ehlo).parameters)
        if params == 4:
            version = "old"
            warnings.warn("Use the 5-argument handle_EHLO() hook instead of the 4-argument "
                          "handle_EHLO() hook", DeprecationWarning, stacklevel=3)
        elif params == 5:
            version = "new"
        else:
            raise RuntimeError("Unsupported EHLO Hook")
    auth = {getattr(func, "__auth_mechanism_name__",
                    attr.replace("auth_", "").replace("__", "-")): _AuthMechAttr(func, False)
            for attr, func in inspect.getmembers(handler) if attr.startswith("auth_")}
    tables = (hooks, version, auth)
    with contextlib.suppress(TypeError):  # a class's mappingproxy: read-only
        kept[_HANDLER_TABLES] = tables
    return tables


def _forget_cancellation(task: asyncio.Task[None]) -> None:
    """Take a cancelled command loop's ``CancelledError`` from its task: the task
    keeps it until asked, and its traceback holds the loop's frame, so the
    protocol, which holds the task (``SmtpProtocol._forget_writer``)."""
    if task.cancelled():
        with contextlib.suppress(asyncio.CancelledError):
            task.result()


def _streams_made(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A connection's ``client_connected_cb`` once its streams are made: not called
    again (asyncio's ``StreamWriter.start_tls`` only asks whether there is one)."""


def _send(transport: asyncio.BaseTransport, data: bytes) -> None:
    """Write ``data`` to ``transport``.  uvloop's transports are not registered with
    asyncio's transport classes (``isinstance(t, asyncio.WriteTransport)`` is false
    there), so ask for the method, not the class."""
    write: Callable[[bytes], object] | None = getattr(transport, "write", None)
    if write is not None:
        write(data)


def _sender(mail_from: str | None) -> str | None:
    if mail_from is None:
        return None
    return "" if mail_from == "<>" else loggable(mail_from)


