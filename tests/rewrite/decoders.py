"""Transfer decoders of other mail readers, as their sources read, for the tests.

The engine decodes as Python does (``binascii.a2b_qp``, ``a2b_base64``); a part that
another reader decodes otherwise must not reach a refused recipient in a form that
reader sees a load in.  These models say how the others read (each is checked against
the real program where this machine has it, ``tests/rewrite/test_decoders.py``):

* :func:`php_qp_decode`: PHP's ``quoted_printable_decode()``
  (``ext/standard/quot_print.c``), what Roundcube decodes quoted-printable with: an
  escape is ``=`` and two hex digits; any other ``=`` ends a soft line break when only
  blanks, then CRLF, CR or LF, or the end follow it, else it is text; a NUL ends the text;
* :func:`libqp_decode`: nodemailer's ``libqp`` stream decoder (behind ``mailparser``):
  the text read as Node's ``"ascii"`` (every byte's high bit cleared), trailing blanks
  of every line deleted, then every soft break, then escapes decoded, so an escape cut
  by a soft break is joined;
* :func:`libbase64_decode`: nodemailer's ``libbase64`` stream decoder: the text read as
  ``"ascii"`` too, then anything but the base64 alphabet and ``=`` dropped (``-`` and
  ``_`` as well), then decoded as ``Buffer.from`` decodes;
* :func:`node_base64_decode`: Node's ``Buffer.from(text, "base64")``: both alphabets
  (``-`` and ``_`` are ``+`` and ``/``), anything else skipped, the end at the first ``=``.
"""

from __future__ import annotations

import binascii
import re

__all__ = ["libbase64_decode", "libqp_decode", "node_base64_decode", "php_qp_decode"]

_HEX = frozenset(b"0123456789abcdefABCDEF")


def php_qp_decode(data: bytes) -> bytes:
    """PHP's ``quoted_printable_decode``.

    >>> php_qp_decode(b"==3Cimg"), php_qp_decode(b"=\\rX\\nY"), php_qp_decode(b"a= \\r\\nb")
    (b'=<img', b'X\\nY', b'ab')
    """
    def at(j: int) -> int:  # a C string: NUL past the end
        return data[j] if j < len(data) else 0

    out = bytearray()
    i = 0
    while at(i):
        if at(i) != 0x3D:
            out.append(at(i))
            i += 1
        elif at(i + 1) in _HEX and at(i + 2) in _HEX:
            out.append(int(data[i + 1:i + 3], 16))
            i += 3
        else:
            k = 1
            while at(i + k) in (0x20, 0x09):
                k += 1
            if not at(i + k):
                i += k
            elif at(i + k) == 0x0D and at(i + k + 1) == 0x0A:
                i += k + 2
            elif at(i + k) in (0x0D, 0x0A):
                i += k + 1
            else:
                out.append(at(i))
                i += 1
    return bytes(out)


_TRAILING_BLANKS = re.compile(rb"[\t ]+(?=[\r\n]|\Z)")  # JavaScript's /[\t ]+$/gm
_SOFT_BREAK = re.compile(rb"=(?:\r?\n|\Z)")
_ESCAPE = re.compile(rb"=([0-9A-Fa-f]{2})")


_ASCII = bytes(range(128)) * 2  # Node's "ascii" decoding: the high bit cleared


def libqp_decode(data: bytes) -> bytes:
    """nodemailer's ``libqp`` stream decoder.

    >>> libqp_decode(b"=3=\\r\\nCimg"), libqp_decode(b"==\\r\\n3C"), libqp_decode(b"\\xbci\\xbe")
    (b'<img', b'<', b'<i>')
    """
    text = _SOFT_BREAK.sub(b"", _TRAILING_BLANKS.sub(b"", data.translate(_ASCII)))
    return _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), text)


_NODE_ALPHABET = re.compile(rb"[A-Za-z0-9+/_-]+")


def node_base64_decode(data: bytes) -> bytes:
    """Node's ``Buffer.from(text, "base64")``.

    >>> node_base64_decode(b"PGI-aGk8L2I-"), node_base64_decode(b"aGVsbG8=d29y")
    (b'<b>hi</b>', b'hello')
    """
    text = b"".join(_NODE_ALPHABET.findall(data.partition(b"=")[0]))
    text = text.replace(b"-", b"+").replace(b"_", b"/")
    text = text[: len(text) - (len(text) % 4 == 1)]
    return binascii.a2b_base64(text + b"=" * (-len(text) % 4))


_LIBBASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]+")


def libbase64_decode(data: bytes) -> bytes:
    """nodemailer's ``libbase64`` stream decoder (one chunk).

    >>> libbase64_decode(bytes(b | 0x80 for b in b"PGI+") + b"aGk8L2I+")
    b'<b>hi</b>'
    """
    return node_base64_decode(_LIBBASE64_JUNK.sub(b"", data.translate(_ASCII)))
