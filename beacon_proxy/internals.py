"""The private internals of aiosmtpd and aiosmtplib the relay relies on, in one place.

Both libraries are used beyond their documented API where the documented one
cannot do the job:

* aiosmtpd's ``SMTP`` protocol (:mod:`beacon_proxy.smtpd.protocol`): ``_reader``
  (DATA is read in large chunks instead of line by line), ``_smtp_methods``
  (every command is wrapped to count its replies), ``_call_handler_hook`` and
  ``_create_envelope`` (DATA ends as aiosmtpd's own ``smtp_DATA`` ends),
  ``_getaddr`` (MAIL and RCPT paths are read as written, not as RFC 5322
  header addresses), ``_reset_timeout`` and ``_timeout_duration`` (the idle
  timer, shorter for untrusted clients outside a transaction);
* aiosmtplib's ``SMTPProtocol`` (:mod:`beacon_proxy.deliver.smtp`): ``write``
  and ``read_response`` (the message goes out already dot-stuffed, in one
  write, without a second copy in memory); ``connection_lost``,
  ``pause_writing`` and ``resume_writing``, and ``SMTP.transport``: for a
  PIPELINING group (RFC 2920) the courier puts a reader of its own on the
  transport (``set_protocol``), since aiosmtplib reads one reply per command and
  drops replies that arrive while no command waits; the reader passes the
  connection's end and flow control on to aiosmtplib's protocol.

``pyproject.toml`` bounds both libraries to the release series tested
(``aiosmtpd<1.5``, ``aiosmtplib<6``); :func:`missing_internals` says what an
installed version lacks, ``serve`` refuses to start with that list, and
``tests/test_internals.py`` fails with it, so an upgrade that removes one is
found before it runs.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

__all__ = ["AIOSMTPD", "AIOSMTPLIB", "AIOSMTPLIB_SMTP", "missing_internals"]

#: aiosmtpd.smtp.SMTP: attributes the relay's subclass uses.
AIOSMTPD = ("_reader", "_smtp_methods", "_call_handler_hook", "_create_envelope", "_getaddr",
            "_reset_timeout", "_timeout_duration")
#: aiosmtplib.protocol.SMTPProtocol: methods the courier calls.
AIOSMTPLIB = ("write", "read_response", "connection_lost", "pause_writing", "resume_writing")
#: aiosmtplib.SMTP: attributes the courier reads.
AIOSMTPLIB_SMTP = ("transport", "protocol")


def _assigned_or_defined(cls: type, name: str) -> bool:
    """``name`` is defined on ``cls`` or assigned as ``self.<name>`` in its code."""
    if hasattr(cls, name):
        return True
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return False
    return f"self.{name} =" in source or f"self.{name}:" in source


def missing_internals() -> list[str]:
    """What the installed aiosmtpd and aiosmtplib lack of what the relay uses (empty: all
    there), each as ``"<library> <version>: <Class>.<attribute>"``."""
    from aiosmtpd.smtp import SMTP
    from aiosmtplib import SMTP as SMTPClient
    from aiosmtplib.protocol import SMTPProtocol

    missing = [f"aiosmtpd {version('aiosmtpd')}: SMTP.{name}" for name in AIOSMTPD
               if not _assigned_or_defined(SMTP, name)]
    missing += [f"aiosmtplib {version('aiosmtplib')}: SMTPProtocol.{name}" for name in AIOSMTPLIB
                if not callable(getattr(SMTPProtocol, name, None))]
    missing += [f"aiosmtplib {version('aiosmtplib')}: SMTP.{name}" for name in AIOSMTPLIB_SMTP
                if not _assigned_or_defined(SMTPClient, name)]
    return missing
