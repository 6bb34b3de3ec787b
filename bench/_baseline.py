"""The tree a benchmark compares this checkout with: a git ref's ``beacon_proxy``
(``git archive``), or a checkout given by path.  Shared by ``bench/spool.py`` and
``bench/passes.py``, whose children import the tree through ``PYTHONPATH``."""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    """``--baseline`` (a git ref, ``what`` it holds) and ``--baseline-tree``."""
    parser.add_argument("--baseline", default="main", help=f"git ref of {what}")
    parser.add_argument("--baseline-tree", type=Path, default=None,
                        help="a checkout (a folder holding beacon_proxy/) to use as the "
                        "baseline instead of --baseline")


def baseline_tree(ref: str, into: Path) -> Path:
    """``beacon_proxy`` of git ``ref`` (``git archive``), unpacked under ``into``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "beacon_proxy"],
                             check=True, capture_output=True, timeout=120).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=120)
    return into
