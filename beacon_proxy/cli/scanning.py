"""The work of ``beacon-proxy scan`` (:mod:`beacon_proxy.cli.scan`): imported only when
it runs, as it needs the whole engine."""

from __future__ import annotations

import argparse
import codecs
import json
import os
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from beacon_proxy.app import copy_steps
from beacon_proxy.cli.common import CliError, config_from
from beacon_proxy.consent.policy import Policy
from beacon_proxy.headerfacts import one_click_url
from beacon_proxy.rewrite.campaign import campaign_key, loads, personal_urls, references_at
from beacon_proxy.rewrite.charsets import effective_charset
from beacon_proxy.rewrite.copies import CopyPolicy, Decided, Outcome, Prepared, prepare
from beacon_proxy.rewrite.copies import decide as decide_copy
from beacon_proxy.rewrite.engine import Action, Engine, Item
from beacon_proxy.rewrite.links import open_links
from beacon_proxy.rewrite.mime import parse_message
from beacon_proxy.rewrite.rules import load_rules
from beacon_proxy.rewrite.step import Copy, CopyStep, Recipient, run_steps
from beacon_proxy.rewrite.transfer import TransferError, decode
from beacon_proxy.spool.envelope import Envelope
from beacon_proxy.tokens import Tokens

__all__ = ["scan"]

_MAX_FILE = 64 << 20


_SNIFF = 65536
#: A header field's first line (RFC 5322 field name, then a colon).
_HEADER_LINE = re.compile(rb"[!-9;-~]+:")
#: One of the fields nearly every message has, at the start of a line.
_MAIL_FIELD = re.compile(
    rb"(?im)^(?:from|to|date|subject|message-id|received|return-path|delivered-to):")
#: An mbox separator's quoted form in a body (mboxrd: one ``>`` more).
_QUOTED_FROM = re.compile(rb"^>(>*From )")


#: How an HTML file starts (after a byte order mark and blanks) when its name does not
#: say so: a doctype, a comment (Outlook's conditional ones too) or a document's usual
#: first tags.
_HTML_START = re.compile(
    rb"[\t\n\f\r ]*<(?:!--|(?:!doctype[\t\n\f\r ]+html|html|head|body|meta|table|div|center"
    rb"|style|title)[\t\n\f\r />])", re.IGNORECASE)
_HTML_SUFFIXES = frozenset({".html", ".htm"})
_MAIL_SUFFIXES = frozenset({".eml", *_HTML_SUFFIXES})  # taken from a directory by name
_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # UTF-32's start like these
#: A ``<meta>`` charset in the first 1024 bytes (where HTML's prescan looks for one).
_META_CHARSET = re.compile(
    rb"<meta[^>]{0,512}?charset[\t\n\f\r ]*=[\t\n\f\r \"']*([-\w.:]{1,40})", re.IGNORECASE)


class Message(NamedTuple):
    """One message to scan: its label in the output, the file it came from, its bytes;
    ``html``: the file was an HTML document, scanned as a message's one text/html part."""

    label: str
    path: Path
    number: int  # 0 for a file that is one message; 1, 2, ... for the messages of an mbox
    data: bytes
    html: bool = False


def _html_message(data: bytes, named_html: bool) -> bytes | None:
    """An HTML file (a template, a newsletter tool's export: no header section) as the
    message that would carry it, one ``text/html`` part of the file's bytes as they are;
    None when ``data`` is no HTML document.  ``named_html``: the file's name ends in
    ``.html`` or ``.htm`` (then any text starting with ``<`` is taken).

    The charset: a byte order mark's (UTF-8, UTF-16 or UTF-32, as the engine reads it:
    :func:`~beacon_proxy.rewrite.charsets.effective_charset`; text that does not decode
    in it is no HTML document), else the first 1024 bytes' ``<meta>`` charset, else
    UTF-8 when the bytes are UTF-8, else windows-1252 (what browsers assume).
    """
    head, charset = data, ""
    if data.startswith(_BOMS):
        charset = effective_charset(data, "")
        try:
            head = data.decode(charset).lstrip("\ufeff").encode("utf-8", "surrogatepass")
        except UnicodeError:
            return None
    if not (_HTML_START.match(head) or (named_html and head.lstrip().startswith(b"<"))):
        return None
    if not charset:
        meta = _META_CHARSET.search(data, 0, 1024)
        if meta is not None:
            charset = meta.group(1).decode("ascii")
        else:
            try:
                data.decode("utf-8")
                charset = "utf-8"
            except UnicodeDecodeError:
                charset = "windows-1252"
    return (b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=" + charset.encode("ascii")
            + b"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + data)


def _html_of(copy: bytes) -> bytes:
    """The HTML document of a copy made from an HTML file: its text/html part's bytes,
    transfer encoding undone (what ``--output`` writes for an HTML input)."""
    tree = parse_message(copy)
    for part in tree.html_parts():
        if part.content_type == "text/html":
            try:
                return decode(tree.body(part), part.transfer_encoding)
            except TransferError as exc:
                raise CliError(f"the rewritten copy cannot be decoded: {exc}") from None
    raise CliError("the rewritten copy has no HTML part")


def _not_a_message(data: bytes) -> str | None:
    """Why ``data`` is no message (None when it looks like one)."""
    if not data.strip():
        return "not a message (empty)"
    if b"\0" in data[:_SNIFF]:
        return "not a message (binary data)"
    if not (data.startswith(b"From ") or _HEADER_LINE.match(data)):
        return "not a message (no header section)"
    return None


def _looks_like_mail(path: Path) -> bool:
    """Whether a file found in a directory is mail: ``*.eml``, an mbox, a message
    without an extension (a Maildir's ``cur``/``new`` files), or an HTML document
    (``*.html``, ``*.htm``)."""
    if path.suffix.lower() in _MAIL_SUFFIXES:
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF)
    except OSError:
        return False
    if _not_a_message(head) is not None:
        return False
    return head.startswith(b"From ") or _MAIL_FIELD.search(head) is not None


def _files(paths: list[str]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(f for f in path.rglob("*")
                              if f.is_file() and not f.name.startswith(".")
                              and _looks_like_mail(f))
        else:
            yield path


def _mbox(data: bytes) -> list[bytes]:
    """The messages of an mbox file (``From `` lines after a blank line separate them;
    ``>From`` lines are unquoted)."""
    messages: list[bytes] = []
    current: list[bytes] | None = None
    blank = True
    for line in data.splitlines(keepends=True):
        if blank and line.startswith(b"From "):
            if current is not None:
                messages.append(_ended(b"".join(current)))
            current = []
        elif current is not None:
            current.append(_QUOTED_FROM.sub(rb"\1", line))
        blank = line in (b"\n", b"\r\n")
    if current is not None:
        messages.append(_ended(b"".join(current)))
    return messages


def _ended(message: bytes) -> bytes:
    """A message of an mbox without the blank line that separates it from the next."""
    for eol in (b"\r\n", b"\n"):
        if message.endswith(eol + eol):
            return message[: -len(eol)]
    return message


def _read(path: Path) -> list[Message]:
    """The messages in one file; CliError when it cannot be read or is none."""
    try:
        if path.stat().st_size > _MAX_FILE:
            raise CliError(f"larger than {_MAX_FILE} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise CliError(exc.strerror or str(exc)) from None
    html = _html_message(data, path.suffix.lower() in _HTML_SUFFIXES)
    if html is not None:
        return [Message(str(path), path, 0, html, html=True)]
    reason = _not_a_message(data)
    if reason is not None:
        raise CliError(reason)
    if not data.startswith(b"From "):
        return [Message(str(path), path, 0, data)]
    parts = [m for m in _mbox(data) if m.strip()]
    if not parts:
        raise CliError("not a message (an empty mbox)")
    if len(parts) == 1:
        return [Message(str(path), path, 0, parts[0])]
    return [Message(f"{path}#{n}", path, n, m) for n, m in enumerate(parts, start=1)]


def _targets(args: argparse.Namespace, messages: list[Message]) -> list[Path | None]:
    """Where each message's copy goes (None: nowhere); refuses to write over an
    input unless ``--in-place``, and an mbox in place."""
    if args.output is None and not args.in_place:
        return [None] * len(messages)
    if args.output is None:  # --in-place alone: each copy over its file
        for m in messages:
            if m.number:
                raise CliError(f"{m.path}: an mbox cannot be rewritten in place; give "
                               "--output DIR", exit_code=2)
        return [m.path for m in messages]
    several = len(messages) > 1 or args.output.is_dir()
    targets: list[Path | None] = []
    for m in messages:
        if not several:
            targets.append(args.output)
        elif m.number:
            targets.append(args.output / f"{m.path.name}.{m.number}.eml")
        else:
            targets.append(args.output / m.path.name)
    if not args.in_place:
        inputs = {m.path.resolve() for m in messages}
        for target in targets:
            if target is not None and target.resolve() in inputs:
                raise CliError(f"{target} is an input: refusing to write over it (give "
                               "--in-place to rewrite the input files)", exit_code=2)
    if several:
        args.output.mkdir(parents=True, exist_ok=True)
    return targets


def _write(target: Path, data: bytes) -> None:
    """Write a copy; through a temporary file and a rename, so an input written
    over (``--in-place``) is either the old or the new message."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _finding(item: Item) -> dict[str, Any]:
    f = item.finding
    return {"url": f.url, "element": f.element, "tracker": f.tracker, "vendor": f.vendor,
            "reasons": list(f.reasons), "action": item.action.value}


def _items(decided: Decided, analysis_items: list[Item]) -> list[Item]:
    """The copy's remote references with the action the decided copy really takes."""
    if decided.rendered is not None:
        return [i for i in decided.rendered.items if i.reference.remote]
    action = Action.STRIP if decided.outcome is Outcome.FALLBACK else Action.KEEP
    return [i._replace(action=action) for i in analysis_items if i.reference.remote]


def scan(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    policy = Policy(args.policy or cfg.policy.unknown)
    files = list(_files(args.paths))
    if not files:
        raise CliError("no messages found (.eml files, Maildir files, mbox files or HTML files)")
    status = 0
    messages: list[Message] = []
    for path in files:
        try:
            messages.extend(_read(path))
        except CliError as exc:
            print(f"beacon-proxy: {path}: {exc}", file=sys.stderr)
            status = 1
    targets = _targets(args, messages)
    engine = Engine(load_rules(allow=(cfg.web.public_url,)))  # our own /o/ is no vendor
    rules = CopyPolicy(cfg.policy.unscannable, cfg.policy.signed)
    # Links in an offline copy are real only when the configured secret is known.
    tokens = Tokens([cfg.tokens.secret or secrets.token_hex(16)])
    steps = copy_steps(cfg, tokens, hostname=None)  # the footer and the unsubscribe headers
    prepared_all = [prepare(engine, m.data, rules) for m in messages]
    campaigns = _campaigns(prepared_all, args.recipient)
    for message, prepared, (campaign, diffed), target in zip(
            messages, prepared_all, campaigns, targets, strict=True):
        link = open_links(tokens, cfg.web.public_url, args.recipient or "", prepared.list_id,
                          "SCAN")
        decided = decide_copy(engine, prepared, args.recipient, policy, rules, link,
                              diffed=diffed)
        copy = _finish(steps, message.data, decided, args.recipient or "", policy,
                       prepared.list_id)
        analysis = prepared.original.analysis
        everything = (engine.items(analysis, args.recipient, policy, diffed)
                      if analysis is not None else [])
        items = _items(decided, everything)
        problems = tuple(dict.fromkeys(
            [*(analysis.problems if analysis is not None else ()), *decided.problems]))
        if args.json:
            print(json.dumps({"file": message.label, "policy": policy.value,
                              "recipient": args.recipient, "outcome": decided.outcome.value,
                              "campaign": campaign,
                              "findings": [_finding(i) for i in items],
                              "problems": list(problems),
                              "footer": copy.report.get("footer") if copy else None,
                              "unsubscribe": copy.report.get("unsubscribe") if copy else None,
                              "read_receipt": copy.report.get("read_receipt") if copy else None,
                              "calendar_loads": decided.rendered.calendar
                              if decided.rendered is not None else None},
                             ensure_ascii=False))
        else:
            _table(message.label, policy, decided.outcome, items, problems, campaign)
        if target is not None and copy is not None:
            try:
                _write(target, _html_of(copy.data) if message.html else copy.data)
            except OSError as exc:
                print(f"beacon-proxy: {target}: {exc.strerror}", file=sys.stderr)
                status = 1
    return status


def _campaigns(prepared: list[Prepared], recipient: str | None
               ) -> list[tuple[dict[str, Any] | None, frozenset[tuple[int, int]]]]:
    """For each message: its campaign (key, copies) when other copies were given, and
    the references that differ between those copies (``campaign-diff``)."""
    groups: dict[str, list[int]] = {}
    for n, p in enumerate(prepared):
        analysis = p.original.analysis
        if analysis is not None:
            groups.setdefault(campaign_key(analysis, recipient).digest, []).append(n)
    out: list[tuple[dict[str, Any] | None, frozenset[tuple[int, int]]]] = [
        (None, frozenset())] * len(prepared)
    for digest, members in groups.items():
        if len(members) < 2:
            continue
        refs = [loads(analysis).refs for n in members
                if (analysis := prepared[n].original.analysis) is not None]
        positions = personal_urls([[(r.element, r.url) for r in copy] for copy in refs])
        for n, copy in zip(members, refs, strict=True):
            out[n] = ({"key": digest, "copies": len(members)},
                      references_at(copy, positions))
    return out


def _finish(steps: tuple[CopyStep, ...], data: bytes, decided: Decided, recipient: str,
            policy: Policy, list_id: str | None) -> Copy | None:
    """The decided copy through the relay's other steps (footer, unsubscribe headers),
    as the recipient would get it (without the trace header); None when held."""
    if decided.data is None:
        return None
    envelope = Envelope("SCAN", "", (recipient,), list_id=list_id,
                        one_click=one_click_url(data))
    return run_steps(steps, Copy(decided.data), Recipient(envelope, recipient, policy))


def _cell(reasons: tuple[str, ...], width: int) -> str:
    """The REASONS column: whole reasons that fit, then ``+N`` for the N left out.

    >>> _cell(("rule:SendGrid", "tiny", "identifies-recipient", "address-urlencoded"), 34)
    'rule:SendGrid,tiny,+2'
    """
    text = ",".join(reasons) or "-"
    if len(text) <= width:
        return text
    for n in range(len(reasons) - 1, 0, -1):
        cut = ",".join(reasons[:n]) + f",+{len(reasons) - n}"
        if len(cut) <= width:
            return cut
    if len(reasons) == 1:
        return text[: width - 3] + "..."
    return f"{reasons[0][: width - 8]}...,+{len(reasons) - 1}"


def _table(label: str, policy: Policy, outcome: Outcome, items: list[Item],
           problems: tuple[str, ...], campaign: dict[str, Any] | None) -> None:
    trackers = sum(1 for i in items if i.finding.tracker)
    print(f"{label}: {len(items)} remote reference(s), {trackers} tracker(s); "
          f"policy {policy.value}; copy {outcome.value}")
    if campaign is not None:
        print(f"  campaign {campaign['key'][:12]}: diffed with {campaign['copies'] - 1} "
              "other cop(ies)")
    for problem in problems:
        print(f"  ! {problem}")
    if items:
        print(f"  {'ACTION':<8} {'ELEMENT':<13} {'VENDOR':<18} {'REASONS':<34} URL")
    for item in items:
        f = item.finding
        url = f.url if len(f.url) <= 80 else f.url[:77] + "..."
        print(f"  {item.action.value:<8} {f.element:<13} {(f.vendor or '-')[:18]:<18} "
              f"{_cell(f.reasons, 34):<34} {url}")
