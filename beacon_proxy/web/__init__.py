"""Web stage: the HTTP listener (health, metrics, admin API, recipient pages and pixel).

* :mod:`~beacon_proxy.web.server` -- :class:`~beacon_proxy.web.server.WebServer`, ``build_app``
* :mod:`~beacon_proxy.web.recipient` -- ``/o/`` (open pixel) and ``/u/`` (preferences)
* :mod:`~beacon_proxy.web.api` -- the admin API on the consent store
* :mod:`~beacon_proxy.web.auth` -- admin API tokens (light: the command line imports it)

Nothing is imported here: ``beacon-proxy`` commands that only need
:mod:`~beacon_proxy.web.auth` must not pay for aiohttp.
"""
