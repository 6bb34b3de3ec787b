"""End-to-end: our own SMTP command loop (``SmtpProtocol._handle_client``) under attack
from the internet, against the real ``beacon-proxy serve`` on real sockets.

Open relay (pipelined, odd line ends, around AUTH, RSET and STARTTLS), RFC 3207
command injection, the idle timers (a client outside ``allow_networks`` gets
``idle_timeout_untrusted`` until ``MAIL FROM`` and again after ``RSET``; the
trusted one ``command_timeout``; neither is kept alive by bytes that complete no
command), line limits and pipelined floods (memory stays bounded), and clients
leaving mid-command or mid-DATA (their slots released, nothing queued).

No test races the wall clock: a timer test waits for the relay to close the
connection (a 30 s socket timeout is only the safety net), with the other
timeout set to an hour where which timer fired matters.
"""

from __future__ import annotations

import base64
import contextlib
import select
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import Proxy, Upstream, newsletter, wait_for
from tests.e2e.test_tls_auth import _tls_proxy

pytestmark = pytest.mark.e2e

OUTSIDE = "victim@outside.example"
_OPEN: list[Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Every raw client a test opened is closed at its end, whatever happened."""
    yield
    while _OPEN:
        _OPEN.pop().close()


class Client:
    """A raw SMTP client: sends bytes as given, reads replies (multi-line joined)."""

    def __init__(self, port: int) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        _OPEN.append(self)
        greeting = self.reply()
        assert greeting.startswith(b"220 "), greeting

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One reply (``b""``: the relay closed the connection)."""
        lines: list[bytes] = []
        while True:
            line = self.file.readline()
            if not line:
                return b"".join(lines)
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    def replies(self, n: int) -> list[bytes]:
        return [self.reply() for _ in range(n)]

    def codes(self, n: int) -> list[int]:
        return [int(r[:3]) for r in self.replies(n)]

    def closed(self) -> bool:
        """Wait for the relay to close (True), reading away what it still says."""
        while True:
            try:
                if not self.sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True

    def starttls(self, ctx: ssl.SSLContext) -> None:
        self.file.close()
        self.sock = ctx.wrap_socket(self.sock, server_hostname="relay.test")
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextlib.contextmanager
def _running(tmp_path: Path, upstream: Upstream, smtp: str) -> Iterator[Proxy]:
    """The relay with ``smtp`` as its ``[smtp]`` section, stopped at the end."""
    proxy = Proxy(tmp_path, "[smtp]\n" + smtp, upstream=upstream.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def stranger_proxy(tmp_path: Path, upstream: Upstream) -> Iterator[Proxy]:
    """127.0.0.1 is outside allow_networks; the short idle timer fires in a second,
    the normal one never within a test."""
    with _running(tmp_path, upstream, """allow_networks = ["10.0.0.0/8"]
idle_timeout_untrusted = 1
command_timeout = 3600
auth_delay_max = 0.5
max_connections = 10
max_connections_per_client = 8
""") as proxy:
        yield proxy


def _nothing_relayed(proxy: Proxy, upstream: Upstream) -> None:
    assert proxy.events("received") == []
    assert upstream.messages == []


# -- open relay -------------------------------------------------------------------

RELAY_ATTEMPTS = [  # (the command line as sent, how many replies it gets)
    (b"EHLO attacker.test\r\n", 1),
    (b"MAIL FROM:<spam@attacker.test>\r\n", 1),
    (b"RCPT TO:<" + OUTSIDE.encode() + b">\r\n", 1),
    (b"rcpt to:<" + OUTSIDE.encode() + b">\r\n", 1),
    (b"RCPT TO: <" + OUTSIDE.encode() + b">\r\n", 1),
    (b"RCPT  TO:<" + OUTSIDE.encode() + b">\r\n", 1),
    (b"RCPT TO:<" + OUTSIDE.encode() + b">\n", 1),  # bare LF
    (b"RCPT TO:<a@outside.example>\rRCPT TO:<b@outside.example>\r\n", 1),  # bare CR
    (b"RCPT TO:<a@outside.example>\x00\r\n", 1),  # NUL
    (b"RCPT TO:<@relay.test:" + OUTSIDE.encode() + b">\r\n", 1),  # source route
    (b"RCPT TO:<" + OUTSIDE.encode() + b"@relay.test>\r\n", 1),
    (b"RCPT TO:<\xc3\xa9@outside.example>\r\n", 1),  # UTF-8 (SMTPUTF8 is on)
    (b"RCPT TO:<postmaster>\r\n", 1),
    (b"RSET\r\n", 1),
    (b"MAIL FROM:<spam@attacker.test>\r\n", 1),
    (b"RCPT TO:<" + OUTSIDE.encode() + b">\r\n", 1),
    (b"AUTH PLAIN " + base64.b64encode(b"\0newsletter\0guess") + b"\r\n", 1),
    (b"RCPT TO:<" + OUTSIDE.encode() + b">\r\n", 1),
    (b"DATA\r\n", 1),
    (b"Subject: spam\r\n\r\nspam\r\n.\r\n", 4),  # no DATA: each line is a command
    (b"QUIT\r\n", 1),
]


def _relay_attempt(client: Client) -> list[bytes]:
    """Every line of RELAY_ATTEMPTS pipelined in one write; the replies, by line."""
    client.send(b"".join(line for line, _ in RELAY_ATTEMPTS))
    return [b"".join(client.replies(n)) for _, n in RELAY_ATTEMPTS]


def test_a_stranger_cannot_relay_with_pipelined_odd_commands(stranger_proxy: Proxy,
                                                             upstream: Upstream) -> None:
    client = Client(stranger_proxy.smtp_port)
    answers = _relay_attempt(client)
    assert client.closed()
    for (line, _), answer in zip(RELAY_ATTEMPTS, answers, strict=True):
        if line.upper().startswith(b"RCPT"):
            assert answer[:1] in (b"5", b"4"), (line, answer)
    by_line = dict(zip((line for line, _ in RELAY_ATTEMPTS), answers, strict=False))
    assert by_line[b"DATA\r\n"].startswith(b"503 ")  # no recipient was accepted
    assert b"Relay access denied" in by_line[RELAY_ATTEMPTS[2][0]]
    assert by_line[RELAY_ATTEMPTS[16][0]].startswith(b"538 ")  # AUTH only under TLS
    _nothing_relayed(stranger_proxy, upstream)


def test_many_connections_from_one_stranger_stay_refused(stranger_proxy: Proxy,
                                                         upstream: Upstream) -> None:
    """Eight pipelined attempts at once (the per-client limit), then a ninth refused."""
    clients = [Client(stranger_proxy.smtp_port) for _ in range(8)]
    with socket.create_connection(("127.0.0.1", stranger_proxy.smtp_port), timeout=30) as s:
        assert s.recv(1024).startswith(b"421 ")
    for client in clients:
        client.send(b"".join(line for line, _ in RELAY_ATTEMPTS))
    for client in clients:
        answers = [b"".join(client.replies(n)) for _, n in RELAY_ATTEMPTS]
        assert all(a[:1] in (b"4", b"5") for (line, _), a in zip(RELAY_ATTEMPTS, answers,
                                                                 strict=True)
                   if line.upper().startswith(b"RCPT"))
        assert client.closed()
    _nothing_relayed(stranger_proxy, upstream)


def _auth_plain(user: str, password: str) -> bytes:
    return b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()) + b"\r\n"


def test_auth_and_starttls_open_no_relay_they_should_not(tmp_path: Path) -> None:
    """Outside allow_networks: AUTH in clear text (refused), a failed AUTH, RSET after
    it: no relay.  Only a successful AUTH over TLS relays (and still after RSET)."""
    with _tls_proxy(tmp_path, "auth_delay_max = 0.1") as (proxy, upstream, ctx):
        client = Client(proxy.smtp_port)
        rcpt = b"RCPT TO:<" + OUTSIDE.encode() + b">\r\n"
        client.send(b"EHLO a.test\r\n" + _auth_plain("newsletter", "correct horse")
                    + b"MAIL FROM:<spam@attacker.test>\r\n" + rcpt)
        assert client.codes(4) == [250, 538, 250, 554]
        client.send(b"STARTTLS\r\n")
        assert client.codes(1) == [220]
        client.starttls(ctx)
        client.send(b"EHLO a.test\r\n" + _auth_plain("newsletter", "wrong")
                    + b"MAIL FROM:<spam@attacker.test>\r\n" + rcpt + b"RSET\r\n"
                    + b"MAIL FROM:<spam@attacker.test>\r\n" + rcpt)
        assert client.codes(7) == [250, 535, 250, 554, 250, 250, 554]
        client.send(_auth_plain("newsletter", "correct horse")
                    + b"RCPT TO:<ann@example.net>\r\n" + b"RSET\r\n"
                    + b"MAIL FROM:<news@sender.example>\r\n" + b"RCPT TO:<bob@example.net>\r\n")
        assert client.codes(5) == [235, 250, 250, 250, 250]
        client.send(b"DATA\r\n")
        assert client.codes(1) == [354]
        client.send(newsletter() + b".\r\nQUIT\r\n")
        assert client.codes(2) == [250, 221]
        client.close()
        (copy,) = wait_for(lambda: upstream.messages, what="the authenticated message")
        assert copy.rcpt_tos == ["bob@example.net"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_plaintext_pipelined_after_starttls_is_discarded(tmp_path: Path, loop: str) -> None:
    """RFC 3207 section 5: commands sent in clear text after STARTTLS, before the
    handshake (a man in the middle's injection), are thrown away, not run under TLS."""
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    with _tls_proxy(tmp_path, f'event_loop = "{loop}"') as (proxy, upstream, ctx):
        client = Client(proxy.smtp_port)
        client.send(b"EHLO a.test\r\nSTARTTLS\r\nEHLO injected.test\r\n"
                    + _auth_plain("newsletter", "correct horse")
                    + b"MAIL FROM:<injected@attacker.test>\r\n"
                    b"RCPT TO:<" + OUTSIDE.encode() + b">\r\nNOOP injected\r\n")
        assert client.codes(2) == [250, 220]
        client.starttls(ctx)
        client.send(b"NOOP\r\nMAIL FROM:<news@sender.example>\r\n")
        # The first reply under TLS is NOOP's; MAIL needs a new EHLO (none was run).
        assert client.replies(2) == [b"250 OK\r\n", b"503 Error: send HELO first\r\n"]
        client.send(b"QUIT\r\n")
        assert client.codes(1) == [221]
        assert client.closed()
        assert proxy.metric('beacon_proxy_smtp_auth_total{result="success"}') == 0
        assert upstream.messages == []


# -- idle timers ------------------------------------------------------------------

def _wait_closed(clients: list[Client], *, dribble: dict[int, bytes]) -> None:
    """Wait for the relay to close every client; client ``i`` in ``dribble`` sends
    one more byte of its bytes every 50 ms meanwhile (replies read away)."""
    sent = dict.fromkeys(dribble, 0)
    live = set(range(len(clients)))
    deadline = time.monotonic() + 30  # the safety net, not the test
    while live:
        assert time.monotonic() < deadline, f"not closed: {sorted(live)}"
        readable, _, _ = select.select([clients[i].sock for i in live], [], [], 0.05)
        for i in list(live):
            sock = clients[i].sock
            if sock in readable:
                try:
                    if not sock.recv(65536):
                        live.discard(i)
                        continue
                except ConnectionResetError:
                    live.discard(i)
                    continue
            if i in sent and sent[i] < len(dribble[i]):
                try:
                    sock.send(dribble[i][sent[i]:sent[i] + 1])
                except (BrokenPipeError, ConnectionResetError):
                    live.discard(i)
                    continue
                sent[i] += 1


def _greeted(proxy: Proxy, *lines: bytes) -> Client:
    """A client that has sent ``lines`` and read one reply each."""
    client = Client(proxy.smtp_port)
    for line in lines:
        client.send(line)
        client.reply()
    return client


def test_the_short_idle_timer_fires_whatever_a_stranger_does(stranger_proxy: Proxy) -> None:
    """command_timeout is an hour: each of these is closed by idle_timeout_untrusted.
    Bytes that complete no command, lines the loop refuses before running them
    (empty, unknown, over-long) and commands pipelined so that the last one leaves
    no transaction do not keep the connection."""
    proxy = stranger_proxy
    forever = b"MAIL FROM:<" + b"a" * 100_000  # never ends: a byte at a time
    blank = b"\r\n" * 1000  # 500 bad syntax each, never a command run
    clients = [
        _greeted(proxy),
        _greeted(proxy, b"EHLO a.test\r\n"),
        _greeted(proxy, b"EHLO a.test\r\n"),  # dribbles a never-ending MAIL
        _greeted(proxy, b"EHLO a.test\r\n"),  # dribbles blank lines
        _greeted(proxy, b"EHLO a.test\r\n", b"MAIL FROM:<a@attacker.test>\r\n",
                 b"RCPT TO:<" + OUTSIDE.encode() + b">\r\n", b"RSET\r\n"),
    ]
    pipelined = Client(proxy.smtp_port)  # MAIL and RSET in one packet: the timer's edge
    pipelined.send(b"EHLO a.test\r\nMAIL FROM:<a@attacker.test>\r\nRSET\r\n")
    assert pipelined.codes(3) == [250, 250, 250]
    clients.append(pipelined)
    _wait_closed(clients, dribble={2: forever, 3: blank})
    wait_for(lambda: proxy.metric("beacon_proxy_smtp_sessions") == 0, what="slots released")


def test_a_transaction_keeps_the_normal_timer_at_the_short_ones_edge(
        stranger_proxy: Proxy) -> None:
    """RSET then MAIL in one packet (the last command opens a transaction): the
    normal timer (an hour) applies.  A stranger connected after it, silent, is
    closed by the short timer; the transaction is still answered after that (had
    it kept a short timer, armed earlier, it would have been closed first)."""
    proxy = stranger_proxy
    open_mail = Client(proxy.smtp_port)
    open_mail.send(b"EHLO a.test\r\nRSET\r\nMAIL FROM:<a@attacker.test>\r\n")
    assert open_mail.codes(3) == [250, 250, 250]
    time.sleep(0.05)  # the relay's clock moves on: the silent one's deadline is later
    silent = Client(proxy.smtp_port)
    assert silent.closed()
    open_mail.send(b"NOOP\r\n")
    assert open_mail.codes(1) == [250]
    open_mail.send(b"RSET\r\n")  # no transaction again: the short timer
    assert open_mail.codes(1) == [250]
    assert open_mail.closed()


def test_a_stalled_tls_handshake_is_closed_by_the_short_timer(tmp_path: Path) -> None:
    """STARTTLS answered, then no handshake, or half a ClientHello: the short timer
    (command_timeout an hour) still closes both, and their slots are freed."""
    extra = "idle_timeout_untrusted = 1\ncommand_timeout = 3600\nauth_delay_max = 0.5"
    with _tls_proxy(tmp_path, extra) as (proxy, _, _ctx):
        clients = [_greeted(proxy, b"EHLO a.test\r\n", b"STARTTLS\r\n") for _ in range(2)]
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40
        _wait_closed(clients, dribble={1: hello})
        wait_for(lambda: proxy.metric("beacon_proxy_smtp_sessions") == 0,
                 what="slots released")


def test_the_normal_timer_fires_for_a_trusted_client(tmp_path: Path,
                                                     upstream: Upstream) -> None:
    """A client in allow_networks gets command_timeout, in a transaction or not;
    bytes that complete no command do not re-arm it."""
    with _running(tmp_path, upstream, """allow_networks = ["127.0.0.0/8"]
command_timeout = 2
idle_timeout_untrusted = 1
auth_delay_max = 0.5
""") as proxy:
        clients = [
            _greeted(proxy),
            _greeted(proxy, b"EHLO a.test\r\n", b"MAIL FROM:<a@sender.example>\r\n"),
            _greeted(proxy, b"EHLO a.test\r\n", b"MAIL FROM:<a@sender.example>\r\n",
                     b"RCPT TO:<ann@example.net>\r\n"),
            _greeted(proxy, b"EHLO a.test\r\n"),
        ]
        _wait_closed(clients, dribble={3: b"RCPT TO:<" + b"a" * 100_000})
        wait_for(lambda: proxy.metric("beacon_proxy_smtp_sessions") == 0,
                 what="slots released")


# -- line limits and floods ----------------------------------------------------

def test_line_limits_hold_at_their_edges(stranger_proxy: Proxy) -> None:
    client = Client(stranger_proxy.smtp_port)
    at_limit = b"HELO " + b"a" * (512 - 5) + b"\r\n"  # 512 octets + CRLF
    over = b"HELO " + b"a" * (512 - 5 + 1) + b"\r\n"
    mail = b"MAIL FROM:<a@attacker.test> "
    client.send(at_limit + over + b"EHLO a.test\r\n"
                + mail + b"X" * (512 - len(mail)) + b"\r\n"
                + b"NOOP\x00\r\n" + b"\x00\r\n" + b"NO\x00OP\r\n" + b"N\xc3\xa9OOP\r\n"
                + b"NOOP \xff\r\n" + b"\r\n" + b"\n" + b" NOOP\r\n" + b"NOOP\r\n")
    answers = client.replies(13)
    assert answers[0].startswith(b"250 ") and answers[1] == b"500 Command line too long\r\n"
    assert answers[2].startswith(b"250")
    assert answers[3][:3] == b"555"  # at the limit: parsed, its unknown parameter refused
    assert answers[4:] == [  # aiosmtpd's replies (NULs and all): nothing run but NOOPs
        b'500 Error: command "NOOP\x00" not recognized\r\n',
        b'500 Error: command "\x00" not recognized\r\n',
        b'500 Error: command "NO\x00OP" not recognized\r\n',
        b"500 Error: bad syntax\r\n",  # a non-ASCII verb
        b"250 OK\r\n",  # NOOP's argument is ignored
        b"500 Error: bad syntax\r\n", b"500 Error: bad syntax\r\n",  # empty lines
        b'500 Error: command "" not recognized\r\n',  # a leading space
        b"250 OK\r\n"]
    # A line far over the reader's own 64 KB limit is read away in pieces, then refused.
    client.send(b"NOOP " + b"a" * (8 << 20) + b"\r\nNOOP\r\n")
    assert client.replies(2) == [b"500 Command line too long\r\n", b"250 OK\r\n"]


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _sent_until_blocked(client: Client, data: bytes, times: int) -> int:
    """Send ``data`` ``times`` times; how much was sent whole before a send blocked."""
    sent = 0
    for _ in range(times):
        try:
            client.sock.sendall(data)
        except TimeoutError:
            return sent
        sent += len(data)
    raise AssertionError(f"the relay read all {sent} bytes")


def test_a_pipelined_flood_that_reads_nothing_is_held_back(stranger_proxy: Proxy) -> None:
    """64 MB of NOOPs whose replies are never read: the relay stops reading (its
    replies wait for the client), so the client's writes block and the relay's memory
    does not grow by the flood."""
    proxy = stranger_proxy
    assert proxy.proc is not None
    client = Client(proxy.smtp_port)
    before = _rss_kb(proxy.proc.pid)
    client.sock.settimeout(5)
    flood = b"NOOP\r\n" * (1 << 20)  # 6 MB
    assert _sent_until_blocked(client, flood, 11) < 64 << 20
    assert _rss_kb(proxy.proc.pid) - before < 32 << 10
    client.close()
    wait_for(lambda: proxy.metric("beacon_proxy_smtp_sessions") == 0, what="slot released")


# -- clients leaving ---------------------------------------------------------------

def _reset(client: Client) -> None:
    """Close with a TCP RST (SO_LINGER 0)."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def test_clients_leaving_mid_command_or_mid_data_release_their_slot(
        tmp_path: Path, upstream: Upstream) -> None:
    """max_connections = 2: twelve clients leave mid-command, mid-DATA, mid-AUTH
    and after an error, by FIN or RST; afterwards two may connect at once and
    nothing was queued."""
    with _running(tmp_path, upstream, """allow_networks = ["127.0.0.0/8"]
max_connections = 2
""") as proxy:
        begin = b"EHLO a.test\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<ann@example.net>\r\n"
        scripts: list[tuple[bytes, int]] = [
            (b"MAIL FROM:<a@sen", 0),  # mid-command
            (begin + b"DATA\r\n", 4),  # right after 354
            (begin + b"DATA\r\n" + newsletter()[:5000], 4),  # mid-DATA
            (begin + b"DATA\r\n" + newsletter() + b".", 4),  # before the final CRLF
            (b"EHLO a.test\r\nAUTH LOGIN\r\n", 2),  # no users: AUTH refused
            (b"EHLO a.test\r\n" + b"X" * 100_000, 1),  # mid over-long line
        ]
        for close in (Client.close, _reset):
            for script, replies in scripts:
                client = Client(proxy.smtp_port)
                client.send(script)
                client.replies(replies)
                close(client)
        wait_for(lambda: proxy.metric("beacon_proxy_smtp_sessions") == 0,
                 what="every slot released")
        both = [Client(proxy.smtp_port) for _ in range(2)]
        for client in both:
            client.send(b"QUIT\r\n")
            assert client.codes(1) == [221]
            client.close()
        _nothing_relayed(proxy, upstream)
