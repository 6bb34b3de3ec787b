"""DKIM step benchmark: what signing one copy costs, beside dkimpy's ``dkim.sign``.

Input: the ~70 KB quoted-printable newsletter of ``bench/newsletter.py`` (CRLF
line ends, as a copy leaves), made into recipients' copies by the relay's own
copy steps (the beacon step, the footer link, the unsubscribe headers, the trace
header: ``app.copy_steps``), so that each copy differs from the last in the
footer link of both parts and in ``List-Unsubscribe``, as in the relay.  Shown,
in milliseconds per copy on one core: the whole
:class:`~beacon_proxy.rewrite.dkim.DkimSigner` step for an RSA-2048 and an
Ed25519 key, for a *further copy* (the signer checks and hashes it against the
last copy of the message: ``rewrite/dkimbody.py``) and for a *first copy* (the
whole-body path: a signer that remembers nothing), the same for a single-part
HTML newsletter (its footer near the end: the hash of almost the whole body is
reused); its parts (the body of a further copy: check and SHA-256 from the
first change; relaxed canonicalisation + SHA-256 of the whole body; the
signature alone), and dkimpy's own ``dkim.sign`` for the same message, key,
canonicalisation and ``h=`` (the baseline), with the ratios.  Every signature is
checked with dkimpy first, and every further copy is byte-identical to the
first-copy path's.  Goal: RSA-2048 at most 1 ms per further copy (what the relay
does for every recipient but a message's first).
Run: ``python bench/dkim_sign.py`` (not ``bench/dkim.py``: that name would hide
dkimpy's ``dkim`` package from the script and from mypy, whose path has ``bench/``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import version
from itertools import cycle
from pathlib import Path

import dkim  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from newsletter import newsletter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon_proxy.app import copy_steps
from beacon_proxy.config import Config
from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.beacons import BeaconStep
from beacon_proxy.rewrite.dkim import (
    SIGNED_HEADERS,
    DkimSigner,
    SigningKey,
    dns_record,
    relaxed_body,
)
from beacon_proxy.rewrite.dkimbody import BodyHashes
from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens

GOAL_MS = 1.0  # RSA-2048, one further copy, one core
DOMAIN = "shop.example"  # the newsletter is From: news@shop.example
COPIES = 64  # recipients' copies signed in turn


def timed(rows: Sequence[tuple[str, Callable[[], object]]], rounds: int,
          batch: int = 10) -> dict[str, tuple[float, float]]:
    """(median, best) milliseconds of one call of each row, over ``rounds`` batches of
    ``batch`` calls, the rows taking turns batch by batch: a slow spell of the
    machine falls on every row alike, not on whichever row it met.

    The best batch shows the cost on an idle core; the median, what the machine gave."""
    samples: dict[str, list[float]] = {name: [] for name, _ in rows}
    for _ in range(rounds):
        for name, fn in rows:
            start = time.perf_counter()
            for _ in range(batch):
                fn()
            samples[name].append((time.perf_counter() - start) * 1000 / batch)
    return {name: (statistics.median(xs), min(xs)) for name, xs in samples.items()}


def messy(data: bytes) -> bytes:
    """``data`` with a body that relaxed canonicalisation must change on every line:
    indentation of tabs and spaces, blanks at line ends."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = body.split(b"\r\n")
    body = b"\r\n".join((b"\t    " if i % 3 else b"        ") + line + (b" \t" * (i % 2))
                        for i, line in enumerate(lines))
    return head + b"\r\n\r\n" + body


def html_only(data: bytes) -> bytes:
    """The newsletter as a single quoted-printable text/html part (its footer then goes
    near the end of the body, after everything the copies share)."""
    head, _, body = data.partition(b"\r\n\r\n")
    head = head[: head.index(b"Content-Type: multipart/alternative")]
    html = body[body.index(b"\r\n\r\n", body.index(b"Content-Type: text/html")) + 4 :]
    html = html[: html.rindex(b"\r\n--") + 2]
    return (head + b"Content-Type: text/html; charset=UTF-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + html)


def recipients_copies(original: bytes) -> list[bytes]:
    """:data:`COPIES` refused recipients' copies of ``original``, as the relay makes them
    (addresses of several lengths: the footer links differ in length too)."""
    tokens = Tokens(["bench secret 0123456789abcdef"])
    step = BeaconStep(Engine(load_rules()), tokens, public_url="https://prefs.example.com",
                      hostname="relay.example",
                      steps=copy_steps(Config(), tokens, hostname="relay.example"))
    envelope = Envelope("BENCHQUEUEID0001", "news@shop.example", ("a@example.org",),
                        list_id="news.shop.example")
    prepared = asyncio.run(step.prepare(envelope, original))
    return [prepared.render(f"reader{k}{'x' * (k % 9)}@example.org", Policy.REFUSED).data
            for k in range(COPIES)]


def signing(signer: DkimSigner, copies: list[bytes], original: bytes) -> Callable[[], object]:
    """Sign the copies in turn, each after the one before it (what the relay does)."""
    turn: Iterator[bytes] = cycle(copies)
    return lambda: signer.sign(next(turn), original)


def verifies(data: bytes, *keys: SigningKey) -> bool:
    records = {f"{k.selector}._domainkey.{k.domain}.".encode(): dns_record(k).encode()
               for k in keys}
    return bool(dkim.verify(data, dnsfunc=lambda name, timeout=5: records.get(name)))


def checked(copies: list[bytes], original: bytes, key: SigningKey) -> None:
    """Every copy signed by a remembering signer is the first-copy path's bytes, and
    verifies with dkimpy."""
    clock = time.time() - 60  # one t= for both: compared byte for byte
    further = DkimSigner([key], clock=lambda: clock)
    first = DkimSigner([key], clock=lambda: clock, cache=0)
    for copy in copies:
        signed = further.sign(copy, original)
        assert signed == first.sign(copy, original), copy[:300]
        assert verifies(signed[0], key), signed[0][:400]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    data = newsletter().replace(b"\n", b"\r\n")
    html = html_only(data)
    copies, html_copies = recipients_copies(data), recipients_copies(html)
    rsa_private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_private = ed25519.Ed25519PrivateKey.generate()
    rsa_key = SigningKey(DOMAIN, "rsa", rsa_private)
    ed_key = SigningKey(DOMAIN, "ed", ed_private)
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

    checked(copies[:8], data, rsa_key)
    checked(copies[:8], data, ed_key)
    checked(html_copies[:4], html, rsa_key)
    untidy = messy(data)
    for signed, key in ((DkimSigner([ed_key]).sign(untidy)[0], ed_key),
                        (dkimpy(rsa_key, rsa_pem, b"rsa-sha256"), rsa_key),
                        (dkimpy(ed_key, ed_seed, b"ed25519-sha256"), ed_key)):
        assert verifies(signed, key), signed[:400]
    body = copies[0][copies[0].index(b"\r\n\r\n") + 4 :]
    bodies = [c[c.index(b"\r\n\r\n") + 4 :] for c in copies]
    hashes, turn = BodyHashes(), cycle(bodies)

    def further_body() -> bytes:  # what the step does with a further copy's body
        this = next(turn)
        return hashes.digest(this, 0, data, hashes.like_last(this, 0, data))

    header_block = b"from:x\r\nsubject:y\r\n" * 6  # about what the signature covers
    rows = [
        ("ours, RSA-2048, further copy", signing(DkimSigner([rsa_key]), copies, data)),
        ("ours, RSA-2048, first copy", signing(DkimSigner([rsa_key], cache=0), copies, data)),
        ("ours, Ed25519, further copy", signing(DkimSigner([ed_key]), copies, data)),
        ("ours, Ed25519, first copy", signing(DkimSigner([ed_key], cache=0), copies, data)),
        ("ours, Ed25519, untidy body", signing(DkimSigner([ed_key]), [untidy], data)),
        ("ours, RSA-2048, HTML only, further", signing(DkimSigner([rsa_key]), html_copies,
                                                       html)),
        ("ours, RSA-2048, HTML only, first", signing(DkimSigner([rsa_key], cache=0),
                                                     html_copies, html)),
        ("  further copy: check + SHA-256", further_body),
        ("  relaxed body + SHA-256", lambda: hashlib.sha256(relaxed_body(body)).digest()),
        ("  RSA-2048 signature alone", lambda: rsa_key.sign(header_block)),
        ("  Ed25519 signature alone", lambda: ed_key.sign(header_block)),
    ]
    baseline = [
        ("dkimpy dkim.sign, RSA-2048", lambda: dkimpy(rsa_key, rsa_pem, b"rsa-sha256")),
        ("dkimpy dkim.sign, Ed25519", lambda: dkimpy(ed_key, ed_seed, b"ed25519-sha256")),
    ]
    print(f"message: {len(data):,} bytes, body {len(body):,} bytes; {COPIES} recipients' "
          f"copies; dkimpy {version('dkimpy')}, cryptography {version('cryptography')}")
    results = timed(rows, args.rounds) | timed(baseline, max(3, args.rounds // 5))
    print(f"{'ms per copy, one core':<38} {'median':>8} {'best':>8}")
    for name, (median, best) in results.items():
        print(f"{name:<38} {median:8.3f} {best:8.3f}")
    for algorithm in ("RSA-2048", "Ed25519"):
        ours = results[f"ours, {algorithm}, further copy"]
        theirs = results[f"dkimpy dkim.sign, {algorithm}"]
        print(f"{algorithm}: dkimpy / ours (further copy) = {theirs[0] / ours[0]:.1f}x "
              f"(median), {theirs[1] / ours[1]:.1f}x (best)")
    median, best = results["ours, RSA-2048, further copy"]
    alone = results["  RSA-2048 signature alone"]
    print(f"RSA-2048 further copy beyond its signature: {best - alone[1]:.3f} ms best, "
          f"{median - alone[0]:.3f} ms median")
    verdict = "PASS" if best <= GOAL_MS else "FAIL"
    print(f"RSA-2048 further copy: {best:.3f} ms best, {median:.3f} ms median   "
          f"goal <= {GOAL_MS} ms on an idle core   {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
