"""beacon-proxy: an SMTP hop that enforces each recipient's consent to email beacons.

The package is laid out as the pipeline a message follows::

    smtpd    receive: SMTP protocol, relay policy, limits  -> spool
    spool    durable queue files and per-recipient journals
    rewrite  per-recipient rendering of each copy
    deliver  scheduler, retries, bounces, couriers (SMTP upstream, Maildir)
    consent  each recipient's beacon consent
    web      HTTP endpoints (health, metrics)
    cli      the ``beacon-proxy`` command

:mod:`beacon_proxy.app` is the one place that wires them together.
"""

__version__ = "0.1.0"
