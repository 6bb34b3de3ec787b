"""The one place that wires the pipeline together and runs it.

    smtpd --enqueue--> scheduler --put--> spool
                       scheduler --prepare--> rewrite --analyse--> worker processes (budget)
                       rewrite --learn/judge--> campaign memory (in the consent store)
                       scheduler --render--> rewrite (each copy; policy from consent):
                           beacons, footer, unsubscribe headers, trace header
                       scheduler --lookup--> consent store (SQLite | PostgreSQL)
                       scheduler --deliver--> courier (SMTP upstream | Maildir)
    web: /o/ (open pixel), /u/ (preference page, one-click) --> consent store
         /u/ suspension --> one-click forwarder (durable queue in the store) --> sender's URL
         /o/ open (forward_opens) --> open forwarder --> the original tracker URL
         /healthz, /readyz, /metrics, /api/v1 (admin API on the consent store); with
         [web] admin_listen the last three on a listener of their own

Start order: the consent store (connect, migrate), spool recovery and
delivery (so recovered mail starts moving), the forwarders, then the HTTP
and SMTP listeners.  Stop order on SIGTERM/SIGINT is the reverse: stop accepting SMTP
and let transactions in DATA finish, stop delivery workers within the bound
(the rest stays queued), close the spool and the store.

With ``[smtp] workers`` above 1 the same :class:`Relay` runs in each process of
:mod:`beacon_proxy.workers` with a :class:`Role`: in a worker, the SMTP listener (on
the supervisor's sockets), its part of the spool and delivery; in the supervisor,
the web listeners and the forwarders.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import functools
import ipaddress
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from beacon_proxy.config import Config, ConfigError, load_config
from beacon_proxy.consent.policy import Policy
from beacon_proxy.consent.store import open_store
from beacon_proxy.deliver.courier import Courier, CourierFactory
from beacon_proxy.deliver.forward import OneClickForwarder, OpenForwarder
from beacon_proxy.deliver.maildir import MaildirCourier
from beacon_proxy.deliver.retry import RetryPolicy
from beacon_proxy.deliver.scheduler import Scheduler
from beacon_proxy.deliver.smtp import SmtpCourier
from beacon_proxy.eventloop import LagMonitor, running_loop_name
from beacon_proxy.log import event, pseudonym_key, pseudonymize, setup_logging
from beacon_proxy.metrics import ANALYSES, EVENT_LOOP_LAG
from beacon_proxy.rewrite.beacons import BeaconStep
from beacon_proxy.rewrite.copies import CopyPolicy
from beacon_proxy.rewrite.diffing import CampaignDiffing
from beacon_proxy.rewrite.engine import Analysis
from beacon_proxy.rewrite.footer import Footer
from beacon_proxy.rewrite.known import AnalysisCache
from beacon_proxy.rewrite.lineends import CrlfProof
from beacon_proxy.rewrite.links import PreferenceLinks
from beacon_proxy.rewrite.pool import INLINE_BYTES, AnalysisPool, default_engine
from beacon_proxy.rewrite.rules import rules_text
from beacon_proxy.rewrite.step import CopyStep, ListMailOnly, TraceHeader
from beacon_proxy.rewrite.unsubscribe import UnsubscribeAndTrace, UnsubscribeHeaders
from beacon_proxy.smtpd.server import SmtpServer
from beacon_proxy.spool.parts import adopt, lock_within, part_root, sources_for
from beacon_proxy.spool.queue import Spool
from beacon_proxy.tokens import Tokens, load_secrets
from beacon_proxy.web.api import build_api

if TYPE_CHECKING:  # imported when keys are configured (cryptography is slow to import)
    from beacon_proxy.rewrite.dkim import DkimSigner
from beacon_proxy.web.auth import ApiTokens
from beacon_proxy.web.console import Console
from beacon_proxy.web.console.stats import EventTally
from beacon_proxy.web.guard import Guard
from beacon_proxy.web.recipient import RecipientSide
from beacon_proxy.web.server import (
    Readiness,
    WebServer,
    build_admin_app,
    build_app,
    build_public_app,
)

__all__ = ["CAMPAIGN_POLL", "ListenError", "Relay", "Role", "best_hostname",
           "check_listeners", "copy_steps", "is_loopback_host", "local_hostname",
           "open_networks", "run", "shared_store", "start_warnings"]

log = logging.getLogger(__name__)

#: Seconds between looks at the campaign memory while some copy waits for its campaign's
#: second copy (learned by another worker process or another node).
CAMPAIGN_POLL = 0.5


@dataclasses.dataclass(frozen=True)
class Role:
    """What a process of a relay with several worker processes does.

    ``worker`` set: worker ``worker`` of ``count`` - SMTP on the supervisor's listening
    sockets ``socks`` (taken once ``smtpd.accept()`` is called: after ``start``, the
    worker waits for its siblings), its own part of the spool, delivery; no web
    listener.  ``worker`` None: the supervisor - the web listeners (``metrics``: the
    page summed over the workers; ``workers_up``: how many workers run and are
    started), the forwarders; no SMTP, no spool part, no delivery."""

    count: int
    worker: int | None = None
    socks: tuple[socket.socket, ...] = ()
    metrics: Callable[[], Awaitable[bytes]] | None = None
    workers_up: Callable[[], int] | None = None
    queue_size: Callable[[], int] | None = None


def _courier_factory(cfg: Config, hostname: str) -> CourierFactory:
    up, d = cfg.delivery.upstream, cfg.delivery
    if up.kind == "smtp":
        # Opportunistic TLS falls back to plain text anyway, so, like Postfix's
        # "may" level, it does not verify; verification applies to "required".
        verify = d.tls_verify and d.starttls == "required"

        def smtp() -> Courier:
            return SmtpCourier(up.host, up.port, starttls=d.starttls, tls_verify=verify,
                               timeout=d.timeout, helo_name=d.helo_name or hostname,
                               data_timeout=d.data_timeout, pipelining=d.pipelining)
        return smtp

    def maildir() -> Courier:
        return MaildirCourier(up.path)
    return maildir


def shared_store(cfg: Config) -> bool:
    """Whether the consent store can be shared by several nodes (PostgreSQL)."""
    return urlsplit(cfg.store.url).scheme in ("postgresql", "postgres")


def is_loopback_host(host: str) -> bool:
    """``localhost`` (and ``*.localhost``, RFC 6761), 127.0.0.0/8, ``::1`` (or IPv4-mapped)."""
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class ListenError(OSError):
    """A configured listener's address cannot be taken; its text names the key."""

    def __str__(self) -> str:
        return str(self.strerror)


def check_listeners(cfg: Config) -> None:
    """Bind (without listening) every configured listener's address once, before
    anything is created: a port in use (or a privileged one) is said first, naming the
    key, instead of after the spool and the store were set up and torn down again.
    Binds as the servers do (``SO_REUSEADDR``), so only a listening socket blocks it."""
    listeners = [("smtp.listen", cfg.smtp.listen), ("web.listen", cfg.web.listen)]
    if cfg.web.admin_listen is not None:
        listeners.append(("web.admin_listen", cfg.web.admin_listen))
    for key, endpoint in listeners:
        if endpoint.port == 0:
            continue  # any free port
        try:
            infos = socket.getaddrinfo(endpoint.host or None, endpoint.port,
                                       type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            for family, kind, proto, _, address in infos:
                with socket.socket(family, kind, proto) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    sock.bind(address)
        except OSError as exc:
            reason = ("address already in use" if exc.errno == errno.EADDRINUSE
                      else str(exc.strerror or exc).lower())
            raise ListenError(exc.errno or 0, f"{key} {endpoint}: {reason}") from None


#: Address space that is not the internet's: an allow_networks entry inside one is local.
_LOCAL_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16",
    "100.64.0.0/10", "fc00::/7", "fe80::/10", "::1/128"))
#: Shorter prefixes than these, outside the local space, open the relay to a large part
#: of the internet (more than a /16 of IPv4, a /32 of IPv6: an ISP's allocation).
_WIDE_PREFIX = {4: 16, 6: 32}


def open_networks(cfg: Config) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The ``[smtp] allow_networks`` entries that let a large part of the internet relay
    without AUTH (``0.0.0.0/0``, ``::/0``, any public network wider than a /16 or a /32)."""
    return [n for n in cfg.smtp.allow_networks
            if n.prefixlen < _WIDE_PREFIX[n.version]
            and not any(n.version == local.version and n.subnet_of(local)  # type: ignore[arg-type]
                        for local in _LOCAL_NETWORKS)]


def _loopback_name(name: str) -> bool:
    """A name of this machine that only this machine understands (``localhost``,
    ``localhost.localdomain``, 127.0.0.1, ``::1``)."""
    return is_loopback_host(name) or name.lower().startswith("localhost.")


def best_hostname(candidates: Iterable[str]) -> str:
    """The best of the names a machine has: the first fully qualified one that is not
    a loopback name, else the first that is not a loopback name, else ``localhost``.

    >>> best_hostname(["localhost", "mail", "mail.example.org"])
    'mail.example.org'
    """
    names = [n.strip().rstrip(".") for n in candidates if n and n.strip()]
    usable = [n for n in names if not _loopback_name(n)]
    return next((n for n in usable if "." in n), usable[0] if usable else "localhost")


def local_hostname() -> str:
    """The machine's name for an empty ``[smtp] hostname``: the best of the canonical
    name of ``gethostname()`` (what ``hostname -f`` prints), ``socket.getfqdn()`` (which
    gives ``localhost`` when /etc/hosts maps the name to 127.0.0.1 first),
    ``gethostname()`` and ``/etc/hostname``."""
    candidates: list[str] = []
    name = socket.gethostname()
    with contextlib.suppress(OSError):
        candidates += [info[3] for info in socket.getaddrinfo(
            name, None, type=socket.SOCK_STREAM, flags=socket.AI_CANONNAME)[:1]]
    candidates += [socket.getfqdn(), name]
    with contextlib.suppress(OSError, UnicodeDecodeError):
        candidates.append(Path("/etc/hostname").read_text("utf-8"))
    return best_hostname(candidates)


def start_warnings(cfg: Config, hostname: str | None = None) -> list[tuple[str, str]]:
    """``(key, message)`` for settings that start but are probably wrong (``hostname``:
    the name the relay uses, when it is known)."""
    out: list[tuple[str, str]] = []
    if hostname is not None and (_loopback_name(hostname) or "." not in hostname):
        out.append(("smtp.hostname",
                    f"the relay calls itself {hostname!r} (in EHLO, Received headers and "
                    "bounces): receiving servers may refuse mail from a host that is not a "
                    "fully qualified public name; set smtp.hostname"))
    wide = open_networks(cfg)
    if wide:
        out.append(("smtp.allow_networks",
                    f"smtp.allow_networks includes {', '.join(map(str, wide))}: every client "
                    "there relays without AUTH, an open relay for a large part of the "
                    "internet; list your own senders' networks only"))
    public_host = urlsplit(cfg.web.public_url).hostname or ""
    if is_loopback_host(public_host) and not is_loopback_host(cfg.smtp.listen.host):
        out.append(("web.public_url",
                    f"web.public_url {cfg.web.public_url} is a loopback address while "
                    f"smtp.listen {cfg.smtp.listen} accepts mail from other hosts: links put "
                    "into mail (open pixel, unsubscribe, preferences) will not work for "
                    "recipients"))
    return out


def copy_steps(cfg: Config, tokens: Tokens, *, hostname: str | None) -> tuple[CopyStep, ...]:
    """What each recipient's copy goes through after the beacon step, in order.

    The footer and the unsubscribe headers carry the same preference link; then
    the trace header (``hostname``; None: none, as for ``scan``), and last the
    DKIM signature when ``[dkim]`` has keys (loaded here, at start-up: a bad key
    is a ConfigError; not for ``scan``, which delivers nothing), else the step
    that makes the line ends CRLF and proves it (:class:`CrlfProof`: the courier
    then need not check each copy whole).  The relay's
    own bounces are signed too, by a key of the relay's domain.
    """
    links = PreferenceLinks(tokens, cfg.web.public_url,
                            forward=cfg.web.sender_unsubscribe == "replace")
    unsubscribe = UnsubscribeHeaders(links, mailto=cfg.web.unsubscribe_mailto,
                                     sender=cfg.web.sender_unsubscribe)
    # the relay's own bounces are not list mail: neither footer nor unsubscribe headers
    steps: list[CopyStep] = [ListMailOnly(Footer(links, default_language=cfg.web.default_language))]
    if hostname is None:
        steps.append(ListMailOnly(unsubscribe))
    else:  # the unsubscribe headers, then the trace header, joined once
        steps.append(UnsubscribeAndTrace(unsubscribe, TraceHeader(hostname)))
        if cfg.dkim.all_keys:
            from beacon_proxy.rewrite.dkim import DkimSigner, load_keys

            steps.append(DkimSigner(load_keys(cfg.dkim)))
        else:  # the signer proves the line ends of what it signs; without it, this step
            steps.append(CrlfProof())
    return tuple(steps)


class Relay:
    """The running service: every stage, built from one :class:`Config`."""

    def __init__(self, cfg: Config, role: Role | None = None) -> None:
        """``role``: None for the single-process relay (everything in this process)."""
        self.cfg = cfg
        self.role = role
        # First: a PostgreSQL store (several nodes) without a shared secret is a ConfigError.
        secrets, self._generated_secret = load_secrets(
            cfg.tokens, cfg.spool.path / "token.secret", shared_store=shared_store(cfg))
        # Kept, for the web side (the open and preference endpoints verify with it).
        self.tokens = Tokens(secrets)
        pseudonymize(pseudonym_key(secrets[0]) if cfg.log.pseudonymize else None)
        self.hostname = cfg.smtp.hostname or local_hostname()
        if role is not None and role.worker is not None:
            self.spool = Spool(part_root(cfg.spool.path, role.worker))
        else:
            self.spool = Spool(cfg.spool.path)
        # Analysis runs in worker processes under a CPU budget: one message can neither
        # hold the event loop (C regex calls keep the GIL) nor run for ever.
        # The proxy's own /o/ pixel is never labelled a vendor (issue 9).
        # The rules are read here once: a worker restarted after a package upgrade builds
        # the rules the cache's fingerprint (below) names, not the new file's.
        own = (cfg.web.public_url,)
        engine_factory = functools.partial(default_engine, allow=own, text=rules_text())
        analysers = cfg.policy.analysis_workers or min(os.cpu_count() or 1, 4)
        if role is not None:  # the relay's analysers, shared out over its workers
            analysers = max(1, analysers // role.count)
        memory = cfg.policy.analysis_memory_mb
        self.analysis = AnalysisPool(analysers, engine_factory=engine_factory,
                                     memory_limit=memory << 20 if memory else None)
        budget = cfg.policy.analysis_timeout

        # The engine the workers build, from the same factory: its fingerprint names what a
        # cached analysis depends on besides the bytes (rewrite/known.py), and it analyses
        # the small messages here, cheaper than the round trip (rewrite/pool.py).
        engine = engine_factory()

        async def analyse(data: bytes) -> Analysis:
            if len(data) <= INLINE_BYTES:
                ANALYSES.labels("inline").inc()
                return engine.analyse(data)
            ANALYSES.labels("pool").inc()
            return await self.analysis.analyse(data, budget=budget)

        self.store = open_store(cfg.store.url, unknown=Policy(cfg.policy.unknown),
                                pool_size=cfg.store.pool_size,
                                cache_size=cfg.store.cache_size)
        # Campaign diffing's memory lives in the store, shared by the nodes.
        camp = cfg.campaign
        # A waiting copy must never reach the queue lifetime (it would bounce).
        hold = min(camp.hold, cfg.delivery.queue_lifetime / 2)
        self.campaigns = (CampaignDiffing(self.store, learn=camp.learn, hold=hold,
                                          expire=camp.expire) if camp.enabled else None)
        steps = copy_steps(cfg, self.tokens, hostname=self.hostname)
        # The signing step, if any: SIGHUP gives it the keys the configuration names then.
        self._signer: DkimSigner | None = None
        if cfg.dkim.all_keys:
            from beacon_proxy.rewrite.dkim import DkimSigner

            self._signer = next((s for s in steps if isinstance(s, DkimSigner)), None)
        self.rewrite = BeaconStep(
            engine, self.tokens, public_url=cfg.web.public_url,
            hostname=self.hostname, analyse=analyse, steps=steps,
            policy=CopyPolicy(cfg.policy.unscannable, cfg.policy.signed),
            forward_opens=cfg.policy.forward_opens, campaigns=self.campaigns,
            cache=AnalysisCache(engine.fingerprint))
        self.scheduler = Scheduler(
            self.spool,
            _courier_factory(cfg, self.hostname),
            self.rewrite,
            self.store,
            RetryPolicy(cfg.delivery.retry_min, cfg.delivery.retry_max,
                        cfg.delivery.queue_lifetime),
            concurrency=cfg.delivery.concurrency,
            hostname=self.hostname,
            idle_timeout=cfg.delivery.idle_timeout,
            lanes=cfg.delivery.lanes,
            in_flow_delay=cfg.smtp.in_flow_delay,
        )
        if self.campaigns is not None:  # a new campaign's second copy: its first one goes now
            self.campaigns.on_learned = self.scheduler.wake
        self.smtpd = SmtpServer(cfg.smtp, self.scheduler.enqueue, hostname=self.hostname,
                                socks=role.socks if role is not None else (),
                                admit=self.scheduler.inflow.admit)
        self.api_tokens = ApiTokens(cfg.api.tokens)
        api = build_api(self.store, self.api_tokens)
        # A recipient's unsubscribe through our link goes on to the sender's own RFC 8058
        # URL (from a durable queue in the store); with forward_opens, a consenting
        # recipient's open goes on to the tracker URL the pixel replaced.
        self.one_click = OneClickForwarder(self.store)
        self.open_forwarder = OpenForwarder() if cfg.policy.forward_opens else None
        # /o/ and /u/; their background open recorder starts and stops with the web server.
        recipient = RecipientSide(
            self.tokens, self.store, default_language=cfg.web.default_language,
            on_suspended=self.one_click.suspended,
            on_open=self.open_forwarder.opened if self.open_forwarder is not None else None,
            public_url=cfg.web.public_url)
        # /console: the admin UI, behind the same API tokens, on the admin listener.
        # Its cookies are Secure when it is reached at an https public_url (one listener);
        # an admin listener of its own is often plain HTTP on a private network.
        console = Console(self.store, self.api_tokens, spool_root=cfg.spool.path,
                          public_url=cfg.web.public_url,
                          default_language=cfg.web.default_language,
                          secure_cookies=cfg.web.admin_listen is None
                          and urlsplit(cfg.web.public_url).scheme == "https",
                          record_stats=False)  # the processes that deliver count (self.tally)
        guard = Guard.from_config(cfg.web)  # client address, rate limits, bounded bodies
        # /readyz: the store answers and the spool is writable (and not while stopping).
        readiness = Readiness(self.store, cfg.spool.path, stopping=lambda: self._stopping)
        ready: Callable[[], Awaitable[dict[str, object]]] = readiness
        if role is not None and role.workers_up is not None:
            ready = functools.partial(_with_workers, readiness, role.workers_up, role.count)
        self.admin_web: WebServer | None = None
        timeout = cfg.web.header_timeout
        metrics = role.metrics if role is not None else None
        if cfg.web.admin_listen is None:  # one listener: the admin side is public too
            self.web = WebServer(cfg.web.listen, build_app(
                self._health, ready=ready, api=api, recipient=recipient, guard=guard,
                console=console, metrics=metrics),
                header_timeout=timeout)
        else:  # the recipient side alone faces the internet
            self.web = WebServer(cfg.web.listen, build_public_app(
                self._health, recipient=recipient, guard=guard), header_timeout=timeout)
            self.admin_web = WebServer(cfg.web.admin_listen, build_admin_app(
                self._health, ready=ready, api=api, guard=guard, console=console,
                metrics=metrics),
                header_timeout=timeout)
        self._stopping = False
        self._poller: asyncio.Task[None] | None = None
        self._lag = LagMonitor(EVENT_LOOP_LAG.observe)  # this process's loop, from start()
        # The console's dashboard counts the relay's events where they happen: in every
        # process that receives and delivers (each worker adds its own counts to the store).
        self.tally = EventTally(self.store) if self.delivers else None

    @property
    def delivers(self) -> bool:
        """Whether this process receives and delivers mail (not a supervisor)."""
        return self.role is None or self.role.worker is not None

    @property
    def serves_web(self) -> bool:
        """Whether this process runs the web listeners (not a worker)."""
        return self.role is None or self.role.worker is None

    def _health(self) -> dict[str, object]:
        if self.role is not None and self.role.queue_size is not None:
            queue = self.role.queue_size()
        else:
            queue = self.scheduler.queue_size()
        return {"status": "stopping" if self._stopping else "ok", "queue": queue}

    async def _take_spool(self) -> None:
        """Lock this process's spool (root or part) and adopt what no running worker
        owns (see :mod:`beacon_proxy.spool.parts`)."""
        root = self.cfg.spool.path
        if self.role is None:
            self.spool.lock()  # one relay per spool: a second one stops here (SpoolInUse)
            sources = sources_for(root, None, 1)
        else:
            assert self.role.worker is not None
            # A worker of an earlier run may still be stopping (its supervisor was killed).
            await asyncio.to_thread(lock_within, self.spool,
                                    2 * self.cfg.smtp.shutdown_timeout + 30)
            sources = sources_for(root, self.role.worker, self.role.count)
        for source in sources:
            await asyncio.to_thread(adopt, self.spool.root, source)

    async def start(self) -> None:
        self._lag.start()
        if self.delivers:
            await self._take_spool()
        else:
            self.spool.lock()  # the supervisor holds the root: one relay per spool
        await self.store.open()
        if self.tally is not None:
            await self.tally.start()
        self.spool.open()
        recovered: int | None = None
        if self.delivers:
            await self.analysis.start()
            if self.campaigns is not None:
                await self.campaigns.start()  # expiry of old campaigns, hourly
                self._poller = asyncio.create_task(self._poll_campaigns(),
                                                   name="campaign-poll")
            recovered = await self.scheduler.start()
        if self.serves_web:
            await self.one_click.start()
            if self.open_forwarder is not None:
                await self.open_forwarder.start()
            if self.admin_web is not None:
                await self.admin_web.start()
            await self.web.start()
        if self.delivers:
            # A worker takes no connection until its siblings have started too
            # (workers.run_worker: the supervisor's "go", or a bound).
            await self.smtpd.start(hold=self.role is not None and self.role.worker is not None)
        up = self.cfg.delivery.upstream
        admin = self.cfg.web.admin_listen
        extra: dict[str, object] = {}
        if self.role is not None:
            extra = {"workers": self.role.count,
                     "role": "supervisor" if self.role.worker is None else "worker"}
        event("started", smtp=str(self.cfg.smtp.listen), web=str(self.cfg.web.listen),
              admin=str(admin) if admin is not None else None,
              upstream=str(up), spool=str(self.spool.root), recovered=recovered,
              hostname=self.hostname, config=str(self.cfg.source) if self.cfg.source else None,
              event_loop=running_loop_name(), **extra)
        if self.role is not None and self.role.worker is not None:
            return  # the supervisor says the rest once
        if self._generated_secret:
            event("notice", logging.WARNING, key="tokens.secret",
                  message="no [tokens] secret configured: using a generated one kept in the "
                  "spool; nodes behind one load balancer must share a configured secret")
        for key, message in start_warnings(self.cfg, self.hostname):
            event("notice", logging.WARNING, key=key, message=message)
        if up.kind == "maildir":
            event("notice", logging.WARNING,
                  message=f"no upstream configured: delivering into the local Maildir {up.path}")

    def reload(self) -> None:
        """``SIGHUP``: read the configuration file again and apply what can change while
        running - the log settings (the log file is reopened, for logrotate), the token
        secrets, the admin API tokens and the DKIM keys (when the relay signs: starting or
        stopping to sign needs a restart).  Other changes need a restart and are named in
        the ``reloaded`` event; a configuration that does not load changes nothing."""
        signer = self._signer
        try:
            cfg = load_config(self.cfg.source)
            secrets, _ = load_secrets(cfg.tokens, cfg.spool.path / "token.secret",
                                      shared_store=shared_store(cfg))
            ApiTokens(cfg.api.tokens)  # all validated before anything changes
            Tokens(secrets)
            keys = None
            if signer is not None and cfg.dkim.all_keys:
                from beacon_proxy.rewrite.dkim import load_keys

                keys = load_keys(cfg.dkim)  # every key file read and checked
        except (ConfigError, OSError, ValueError) as exc:
            event("reload_failed", logging.ERROR, config=str(self.cfg.source), error=str(exc))
            return
        setup_logging(cfg.log.level, cfg.log.path)
        if self.rewrite.cache is not None:  # analyses are made again from the next copy on
            self.rewrite.cache.clear()
        pseudonymize(pseudonym_key(secrets[0]) if cfg.log.pseudonymize else None)
        self.tokens.replace(secrets)
        self.api_tokens.replace(cfg.api.tokens)
        live: tuple[str, ...] = ("log", "tokens", "api")
        if signer is not None and keys is not None:
            signer.replace(keys)
            live = (*live, "dkim")
        restart = sorted(f.name for f in dataclasses.fields(Config)
                         if f.name not in (*live, "source")
                         and getattr(cfg, f.name) != getattr(self.cfg, f.name))
        self.cfg = dataclasses.replace(self.cfg, log=cfg.log, tokens=cfg.tokens, api=cfg.api,
                                       dkim=cfg.dkim if "dkim" in live else self.cfg.dkim)
        event("reloaded", config=str(cfg.source) if cfg.source else None, applied=list(live),
              restart_needed=restart)

    async def _poll_campaigns(self) -> None:
        """While copies wait for their campaign's second copy, look at the campaign
        memory every :data:`CAMPAIGN_POLL` seconds: a second copy learned by another
        worker process (or node) wakes them as one learned here does."""
        assert self.campaigns is not None
        failing = False
        while True:
            await asyncio.sleep(CAMPAIGN_POLL)
            for key in self.scheduler.waiting_keys():
                try:
                    record = await self.store.get_campaign(key)
                except Exception as exc:  # the hold's end still wakes them
                    if not failing:  # once per failing spell, not twice a second
                        log.warning("campaign %s: the store failed: %r", key[:12], exc)
                    failing = True
                    break
                failing = False
                if record is not None and record.copies >= 2:
                    self.scheduler.wake(key)

    def mark_stopping(self) -> None:
        """Answer not ready (``/readyz``) and ``stopping`` (``/healthz``) from now on."""
        self._stopping = True

    async def stop(self) -> None:
        self._stopping = True
        timeout = self.cfg.smtp.shutdown_timeout
        event("stopping", timeout=timeout)
        if self.delivers:
            self.scheduler.inflow.close()  # transactions waiting for delivery go on now
            await self.smtpd.stop(timeout)
            await self.scheduler.stop(timeout)
            if self._poller is not None:
                self._poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._poller
                self._poller = None
            if self.campaigns is not None:
                await self.campaigns.stop()
            await self.analysis.close()
            if self.tally is not None:
                await self.tally.stop()  # the last counts go to the store
        if self.serves_web:
            await self.web.stop()  # flushes the open queue (which may forward opens)
            if self.admin_web is not None:
                await self.admin_web.stop()
            if self.open_forwarder is not None:
                await self.open_forwarder.stop()
            await self.one_click.stop()
        self.spool.close()
        self.spool.unlock()
        await self.store.close()
        self._lag.stop()
        event("stopped", queued=self._health()["queue"])


async def _with_workers(readiness: Readiness, workers_up: Callable[[], int], count: int
                        ) -> dict[str, object]:
    """``/readyz`` of a supervisor: the store and the spool, and every worker started."""
    status = await readiness()
    up = workers_up()
    checks = status.get("checks")
    if isinstance(checks, dict):
        checks["workers"] = "ok" if up == count else f"{up} of {count} started"
    if up != count and status.get("status") == "ready":
        return {"status": "unready", "reason": f"workers: {up} of {count} started",
                "checks": checks}
    return status


async def run(cfg: Config) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly (``beacon-proxy serve`` calls
    :func:`check_listeners` first)."""
    relay = Relay(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, relay.reload)
    try:
        try:
            await relay.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await relay.stop()
            raise
        await stop.wait()
        await relay.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
