"""Receiving stage: SMTP in, relay policy and limits, hand-off to the spool.

* :mod:`~beacon_proxy.smtpd.server` -- :class:`SmtpServer`, listening in the caller's loop
* :mod:`~beacon_proxy.smtpd.protocol` -- one connection (aiosmtpd ``SMTP`` plus tracking)
* :mod:`~beacon_proxy.smtpd.handler` -- the command hooks, AUTH and the DATA hand-off
* :mod:`~beacon_proxy.smtpd.data` -- DATA read in chunks, made canonical (bare LF as CRLF)
* :mod:`~beacon_proxy.smtpd.policy` -- :func:`relay_allowed`, a pure function
* :mod:`~beacon_proxy.smtpd.address`, :mod:`~beacon_proxy.smtpd.message` -- pure checks
* :mod:`~beacon_proxy.smtpd.replies` -- reply texts and rejection logging
* :mod:`~beacon_proxy.smtpd.passwords` -- scrypt hashes for AUTH users

Nothing is imported here: ``beacon-proxy hash-password`` needs only
:mod:`~beacon_proxy.smtpd.passwords`, not aiosmtpd.
"""
