"""Micro-benchmark of beacon_proxy.rewrite.transfer and charsets on a 70 KB newsletter part.

Run from the repository root: ``python bench/transfer_micro.py``.  Prints the best
per-call time of each step (not a test; numbers depend on the machine).
"""

from __future__ import annotations

import binascii
import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon_proxy.rewrite.charsets import looks_valid, scan_view
from beacon_proxy.rewrite.mime import parse_message
from beacon_proxy.rewrite.transfer import Edit, apply_edits, decode

PIXEL = b'<img src="https://t.example-esp.com/o/3f2a9c81d7e4b6a5" width="1" height="1" alt="">'


def newsletter(size: int = 70_000) -> bytes:
    """A newsletter-like HTML document of about ``size`` bytes with three pixels."""
    block = (
        '<tr><td class="product" style="padding:12px 16px;font-family:Arial,sans-serif">'
        '<a href="https://shop.example.com/p/{n}?utm_source=news&amp;utm_medium=email">'
        '<img src="https://cdn.example.com/img/{n}.jpg" width="120" alt="Produit {n}"></a>'
        "<p>Crème brûlée n°{n} — 12,50 € · livraison offerte</p></td></tr>\r\n"
    )
    head = "<!DOCTYPE html>\r\n<html><body>\r\n" + PIXEL.decode() + "\r\n<table>\r\n"
    body = "".join(block.format(n=n) for n in range(size // len(block)))
    middle = len(body) // 2
    body = body[:middle] + "\r\n" + PIXEL.decode() + "\r\n" + body[middle:]
    return (head + body + "</table>\r\n" + PIXEL.decode() + "\r\n</body></html>\r\n").encode()


def best(label: str, call: Callable[[], object], rounds: int = 2000) -> None:
    call()
    fastest = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            call()
        fastest = min(fastest, (time.perf_counter() - start) / rounds)
    print(f"{label:58s} {fastest * 1e6:9.1f} us")


def pixel_edits(decoded: bytes) -> list[Edit]:
    edits, pos = [], 0
    while (at := decoded.find(PIXEL, pos)) >= 0:
        edits.append(Edit(at, at + len(PIXEL), b""))
        pos = at + len(PIXEL)
    return edits


def main() -> None:
    html = newsletter()
    qp = binascii.b2a_qp(html)
    b64 = b"\r\n".join(binascii.b2a_base64(html[i : i + 57], newline=False)
                       for i in range(0, len(html), 57))
    edits = pixel_edits(html)
    print(f"HTML {len(html)} bytes, QP {len(qp)} bytes, base64 {len(b64)} bytes, "
          f"{len(edits)} edits")
    best("decode quoted-printable", lambda: decode(qp, "quoted-printable"))
    best("apply_edits quoted-printable, 3 edits", lambda: apply_edits(qp, "quoted-printable",
                                                                       edits))
    best("apply_edits quoted-printable, 1 edit at the end",
         lambda: apply_edits(qp, "quoted-printable", edits[-1:]))
    best("(whole-part binascii.b2a_qp, for comparison)", lambda: binascii.b2a_qp(html), 300)
    best("decode base64", lambda: decode(b64, "base64"))
    best("apply_edits base64, 3 edits", lambda: apply_edits(b64, "base64", edits))
    best("apply_edits base64, 3 edits, decoded= given",
         lambda: apply_edits(b64, "base64", edits, decoded=html))
    best("apply_edits 8bit, 3 edits", lambda: apply_edits(html, "8bit", edits))
    boundary = b"----=_Part_4821_1093.1732871045521"
    message = (b"From: news@example.com\r\nTo: a@example.org\r\nSubject: Offres\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: multipart/alternative;\r\n"
               b' boundary="' + boundary + b'"\r\n\r\n--' + boundary +
               b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOffres\r\n--" + boundary +
               b"\r\nContent-Type: text/html; charset=utf-8\r\n"
               b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + qp +
               b"\r\n--" + boundary + b"--\r\n")
    best("parse_message (multipart/alternative, 85 KB)", lambda: parse_message(message))
    best("scan_view utf-8 (identity)", lambda: scan_view(html, "utf-8"))
    best("looks_valid utf-8", lambda: looks_valid(html, "utf-8"))
    japanese = html.decode().replace("Crème brûlée", "新商品ソフト表示").replace(
        "livraison offerte", "送料無料").replace("€", "円")
    for charset in ("shift_jis", "gbk", "big5", "euc-kr", "iso-2022-jp"):
        codec = {"euc-kr": "cp949", "shift_jis": "cp932"}.get(charset, charset)
        text = japanese if charset != "euc-kr" else japanese.replace(
            "新商品ソフト表示", "신상품").replace("送料無料", "무료배송")
        data = text.encode(codec, "xmlcharrefreplace")
        best(f"scan_view {charset} ({len(data)} bytes)",
             functools.partial(scan_view, data, charset), 300)


if __name__ == "__main__":
    main()
