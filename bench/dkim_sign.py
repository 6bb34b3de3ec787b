"""DKIM step benchmark: what signing one copy costs, beside dkimpy's ``dkim.sign``.

Input: the ~70 KB quoted-printable newsletter of ``bench/newsletter.py`` (CRLF
line ends, as a copy leaves).  Shown, in milliseconds per copy on one core:
the whole :class:`~beacon_proxy.rewrite.dkim.DkimSigner` step for an RSA-2048
and an Ed25519 key, its parts (relaxed body canonicalisation + SHA-256, the
signature alone), and dkimpy's own ``dkim.sign`` for the same message, key,
canonicalisation and ``h=`` (the baseline), with the ratios.  Every signature
is checked with dkimpy first.  Goal: RSA-2048 at most 1 ms per copy.
Run: ``python bench/dkim_sign.py`` (not ``bench/dkim.py``: that name would hide
dkimpy's ``dkim`` package from the script and from mypy, whose path has ``bench/``).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import dkim  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from newsletter import newsletter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon_proxy.rewrite.dkim import (
    SIGNED_HEADERS,
    DkimSigner,
    SigningKey,
    dns_record,
    relaxed_body,
)

GOAL_MS = 1.0  # RSA-2048, one copy, one core
DOMAIN = "shop.example"  # the newsletter is From: news@shop.example


def timed(fn: Callable[[], object], rounds: int, batch: int = 10) -> tuple[float, float]:
    """(median, best) milliseconds of one call, over ``rounds`` batches of ``batch`` calls.

    The best batch shows the cost on an idle core; the median, what the machine gave."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        samples.append((time.perf_counter() - start) * 1000 / batch)
    return statistics.median(samples), min(samples)


def messy(data: bytes) -> bytes:
    """``data`` with a body that relaxed canonicalisation must change on every line:
    indentation of tabs and spaces, blanks at line ends."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = body.split(b"\r\n")
    body = b"\r\n".join((b"\t    " if i % 3 else b"        ") + line + (b" \t" * (i % 2))
                        for i, line in enumerate(lines))
    return head + b"\r\n\r\n" + body


def verifies(data: bytes, *keys: SigningKey) -> bool:
    records = {f"{k.selector}._domainkey.{k.domain}.".encode(): dns_record(k).encode()
               for k in keys}
    return bool(dkim.verify(data, dnsfunc=lambda name, timeout=5: records.get(name)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    data = newsletter().replace(b"\n", b"\r\n")
    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_private = ed25519.Ed25519PrivateKey.generate()
    rsa_key = SigningKey(DOMAIN, "rsa", rsa_private)
    ed_key = SigningKey(DOMAIN, "ed", ed_private)
    ours_rsa, ours_ed = DkimSigner([rsa_key]), DkimSigner([ed_key])
    rsa_pem = rsa_private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
    ed_seed = base64.b64encode(ed_private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
        serialization.NoEncryption()))
    include = [h.lower().encode() for h in SIGNED_HEADERS]

    def dkimpy(key: SigningKey, private: bytes, algorithm: bytes) -> bytes:
        field: bytes = dkim.sign(data, key.selector.encode(), DOMAIN.encode(), private,
                                 include_headers=include, canonicalize=(b"relaxed", b"relaxed"),
                                 signature_algorithm=algorithm)
        return field + data

    for signed, key in ((ours_rsa.sign(data)[0], rsa_key), (ours_ed.sign(data)[0], ed_key),
                        (dkimpy(rsa_key, rsa_pem, b"rsa-sha256"), rsa_key),
                        (dkimpy(ed_key, ed_seed, b"ed25519-sha256"), ed_key)):
        assert verifies(signed, key), signed[:400]
    body = data[data.index(b"\r\n\r\n") + 4 :]
    untidy = messy(data)
    assert verifies(ours_rsa.sign(untidy)[0], rsa_key)
    header_block = b"from:x\r\nsubject:y\r\n" * 6  # about what the signature covers
    rows = [
        ("ours, RSA-2048 (whole step)", lambda: ours_rsa.sign(data), args.rounds),
        ("ours, Ed25519 (whole step)", lambda: ours_ed.sign(data), args.rounds),
        ("ours, Ed25519, untidy body", lambda: ours_ed.sign(untidy), args.rounds),
        ("  relaxed body + SHA-256", lambda: hashlib.sha256(relaxed_body(body)).digest(),
         args.rounds),
        ("  RSA-2048 signature alone", lambda: rsa_key.sign(header_block), args.rounds),
        ("  Ed25519 signature alone", lambda: ed_key.sign(header_block), args.rounds),
        ("dkimpy dkim.sign, RSA-2048", lambda: dkimpy(rsa_key, rsa_pem, b"rsa-sha256"),
         max(3, args.rounds // 5)),
        ("dkimpy dkim.sign, Ed25519", lambda: dkimpy(ed_key, ed_seed, b"ed25519-sha256"),
         max(3, args.rounds // 5)),
    ]
    print(f"message: {len(data):,} bytes, body {len(body):,} bytes; dkimpy {version('dkimpy')}, "
          f"cryptography {version('cryptography')}")
    results = {name: timed(fn, rounds) for name, fn, rounds in rows}
    print(f"{'ms per copy, one core':<36} {'median':>8} {'best':>8}")
    for name, (median, best) in results.items():
        print(f"{name:<36} {median:8.3f} {best:8.3f}")
    for algorithm in ("RSA-2048", "Ed25519"):
        ours = results[f"ours, {algorithm} (whole step)"]
        theirs = results[f"dkimpy dkim.sign, {algorithm}"]
        print(f"{algorithm}: dkimpy / ours = {theirs[0] / ours[0]:.1f}x (median), "
              f"{theirs[1] / ours[1]:.1f}x (best)")
    median, best = results["ours, RSA-2048 (whole step)"]
    verdict = "PASS" if best <= GOAL_MS else "FAIL"
    print(f"RSA-2048 copy: {best:.3f} ms best, {median:.3f} ms median   "
          f"goal <= {GOAL_MS} ms on an idle core   {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
