"""Detection measured against material nobody here wrote: the peers' own test suites.

A blocker's figures on its own examples prove little; these suites were written
by the trackers' and blockers' authors, so they are the fairest yardstick we
have (issue 9).  Each suite runs through the engine exactly as ``beacon-proxy
scan`` does for a refused recipient: the HTML goes into a one-part message,
:meth:`Engine.analyse` finds and classifies every reference, and a case is
*detected* when nothing it references loads in the refused copy: every remote
reference is a tracker or a layout image neutralised in place (issue 9's
``inline`` action), and an image with no URL loads nothing.  A false positive
is a case or URL the suite says is clean that we call a tracker (an ``inline``
layout image is not one: the layout does not change).

Where each suite comes from (the material is not part of this repository;
fetch it and give its directory on the command line or in ``BEACON_PEERS``,
which holds one checkout per repository, named as below)::

    git clone --depth 1 https://github.com/trockerapp/trocker              # be36adc
    git clone --depth 1 https://github.com/apparition47/MailTrackerBlocker # 8a8c43c
    git clone --depth 1 https://github.com/citp/email_tracking             # 79c78b2

* trocker ``chrome/tests/samples.js``: the open-tracker URL samples (``hit``
  must be detected, ``miss`` must not);
* trocker ``chrome/tests/test1.html``: the tiny-image cases (the
  ``tinyImages`` block, each element with its ancestors) and the normal images
  that must stay (``normalImages``);
* MailTrackerBlocker ``Unit Tests/MTBBlockedMessageTest.m``: every HTML it
  builds a ``MTBBlockedMessage`` from, expected clean when the test asserts no
  match (``LOW_NO_MATCHES``, ``detectedTracker`` nil, zero trackers or the
  HTML unchanged), a tracker otherwise;
* KDE messagelib ``messageviewer/autotests/blocktrackingurlinterceptortest.cpp``
  (invent.kde.org/pim/messagelib): far too large a repository to fetch for one
  file, so its test URLs are kept below as data (:data:`KDE_TRACKERS`,
  :data:`KDE_REGULAR`);
* CITP ``example_email/living_social_1492521826493.html`` (the PETS 2018
  "I never signed up for this!" release): the URLs that carry the MD5 hash of
  the subscriber's address (its README lists the parties receiving it) are
  the trackers; the images on LivingSocial's own CDN (``lscdn.net``) are the
  content that must stay.  LivingSocial's own open pixel and the OpenX ad
  images count neither way;
* the real templates (Cerberus, Mailchimp blueprints, Postmark, SendGrid...)
  of ``--templates`` (default ``../shared/data/templates``): apart from the
  open pixel two of them declare (:data:`TEMPLATE_PIXELS`), every remote
  reference flagged is a false positive.

MailTrackerBlocker's column is quoted from issue 9 (its figures were taken with
its own engine, which this script does not run).  Run::

    python bench/detection.py [--peers DIR] [--verbose]

Exit status 0 when every row reaches its goal, 1 otherwise, 2 when material is
missing.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from beacon_proxy.consent.policy import Policy
from beacon_proxy.rewrite.engine import Engine, Item
from beacon_proxy.rewrite.rules import TrackerRules, load_rules

#: KDE messagelib, messageviewer/autotests/blocktrackingurlinterceptortest.cpp,
#: ``shouldInterceptTracker_data``: (row name, URL, company) - every one must be caught.
KDE_TRACKERS: tuple[tuple[str, str, str], ...] = (
    ("yesware", "https://t.yesware.com/t/abcd/0.png", "Yesware"),
    ("yesware-app", "https://app.yesware.com/t/abcd/0.png", "Yesware"),
    ("hubspot-signaux", "https://t.signauxtrois.com/e1t/o/abcd", "HubSpot"),
    ("hubspot-hsms", "https://t.hsms06.com/e2t/o/abcd", "HubSpot"),
    ("hubspot-sidekick", "https://t.sidekickopen07.com/abcd", "HubSpot"),
    ("hubspot-getsidekick", "https://track.getsidekick.com/abcd", "HubSpot"),
    ("sendgrid", "https://u123.ct.sendgrid.net/wf/open?upn=abcd", "SendGrid"),
    ("mailchimp", "https://xyz.list-manage.com/track/open.php?u=123&id=456", "MailChimp"),
    ("streak", "https://mailfoogae.appspot.com/t?sender=abcd", "Streak"),
    ("superhuman", "https://r.superhuman.com/abcd.gif", "Superhuman"),
    ("postmark", "https://pstmrk.it/open/abcd", "Postmark"),
    ("mailtrack", "https://mltrk.io/pixel/abcd", "Mailtrack.io"),
    ("mixmax", "https://email.mixmax.com/abcd", "MixMax"),
    ("convertkit", "https://foo.convertkit-mail2.com/o/abcd", "ConvertKit"),
    ("sendinblue", "https://sendibt2.com/track/openc.php?x=1", "Sendinblue"),
    ("intercom", "https://via.intercom.io/o/abcd", "Intercom"),
    ("outreach", "https://app.outreach.io/api/abcd", "Outreach"),
    ("bananatag", "https://bl-1.com/abcd.gif", "Banana Tag"),
    ("boomerang", "https://mailstat.us/tr/abcd", "Boomerang"),
    ("icontact", "https://click.icptrack.com/icp/track.php", "iContact"),
    ("campaignmonitor", "https://cmail1.com/t/r-abcd", "Campaign Monitor"),
    ("litmus", "https://emltrk.com/abcd?d=1", "Litmus"),
    ("cirrusinsight", "https://tracking.cirrusinsight.com/abcd", "Cirrus Insight"),
    ("mandrill", "https://mandrillapp.com/track/open.php?u=1", "Mandrill"),
    ("toutapp", "https://go.toutapp.com/abcd", "ToutApp"),
    ("frontapp", "https://web.frontapp.com/api/abcd", "Front App"),
    ("mailgun", "https://email.mg.example.com/e/o/abcdefghijklmnop", "Mailgun"),
    ("segment", "https://email.segment.com/e/o/abcdefghijklmnop", "Segment"),
    ("vocus", "https://tracking.vocus.io/abcd", "Vocus"),
    ("uppercase-host", "https://T.YESWARE.COM/t/abcd/0.png", "Yesware"),
)
#: The same file, ``shouldNotInterceptRegularUrl_data``: URLs that must pass.
KDE_REGULAR: tuple[str, ...] = (
    "https://www.kde.org/index.html",
    "https://upload.wikimedia.org/wikipedia/commons/a/ab/foo.png",
    "https://cdn.example.com/images/logo.png",
    "https://mail.google.com/mail/u/0/#inbox",
    "data:image/png;base64,iVBORw0KGgo=",
)

#: (suite, MailTrackerBlocker's figure as issue 9 quotes it, goal: detected at least)
_MTB = {
    "trocker sample newsletters": ("7/7, 0 FP", 7),
    "trocker tiny-pixel cases": ("4/14", 12),
    "KDE tracker URL list": ("28/30", 30),
    "MailTrackerBlocker unit tests": ("44/44 (its own)", 42),
    "CITP crawl (fetched trackers)": ("47/47", 47),
    "real templates (content only)": ("-", 2),
}
_INLINE = "inline"  # issue 9's action for layout images replaced by a data: image
_BASE = "https://peer-suite.example/tests/"  # relative URLs in the suites resolve here
_TEMPLATES = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "templates"


class MaterialMissing(Exception):
    """A suite's files are not where the command line or BEACON_PEERS says."""


@dataclass
class Result:
    """One suite's figures: detected trackers, and clean cases called trackers."""

    suite: str
    total: int = 0
    detected: int = 0
    clean: int = 0
    false_positives: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    #: Scored as agreement with the suite's expectations (both ways), not detections.
    agreement: bool = False

    def tracker(self, name: str, caught: bool) -> None:
        self.total += 1
        self.detected += caught
        if not caught:
            self.misses.append(name)

    def harmless(self, name: str, flagged: bool) -> None:
        self.clean += 1
        if flagged:
            self.false_positives.append(name)

    @property
    def goal(self) -> int:
        return _MTB[self.suite][1]

    @property
    def score(self) -> int:
        return self.detected + (self.clean - len(self.false_positives)) * self.agreement

    @property
    def cases(self) -> int:
        return self.total + self.clean * self.agreement

    @property
    def passed(self) -> bool:
        return self.score >= self.goal and not self.false_positives


class Scanner:
    """The engine as ``beacon-proxy scan`` runs it, on an HTML fragment."""

    def __init__(self, rules: TrackerRules) -> None:
        self.engine = Engine(rules)

    def items(self, fragment: str) -> list[Item]:
        analysis = self.engine.analyse(self._message(fragment))
        return [i for i in self.engine.items(analysis, None, Policy.REFUSED)
                if i.reference.remote]

    @staticmethod
    def _message(fragment: str) -> bytes:
        body = (f'<html><head><base href="{_BASE}"></head><body>{fragment}</body></html>')
        return ("From: news@sender.example\r\nTo: reader@example.org\r\n"
                "Subject: suite case\r\nMIME-Version: 1.0\r\n"
                "Content-Type: text/html; charset=utf-8\r\n"
                "Content-Transfer-Encoding: 8bit\r\n\r\n" + body).encode("utf-8")

    def unread(self, fragment: str) -> bool:
        """The precise path does not read the fragment (markup other readers cut
        otherwise, and the like): every refused copy takes the fallback, which
        neutralises every load in it."""
        return bool(self.engine.analyse(self._message(fragment)).unhandled)

    def caught(self, fragment: str) -> bool:
        """Nothing the fragment references loads in a refused copy: every remote
        reference is a tracker or neutralised in place (or there is none)."""
        return all(_neutralised(i) for i in self.items(fragment))

    def flagged(self, fragment: str) -> list[str]:
        """The URLs of the fragment called trackers."""
        return [i.finding.url for i in self.items(fragment) if _beacon(i)]


def _beacon(item: Item) -> bool:
    """A tracker finding; an image neutralised in place (``inline``) is not one."""
    return item.finding.tracker and item.action.value != _INLINE


def _neutralised(item: Item) -> bool:
    """Loads nothing in a refused copy: a tracker, or a layout image made inline or an
    invisible load (a resource hint, icon or manifest) stripped though no tracker."""
    return item.finding.tracker or item.action.value != "keep"


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8", errors="replace")
    except OSError as exc:
        raise MaterialMissing(f"{path}: {exc.strerror}") from exc


# -- trocker ----------------------------------------------------------------------

_JS_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'")


def trocker_samples(scan: Scanner, root: Path) -> Result:
    """The open-tracker samples of ``chrome/tests/samples.js``."""
    text = _read(root / "chrome" / "tests" / "samples.js")
    opens = text.split("getClickTrackerSamples")[0]
    result = Result("trocker sample newsletters")
    for kind, body in re.findall(r"(hit|miss):\s*\[(.*?)\]", opens, re.S):
        for url in _JS_STRING.findall(body):
            fragment = f'<img src="{url}" alt="">'
            if kind == "hit":
                result.tracker(url, scan.caught(fragment))
            else:
                result.harmless(url, bool(scan.flagged(fragment)))
    return result


_TARGET = re.compile(r"<img\b[^>]*>|<div\b[^>]*background-image[^>]*>\s*</div>", re.I | re.S)


def _cases(block: str) -> Iterable[tuple[str, str]]:
    """Each image-like element of ``block`` with its ancestors: the block without the others."""
    spans = [m.span() for m in _TARGET.finditer(block)]
    for k, (start, end) in enumerate(spans):
        pieces, pos = [], 0
        for j, (s, e) in enumerate(spans):
            if j != k:
                pieces.append(block[pos:s])
                pos = e
        pieces.append(block[pos:])
        yield " ".join(block[start:end].split())[:90], "".join(pieces)


def trocker_tiny(scan: Scanner, root: Path) -> Result:
    """The tiny-image cases and normal images of ``chrome/tests/test1.html``."""
    text = _read(root / "chrome" / "tests" / "test1.html")
    tiny_at, normal_at = text.find('<div class="tinyImages">'), text.find(
        '<div class="normalImages">')
    if tiny_at < 0 or normal_at < 0:
        raise MaterialMissing("test1.html has no tinyImages/normalImages blocks")
    end = text.find("<script", normal_at)
    result = Result("trocker tiny-pixel cases")
    for name, fragment in _cases(text[tiny_at:normal_at]):
        result.tracker(name, scan.caught(fragment))
    for name, fragment in _cases(text[normal_at:end]):
        result.harmless(name, bool(scan.flagged(fragment)))
    return result


# -- MailTrackerBlocker ------------------------------------------------------------

_OBJC_STRING = r'@"((?:[^"\\]|\\.)*)"'
_STRING_VAR = re.compile(r"NSString\s*\*\s*(\w+)\s*=\s*" + _OBJC_STRING)
_RESOURCE_VAR = re.compile(r"NSString\s*\*\s*(\w+)\s*=\s*\[self getHTMLResourceWithFileName:"
                           + _OBJC_STRING)
_BUILT = re.compile(r"(?:(\w+)\s*=\s*)?\[\[MTBBlockedMessage alloc\]\s*initWithHtml:\s*(?:"
                    + _OBJC_STRING + r"|(\w+))\]")
_CLEAN = re.compile(r"LOW_NO_MATCHES|detectedTracker,\s*nil|Trackers?\.count,\s*0\)")


def _objc(literal: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m[1], m[1]), literal)


def mtb_unit_tests(scan: Scanner, root: Path) -> Result:
    """Every HTML of ``Unit Tests/MTBBlockedMessageTest.m`` and what the test expects."""
    tests = root / "Unit Tests"
    text = _read(tests / "MTBBlockedMessageTest.m")
    result = Result("MailTrackerBlocker unit tests")
    for method in re.split(r"\n- \(void\)", text)[1:]:
        name = method.split()[0]
        strings = {v: _objc(s) for v, s in _STRING_VAR.findall(method)}
        for var, resource in _RESOURCE_VAR.findall(method):
            strings[var] = _read(tests / "Emails" / f"{resource}.html")
        seen: set[str] = set()  # one case per message object the test builds
        for m in _BUILT.finditer(method):
            var, literal, source = m.group(1), m.group(2), m.group(3)
            if literal is None and source not in strings:
                raise MaterialMissing(f"{name}: cannot resolve {source}")
            fragment = _objc(literal) if literal is not None else strings[source]
            if (var or source) in seen:
                continue
            seen.add(var or source)
            asserts = [line for line in method.splitlines()
                       if "XCTAssert" in line and var is not None and f"{var}." in line]
            unchanged = source is not None and re.search(
                r"sanitizedHtml,\s*" + re.escape(source) + r"\b", method) is not None
            clean = unchanged or any(_CLEAN.search(line) for line in asserts)
            label = f"{name}:{var or source}"
            if clean:
                result.harmless(label, bool(scan.flagged(fragment)))
            elif scan.unread(fragment) or any(_neutralised(i) for i in scan.items(fragment)):
                result.tracker(label, True)
            else:
                result.tracker(label + _unloaded(scan, fragment), False)
    result.agreement = True
    return result


def _unloaded(scan: Scanner, fragment: str) -> str:
    """Why a tracker case was missed when the HTML gives the URL to no attribute."""
    if scan.items(fragment):
        return ""
    urls = re.findall(r"https?://[^\s\"'<>]+", fragment)
    vendors = {scan.engine.rules.match(u) for u in urls} - {None}
    return (" (no attribute holds the URL as written, so nothing loads; the rules match it: "
            + ", ".join(sorted(v for v in vendors if v)) + ")") if vendors else ""


# -- KDE -------------------------------------------------------------------------


def kde_list(scan: Scanner) -> Result:
    """KDE messagelib's tracker URLs (kept above), each as a plain unsized image."""
    result = Result("KDE tracker URL list")
    for name, url, _ in KDE_TRACKERS:
        result.tracker(f"{name} {url}", scan.caught(f'<img src="{url}" alt="">'))
    for url in KDE_REGULAR:
        result.harmless(url, bool(scan.flagged(f'<img src="{url}" alt="">')))
    return result


# -- CITP ------------------------------------------------------------------------

_MD5_PARAM = re.compile(r"[?&][\w.]*=([0-9a-f]{32})(?:&|$)", re.I)
_CONTENT_HOST = re.compile(r"^https?://[a-z0-9.-]*\blscdn\.net/", re.I)


def citp_crawl(scan: Scanner, root: Path) -> Result:
    """The LivingSocial example: URLs carrying the subscriber's address hash are trackers."""
    found = sorted((root / "example_email").glob("living_social_*.html"))
    if not found:
        raise MaterialMissing(f"{root}/example_email/living_social_*.html not found")
    page = _read(found[0])
    result = Result("CITP crawl (fetched trackers)")
    items = scan.items(page)
    verdict: dict[str, tuple[bool, bool]] = {}  # URL -> (every copy neutralised, one flagged)
    for item in items:
        url = item.finding.url
        caught, flagged = verdict.get(url, (True, False))
        verdict[url] = (caught and _neutralised(item), flagged or _beacon(item))
    for url, (caught, flagged) in sorted(verdict.items()):
        if _MD5_PARAM.search(html.unescape(url)):
            result.tracker(url, caught)
        elif _CONTENT_HOST.search(url):
            result.harmless(url, flagged)
    return result


# -- real templates ----------------------------------------------------------------


#: The templates' own open pixels: konsav's 1x1 ``tracker.png`` stands where its comment
#: says a Google Analytics ``collect`` URL goes.  Everything else in them is content.
TEMPLATE_PIXELS = frozenset({"/konsav/email-templates/master/images/tracker.png"})


def templates(scan: Scanner, root: Path) -> Result:
    """Real newsletter templates: every remote reference but their own pixels must stay."""
    files = sorted(root.glob("*.html"))
    if not files:
        raise MaterialMissing(f"{root}: no *.html templates")
    result = Result("real templates (content only)")
    for path in files:
        for item in scan.items(_read(path)):
            name = f"{path.name}: {item.finding.url}"
            if any(item.finding.url.endswith(pixel) for pixel in TEMPLATE_PIXELS):
                result.tracker(name, _neutralised(item))
            else:
                result.harmless(name, _beacon(item))
    return result


# -- the table -------------------------------------------------------------------


def run(peers: Path, rules: TrackerRules, templates_dir: Path | None = None) -> list[Result]:
    scan = Scanner(rules)
    suites: list[Callable[[], Result]] = [
        lambda: trocker_samples(scan, peers / "trocker"),
        lambda: trocker_tiny(scan, peers / "trocker"),
        lambda: kde_list(scan),
        lambda: mtb_unit_tests(scan, peers / "MailTrackerBlocker"),
        lambda: citp_crawl(scan, peers / "email_tracking"),
    ]
    if templates_dir is not None:
        suites.append(lambda: templates(scan, templates_dir))
    return [suite() for suite in suites]


def table(results: list[Result], *, verbose: bool = False) -> str:
    head = ["suite", "MailTrackerBlocker", "beacon-proxy", "goal", ""]
    rows = [head, ["---"] * 4 + [""]]
    for r in results:
        agrees = "agrees " if r.agreement else ""
        ours = f"{agrees}{r.score}/{r.cases}, {len(r.false_positives)} FP of {r.clean} clean"
        goal = f">= {r.goal}/{r.cases}, 0 FP"
        rows.append([r.suite, _MTB[r.suite][0], ours, goal, "PASS" if r.passed else "FAIL"])
    widths = [max(len(row[c]) for row in rows) for c in range(5)]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
             + " |" for row in rows]
    for r in results:
        for label, names in (("missed", r.misses), ("false positive", r.false_positives)):
            shown = names if verbose else names[:8]
            for name in shown:
                lines.append(f"  {r.suite}: {label}: {name}")
            if len(names) > len(shown):
                lines.append(f"  {r.suite}: {len(names) - len(shown)} more {label} "
                             "(--verbose lists them)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=Path, default=os.environ.get("BEACON_PEERS"),
                        help="directory with the trocker, MailTrackerBlocker and "
                             "email_tracking checkouts (default: $BEACON_PEERS)")
    parser.add_argument("--rules", type=Path, default=None,
                        help="tracker rules file (default: the packaged rules)")
    parser.add_argument("--templates", type=Path,
                        default=_TEMPLATES if _TEMPLATES.is_dir() else None,
                        help="real templates that hold no tracker, checked for false positives "
                             "(default: ../shared/data/templates when present)")
    parser.add_argument("--verbose", action="store_true", help="list every miss and FP")
    args = parser.parse_args(argv)
    if args.peers is None:
        parser.error("give --peers DIR or set BEACON_PEERS (see the docstring for the clones)")
    try:
        results = run(args.peers, load_rules(args.rules), args.templates)
    except MaterialMissing as exc:
        print(f"detection: material missing: {exc}", file=sys.stderr)
        return 2
    print(table(results, verbose=args.verbose))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
