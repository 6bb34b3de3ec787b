"""Web stage: the HTTP listener (health, metrics, admin API, recipient pages and pixel)."""

from beacon_proxy.web.server import WebServer, build_app

__all__ = ["WebServer", "build_app"]
