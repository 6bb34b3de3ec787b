"""Baseline (b) of ``bench/relay.py``: the "obvious" SMTP pass-through relay.

aiosmtpd in, aiosmtplib out: ``handle_DATA`` forwards each message to the
upstream over a fresh aiosmtplib connection and answers the client only after
the upstream accepted it (451 otherwise).  No spool, no rewriting.

    python bench/_passthrough.py --listen-port 2526 --upstream-port 2527
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import aiosmtplib
from aiosmtpd.smtp import SMTP


class ForwardHandler:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            await aiosmtplib.send(
                envelope.content,
                sender=envelope.mail_from,
                recipients=envelope.rcpt_tos,
                hostname=self.host,
                port=self.port,
                start_tls=False,
                timeout=60,
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            return f"451 4.4.0 upstream failed: {type(exc).__name__}"
        return "250 2.0.0 Ok: forwarded"


async def serve(listen_host: str, listen_port: int, up_host: str, up_port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = ForwardHandler(up_host, up_port)
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="passthrough.bench", decode_data=False),
        host=listen_host,
        port=listen_port,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen-host", default="127.0.0.1")
    p.add_argument("--listen-port", type=int, required=True)
    p.add_argument("--upstream-host", default="127.0.0.1")
    p.add_argument("--upstream-port", type=int, required=True)
    a = p.parse_args()
    asyncio.run(serve(a.listen_host, a.listen_port, a.upstream_host, a.upstream_port))


if __name__ == "__main__":
    main()
