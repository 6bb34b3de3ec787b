"""bench/personal_relay.py does not rot: its messages are what it says, and a tiny run
reports every copy stripped from analyses of its own, never how fast (this machine is
shared)."""

from __future__ import annotations

import doctest
import email.parser
import email.policy
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import _postfix
import personal_relay
import relay
from _smtpload import dot_stuff
from newsletter import newsletter

BODY = newsletter().replace(b"\n", b"\r\n")
needs_postfix_tools = pytest.mark.skipif(
    not (os.access(relay.SMTP_SOURCE, os.X_OK) and os.access(relay.SMTP_SINK, os.X_OK)),
    reason="smtp-sink not installed (Debian: postfix)")


def test_the_docstring_examples_hold() -> None:
    assert doctest.testmod(personal_relay).failed == 0


def _html(data: bytes) -> str:
    """The HTML part of a message as DATA sends it (the stuffing and terminator undone)."""
    message = data[: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(message)
    part = parsed.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def test_each_message_has_its_own_token_in_as_many_links() -> None:
    links = personal_relay.PersonalTemplate(BODY, 30)
    html = [_html(links.render(n)) for n in (41, 42)]
    assert html[0] != html[1]
    assert html[0].count('href="https://shop.example/p/41') == 30
    assert html[1].count('href="https://shop.example/p/42') == 30
    assert "<p>41</p></body>" in html[0]
    for n in (41, 1234567):
        data = links.render(n)
        assert data.endswith(b"\r\n.\r\n") and b"To: s%d@example.org\r\n" % n in data
        assert links.size(n) == len(data.replace(b"\r\n..", b"\r\n.")) - len(b".\r\n")
        assert dot_stuff(data[: -len(b".\r\n")].replace(b"\r\n..", b"\r\n.")) == data


def test_the_same_phase_sends_one_body() -> None:
    same = personal_relay.PersonalTemplate(BODY)
    bodies = {same.render(n).split(b"\r\n\r\n", 1)[1] for n in (1, 2, 300)}
    assert len(bodies) == 1


def test_a_body_without_enough_links_is_refused() -> None:
    with pytest.raises(ValueError, match="fewer than"):
        personal_relay.PersonalTemplate(BODY, 10_000)
    with pytest.raises(ValueError, match="nothing to personalise"):
        personal_relay.PersonalTemplate(b"Subject: x\r\n\r\nhello\r\n")


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--phases", "c"], ["--messages", "0"], ["--links", "10000"],
                 ["--soak-seconds", "-1"], ["--soak-rate", "0", "--soak-seconds", "1"],
                 ["--soak-connections", "0"], ["--phases", "same", "--soak-seconds", "5"]):
        with pytest.raises(SystemExit) as exc:
            personal_relay.main(args)
        assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown phases: c" in err
    assert "give --soak-rate or run phase links" in err


@needs_postfix_tools
def test_a_tiny_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Every message arrives; the relay strips every copy, and analyses each ``links``
    message anew (never as a known body) where ``same`` reuses the first's."""
    phases = "same,links" + (",postfix" if _postfix.postfix_available() is None else "")
    assert personal_relay.main(["--messages", "12", "--rounds", "1", "--connections", "3",
                                "--phases", phases, "--timeout", "120"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()  # "<phase> <round> ..."
            if line.split()[1:2] == ["1"] and line.split()[0] in ("same", "links", "postfix")}
    assert "stripped 12;" in rows["same"] and "stripped 12;" in rows["links"], out
    assert "header" in rows["same"].split(";")[1], out  # the known body under new headers
    assert "header" not in rows["links"].split(";")[1], out
    assert "links / same: " in out


def test_a_tiny_soak_of_personalised_messages(capsys: pytest.CaptureFixture[str]) -> None:
    """The soak alone (``--phases ''``, a rate given) sends the links messages through a
    relay into the capture and judges them as bench/relay.py's soak does (the verdicts
    on time and memory are not asserted: this machine is shared)."""
    rc = personal_relay.main(["--phases", "", "--soak-rate", "5", "--soak-seconds", "2",
                              "--rss-every", "0.5", "--soak-connections", "2"])
    out = capsys.readouterr().out
    assert rc in (0, 1), out
    assert "DKIM off, a token in 30 links of every message, 2 connections" in out, out
    assert ("scheduled 10: accepted 10, refused 0, failed 0, not sent by the deadline 0 "
            "(never started 0, cut off mid-transaction 0)") in out, out
    assert "every message accepted and delivered (10/10)" in out, out
    assert "p99 accept-to-deliver < 1 s" in out
