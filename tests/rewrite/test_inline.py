"""The transparent PNGs that take a layout image's place: valid, transparent, sized."""

from __future__ import annotations

import base64
import struct
import zlib

import pytest

from beacon_proxy.rewrite.inline import MAX_SIDE, transparent_png


def _chunks(png: bytes) -> dict[bytes, bytes]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pos, out = 8, {}
    while pos < len(png):
        (size,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + size]
        (crc,) = struct.unpack(">I", png[pos + 8 + size : pos + 12 + size])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF
        out[kind] = data
        pos += 12 + size
    return out


@pytest.mark.parametrize(("width", "height", "size"), [
    (1, 1, (1, 1)), (780, 1, (780, 1)), (265, 1, (265, 1)), (1, 40, (1, 40)),
    (0, 0, (1, 1)), (99_999, 3, (MAX_SIDE, 3)),
])
def test_a_valid_transparent_png_of_the_declared_size(width: int, height: int,
                                                       size: tuple[int, int]) -> None:
    uri = transparent_png(width, height)
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix) and uri.isascii() and " " not in uri
    chunks = _chunks(base64.b64decode(uri[len(prefix):], validate=True))
    w, h, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (w, h, depth, colour) == (*size, 1, 3)
    assert chunks[b"tRNS"] == b"\x00"  # palette entry 0 fully transparent
    rows = zlib.decompress(chunks[b"IDAT"])
    assert rows == bytes(h * (1 + (w + 7) // 8))  # every pixel is entry 0
    assert chunks[b"IEND"] == b""


def test_even_the_largest_stays_small() -> None:
    assert len(transparent_png(MAX_SIDE, MAX_SIDE)) < 400
