"""``beacon-proxy ready``: ask the running relay's ``/readyz``; exit 0 when it is ready.

Made for container health checks and exec probes: it reads the same
configuration as the relay (``--config``, ``BEACON_PROXY_CONFIG``, then
``/etc/beacon-proxy/beacon-proxy.toml``) and asks ``/readyz`` on the admin
listener (``[web] admin_listen``), or on ``[web] listen`` when there is none,
so the check follows the configuration instead of a port written into the
image.  A wildcard listen address (``0.0.0.0``, ``::``) is asked on loopback.
Exit 1 with the relay's reason (or why it did not answer) otherwise.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from beacon_proxy.cli.common import CliError, add_config_option, config_from
from beacon_proxy.config import Endpoint

__all__ = ["readyz_url", "register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "ready", help="exit 0 when the running relay is ready (GET /readyz)",
        description="GET /readyz on the relay's admin listener ([web] admin_listen, else "
        "[web] listen) and exit 0 when it answers 200, 1 otherwise (with the reason).")
    add_config_option(p)
    p.add_argument("--timeout", type=float, default=4.0, metavar="SECONDS",
                   help="how long to wait for the answer (default 4)")
    p.set_defaults(handler=_ready)


def readyz_url(listen: Endpoint) -> str:
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(listen.host, listen.host)
    return f"http://{Endpoint(host, listen.port)}/readyz"


def _ready(args: argparse.Namespace) -> int:
    import urllib.error
    import urllib.request

    cfg = config_from(args)
    url = readyz_url(cfg.web.admin_listen or cfg.web.listen)
    # No proxy: HTTP_PROXY in a container's environment must not carry a loopback check.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=args.timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        raise CliError(f"not ready ({url}: {exc.code}): {_reason(exc.read())}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"no answer from {url}: {reason}") from None
    if status != 200:
        raise CliError(f"not ready ({url}: {status})")
    print(f"ready ({url})")
    return 0


def _reason(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace") or "no reason given"
    if isinstance(data, dict):
        return str(data.get("reason") or data.get("status") or data)
    return str(data)
