"""The aiosmtpd handler: checks each command, asks the relay policy, hands over.

aiosmtpd finds hooks by name (``handle_MAIL``, ``auth_PLAIN``, ...) and calls
them as ``hook(server, session, envelope, ...)``.  Each hook returns the reply
to send; none lets an exception through (that would become aiosmtpd's
``500 Error: (Exc) ...``, permanent and leaking internals): an unexpected error
answers ``451 4.3.0`` and is logged with its traceback.

The message DATA hands over is already canonical
(:func:`beacon_proxy.smtpd.data.canonical`): lines that ended in a bare LF
end in CRLF, so the header checks here, the spool and every later stage see
one form.  A bare CR left in the header section is refused (``554 5.6.0``),
and so is, anywhere in the message, a NUL or a line longer than 998 octets
(RFC 5322 2.1.1; RFC 5321 4.5.3.1.6): the next hop may refuse those, and
nothing is acknowledged that it could refuse.  The size logged and queued is
that of the canonical message, while the size limit was applied to the
bytes received.

AUTH has two limits (:mod:`beacon_proxy.smtpd.limits`): ``auth_max_failures``
failures on one connection, then ``421 4.7.0`` and the connection is closed
(nothing more is checked on it); and per client address, a growing wait
before each answer and, past ``auth_failure_limit`` failures in
``auth_failure_window``, ``454 4.7.0`` without a check.  Each failure is an
``auth_failed`` event (for fail2ban) and counts in
``beacon_proxy_smtp_auth_total``.

The hand-off in DATA is the only place a message is acknowledged: ``250`` is
sent only after :class:`Enqueue` returned, which means the spool has it on
disk.  The enqueue runs as its own task behind :func:`asyncio.shield`, so a
client that disconnects after the final dot does not cancel it half-way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, ParamSpec, Protocol, TypeVar

from aiosmtpd.smtp import AuthResult, Session, TLSSetupException
from aiosmtpd.smtp import Envelope as SmtpEnvelope

from beacon_proxy import metrics
from beacon_proxy.address import address_problem
from beacon_proxy.config import SmtpConfig
from beacon_proxy.headerfacts import list_id, message_id, one_click_url
from beacon_proxy.log import event
from beacon_proxy.smtpd import replies
from beacon_proxy.smtpd.limits import AuthLimiter, Clock, MonotonicClock
from beacon_proxy.smtpd.message import (
    MAX_LINE,
    has_bare_cr_or_lf,
    header_section,
    line_number,
    long_line,
    printable_ascii,
)
from beacon_proxy.smtpd.passwords import is_password_hash, verify_password
from beacon_proxy.smtpd.protocol import SmtpProtocol, peer_ip
from beacon_proxy.spool.envelope import Envelope, new_queue_id

__all__ = ["Enqueue", "SmtpHandler"]

_log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

_AUTH_FAILED = AuthResult(success=False, handled=False)  # aiosmtpd answers 535 5.7.8
_AUTH_HANDLED = AuthResult(success=False, handled=True)  # the reply was already sent


#: Waits (bounded) while delivery is behind, before a new transaction's MAIL FROM is
#: answered; the seconds waited (:meth:`beacon_proxy.deliver.inflow.InFlow.admit`).
Admit = Callable[[], Awaitable[float]]


class Enqueue(Protocol):
    async def __call__(self, envelope: Envelope, data: bytes) -> None:
        """Return once the message is durably queued; raise on any failure."""
        ...


def _guarded(
    fallback: R,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Turn an unexpected exception in a hook into ``fallback`` (and a logged traceback)."""

    def wrap(hook: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(hook)  # aiosmtpd inspects handle_EHLO's signature
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return await hook(*args, **kwargs)
            except Exception:
                _log.exception("unexpected error in SMTP hook %s", hook.__name__)
                return fallback

        return run

    return wrap


def _dummy_hash(hashes: Iterable[str]) -> str:
    """A hash no password matches, as costly to check as a real user's."""
    params = "16384$8$1"
    for hashed in hashes:
        if is_password_hash(hashed):
            params = "$".join(hashed.split("$")[1:4])
            break

    def b64(n: int) -> str:
        return base64.b64encode(os.urandom(n)).decode("ascii").rstrip("=")

    return f"scrypt${params}${b64(16)}${b64(32)}"


def _protocol_name(session: Session) -> str:
    """The RFC 3848 ``with`` keyword for the Received header."""
    if not session.extended_smtp:
        return "SMTP"
    return "ESMTP" + ("S" if session.ssl is not None else "") + (
        "A" if session.authenticated else "")


def _auth_user(session: Session) -> str | None:
    user = session.auth_data
    return user if session.authenticated and isinstance(user, str) else None


def _body_type(mail_options: Iterable[str]) -> str | None:
    for option in mail_options:
        key, _, value = option.partition("=")
        if key.upper() == "BODY":
            return value.upper()
    return None


class SmtpHandler:
    """Hooks for aiosmtpd's ``SMTP``; one instance serves every connection."""

    def __init__(self, cfg: SmtpConfig, enqueue: Enqueue, clock: Clock | None = None,
                 admit: Admit | None = None) -> None:
        # No attribute may start with "auth_" or "handle_": aiosmtpd would
        # take it for an AUTH mechanism or a hook.
        self._cfg = cfg
        self._enqueue = enqueue
        self._admit = admit
        self._clock = clock or MonotonicClock()
        self.failures = AuthLimiter(window=cfg.auth_failure_window,
                                    limit=cfg.auth_failure_limit,
                                    delay_max=cfg.auth_delay_max, clock=self._clock)
        self._users = dict(cfg.auth_users)
        self._dummy = _dummy_hash(self._users.values())
        # scrypt is memory-hard: bound how many checks run at once.
        self._checks = asyncio.Semaphore(max(2, os.cpu_count() or 2))
        self.in_flight: set[asyncio.Task[None]] = set()  # enqueues not yet finished

    # -- hooks ----------------------------------------------------------------

    @_guarded([replies.TEMPFAIL])
    async def handle_EHLO(self, server: SmtpProtocol, session: Session,
                          envelope: SmtpEnvelope, hostname: str,
                          responses: list[str]) -> list[str]:
        """Advertise exactly our extensions (aiosmtpd's list is replaced), as one reply
        written at once (aiosmtpd writes each line it is given apart: a segment, and a
        wake-up of the client, a line)."""
        session.host_name = hostname
        lines = [server.hostname, f"SIZE {self._cfg.max_message_size}", "8BITMIME",
                 "PIPELINING", "SMTPUTF8"]
        if server.tls_context is not None and session.ssl is None:
            lines.append("STARTTLS")
        if self._users and session.ssl is not None:
            lines.append("AUTH PLAIN LOGIN")
        return ["\r\n".join([f"250-{line}" for line in lines[:-1]] + [f"250 {lines[-1]}"])]

    @_guarded(replies.TEMPFAIL)
    async def handle_MAIL(self, server: SmtpProtocol, session: Session,
                          envelope: SmtpEnvelope, address: str,
                          mail_options: list[str]) -> str:
        sender = "" if address == "<>" else address
        server.log_fields["sender"] = replies.loggable(sender)
        if sender:
            problem = address_problem(sender, smtputf8=bool(envelope.smtp_utf8))
            if problem is not None:
                return replies.bad_sender(problem)
        # Delivery behind: wait (bounded) before the reply.  Only a client that may relay
        # waits: a stranger's transaction ends at RCPT, and in the queue it would hold up
        # those of the senders that may.
        server.in_flow_wait = 0.0
        if self._admit is not None and self._may_relay(server, session):
            server.in_flow_wait = await self._admit()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return replies.OK_SENDER

    @_guarded(replies.TEMPFAIL)
    async def handle_RCPT(self, server: SmtpProtocol, session: Session,
                          envelope: SmtpEnvelope, address: str,
                          rcpt_options: list[str]) -> str:
        server.log_fields["recipient"] = replies.loggable(address)
        if address == "<>":
            return replies.NULL_RECIPIENT
        problem = address_problem(address, smtputf8=bool(envelope.smtp_utf8))
        if problem is not None:
            return replies.bad_recipient(problem)
        if not self._may_relay(server, session):
            return replies.relay_denied(address)
        if len(envelope.rcpt_tos) >= self._cfg.max_recipients:
            return replies.TOO_MANY_RECIPIENTS
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return replies.OK_RECIPIENT

    @_guarded(replies.TEMPFAIL)
    async def handle_DATA(self, server: SmtpProtocol, session: Session,
                          envelope: SmtpEnvelope) -> str:
        data = envelope.original_content
        assert isinstance(data, bytes)  # decode_data=False
        server.log_fields["recipients"] = len(envelope.rcpt_tos)
        header = header_section(data, self._cfg.max_header_size)
        if header is None:
            return replies.HEADER_TOO_BIG
        if has_bare_cr_or_lf(header):  # a bare CR: bare LFs are CRLF by now
            return replies.BARE_CR_LF
        refusal = _not_text(data)
        if refusal is not None:
            return refusal
        mail_from = envelope.mail_from or ""
        queued = Envelope(
            queue_id=new_queue_id(),
            sender="" if mail_from == "<>" else mail_from,
            recipients=tuple(envelope.rcpt_tos),
            received_at=time.time(),
            client_address=peer_ip(session.peer),
            client_helo=printable_ascii(session.host_name or "", 255),
            protocol=_protocol_name(session),
            auth_user=_auth_user(session),
            message_id=message_id(header),
            list_id=list_id(header),
            one_click=one_click_url(header),
            size=len(data),
            smtputf8=bool(envelope.smtp_utf8),
            body_type=_body_type(envelope.mail_options),
        )
        return await self._hand_over(queued, data, server.in_flow_wait)

    def _may_relay(self, server: SmtpProtocol, session: Session) -> bool:
        """relay_allowed(client, authenticated, allow_networks): authenticated, or from an
        allowed network (the address part kept per connection)."""
        return bool(session.authenticated) or server.allowed_by_address(
            peer_ip(session.peer), self._cfg.allow_networks)

    async def handle_exception(self, error: Exception) -> str:
        """Last resort for an error outside the hooks: ``451``, never aiosmtpd's ``500``."""
        if isinstance(error, TLSSetupException):
            _log.info("TLS handshake failed: %r", error.__cause__)
        else:
            _log.error("unexpected error in SMTP session", exc_info=error)
        return replies.TEMPFAIL

    # -- AUTH (aiosmtpd calls these as method(server, args)) ------------------

    @_guarded(AuthResult(success=False, handled=False, message=replies.AUTH_TEMPFAIL))
    async def auth_PLAIN(self, server: SmtpProtocol, args: list[str]) -> AuthResult:
        """RFC 4616: ``authzid NUL authcid NUL password``, inline or after a ``334``."""
        refused = await self._may_try(server, "PLAIN")
        if refused is not None:
            return refused
        blob = await self._initial_response(server, args)
        if blob is None:
            return _AUTH_HANDLED
        parts = blob.split(b"\0")
        if len(parts) != 3:
            await server.push("501 5.5.2 Can't split auth value")
            return _AUTH_HANDLED
        authzid, login, password = parts
        return await self._check(server, "PLAIN", login, password, authzid)

    @_guarded(AuthResult(success=False, handled=False, message=replies.AUTH_TEMPFAIL))
    async def auth_LOGIN(self, server: SmtpProtocol, args: list[str]) -> AuthResult:
        """The obsolete but common LOGIN: user name, then password, each base64."""
        refused = await self._may_try(server, "LOGIN")
        if refused is not None:
            return refused
        login = await self._initial_response(server, args, challenge="Username:")
        if login is None:
            return _AUTH_HANDLED
        password = await server.challenge_auth("Password:")
        if not isinstance(password, bytes):
            return _AUTH_HANDLED  # aborted or bad base64: already answered
        return await self._check(server, "LOGIN", login, password)

    # -- internals --------------------------------------------------------------

    async def _may_try(self, server: SmtpProtocol, mechanism: str) -> AuthResult | None:
        """The limits before an AUTH attempt: a refusal, or ``None`` (after any wait)."""
        server.log_fields["mechanism"] = mechanism
        if server.auth_failures >= self._cfg.auth_max_failures:
            # Only a pipelined AUTH gets here: the connection is being closed.
            await server.close_with(replies.AUTH_CUT_OFF)
            return _AUTH_HANDLED
        ip = server.client_ip()
        wait = 0.0 if self.failures.blocked(ip) else self.failures.delay(ip)
        if wait > 0:
            await self._clock.sleep(wait)
        # Checked again after the wait: parallel connections may have failed meanwhile.
        if self.failures.blocked(ip):
            metrics.SMTP_AUTH.labels("blocked").inc()
            return await self._failed(server, replies.AUTH_BLOCKED)
        return None

    async def _failed(self, server: SmtpProtocol, reply: str | None = None) -> AuthResult:
        """One more failure on this connection: ``reply``, or 421 and close at the cap."""
        server.auth_failures += 1
        if server.auth_failures >= self._cfg.auth_max_failures:
            await server.close_with(replies.AUTH_CUT_OFF)
            return _AUTH_HANDLED
        return _AUTH_FAILED if reply is None else AuthResult(
            success=False, handled=False, message=reply)

    async def _initial_response(self, server: SmtpProtocol, args: list[str],
                                challenge: str = "") -> bytes | None:
        """The client's first response: inline after the mechanism, or asked for."""
        if len(args) == 1:
            blob = await server.challenge_auth(challenge)
            return blob if isinstance(blob, bytes) else None
        if args[1] == "=":  # RFC 4954: an empty initial response
            return b""
        try:
            return base64.b64decode(args[1], validate=True)
        except binascii.Error:
            await server.push("501 5.5.2 Can't decode base64")
            return None

    async def _check(self, server: SmtpProtocol, mechanism: str, login: bytes,
                     password: bytes, authzid: bytes = b"") -> AuthResult:
        """Verify in a thread; unknown users cost the same time as known ones."""
        try:
            user: str | None = login.decode("utf-8")
        except UnicodeDecodeError:
            user = None
        hashed = self._users.get(user) if user is not None else None
        given = replies.loggable(login.decode("utf-8", "replace"))
        server.log_fields.update(user=given, mechanism=mechanism)
        async with self._checks:
            ok = await asyncio.to_thread(verify_password, password, hashed or self._dummy)
        if ok and hashed is not None and authzid in (b"", login):
            metrics.SMTP_AUTH.labels("success").inc()
            return AuthResult(success=True, auth_data=user)
        ip = server.client_ip()
        recent = self.failures.record_failure(ip)
        metrics.SMTP_AUTH.labels("failure").inc()
        # client_address first: the fail2ban filter in docs/security-smtp.md matches it.
        event("auth_failed", logging.WARNING, client_address=ip, mechanism=mechanism,
              user=given, connection_failures=server.auth_failures + 1,
              address_failures=recent)
        return await self._failed(server)

    async def _hand_over(self, envelope: Envelope, data: bytes, waited: float = 0.0) -> str:
        """Enqueue, surviving our own cancellation; answer 250 only once queued.
        ``waited``: seconds the transaction's MAIL FROM waited for delivery (logged)."""
        task = asyncio.ensure_future(self._enqueue(envelope, data))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            # The client went away (aiosmtpd cancels us); the enqueue goes on.
            task.add_done_callback(functools.partial(_log_unanswered, envelope))
            raise
        except Exception:
            _log.exception("enqueue of %s failed", envelope.queue_id)
            return replies.TEMPFAIL
        metrics.MESSAGES_RECEIVED.inc()
        if waited:
            _log_received(envelope, in_flow_delay=round(waited, 3))
        else:
            _log_received(envelope)
        return replies.queued(envelope.queue_id)


def _not_text(data: bytes) -> str | None:
    """The refusal for a NUL or an over-long line anywhere in ``data``, or ``None``."""
    nul = data.find(b"\0")
    if nul >= 0:
        return replies.nul_character(line_number(data, nul))
    start = long_line(data, MAX_LINE)
    if start is not None:
        return replies.line_too_long(line_number(data, start), MAX_LINE)
    return None


def _log_received(envelope: Envelope, **extra: Any) -> None:
    event("received", queue_id=envelope.queue_id, message_id=envelope.message_id,
          size=envelope.size, sender=envelope.sender, recipients=len(envelope.recipients),
          client_address=envelope.client_address, helo=envelope.client_helo,
          protocol=envelope.protocol, auth_user=envelope.auth_user, **extra)


def _log_unanswered(envelope: Envelope, task: asyncio.Task[None]) -> None:
    """Outcome of an enqueue whose client disconnected before the reply."""
    if task.cancelled():
        _log.error("enqueue of %s was cancelled (client had disconnected)", envelope.queue_id)
    elif (error := task.exception()) is not None:
        _log.error("enqueue of %s failed (client had disconnected)", envelope.queue_id,
                   exc_info=error)
    else:
        # Queued and will be delivered, but the client never saw 250 and may
        # send it again: at-least-once, as promised.
        _log_received(envelope, acknowledged=False)
