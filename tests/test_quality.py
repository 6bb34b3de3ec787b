"""The code base stays ruff- and mypy --strict-clean (part of the test run)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=False)


def test_ruff_is_clean() -> None:
    result = _run(sys.executable, "-m", "ruff", "check", "beacon_proxy", "tests", "bench", "tools")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_is_clean() -> None:
    result = _run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_public_modules_declare_their_api() -> None:
    missing = [
        str(p.relative_to(ROOT))
        for p in sorted((ROOT / "beacon_proxy").rglob("*.py"))
        if p.name not in ("__init__.py", "__main__.py") and "__all__" not in p.read_text()
    ]
    assert missing == []


def test_no_asyncio_wait_for_in_the_package() -> None:
    """``asyncio.timeout``, never ``asyncio.wait_for``: on Python 3.11, ``wait_for``
    returns a result that meets a cancellation and drops the cancellation, which once
    left a stopping delivery worker waiting on its queue for good
    (tests/deliver/test_smtp.py, the QUIT reply that comes with a cancellation)."""
    calls = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in sorted((ROOT / "beacon_proxy").rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"\bwait_for\(", line)
    ]
    assert calls == []


def test_security_md_names_tests_that_exist() -> None:
    """Every test file and test SECURITY.md names is there (the page must not rot)."""
    text = (ROOT / "SECURITY.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text)
    assert len(named) > 20
    for path, test in named:
        assert (ROOT / path).is_file(), path
        if test:
            assert re.search(rf"^(?:async )?def {test}\(", (ROOT / path).read_text(), re.M), (
                f"{path}::{test}")


def test_the_licence_is_a_file_and_an_spdx_expression() -> None:
    """PEP 639: ``license`` is an SPDX string (setuptools deprecates the table) and the
    files it covers are named; the Apache-2.0 text is at the root."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert all((ROOT / name).is_file() for name in project["license-files"])


def test_no_hypothesis_example_races_the_wall_clock() -> None:
    """The suite's hypothesis profile (tests/conftest.py) times no example: a deadline
    fails a slow example on a busy machine as "flaky", whatever the code does."""
    assert settings().deadline is None
