"""The other readers' decoders of :mod:`tests.rewrite.decoders` against the real programs.

PHP (``php-cli``) and Node.js run where this machine has them; the models stand in for
them elsewhere.  The inputs are the shapes where decoders part ways (what
:func:`~beacon_proxy.rewrite.transfer.qp_two_readings` and
:func:`~beacon_proxy.rewrite.transfer.decode_base64` look for) and ordinary text.
"""

from __future__ import annotations

import doctest
import json
import shutil
import subprocess
from collections.abc import Callable

import pytest

from tests.rewrite import decoders

QP_INPUTS = [
    b"<p>caf=C3=A9 =3Cb=3E</p>=\r\nmore\r\n", b"==3Cimg src=3D\"x\">", b"=3=\r\nCimg",
    b"a= \r\nb", b"a=\t\t\nb", b"=\rX\nY", b"x==\r\n3C", b"=3c=3C", b"a=b&c==", b"=", b"=Z",
    b"end=  ", b"x \r\ny\t\n", b"ur==\r\n6C(", b"a\x00=3Cb", b"=\r\n=\r\n3D",
]
B64_INPUTS = [
    b"PGI-aGk8L2I-", b"aGVsbG8=d29y", b"aGV sbG8\r\n", b"aG.Vs!bG8", b"PGI+aGk8L2I+",
    b"aGVsbG8=\r\nd29ybGQ=", b"aGVsb", b"PHA_", b"",
]


def test_the_models_doctests() -> None:
    assert doctest.testmod(decoders).failed == 0


def _run(cmd: list[str], inputs: list[bytes]) -> list[bytes]:
    out = subprocess.run(cmd, input=json.dumps([i.decode("latin-1") for i in inputs]),
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return [text.encode("latin-1") for text in json.loads(out)]


_PHP = ('$in = json_decode(stream_get_contents(STDIN)); $out = [];'
        'foreach ($in as $s) { $s = mb_convert_encoding($s, "ISO-8859-1", "UTF-8");'
        '$out[] = mb_convert_encoding(quoted_printable_decode($s), "UTF-8", "ISO-8859-1"); }'
        "echo json_encode($out);")
_NODE = ("let s = ''; process.stdin.on('data', d => s += d).on('end', () => "
         "console.log(JSON.stringify(JSON.parse(s).map(t => "
         "Buffer.from(Buffer.from(t, 'latin1').toString('latin1'), 'base64')"
         ".toString('latin1')))));")


@pytest.mark.parametrize(("program", "script", "inputs", "model"), [
    ("php", _PHP, QP_INPUTS, decoders.php_qp_decode),
    ("node", _NODE, B64_INPUTS, decoders.node_base64_decode),
], ids=["php-quoted-printable", "node-base64"])
def test_the_model_reads_as_the_program(program: str, script: str, inputs: list[bytes],
                                        model: Callable[[bytes], bytes]) -> None:
    """PHP's ``quoted_printable_decode`` (with mbstring, for the bytes) and Node's
    ``Buffer.from(text, "base64")`` give what the models give, input by input."""
    if shutil.which(program) is None:
        pytest.skip(f"no {program} here")
    if program == "php" and subprocess.run(
            ["php", "-r", "exit(function_exists('mb_convert_encoding') ? 0 : 1);"],
            timeout=60, check=False).returncode:
        pytest.skip("php without mbstring")
    assert _run([program, "-e" if program == "node" else "-r", script], inputs) == [
        model(i) for i in inputs]
