"""Console sessions: bounded, expiring, ended with their token."""

from __future__ import annotations

from beacon_proxy.web.console.sessions import Sessions


def test_idle_and_absolute_expiry() -> None:
    now = [0.0]
    sessions = Sessions(idle=10, max_age=25, clock=lambda: now[0])
    cookie, _ = sessions.create("ops")
    for t in (9.0, 18.0):  # each request starts the idle time again
        now[0] = t
        assert sessions.get(cookie) is not None
    now[0] = 26.0  # active, but older than max_age
    assert sessions.get(cookie) is None
    assert len(sessions) == 0


def test_capacity_pushes_out_the_least_recently_used() -> None:
    sessions = Sessions(capacity=2)
    a, _ = sessions.create("a")
    b, _ = sessions.create("b")
    assert sessions.get(a) is not None  # a is now the most recent
    c, _ = sessions.create("c")
    assert sessions.get(b) is None
    assert sessions.get(a) is not None and sessions.get(c) is not None


def test_logout_and_removed_or_replaced_token() -> None:
    sessions = Sessions()
    cookie, session = sessions.create("ops", credential="sha256:01")
    assert sessions.get(cookie, frozenset({("ops", "sha256:01")})) is session
    assert sessions.get(cookie, frozenset({("other", "sha256:02")})) is None  # removed
    cookie, _ = sessions.create("ops", credential="sha256:01")
    # a new token of the same name: the session of the old one ends
    assert sessions.get(cookie, frozenset({("ops", "sha256:03")})) is None
    cookie, _ = sessions.create("ops")
    assert sessions.drop(cookie) and not sessions.drop(cookie)
    assert sessions.get(cookie) is None


def test_cookie_values_are_random_and_not_kept() -> None:
    sessions = Sessions()
    one, s1 = sessions.create("ops")
    two, s2 = sessions.create("ops")
    assert one != two and s1.csrf != s2.csrf
    assert one not in repr(sessions._sessions)  # only a hash of the cookie is kept
    assert sessions.get("") is None and sessions.get("x" * 200) is None
    assert s1.check_csrf(s1.csrf) and not s1.check_csrf(s2.csrf) and not s1.check_csrf("")
