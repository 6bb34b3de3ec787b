"""Unwrapping ``multipart/signed``: a refused recipient's copy loses the signature.

A signed part cannot be changed without breaking its signature (RFC 1847,
S/MIME, PGP/MIME), and a broken signature alarms the reader.  But a signature
never outranks a recipient's refusal: with ``[policy] signed = "unwrap"`` (the
default), a refused copy has each ``multipart/signed`` replaced by its first
part, the signed content, which is then rewritten like any other part.  The
signature part goes with its wrapper.  Granted copies keep the signature.

When the signed part is the message itself, the message's own header keeps
every field but the ``Content-*`` ones, which come from the signed content:

>>> msg = (b"From: a@x.example\\r\\nContent-Type: multipart/signed; boundary=s;"
...        b" protocol=\\"application/pgp-signature\\"\\r\\n\\r\\n--s\\r\\n"
...        b"Content-Type: text/html\\r\\n\\r\\n<p>hi</p>\\r\\n--s\\r\\n"
...        b"Content-Type: application/pgp-signature\\r\\n\\r\\nSIG\\r\\n--s--\\r\\n")
>>> unwrap_signed(msg)
b'From: a@x.example\\r\\nContent-Type: text/html\\r\\n\\r\\n<p>hi</p>'

Opaque S/MIME (``application/pkcs7-mime``, the content inside the DER blob)
cannot be unwrapped here; :func:`unwrap_signed` returns None for it, as for a
signed part whose structure is broken, and the caller falls back.
"""

from __future__ import annotations

from typing import Final

from beacon_proxy.rewrite.mime import (
    PKCS7_TYPES,
    MimePart,
    MimeTree,
    header_fields,
    parse_message,
)

__all__ = ["has_signed_parts", "unwrap_signed"]

_SIGNED: Final = "multipart/signed"
_MAX_ROUNDS: Final = 16  # signed inside signed inside ...


def has_signed_parts(tree: MimeTree) -> bool:
    """Whether a refused copy of this message needs unwrapping (or cannot be made)."""
    return any(p.content_type == _SIGNED or p.content_type in PKCS7_TYPES for p in tree.parts)


def _first_child(tree: MimeTree, part: MimePart) -> MimePart | None:
    want = (*part.path, 0)
    return next((p for p in tree.parts if p.path == want), None)


def _unwrap_one(tree: MimeTree, signed: MimePart, content: MimePart) -> bytes:
    data = tree.data
    inner = data[content.header_span.start:content.body_span.stop]
    if signed.path:  # a nested part: the signed content takes its place, header and all
        return data[:signed.header_span.start] + inner + data[signed.body_span.stop:]
    own = [raw for name, raw in header_fields(data[signed.header_span])
           if not name.startswith("content-")]
    return b"".join(own) + inner + data[signed.body_span.stop:]


def unwrap_signed(data: bytes) -> bytes | None:
    """The message with every ``multipart/signed`` replaced by its signed content.

    ``data`` itself when nothing is signed; None when it cannot be done safely
    (broken structure, a signed part without content, opaque S/MIME).
    """
    for _ in range(_MAX_ROUNDS):
        tree = parse_message(data)
        if tree.problems or any(p.content_type in PKCS7_TYPES for p in tree.parts):
            return None
        signed = next((p for p in tree.parts if p.content_type == _SIGNED), None)
        if signed is None:
            return data
        content = _first_child(tree, signed)
        if content is None:
            return None
        data = _unwrap_one(tree, signed, content)
    return None
