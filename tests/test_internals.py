"""The private internals of aiosmtpd and aiosmtplib the relay uses are still there."""

from __future__ import annotations

import tomllib
from pathlib import Path

import aiosmtpd.smtp
import pytest

from beacon_proxy import internals
from beacon_proxy.internals import missing_internals


def test_the_installed_libraries_have_every_internal_the_relay_uses() -> None:
    missing = missing_internals()
    assert missing == [], (
        "the installed aiosmtpd/aiosmtplib lack private internals beacon-proxy relies on "
        f"(see beacon_proxy/internals.py): {missing}")


def test_a_missing_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals, "AIOSMTPD", (*internals.AIOSMTPD, "_gone_in_2_0"))
    monkeypatch.delattr(aiosmtpd.smtp.SMTP, "_create_envelope")
    missing = missing_internals()
    assert [m.split(": ")[1] for m in missing] == ["SMTP._create_envelope", "SMTP._gone_in_2_0"]
    assert missing[0].startswith("aiosmtpd 1.")


def test_a_missing_aiosmtplib_internal_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(internals, "AIOSMTPLIB", (*internals.AIOSMTPLIB, "read_replies"))
    monkeypatch.setattr(internals, "AIOSMTPLIB_SMTP", (*internals.AIOSMTPLIB_SMTP, "pipe"))
    missing = missing_internals()
    assert [m.split(": ")[1] for m in missing] == ["SMTPProtocol.read_replies", "SMTP.pipe"]
    assert missing[0].startswith("aiosmtplib 5.")


def test_both_libraries_are_bounded_to_the_series_tested() -> None:
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    pins = {d.split(">")[0].split("<")[0]: d for d in project["project"]["dependencies"]}
    assert "<1.5" in pins["aiosmtpd"] and "<6" in pins["aiosmtplib"]


def test_serve_refuses_to_start_without_them(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from beacon_proxy.cli.main import main

    monkeypatch.setattr(internals, "missing_internals",
                        lambda: ["aiosmtpd 9.0: SMTP._reader"])
    assert main(["serve"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "aiosmtpd 9.0: SMTP._reader" in err[0]
