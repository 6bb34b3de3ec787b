"""The console: a server-rendered admin UI under ``/console`` (see docs/console.md)."""

from beacon_proxy.web.console.handlers import CONSOLE_CSP, Console, add_console_routes

__all__ = ["CONSOLE_CSP", "Console", "add_console_routes"]
