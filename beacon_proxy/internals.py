"""The private internals of aiosmtpd, aiosmtplib and asyncio's streams the relay uses, in one place.

These are used beyond their documented API where the documented one
cannot do the job:

* aiosmtpd's ``SMTP`` protocol (:mod:`beacon_proxy.smtpd.protocol`): ``_reader``
  (DATA is read in large chunks instead of line by line), ``_smtp_methods``
  (the commands; the relay builds the table itself, see the next item),
  ``_handle_client`` (the command loop, replaced by one with the same checks
  and replies that notes each command's name for the rejection logs and
  re-arms the idle timer only when its deadline would move; it must still be
  what ``connection_made`` runs), with what that loop reads: ``_writer``,
  ``_tls_handshake_okay``, ``_tls_protocol``, ``_enforce_call_limit``,
  ``_call_limit_base``, ``_call_limit_default``, ``command_size_limits`` and the
  module's ``BOGUS_LIMIT``, ``ALLOWED_BEFORE_STARTTLS`` and ``sanitized_log``
  (``tests/smtpd/test_loop.py`` plays scripts against both loops and compares
  every byte), ``_call_handler_hook`` and
  ``_create_envelope`` (DATA ends as aiosmtpd's own ``smtp_DATA`` ends),
  ``_getaddr`` (MAIL and RCPT paths are read as written, not as RFC 5322
  header addresses), ``_reset_timeout``, ``_timeout_duration``,
  ``_timeout_handle`` and ``_timeout_cb`` (the idle timer, shorter for untrusted
  clients outside a transaction, kept lazily: one loop timer a connection whose
  callback checks the deadline before calling ``_timeout_cb``; aiosmtpd's
  ``connection_lost`` cancels ``_timeout_handle``), ``_handler_coroutine`` (the
  command loop's task: once it and the connection have ended, the relay drops
  the ``_writer`` and takes the task's cancellation, so no reference cycle is
  left to the cyclic garbage collector);
* aiosmtpd's ``SMTP.__init__`` as a whole (and ``_AuthMechAttr``, ``make_loop``,
  ``login_always_fail``, ``is_int``, ``CALL_LIMIT_DEFAULT``, ``__ident__`` and its
  ``log``, which that work uses): :class:`~beacon_proxy.smtpd.protocol.SmtpProtocol`
  does its work itself (without the per-connection ``inspect.getmembers``/``dir()``
  introspection, whose tables it builds once per class and handler), so it must set
  every attribute aiosmtpd's own ``__init__`` sets: :func:`missing_internals`
  builds one of each and names any attribute the relay's lacks;
* aiosmtplib's ``SMTPProtocol`` (:mod:`beacon_proxy.deliver.smtp`): ``write``
  and ``read_response`` (the message goes out already dot-stuffed, in one
  write, without a second copy in memory); ``connection_lost``,
  ``pause_writing`` and ``resume_writing``, and ``SMTP.transport``: for a
  PIPELINING group (RFC 2920) the courier puts a reader of its own on the
  transport (``set_protocol``), since aiosmtplib reads one reply per command and
  drops replies that arrive while no command waits; the reader passes the
  connection's end and flow control on to aiosmtplib's protocol;
* asyncio's ``StreamReaderProtocol``: ``_client_connected_cb``, which holds the
  protocol's own bound method (a reference cycle); once the streams are made,
  ``SmtpProtocol.connection_made`` replaces it with a plain function (asyncio
  only asks again whether there is one, in ``StreamWriter.start_tls``);
* asyncio's ``StreamReader`` (:func:`beacon_proxy.smtpd.data.read_data`):
  ``_buffer``, ``_eof`` and ``_wait_for_data``: DATA is searched in the reader's
  buffer where it arrives (one pass for the end of data, the stuffing periods and
  bare LFs) and taken out of it with ``readexactly``, so that the bytes after the
  end of data stay in the reader for the command loop; and ``_buffer`` again in
  ``SmtpProtocol.push``: a reply waits while a pipelined command line is already
  there (RFC 2920's batched replies).

``pyproject.toml`` bounds both libraries to the release series tested
(``aiosmtpd<1.5``, ``aiosmtplib<6``); :func:`missing_internals` says what an
installed version lacks, ``serve`` refuses to start with that list, and
``tests/test_internals.py`` fails with it, so an upgrade that removes one is
found before it runs.
"""

from __future__ import annotations

import asyncio
import dis
import inspect
import sys
from importlib.metadata import version
from types import CodeType, MemberDescriptorType

__all__ = ["AIOSMTPD", "AIOSMTPD_MODULE", "AIOSMTPLIB", "AIOSMTPLIB_SMTP", "STREAM_READER",
           "STREAM_READER_PROTOCOL", "missing_internals"]

#: aiosmtpd.smtp.SMTP: attributes the relay's subclass uses.
AIOSMTPD = ("_reader", "_smtp_methods", "_call_handler_hook", "_create_envelope", "_getaddr",
            "_reset_timeout", "_timeout_duration", "_timeout_handle", "_timeout_cb",
            "_handler_coroutine", "_handle_client", "_writer",
            "_tls_handshake_okay", "_tls_protocol", "_enforce_call_limit", "_call_limit_base",
            "_call_limit_default", "command_size_limits")
#: aiosmtpd.smtp: module names the relay's command loop uses.
AIOSMTPD_MODULE = ("BOGUS_LIMIT", "ALLOWED_BEFORE_STARTTLS", "sanitized_log")
#: aiosmtplib.protocol.SMTPProtocol: methods the courier calls.
AIOSMTPLIB = ("write", "read_response", "connection_lost", "pause_writing", "resume_writing")
#: aiosmtplib.SMTP: attributes the courier reads.
AIOSMTPLIB_SMTP = ("transport", "protocol")
#: asyncio.StreamReader: attributes DATA's reader uses.
STREAM_READER = ("_buffer", "_eof", "_wait_for_data")
#: asyncio.StreamReaderProtocol: attributes the SMTP protocol replaces.
STREAM_READER_PROTOCOL = ("_client_connected_cb",)


def _stores(code: CodeType, name: str, receiver: str) -> bool:
    """``code`` (or a function nested in it) assigns attribute ``name`` of ``receiver`` (the
    method's ``self``): ``self.name = ...``, not ``other.name = ...``, ``del self.name`` or
    ``self.name += ...`` (which reads it first)."""
    if name in code.co_names:
        before = None
        for ins in dis.get_instructions(code):
            if ins.opname == "STORE_ATTR" and ins.argval == name and before is not None \
                    and before.opname.startswith(("LOAD_FAST", "LOAD_DEREF")) \
                    and (before.argval if isinstance(before.argval, str)
                         else before.argval[-1]) == receiver:  # 3.13's LOAD_FAST_LOAD_FAST
                return True
            before = ins
    return any(_stores(const, name, receiver) for const in code.co_consts
               if isinstance(const, CodeType))


def _assigned_or_defined(cls: type, name: str) -> bool:
    """``name`` is defined on ``cls`` or assigned as ``self.<name>`` in the code of a method
    of ``cls`` or of its bases (read from the bytecode: ``inspect.getsource`` took ~0.5 s of
    every worker's start-up).  A ``__slots__`` entry alone is not enough: the slot is empty
    until some method assigns it."""
    if isinstance(inspect.getattr_static(cls, name, None), MemberDescriptorType):
        pass  # a slot: look for the assignment
    elif hasattr(cls, name):
        return True
    funcs = [func for klass in cls.__mro__[:-1] for member in vars(klass).values()
             if not isinstance(member, staticmethod)  # it has no self
             for func in ((member.fget, member.fset) if isinstance(member, property)
                          else (getattr(member, "__func__", member),))]
    seen: set[int] = set()
    while funcs:  # each method (its first argument is self), and what a wrapper closes over
        func = funcs.pop()
        code = getattr(func, "__code__", None)
        if not isinstance(code, CodeType) or id(func) in seen:
            continue
        seen.add(id(func))
        if code.co_argcount and _stores(code, name, code.co_varnames[0]):
            return True
        funcs += [cell.cell_contents for cell in getattr(func, "__closure__", None) or ()
                  if hasattr(cell, "cell_contents")]
    return False


def missing_internals() -> list[str]:
    """What the installed aiosmtpd and aiosmtplib lack of what the relay uses (empty: all
    there), each as ``"<library> <version>: <Class>.<attribute>"``."""
    from aiosmtpd import smtp
    from aiosmtpd.smtp import SMTP
    from aiosmtplib import SMTP as SMTPClient
    from aiosmtplib.protocol import SMTPProtocol

    missing = [f"aiosmtpd {version('aiosmtpd')}: SMTP.{name}" for name in AIOSMTPD
               if not _assigned_or_defined(SMTP, name)]
    missing += [f"aiosmtpd {version('aiosmtpd')}: aiosmtpd.smtp.{name}"
                for name in AIOSMTPD_MODULE if not hasattr(smtp, name)]
    if "_handle_client" not in SMTP.connection_made.__code__.co_names:
        missing.append(f"aiosmtpd {version('aiosmtpd')}: SMTP.connection_made runs "
                       "_handle_client")
    missing += [f"aiosmtpd {version('aiosmtpd')}: SMTP.__init__ sets {name}, "
                "SmtpProtocol.__init__ does not" for name in init_attributes_missing()]
    missing += [f"aiosmtplib {version('aiosmtplib')}: SMTPProtocol.{name}" for name in AIOSMTPLIB
                if not callable(getattr(SMTPProtocol, name, None))]
    missing += [f"aiosmtplib {version('aiosmtplib')}: SMTP.{name}" for name in AIOSMTPLIB_SMTP
                if not _assigned_or_defined(SMTPClient, name)]
    missing += [f"Python {sys.version.split()[0]}: asyncio.StreamReader.{name}"
                for name in STREAM_READER if not _assigned_or_defined(asyncio.StreamReader, name)]
    missing += [f"Python {sys.version.split()[0]}: asyncio.StreamReaderProtocol.{name}"
                for name in STREAM_READER_PROTOCOL
                if not _assigned_or_defined(asyncio.StreamReaderProtocol, name)]
    return missing


class _Probe:
    """A handler with one hook, for :func:`init_attributes_missing`."""

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        return "250 OK"


def init_attributes_missing() -> list[str]:
    """The instance attributes aiosmtpd's ``SMTP.__init__`` sets that
    ``SmtpProtocol.__init__`` (which replaces it) does not, sorted."""
    import asyncio
    import logging

    from aiosmtpd.smtp import SMTP

    from beacon_proxy.smtpd.protocol import Connections, SmtpProtocol

    loop = asyncio.new_event_loop()
    quiet = logging.getLogger("mail.log")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # its "Available AUTH mechanisms" line
    try:
        theirs = SMTP(_Probe(), hostname="probe.invalid", loop=loop)
        ours = SmtpProtocol(_Probe(), Connections(1), hostname="probe.invalid", loop=loop)
        return sorted(set(vars(theirs)) - set(vars(ours)))
    finally:
        quiet.setLevel(level)
        loop.close()
