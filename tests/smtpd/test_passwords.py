from __future__ import annotations

import pytest

from beacon_proxy.smtpd.passwords import hash_password, is_password_hash, verify_password


def test_round_trip() -> None:
    h = hash_password("pässword", n=2**10)
    assert is_password_hash(h)
    assert verify_password("pässword", h)
    assert verify_password("pässword".encode(), h)
    assert not verify_password("password", h)


def test_default_cost_works() -> None:
    h = hash_password("x")
    assert verify_password("x", h)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plaintext",
        "scrypt$1024$8$1$c2FsdA$",
        "scrypt$1000$8$1$c2FsdA$" + "A" * 43,  # n not a power of two
        "scrypt$131072$8$1$c2FsdA$" + "A" * 43,  # too much memory
        "bcrypt$1024$8$1$c2FsdA$" + "A" * 43,
        "scrypt$1024$8$1$!!!$" + "A" * 43,
    ],
)
def test_junk_is_not_a_hash(text: str) -> None:
    assert not is_password_hash(text)
    assert not verify_password("x", text)


def test_hashing_refuses_unverifiable_cost() -> None:
    with pytest.raises(ValueError, match="too much memory"):
        hash_password("x", n=2**17)
