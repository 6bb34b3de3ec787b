"""KeyedHash: hmac.digest's bytes, without letting go of the GIL."""

from __future__ import annotations

import hmac
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beacon_proxy.keyed import KeyedHash


@given(key=st.binary(max_size=200), data=st.binary(max_size=3000))
def test_the_same_bytes_as_hmac_digest(key: bytes, data: bytes) -> None:
    keyed = KeyedHash(key)
    expected = hmac.digest(key, data, "sha256")
    assert keyed.digest(data) == expected
    assert keyed.hexdigest(data) == expected.hex()
    assert keyed.digest(data) == expected  # the kept state is not changed by a call


@pytest.fixture
def spinner() -> Iterator[Callable[[Callable[[], object]], int]]:
    """Run a call 200 times beside a thread that counts whenever it holds the GIL, with
    a switch interval of 30 s: that thread gets the GIL only when the call lets go of
    it (no forced switch comes before 30 s), and gives it back at once (``sleep(0)``).
    Returns how often that thread counted meanwhile."""
    go, stop = threading.Event(), threading.Event()
    ran = [0]

    def spin() -> None:
        go.wait()
        while not stop.is_set():
            ran[0] += 1
            time.sleep(0)

    thread = threading.Thread(target=spin, daemon=True)
    old = sys.getswitchinterval()
    thread.start()  # it waits for `go` without the GIL

    def beside(call: Callable[[], object]) -> int:
        before = ran[0]
        for _ in range(200):
            call()
        return ran[0] - before

    sys.setswitchinterval(30)
    try:
        go.set()  # the thread now waits for the GIL, which this one keeps
        yield beside
    finally:
        stop.set()
        sys.setswitchinterval(old)
        thread.join(60)


def test_hashing_keeps_the_gil(spinner: Callable[[Callable[[], object]], int]) -> None:
    keyed = KeyedHash(b"k" * 32)
    assert spinner(lambda: keyed.hexdigest(b"reader@example.org")) == 0
    assert spinner(lambda: keyed.digest(b"x" * 2000)) == 0


def test_the_spinner_sees_a_call_that_lets_go(
        spinner: Callable[[Callable[[], object]], int]) -> None:
    """The check above can fail: a call that lets go of the GIL lets the thread count
    (as hmac.digest does on CPython 3.11, for every text)."""
    assert spinner(lambda: time.sleep(0.0005)) > 0
