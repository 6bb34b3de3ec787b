"""``beacon-proxy ready``: the container health check asks /readyz where the config says."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from beacon_proxy.cli.main import main
from beacon_proxy.cli.ready import readyz_url
from beacon_proxy.config import Endpoint

Cap = pytest.CaptureFixture[str]


class _Relay(http.server.BaseHTTPRequestHandler):
    answer: tuple[int, dict[str, object]] = (200, {"status": "ready"})
    paths: list[str] = []  # noqa: RUF012 - one test at a time

    def do_GET(self) -> None:
        self.paths.append(self.path)
        code, body = self.answer if self.path == "/readyz" else (404, {})
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def relay() -> Iterator[http.server.HTTPServer]:
    _Relay.paths = []
    _Relay.answer = (200, {"status": "ready"})
    server = http.server.HTTPServer(("127.0.0.1", 0), _Relay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def _config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


def test_readyz_url() -> None:
    assert readyz_url(Endpoint("0.0.0.0", 8026)) == "http://127.0.0.1:8026/readyz"
    assert readyz_url(Endpoint("::", 8026)) == "http://[::1]:8026/readyz"
    assert readyz_url(Endpoint("10.1.2.3", 80)) == "http://10.1.2.3:80/readyz"


def test_ready_asks_the_admin_listener(relay: http.server.HTTPServer, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, capsys: Cap) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # never used for the check
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    port = relay.server_address[1]
    config = _config(tmp_path, f"[web]\nlisten = '127.0.0.1:9'\nadmin_listen = '0.0.0.0:{port}'\n")
    assert main(["ready", "--config", config]) == 0
    assert capsys.readouterr().out == f"ready (http://127.0.0.1:{port}/readyz)\n"
    assert _Relay.paths == ["/readyz"]
    _Relay.answer = (503, {"status": "unready", "reason": "spool: /x/tmp: Not a directory"})
    assert main(["ready", "--config", config]) == 1
    err = capsys.readouterr().err
    assert err == (f"beacon-proxy: not ready (http://127.0.0.1:{port}/readyz: 503): "
                   "spool: /x/tmp: Not a directory\n")


def test_ready_without_an_admin_listener_asks_the_public_one(
        relay: http.server.HTTPServer, tmp_path: Path, capsys: Cap) -> None:
    port = relay.server_address[1]
    assert main(["ready", "--config", _config(tmp_path, f"[web]\nlisten = '127.0.0.1:{port}'\n")
                 ]) == 0
    assert _Relay.paths == ["/readyz"]


def test_no_relay_is_not_ready(tmp_path: Path, capsys: Cap) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = _config(tmp_path, f"[web]\nlisten = '127.0.0.1:{port}'\n")
    assert main(["ready", "--config", config, "--timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"beacon-proxy: no answer from http://127.0.0.1:{port}/readyz")
    assert err.count("\n") == 1
