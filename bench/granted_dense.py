#!/usr/bin/env python3
"""Granted footer derivation on pixel-dense messages (branch wt-attack2).

    python bench/granted_dense.py [--rounds 5]

Two tables, CPU ms (``time.process_time``, best of ``--rounds``):

* ``respliced`` against ``parse_message`` of the same copy: one HTML part whose
  ``--lines`` lines each hold a stretch one byte longer than the base's, and 900
  other parts (the parser's limit is 1000), i.e. every span end moved;
* the footer step of a granted copy, fresh (``Footer(cache=0)``) against derived
  (the first granted copy kept as its shape's base), for single-part
  quoted-printable HTML with 1 to 8000 pixels (one written stretch each).
"""

from __future__ import annotations

import argparse
import asyncio
import binascii
import time

from _cpu import best_cpu

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.beacons import BeaconStep
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.footer import Footer
from beacon_proxy.rewrite.mime import parse_message, respliced
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import Copy, Recipient
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens

PIXEL = '<img src="https://pixel.tracker-host.example/o.gif?u={n}" width="1" height="1" alt="">'
RCPTS = ("a1@x.example", "bbbbbbbbbbbbbbbbb2@x.example")  # tokens of different lengths


def _message(grow: bytes, lines: int) -> tuple[bytes, tuple[tuple[int, int], ...]]:
    line = b'<p><img src="https://p.example/o/' + grow + b'T0k3n"></p>\r\n'
    written = tuple((n * len(line), (n + 1) * len(line)) for n in range(lines))
    return (b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
            b"--b0\r\nContent-Type: text/html\r\n\r\n" + line * lines + b"<p>end</p>\r\n"
            + b"--b0\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n" * 900
            + b"--b0--\r\n"), written


def resplice_row(lines: int, rounds: int) -> None:
    (one, first), (two, second) = _message(b"", lines), _message(b"x", lines)
    base = parse_message(one)
    moved = 1e3 * best_cpu(lambda: respliced(base, two, {(0,): first}, {(0,): second}), rounds)
    parsed = 1e3 * best_cpu(lambda: parse_message(two), rounds)
    print(f"stretches {lines:5d} parts 901: respliced {moved:8.2f} ms  parse {parsed:6.2f} ms")


def _second_copy(copies: list[tuple[Copy, Recipient]], cache: int) -> float:
    """CPU ms of the footer of the second granted copy (the first one kept as a base)."""
    footer = Footer(lambda r: "https://prefs.example.com/u/T0k3n", cache=cache)
    footer(*copies[0])
    started = time.process_time()
    footer(*copies[1])
    return (time.process_time() - started) * 1e3


def footer_row(step: BeaconStep, pixels: int, rounds: int) -> None:
    html = "<html><body>\n" + "".join(f"<p>{n}</p>\n{PIXEL.format(n=n)}\n"
                                      for n in range(pixels)) + "</body></html>\n"
    data = (b"From: a@b.example\r\nTo: c@d.example\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            + binascii.b2a_qp(html.encode(), istext=True).replace(b"\n", b"\r\n"))
    env = Envelope("Q1", "news@shop.example", RCPTS, list_id="news.shop.example",
                   received_at=1_800_000_000.0)
    prepared = asyncio.run(step.prepare(env, data))
    copies = [(prepared.render(r, Policy.GRANTED), Recipient(env, r, Policy.GRANTED, data))
              for r in RCPTS]
    fresh, derived = (min(_second_copy(copies, cache) for _ in range(rounds))
                      for cache in (0, 4))
    print(f"pixels {pixels:5d} size {len(data):7d}: footer fresh {fresh:7.3f} ms"
          f"  derived {derived:7.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    for lines in (500, 2000, 8000):
        resplice_row(lines, args.rounds)
    step = BeaconStep(Engine(load_rules()), Tokens(["a bench secret of some length"]),
                      public_url="https://prefs.example.com", hostname="relay.example", steps=())
    for pixels in (1, 8, 32, 200, 2000, 8000):
        footer_row(step, pixels, args.rounds)


if __name__ == "__main__":
    main()
