from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from beacon_proxy.config import ConfigError, TokensConfig
from beacon_proxy.tokens import Claims, Purpose, TokenError, Tokens, load_secrets, url_identity

TOKENS = Tokens(["new secret 0123456789", "old secret 0123456789"])
CLAIMS = Claims(Purpose.OPEN, "Ann.Example@example.org", "news.example.org", "1K1BVV84HBF88W0M",
                url_identity("https://t.example.com/open?id=1"), 1_700_000_000)


def test_round_trip_and_url_safety() -> None:
    token = TOKENS.mint(CLAIMS)
    assert TOKENS.verify(token, Purpose.OPEN) == CLAIMS
    assert all(c.isalnum() or c in "-_" for c in token)
    assert len(token) < 120


def test_address_is_not_readable() -> None:
    token = TOKENS.mint(CLAIMS)
    raw = base64.urlsafe_b64decode(token + "==")
    assert b"example.org" not in raw and b"Ann" not in raw


def test_minting_stamps_the_time() -> None:
    claims = Claims(Purpose.UNSUBSCRIBE, "a@b.org", None, "Q")
    back = TOKENS.verify(TOKENS.mint(claims), Purpose.UNSUBSCRIBE)
    assert back.issued_at > 1_700_000_000 and back.list_id is None


def test_rotation_accepts_old_keys_and_mints_with_the_new() -> None:
    old = Tokens(["old secret 0123456789"])
    token = old.mint(CLAIMS)
    assert TOKENS.verify(token, Purpose.OPEN) == CLAIMS
    with pytest.raises(TokenError):
        old.verify(TOKENS.mint(CLAIMS), Purpose.OPEN)


def test_purpose_is_bound() -> None:
    with pytest.raises(TokenError, match="purpose"):
        TOKENS.verify(TOKENS.mint(CLAIMS), Purpose.UNSUBSCRIBE)


def test_max_age() -> None:
    with pytest.raises(TokenError, match="expired"):
        TOKENS.verify(TOKENS.mint(CLAIMS), Purpose.OPEN, max_age=60)


@pytest.mark.parametrize("bad", ["", "x", "!!!!", "A" * 5000, "é" * 10, "A" * 26])
def test_garbage_is_refused(bad: str) -> None:
    with pytest.raises(TokenError):
        TOKENS.verify(bad, Purpose.OPEN)


@given(st.binary(min_size=0, max_size=200))
def test_random_bytes_never_verify_or_crash(data: bytes) -> None:
    token = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    with pytest.raises(TokenError):
        TOKENS.verify(token, Purpose.OPEN)


@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_bit_flip_is_detected(position: int, flip: int) -> None:
    token = TOKENS.mint(CLAIMS)
    raw = bytearray(base64.urlsafe_b64decode(token + "=="))
    raw[position % len(raw)] ^= flip or 1
    with pytest.raises(TokenError):
        TOKENS.verify(base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode(), Purpose.OPEN)


def test_bad_secrets_and_claims() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        Tokens([])
    with pytest.raises(ValueError, match="at least 8"):
        Tokens(["short"])
    with pytest.raises(ValueError, match="255"):
        TOKENS.mint(Claims(Purpose.OPEN, "a" * 300, None, "Q"))


def test_load_secrets(tmp_path: Path) -> None:
    generated = tmp_path / "spool" / "token.secret"
    first, made = load_secrets(TokensConfig(), generated)
    assert made and len(first[0]) >= 32
    assert generated.stat().st_mode & 0o777 == 0o600
    assert load_secrets(TokensConfig(), generated) == (first, True)  # kept across restarts
    cfg = TokensConfig(secret="current-secret-1234", previous=("older-secret-12345",))
    assert load_secrets(cfg, generated) == (["current-secret-1234", "older-secret-12345"], False)
    file = tmp_path / "secrets"
    file.write_text("# rotated 2026-11\nnew-secret-abcdefgh\n\nold-secret-abcdefgh\n")
    assert load_secrets(TokensConfig(secret_file=file), generated)[0] == [
        "new-secret-abcdefgh", "old-secret-abcdefgh"]
    file.write_text("short\n")
    with pytest.raises(ConfigError, match="16"):
        load_secrets(TokensConfig(secret_file=file), generated)
