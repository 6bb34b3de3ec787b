#!/usr/bin/env python3
"""Soak: good mail keeps flowing while the relay is attacked (not run by CI).

    python bench/soak.py [--duration 600] [--rate 10]

Starts ``beacon-proxy serve`` (STARTTLS, one AUTH user, ``allow_networks``
only 127.0.0.1) relaying to Postfix's ``smtp-sink``, then for ``--duration``
seconds runs, at once, on loopback only (Linux answers every 127.x.y.z, so
each role has an address of its own):

* good mail from the trusted network (127.0.0.1), ``--rate`` messages a
  second, one recipient each (the 70 KB benchmark newsletter);
* good mail from an authenticated client outside it (127.0.0.3: STARTTLS,
  the right password), one message every two seconds;
* AUTH guessing (127.0.0.2): 8 connections guessing passwords over STARTTLS,
  reconnecting whenever cut off;
* an idle flood (127.0.0.4): as many idle connections as the relay lets it
  hold (up to 300), re-opened as soon as one is closed;
* bad tokens (127.0.0.5): 4 concurrent HTTP clients fetching ``/o/`` and
  ``/u/`` with random tokens.

Every 5 s it samples the relay's RSS.  At the end it waits (bounded) until
``smtp-sink`` has every good message, and prints what each role saw, the
RSS curve and two verdicts: every good message delivered, memory flat (RSS
at the end within 20 % + 16 MB of RSS after the first tenth of the run).
Exit status 0 when both hold.  Every loop stops at the deadline; the
numbers of connections and requests are bounded by the rates above.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import ssl
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import aiosmtplib
import trustme
from newsletter import newsletter
from relay import (
    BenchError,
    child_env,
    free_port,
    http_ok,
    metric,
    sink,
    smtp_ready,
    stop_process,
    wait_until,
)

from beacon_proxy.smtpd.passwords import hash_password

TRUSTED, GUESSER, AUTHED, IDLER, WEB = (f"127.0.0.{n}" for n in (1, 2, 3, 4, 5))
USER, PASSWORD = "soak-tool", "correct horse battery staple"
GUESSERS, IDLE_MAX, WEB_CLIENTS = 8, 300, 4
SAMPLE_EVERY = 5.0


@dataclass
class Tally:
    """What one role saw."""

    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def write_config(workdir: Path, smtp_port: int, web_port: int, sink_port: int,
                 cert: Path, key: Path) -> Path:
    cfg = workdir / "soak.toml"
    cfg.write_text(f"""\
[smtp]
listen = "127.0.0.1:{smtp_port}"
hostname = "relay.soak"
allow_networks = ["127.0.0.1/32"]
tls_cert = "{cert}"
tls_key = "{key}"
shutdown_timeout = 5

[smtp.auth_users]
{USER} = "{hash_password(PASSWORD)}"

[delivery]
upstream = "smtp://127.0.0.1:{sink_port}"
starttls = "off"
retry_min = 1
retry_max = 5

[spool]
path = "{workdir / 'spool'}"

[store]
url = "sqlite:///{workdir / 'beacon-proxy.db'}"

[web]
listen = "127.0.0.1:{web_port}"
public_url = "http://127.0.0.1:{web_port}"
trusted_proxies = []

[tokens]
secret = "soak-secret-{os.getpid()}-{time.time_ns()}"

[log]
level = "warning"
path = "{workdir / 'beacon-proxy.log'}"
""")
    return cfg


def message(n: int, body: bytes) -> bytes:
    """The newsletter for recipient ``n``: its own To and Message-ID."""
    return (body.replace(b"To: rcpt@example.net", b"To: r%d@example.org" % n, 1)
            .replace(b"<20250320093000.8f3b21@mailer.shop.example>",
                     b"<soak-%d@mailer.shop.example>" % n, 1))


async def good_mail(port: int, deadline: float, rate: float, body: bytes, source: str,
                    tally: Tally, first: int, tls: ssl.SSLContext | None = None) -> None:
    """Messages at ``rate`` a second over one connection (a new one after a failure)."""
    n, start = first, time.monotonic()
    client: aiosmtplib.SMTP | None = None
    while time.monotonic() < deadline:
        due = start + (n - first) / rate
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        try:
            if client is None or not client.is_connected:
                client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60,
                                         source_address=(source, 0), start_tls=tls is not None,
                                         tls_context=tls)
                await client.connect()
                if tls is not None:
                    await client.login(USER, PASSWORD)
            await client.sendmail("news@soak.example", [f"r{n}@example.org"], message(n, body))
            tally.sent += 1
            tally.outcomes["250"] += 1
        except aiosmtplib.SMTPException as exc:
            tally.outcomes[type(exc).__name__] += 1
            client = None
        n += 1
    if client is not None and client.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException):
            await client.quit()


async def guesser(port: int, deadline: float, tls: ssl.SSLContext, tally: Tally) -> None:
    """Guess passwords over STARTTLS until cut off, then reconnect."""
    while time.monotonic() < deadline:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30,
                                 source_address=(GUESSER, 0), start_tls=True, tls_context=tls)
        try:
            await client.connect()
            while time.monotonic() < deadline:
                tally.sent += 1
                try:
                    await client.login(USER, f"guess-{random.randrange(10**9)}")
                    tally.outcomes["accepted!"] += 1
                except aiosmtplib.SMTPAuthenticationError as exc:
                    tally.outcomes[str(exc.code)] += 1
        except aiosmtplib.SMTPResponseException as exc:
            tally.outcomes[str(exc.code)] += 1
        except aiosmtplib.SMTPException as exc:
            tally.outcomes[type(exc).__name__] += 1
        finally:
            client.close()


async def idler(port: int, deadline: float, tally: Tally) -> None:
    """Hold idle connections; note how each one ends (greeting code, close)."""
    slots = asyncio.Semaphore(IDLE_MAX)

    async def hold() -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, local_addr=(IDLER, 0)), 30)
        except (OSError, TimeoutError):
            tally.outcomes["connect failed"] += 1
            await asyncio.sleep(1)
            return
        try:
            greeting = await asyncio.wait_for(reader.readline(), 30)
            tally.outcomes[f"greeting {greeting[:3].decode(errors='replace')}"] += 1
            if greeting.startswith(b"220"):
                left = deadline - time.monotonic()
                # Silent until the relay closes the connection (or the run ends).
                rest = await asyncio.wait_for(reader.read(), max(left, 0.1))
                tally.outcomes[f"closed by relay {rest[:3].decode(errors='replace')}"] += 1
        except (OSError, TimeoutError):
            tally.outcomes["held to the end"] += 1
        finally:
            writer.close()

    async def one() -> None:
        async with slots:
            tally.sent += 1
            await hold()

    tasks: set[asyncio.Task[None]] = set()
    while time.monotonic() < deadline:
        while len(tasks) < IDLE_MAX and time.monotonic() < deadline:
            task = asyncio.create_task(one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(0.2)
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def bad_tokens(web_port: int, deadline: float, tally: Tally) -> None:
    connector = aiohttp.TCPConnector(local_addr=(WEB, 0), limit=WEB_CLIENTS)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def client() -> None:
            while time.monotonic() < deadline:
                path = random.choice(("/o/", "/u/")) + f"{random.getrandbits(128):032x}"
                tally.sent += 1
                try:
                    async with session.get(f"http://127.0.0.1:{web_port}{path}") as resp:
                        await resp.read()
                        tally.outcomes[str(resp.status)] += 1
                        if resp.status == 429:
                            await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
                except (aiohttp.ClientError, TimeoutError) as exc:
                    tally.outcomes[type(exc).__name__] += 1

        await asyncio.gather(*(client() for _ in range(WEB_CLIENTS)))


async def sampler(pid: int, deadline: float, samples: list[tuple[float, int]]) -> None:
    start = time.monotonic()
    while time.monotonic() < deadline:
        samples.append((time.monotonic() - start, rss_kib(pid)))
        await asyncio.sleep(SAMPLE_EVERY)
    samples.append((time.monotonic() - start, rss_kib(pid)))


async def attack(args: argparse.Namespace, pid: int, smtp_port: int, web_port: int,
                 ca: trustme.CA, body: bytes) -> tuple[dict[str, Tally], list[tuple[float, int]]]:
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    tls.check_hostname = False
    deadline = time.monotonic() + args.duration
    tallies = {name: Tally() for name in ("good (trusted)", "good (AUTH)", "guessing",
                                          "idle flood", "bad tokens")}
    samples: list[tuple[float, int]] = []
    await asyncio.gather(
        good_mail(smtp_port, deadline, args.rate, body, TRUSTED, tallies["good (trusted)"], 0),
        good_mail(smtp_port, deadline, 0.5, body, AUTHED, tallies["good (AUTH)"], 10**7, tls),
        *(guesser(smtp_port, deadline, tls, tallies["guessing"]) for _ in range(GUESSERS)),
        idler(smtp_port, deadline, tallies["idle flood"]),
        bad_tokens(web_port, deadline, tallies["bad tokens"]),
        sampler(pid, deadline, samples),
    )
    return tallies, samples


def report(tallies: dict[str, Tally], samples: list[tuple[float, int]], delivered: int,
           good: int, duration: float) -> bool:
    print(f"soak: {duration:.0f} s on loopback against beacon-proxy serve (python "
          f"{sys.version.split()[0]}, {os.cpu_count()} cores)")
    for name, tally in tallies.items():
        top = ", ".join(f"{k}: {v}" for k, v in tally.outcomes.most_common(6))
        print(f"  {name:<15} {tally.sent:>8} attempts   {top}")
    guesses = tallies["guessing"].outcomes
    print(f"  passwords checked per second (535 answers): {guesses['535'] / duration:.2f}; "
          f"refused unchecked (454): {guesses['454']}; accepted: {guesses['accepted!']}")
    warm = samples[max(1, len(samples) // 10)][1] if len(samples) > 1 else samples[0][1]
    last, peak = samples[-1][1], max(s[1] for s in samples)
    step = max(1, len(samples) // 12)
    curve = "  ".join(f"{t:.0f}s:{kib / 1024:.0f}" for t, kib in samples[::step])
    print(f"  relay RSS MB: {curve}")
    print(f"  RSS after warm-up {warm / 1024:.1f} MB, at the end {last / 1024:.1f} MB, "
          f"peak {peak / 1024:.1f} MB")
    delivered_ok = delivered >= good
    flat = last <= warm * 1.2 + 16 * 1024
    print(f"good messages accepted {good}, delivered {delivered}: "
          f"{'PASS' if delivered_ok else 'FAIL'}")
    print(f"memory flat (end <= 1.2 x warm + 16 MB): {'PASS' if flat else 'FAIL'}")
    return delivered_ok and flat and not guesses["accepted!"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=10.0, help="trusted messages a second")
    args = parser.parse_args()
    body = newsletter().replace(b"\n", b"\r\n")
    with tempfile.TemporaryDirectory(prefix="bp-soak-") as tmp:
        workdir = Path(tmp)
        ca = trustme.CA()
        cert = ca.issue_cert("relay.soak", "127.0.0.1")
        cert_file, key_file = workdir / "cert.pem", workdir / "key.pem"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        with sink(workdir, 30) as snk:
            smtp_port, web_port = free_port(), free_port()
            cfg = write_config(workdir, smtp_port, web_port, snk.port, cert_file, key_file)
            out = (workdir / "serve.out").open("wb")
            relay = subprocess.Popen(
                [sys.executable, "-m", "beacon_proxy", "serve", "--config", str(cfg)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=child_env(), cwd=str(workdir))
            try:
                wait_until(lambda: http_ok(web_port, "/healthz") and smtp_ready(smtp_port), 60,
                           "beacon-proxy start", relay, interval=0.1)
                tallies, samples = asyncio.run(
                    attack(args, relay.pid, smtp_port, web_port, ca, body))
                good = tallies["good (trusted)"].sent + tallies["good (AUTH)"].sent
                with contextlib.suppress(BenchError):
                    wait_until(lambda: snk.received() >= good, 300, "delivery", relay, 0.5)
                delivered = snk.received()
                ok = report(tallies, samples, delivered, good, args.duration)
                counted = metric(web_port, "beacon_proxy_deliveries_total",
                                 '{result="delivered"}')
                print(f"relay /metrics deliveries_total{{result=delivered}}: {counted:.0f}")
            finally:
                stop_process(relay, grace=30)
                out.close()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
