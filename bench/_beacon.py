"""beacon-proxy serve for the relay benchmarks: start it, read its /metrics, a DKIM key."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from _proc import smtp_ready, stop_process, wait_until
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["Proxy", "child_env", "dkim_key", "http_ok", "metric", "serve"]


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEACON_PROXY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def metric(web_port: int, name: str, labels: str = "") -> float:
    url = f"http://127.0.0.1:{web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text: str = resp.read().decode()
    pat = re.compile(rf"^{re.escape(name + labels)} ([0-9.e+]+)$", re.M)
    m = pat.search(text)
    return float(m.group(1)) if m else 0.0


def http_ok(port: int, path: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            status: int = resp.status
            return status == 200
    except OSError:
        return False


def dkim_key(workdir: Path) -> Path:
    """A fresh RSA-2048 key (PKCS#8 PEM, mode 0600) for the DKIM phases."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = workdir / "dkim-bench.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


@dataclass
class Proxy:
    proc: subprocess.Popen[bytes]
    smtp_port: int
    web_port: int

    def delivered(self) -> float:
        """Recipients delivered so far (beacon_proxy_deliveries_total{result="delivered"})."""
        return metric(self.web_port, "beacon_proxy_deliveries_total", '{result="delivered"}')


@contextlib.contextmanager
def serve(cfg: Path, smtp_port: int, web_port: int,
          profile: Path | None = None) -> Iterator[Proxy]:
    """``beacon-proxy serve --config cfg`` (its ports as the config says), stopped on exit."""
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "cProfile", "-o", str(profile)]
    cmd += ["-m", "beacon_proxy", "serve", "--config", str(cfg)]
    err_path = cfg.parent / "serve.stderr"
    out = err_path.open("wb")
    relay = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=child_env(), cwd=str(cfg.parent))
    try:
        # /readyz, not /healthz: ready once every worker has started.  A phase that
        # began when only the first was up gave it every connection its sender opened
        # together, kept for the phase by smtp-source -d (one worker on one core).
        wait_until(lambda: http_ok(web_port, "/readyz") and smtp_ready(smtp_port), 60,
                   "beacon-proxy start", relay, interval=0.1)
        yield Proxy(relay, smtp_port, web_port)
    finally:
        stop_process(relay, grace=30)
        out.close()
        if relay.returncode not in (0, None):
            sys.stderr.write(err_path.read_text()[-2000:])
