#!/usr/bin/env python3
"""Open-pixel latency benchmark: ``GET /o/<token>`` against ``GET /healthz``, per store backend.

    python bench/opens.py [--rate 500] [--seconds 20] [--backends sqlite,postgresql]
                          [--path-kind open|healthz] [--quick]

The goal (issue 7): under a bounded loopback load of 500 requests/s, the open
pixel's p99 latency stays under 20 ms, on SQLite and on PostgreSQL.  The
pixel answers at once and records the open in the background, so its
latency should be close to that of the cheapest route; this run shows both
side by side.

For each backend the benchmark creates a fresh store (a SQLite file in a
temporary folder; a new ``beacon_bench_<random>`` database on the PostgreSQL
server given by ``--postgres``, dropped afterwards even on failure), seeds
``--recipients`` consent records with ``beacon-proxy consent import``
(80 % granted, 10 % refused, 5 % with no record at all -- unknown, which the
default policy treats as refused -- and 5 % granted but only ever sent
forged tokens; bench/_recipients.py), starts the real ``beacon-proxy serve`` as a subprocess
(SMTP and HTTP on free loopback ports, a maildir upstream, a ``[tokens]
secret``) and waits for ``/healthz``.  It mints one open token per recipient
with the server's secret, exactly as the relay does for a granted copy; the
forged 5 % of the requests carry tokens minted with another secret or
valid tokens with one character changed.

Phases, each preceded by an unmeasured warm-up second at the same rate:

  (1) healthz  ``GET /healthz``, the baseline;
  (2) open     ``GET /o/<token>`` cycling over every token in a fixed
               shuffled order (the warm-up uses forged tokens only, which
               record nothing).

Load is open-loop (bench/_openloop.py): request ``i`` is due at
``start + i / rate`` whatever the server does, and its latency runs from that
due time to the last byte of the response body, so queueing is charged and
nothing is hidden by a slow answer (no coordinated omission).  The achieved
send rate is printed; a phase whose generator fell more than 5 % behind the
asked rate is not judged.  "server CPU" is the utime+stime of ``serve`` and
its child processes during the phase (from /proc).

After the open phase the benchmark polls the store until the number of
recorded opens stops changing (bounded) and reports how many granted
recipients got an open recorded (per-token rate limiting may record fewer
opens than hits: reported, not judged).  Refused, unknown and forged
requests must record nothing: that is judged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import functools
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from _openloop import LoadResult, LoadSpec, percentile, run_load
from _recipients import OpenCheck, Population, check_opens, population, wait_recorded
from relay import (
    CLK_TCK,
    BenchError,
    child_env,
    cpu_seconds,
    free_port,
    http_ok,
    stop_process,
    wait_until,
)

REPO = Path(__file__).resolve().parent.parent  # its package runs the server (PYTHONPATH)
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
GOAL_P99_MS = 20.0
GOAL_RATE = 500.0
MIN_RATE_SHARE = 0.95  # below this share of --rate the generator fell behind
OTHERS_WARN = 0.10  # other processes' share of the machine's CPUs worth a warning
LAG_WARN_MS = 5.0  # generator lag (p99) worth a warning
USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Thunderbird/128.5.0")
GIF = b"GIF8"


# --------------------------------------------------------------------------
# Stores and the server
# --------------------------------------------------------------------------

async def _admin(server: str, sql: str) -> None:
    conn = await asyncpg.connect(server, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def store_url(backend: str, workdir: Path, postgres: str) -> Iterator[str]:
    """A fresh, empty store for one backend; a PostgreSQL database is dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / 'store' / 'bench.db'}"
        return
    name = f"beacon_bench_{secrets.token_hex(4)}"
    try:
        asyncio.run(_admin(postgres, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"cannot create a database on {postgres}: {exc}") from None
    try:
        parts = urlsplit(postgres)
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
    finally:
        asyncio.run(_admin(postgres, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def server_env() -> dict[str, str]:
    """The environment for beacon-proxy commands: this checkout's package first."""
    env = child_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def write_config(workdir: Path, store: str, secret: str, smtp_port: int, web_port: int) -> Path:
    cfg = workdir / "bench.toml"
    cfg.write_text(f"""\
[smtp]
listen = "127.0.0.1:{smtp_port}"
allow_networks = ["127.0.0.0/8"]
shutdown_timeout = 5

[delivery]
upstream = "maildir:{workdir / 'outbox'}"

[spool]
path = "{workdir / 'spool'}"

[store]
url = "{store}"

[web]
listen = "127.0.0.1:{web_port}"
public_url = "http://127.0.0.1:{web_port}"
rate_limit_pixel = 0  # one client sends every request: measure the pixel, not the limit

[tokens]
secret = "{secret}"

[log]
level = "warning"
path = "{workdir / 'beacon-proxy.log'}"
""")
    return cfg


def seed(cfg: Path, csv_file: Path, workdir: Path) -> None:
    """``beacon-proxy consent import`` of the population's CSV file."""
    cmd = [sys.executable, "-m", "beacon_proxy", "consent", "import", str(csv_file),
           "--config", str(cfg)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=server_env(),
                          cwd=str(workdir), check=False)
    if done.returncode != 0:
        raise BenchError(f"consent import failed: {(done.stderr or done.stdout).strip()[-500:]}")


def descendants(pid: int) -> list[int]:
    """pid and every live process below it (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 1000:
        p = todo.pop()
        found.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in task.read_text().split()]
    return found


def machine_cpu() -> float:
    """CPU seconds every CPU of the machine has been busy since boot (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / CLK_TCK


def tree_cpu(pid: int) -> dict[int, float]:
    return {p: cpu_seconds(p) for p in descendants(pid)}


def cpu_since(pid: int, before: dict[int, float]) -> float:
    """CPU seconds the process tree spent since ``before`` (processes started since count whole)."""
    now = tree_cpu(pid)
    return sum(t - before.get(p, 0.0) for p, t in now.items())


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    cfg: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextlib.contextmanager
def serve(workdir: Path, cfg: Path, web_port: int) -> Iterator[Server]:
    """``beacon-proxy serve`` with this config, up once /healthz answers; stopped afterwards."""
    out_path = workdir / "serve.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "beacon_proxy", "serve", "--config",
                                 str(cfg)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=server_env(), cwd=str(workdir))
        try:
            wait_until(lambda: http_ok(web_port, "/healthz"), 60, "beacon-proxy start", proc,
                       interval=0.1)
            yield Server(proc, web_port, cfg)
        finally:
            stop_process(proc, grace=30)
            if proc.returncode not in (0, None):
                sys.stderr.write(out_path.read_text(errors="replace")[-2000:])


def preflight_open(server: Server, path: str) -> None:
    """One forged-token GET: the route must exist and answer the GIF."""
    try:
        with urllib.request.urlopen(server.url(path), timeout=10) as resp:
            body: bytes = resp.read()
            status: int = resp.status
    except urllib.error.HTTPError as exc:
        hint = " (is the open-pixel endpoint merged?)" if exc.code == 404 else ""
        raise BenchError(f"GET /o/<token> answered {exc.code}{hint}") from None
    except OSError as exc:
        raise BenchError(f"GET /o/<token>: {exc}") from None
    if status != 200 or not body.startswith(GIF):
        raise BenchError(f"GET /o/<token> answered {status} with {body[:16]!r}, not a GIF")


# --------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------

@dataclass
class Settings:
    rate: float
    seconds: float
    warmup: float
    clients: int
    connections: int
    timeout: float
    settle: float

    @property
    def count(self) -> int:
        return max(1, round(self.rate * self.seconds))


@dataclass
class Phase:
    backend: str
    kind: str  # healthz | open
    rate: float
    result: LoadResult
    cpu_s: float  # the server's process tree
    wall_s: float
    machine_cpu_s: float  # every process on the machine

    @property
    def others_share(self) -> float:
        """Share of the machine's CPUs used by neither the server nor the load generator."""
        other = self.machine_cpu_s - self.cpu_s - self.result.client_cpu
        return max(0.0, other) / (self.wall_s * (os.cpu_count() or 1))

    def ms(self, p: float) -> float:
        return 1000 * percentile(self.sorted, p)

    @functools.cached_property
    def sorted(self) -> list[float]:
        return sorted(self.result.latencies)

    @property
    def kept_up(self) -> bool:
        r = self.result
        return r.send_rate >= MIN_RATE_SHARE * self.rate and "not sent" not in r.errors


def load(st: Settings, urls: Sequence[str], seconds: float, expect: bytes) -> LoadResult:
    spec = LoadSpec(urls=urls, rate=st.rate, count=max(1, round(st.rate * seconds)),
                    connections=st.connections, timeout=st.timeout, user_agent=USER_AGENT,
                    expect_prefix=expect)
    return run_load(spec, st.clients)


def phase(st: Settings, server: Server, backend: str, kind: str, urls: Sequence[str],
          warm_urls: Sequence[str]) -> Phase:
    expect = GIF if kind == "open" else b""
    print(f"  {backend}: {kind} warm-up {st.warmup:g} s, then {st.count} requests "
          f"at {st.rate:g}/s ...", file=sys.stderr, flush=True)
    if st.warmup > 0:
        load(st, warm_urls, st.warmup, expect)
    before, machine0, t0 = tree_cpu(server.proc.pid), machine_cpu(), time.monotonic()
    result = load(st, urls, st.seconds, expect)
    cpu = cpu_since(server.proc.pid, before)
    wall, machine = time.monotonic() - t0, machine_cpu() - machine0
    if server.proc.poll() is not None:
        raise BenchError(f"{backend}: beacon-proxy exited with {server.proc.returncode}")
    return Phase(backend, kind, st.rate, result, cpu, wall, machine)


def dump(ph: Phase, folder: Path) -> Path:
    """Every completed request of a phase as CSV: due time (s from the first), latency, service."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ph.backend}-{ph.kind}.csv"
    r = ph.result
    with path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["due_s", "latency_ms", "service_ms"])
        for due, lat, svc in sorted(zip(r.dues, r.latencies, r.service, strict=True)):
            w.writerow([f"{due - r.first_due:.4f}", f"{1000 * lat:.3f}", f"{1000 * svc:.3f}"])
    return path


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def _errors(r: LoadResult) -> str:
    return ",".join(f"{k}:{v}" for k, v in sorted(r.errors.items())) or "0"


def report(phases: Sequence[Phase], checks: Sequence[OpenCheck], st: Settings,
           path_kind: str, recipients: int) -> bool:
    print(f"open-pixel benchmark: {st.count} requests per phase at {st.rate:g}/s "
          f"({st.seconds:g} s, open loop, {st.clients} client process(es) x "
          f"{st.connections} keep-alive connections), {recipients} recipients, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print()
    hdr = (f"{'backend':<10} {'path':<7} {'sent/s':>6} {'done':>6} {'p50 ms':>6} "
           f"{'p90 ms':>6} {'p99 ms':>6} {'max ms':>7} {'non200':>6} {'errors':>6} "
           f"{'lag p99':>7} {'svc p99':>7} {'srv CPU s':>9} {'ms/req':>6} {'gen CPU s':>9} "
           f"{'others':>6}")
    print(hdr)
    print("-" * len(hdr))
    warnings: list[str] = []
    for ph in phases:
        r = ph.result
        lag = 1000 * percentile(sorted(r.lags), 99)
        svc = 1000 * percentile(sorted(r.service), 99)
        per = 1000 * ph.cpu_s / r.completed if r.completed else float("nan")
        print(f"{ph.backend:<10} {ph.kind:<7} {r.send_rate:6.1f} {r.completed:6d} "
              f"{ph.ms(50):6.2f} {ph.ms(90):6.2f} {ph.ms(99):6.2f} {ph.ms(100):7.2f} "
              f"{r.non_200:6d} {_errors(r):>6} {lag:7.2f} {svc:7.2f} {ph.cpu_s:9.2f} "
              f"{per:6.3f} {r.client_cpu:9.2f} {ph.others_share:6.0%}")
        if ph.others_share > OTHERS_WARN:
            warnings.append(f"{ph.backend} {ph.kind}: other processes kept {ph.others_share:.0%} "
                            f"of the machine's CPUs busy: not a quiet machine")
        if lag > LAG_WARN_MS:
            warnings.append(f"{ph.backend} {ph.kind}: the generator started requests up to "
                            f"{lag:.1f} ms late (p99): it was short of CPU, and that delay "
                            f"counts in the latencies")
    print("(lag: request start - due time; svc: request start to end of body, without the "
          "lag (diagnostic only: the goal is judged on p99); ms/req: server CPU per request; "
          "srv CPU: serve and its children; gen CPU: this load generator; others: share of "
          "all CPUs used by other processes)")
    for w in warnings:
        print(f"warning: {w}")
    ok = True
    for ph in phases:
        r = ph.result
        if r.non_200 or r.bad_bodies or r.errors:
            ok = False
            print(f"{ph.backend} {ph.kind}: statuses {dict(r.statuses)}, {r.bad_bodies} bodies "
                  f"not a GIF, errors {dict(r.errors)}   FAIL")
    if checks:
        print()
    for c in checks:
        rec = c.recorded
        leaks = ", ".join(f"{k} {v}" for k, v in c.leaked.items())
        clean = not any(c.leaked.values())
        ok = ok and clean
        print(f"{c.backend:<10} opens recorded: {rec.total} ({rec.machine} machine) for "
              f"{c.granted_requests} requests with granted recipients' tokens; "
              f"{c.granted_recorded} of {c.granted_hit} granted recipients hit have an open"
              f"{'' if rec.stable else ' (count still changing when polling stopped)'}; "
              f"settled {rec.settled_s:.1f} s after the load")
        print(f"{'':<10} opens of refused/unknown/forged/strangers: {leaks}   "
              f"{'PASS' if clean else 'FAIL'}")
    print()
    by = {(ph.backend, ph.kind): ph for ph in phases}
    for backend in dict.fromkeys(ph.backend for ph in phases):
        base, target = by.get((backend, "healthz")), by.get((backend, path_kind))
        if base is not None and target is not None and target is not base:
            print(f"{backend:<10} p99 /o/ / p99 /healthz = {target.ms(99):.2f} / "
                  f"{base.ms(99):.2f} ms = {target.ms(99) / base.ms(99):.2f}x")
        if target is None:
            continue
        route = "/o/" if path_kind == "open" else "/healthz (harness check, not the goal's route)"
        line = (f"{backend:<10} {route} p99 {target.ms(99):.2f} ms at "
                f"{target.result.send_rate:.0f} req/s: goal < {GOAL_P99_MS:g} ms "
                f"at {GOAL_RATE:g} req/s")
        if st.rate < GOAL_RATE:
            print(f"{line}   not judged (--rate {st.rate:g} < {GOAL_RATE:g})")
        elif not target.kept_up:
            ok = False
            print(f"{line}   FAIL (the load generator fell behind: sent "
                  f"{target.result.send_rate:.0f}/s of {st.rate:g}/s)")
        else:
            passed = target.ms(99) < GOAL_P99_MS
            ok = ok and passed
            print(f"{line}   {'PASS' if passed else 'FAIL'}")
    return ok


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------

def run_backend(backend: str, st: Settings, pop: Population, secret: str, path_kind: str,
                workdir: Path, postgres: str) -> tuple[list[Phase], OpenCheck | None]:
    bdir = workdir / backend
    bdir.mkdir()
    csv_file = bdir / "consent.csv"
    pop.write_csv(csv_file)
    with store_url(backend, bdir, postgres) as url:
        print(f"{backend}: seeding {len(pop.granted) + len(pop.refused) + len(pop.forged_only)} "
              f"consent records ...", file=sys.stderr, flush=True)
        web_port, smtp_port = free_port(), free_port()
        cfg = write_config(bdir, url, secret, smtp_port, web_port)
        seed(cfg, csv_file, bdir)
        with serve(bdir, cfg, web_port) as server:
            phases = [phase(st, server, backend, "healthz", [server.url("/healthz")],
                            [server.url("/healthz")])]
            if path_kind != "open":
                return phases, None
            preflight_open(server, pop.forged_paths[0])
            phases.append(phase(st, server, backend, "open",
                                [server.url(p) for p in pop.mix],
                                [server.url(p) for p in pop.forged_paths]))
            rec = wait_recorded(url, st.settle, limit=60)
            return phases, check_opens(backend, pop, phases[-1].result.sent, rec)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--rate", type=float, default=GOAL_RATE, help="requests per second (500)")
    p.add_argument("--seconds", type=float, default=20.0, help="seconds per phase (20)")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first (1)")
    p.add_argument("--path-kind", choices=("open", "healthz"), default="open",
                   help="open: /healthz baseline, then /o/<token> (default); "
                        "healthz: /healthz only (to check the harness)")
    p.add_argument("--backends", default="sqlite,postgresql",
                   help="comma-separated: sqlite, postgresql (default both)")
    p.add_argument("--postgres", default=DEFAULT_PG, metavar="URL",
                   help=f"server to create the benchmark database on ({DEFAULT_PG})")
    p.add_argument("--recipients", type=int, default=1000, help="seeded recipients (1000)")
    p.add_argument("--clients", type=int, default=1,
                   help="load-generator processes sharing the schedule (1)")
    p.add_argument("--connections", type=int, default=64,
                   help="keep-alive connections per client process (64)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout s (10)")
    p.add_argument("--settle", type=float, default=2.0,
                   help="seconds the open count must stay unchanged after the load (2)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 100/s for 3 s, 200 recipients, short warm-up")
    p.add_argument("--dump", type=Path, default=None, metavar="DIR",
                   help="write every request's timing to DIR/<backend>-<path>.csv")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    a = p.parse_args(argv)
    if a.quick:
        a.rate, a.seconds, a.warmup, a.recipients, a.settle = 100.0, 3.0, 0.5, 200, 1.0
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    if not backends or set(backends) - {"sqlite", "postgresql"}:
        p.error("--backends: a comma-separated list of sqlite, postgresql")
    if a.rate <= 0 or a.seconds <= 0 or a.warmup < 0 or a.timeout <= 0 or a.settle <= 0:
        p.error("--rate, --seconds, --timeout and --settle must be > 0, --warmup >= 0")
    if a.rate * a.seconds > 1_000_000:
        p.error("--rate x --seconds: at most 1 000 000 requests per phase")
    if not 1 <= a.clients <= 64 or not 1 <= a.connections <= 10_000:
        p.error("--clients must be 1..64 and --connections 1..10000")
    if not 20 <= a.recipients <= 1_000_000:
        p.error("--recipients must be 20..1000000")
    st = Settings(a.rate, a.seconds, a.warmup, a.clients, a.connections, a.timeout, a.settle)
    secret = f"bench-{secrets.token_hex(16)}"
    workdir = Path(tempfile.mkdtemp(prefix="beacon-bench-opens-"))
    phases: list[Phase] = []
    checks: list[OpenCheck] = []
    try:
        pop = population(a.recipients, secret)
        for backend in backends:
            got, check = run_backend(backend, st, pop, secret, a.path_kind, workdir, a.postgres)
            phases += got
            checks += [check] if check is not None else []
        ok = report(phases, checks, st, a.path_kind, a.recipients)
        for ph in phases if a.dump is not None else []:
            print(f"timings: {dump(ph, a.dump)}", file=sys.stderr)
    except (BenchError, TimeoutError) as exc:
        print(f"benchmark failed: {exc} (logs in {workdir})", file=sys.stderr)
        a.keep = True
        return 2
    finally:
        if a.keep:
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
