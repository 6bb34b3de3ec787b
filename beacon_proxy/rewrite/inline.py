"""Transparent ``data:`` images that take a layout image's place without moving anything.

A layout image (a spacer, Inxmail's 780 x 1 ``gmail_fix.gif``) is not a beacon, but in
a refused copy nothing remote may load.  Removing its tag would shift the layout (by up
to 20 px, measured on real newsletters), so the engine replaces only its URL by an inline
transparent PNG.  The tag's ``width``/``height`` attributes stay as they are; the PNG's
own size is the declared one, so an image sized by one attribute only (``width="780"``)
keeps the aspect ratio the original had when it was a strut:

>>> transparent_png(780, 1).startswith("data:image/png;base64,")
True
>>> len(transparent_png(780, 1))
154

A PNG rather than a GIF: its size is two header fields and its pixels compress to a few
bytes at any size; a GIF would need its LZW stream written out.  Dimensions are clamped
to 1-1024 px (a 1024 x 1024 one is 338 characters; an attribute of ``0`` still lays the
image out at 0 px).
"""

from __future__ import annotations

import base64
import struct
import zlib
from functools import lru_cache

__all__ = ["MAX_SIDE", "transparent_png"]

MAX_SIDE = 1024


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


@lru_cache(maxsize=256)
def transparent_png(width: int = 1, height: int = 1) -> str:
    """A fully transparent PNG of ``width`` x ``height`` px as a ``data:`` URI."""
    width = min(max(width, 1), MAX_SIDE)
    height = min(max(height, 1), MAX_SIDE)
    # 1 bit per pixel, palette colour 0, which tRNS makes fully transparent; each row
    # starts with filter type 0
    rows = bytes(height * (1 + (width + 7) // 8))
    png = (b"\x89PNG\r\n\x1a\n"
           + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 3, 0, 0, 0))
           + _chunk(b"PLTE", b"\x00\x00\x00")
           + _chunk(b"tRNS", b"\x00")
           + _chunk(b"IDAT", zlib.compress(rows, 9))
           + _chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
