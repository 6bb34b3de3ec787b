from __future__ import annotations

import base64
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

import beacon_proxy.tokens as tokens_module
from beacon_proxy.config import ConfigError, TokensConfig
from beacon_proxy.tokens import Claims, Purpose, TokenError, Tokens, load_secrets, url_identity

NEW, OLD = "new secret 0123456789", "old secret 0123456789"
TOKENS = Tokens([NEW, OLD])
CLAIMS = Claims(Purpose.OPEN, "Ann.Example@example.org", "news.example.org", "1K1BVV84HBF88W0M",
                url_identity("https://t.example.com/open?id=1"), 1_700_000_000)

# Fixed vectors: secret + claims (issued-at fixed) -> exact token, and back.
VECTOR_SECRET = "vector secret 0123456789abcdef"
VECTORS = [
    (Claims(Purpose.OPEN, "ann@example.org", "news.example.org", "Q1",
            url_identity("https://t.example.com/o?id=1"), 1_700_000_000),
     "AsMgzmfHWZLM5iLKcJMRWtvNjonqt6lpDxkM-4VRUhA9HrLYk1E9lxRuvSIlUYbZeOM_RgJpHbvd6L--0FpQzx1_hQ"),
    (Claims(Purpose.UNSUBSCRIBE, "Jérôme.山田@例え.jp", None, "1K1BVV84HBF88W0M", b"",
            1_767_225_600),
     "AsOD_4edJaHmzHuC4psNkEKT-iVByFAgl-JCFOdn2_IwGpO0YSVO0n0PomTM-oaHExWYrKAdAhSuNFMZt_HApoZ1LA"),
    (Claims(Purpose.UNSUBSCRIBE, "ann@example.org", "news.example.org", "Q1", b"",
            1_700_000_000, "https://sender.example/unsub?u=42"),
     "AsOKaW_ukpdRlVanSVysBaLvtvaKEF9BTO7tdxu1r2PY8IfNbf5gkpeI1vsNfblAVU_fhdVj-3KlNnN4g4AplcJTT2UWG"
     "hxsnjGMehyILdtWGKlJzsm-pcVcMqTz7Q"),
]
# The first vector's claims as the version-1 (HMAC-SIV) code minted them with VECTOR_SECRET.
V1_TOKEN = ("nXMp3atRAu1l5wuY1EcCpDio-wx9sGh9PZYqJhVIiWTC19YPSBU4LkLQsGscWIM0nwHdKORCrWSIlzXMGd7bBC"
            "XPgw")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _refused(tokens: Tokens, token: str, purpose: Purpose = Purpose.OPEN) -> str:
    with pytest.raises(TokenError) as info:
        tokens.verify(token, purpose)
    return str(info.value)


def _reference_mint(secret: str, c: Claims) -> str:
    """The token as docs/rewriting.md and the module docstring describe it, from primitives."""
    def hkdf(info: bytes, length: int) -> bytes:
        return HKDF(hashes.SHA256(), length, None, info).derive(secret.encode())

    header = bytes([2, hkdf(b"beacon-proxy token v2 key id", 1)[0]])

    def field(b: bytes) -> bytes:
        return bytes([len(b)]) + b

    plain = (struct.pack(">I", c.issued_at) + field(c.recipient.encode())
             + field((c.list_id or "").encode()) + field(c.queue_id.encode()) + field(c.url_id))
    if c.forward:
        plain += struct.pack(">H", len(c.forward.encode())) + c.forward.encode()
    aead = AESSIV(hkdf(b"beacon-proxy token v2 AES-SIV key", 64))
    return _b64(header + aead.encrypt(plain, [header, bytes([c.purpose])]))


# -- vectors and format -------------------------------------------------------


@pytest.mark.parametrize(("claims", "token"), VECTORS)
def test_vectors_mint(claims: Claims, token: str) -> None:
    assert Tokens([VECTOR_SECRET]).mint(claims) == token
    assert _reference_mint(VECTOR_SECRET, claims) == token


@pytest.mark.parametrize(("claims", "token"), VECTORS)
def test_vectors_verify(claims: Claims, token: str) -> None:
    assert Tokens([VECTOR_SECRET]).verify(token, claims.purpose) == claims
    assert Tokens([OLD, VECTOR_SECRET]).verify(token, claims.purpose) == claims


def test_layout_version_and_key_id() -> None:
    raw = _raw(VECTORS[0][1])
    assert raw[0] == 2 and raw[1] == tokens_module._Key.derive(VECTOR_SECRET.encode()).key_id
    # header + SIV + claims (4 + 1+15 + 1+16 + 1+2 + 1+8 bytes), nothing else
    assert len(raw) == 2 + 16 + 49


def test_round_trip_and_url_safety() -> None:
    token = TOKENS.mint(CLAIMS)
    assert TOKENS.verify(token, Purpose.OPEN) == CLAIMS
    assert all(c.isalnum() or c in "-_" for c in token)
    assert len(token) < 120
    assert TOKENS.mint(CLAIMS) == token  # deterministic (AES-SIV)


def test_address_is_not_readable() -> None:
    raw = _raw(TOKENS.mint(CLAIMS))
    assert b"example.org" not in raw and b"Ann" not in raw and b"1K1B" not in raw


def test_minting_stamps_the_time() -> None:
    claims = Claims(Purpose.UNSUBSCRIBE, "a@b.org", None, "Q")
    back = TOKENS.verify(TOKENS.mint(claims), Purpose.UNSUBSCRIBE)
    assert back.issued_at > 1_700_000_000 and back.list_id is None


def test_max_age() -> None:
    fresh = TOKENS.mint(replace(CLAIMS, issued_at=0))
    assert TOKENS.verify(fresh, Purpose.OPEN, max_age=60).recipient == CLAIMS.recipient
    old = TOKENS.mint(CLAIMS)  # issued in 2023
    assert TOKENS.verify(old, Purpose.OPEN) == CLAIMS
    with pytest.raises(TokenError):
        TOKENS.verify(old, Purpose.OPEN, max_age=60)


# -- refusals ----------------------------------------------------------------


def test_old_version_is_refused() -> None:
    assert _refused(Tokens([VECTOR_SECRET]), V1_TOKEN)
    raw = bytearray(_raw(VECTORS[0][1]))
    for version in (0, 1, 3, 255):
        raw[0] = version
        _refused(Tokens([VECTOR_SECRET]), _b64(bytes(raw)))


def test_every_bit_flip_is_refused() -> None:
    token = TOKENS.mint(CLAIMS)
    raw = _raw(token)
    for position in range(len(raw)):
        for bit in range(8):
            flipped = bytearray(raw)
            flipped[position] ^= 1 << bit
            _refused(TOKENS, _b64(bytes(flipped)))
        flipped = bytearray(raw)
        flipped[position] ^= 0xFF
        _refused(TOKENS, _b64(bytes(flipped)))


def test_truncation_is_refused() -> None:
    token = TOKENS.mint(CLAIMS)
    raw = _raw(token)
    for n in range(len(token)):
        _refused(TOKENS, token[:n])
        _refused(TOKENS, token[n + 1 :])
    for n in range(len(raw)):
        _refused(TOKENS, _b64(raw[:n]))


@pytest.mark.parametrize("suffix", ["A", "AA", "AAA", "AAAA", "=", "==", "!", " ", "\n", ".", "é"])
def test_extension_is_refused(suffix: str) -> None:
    _refused(TOKENS, TOKENS.mint(CLAIMS) + suffix)


@pytest.mark.parametrize("extra", [b"\x00", b"\x00" * 16, b"\xff" * 3])
def test_byte_extension_is_refused(extra: bytes) -> None:
    _refused(TOKENS, _b64(_raw(TOKENS.mint(CLAIMS)) + extra))


def test_other_spellings_of_the_same_bytes_are_refused() -> None:
    token = TOKENS.mint(CLAIMS)  # 89 bytes: the last character carries 2 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    assert len(_raw(token)) % 3 == 2 and last % 4 == 0
    for other in range(last + 1, last + 4):
        spelled = token[:-1] + alphabet[other]
        assert _raw(spelled) == _raw(token)
        _refused(TOKENS, spelled)
    _refused(TOKENS, token + "==")
    _refused(TOKENS, token.replace("-", "+").replace("_", "/"))


@pytest.mark.parametrize(("made", "used"), [(Purpose.OPEN, Purpose.UNSUBSCRIBE),
                                            (Purpose.UNSUBSCRIBE, Purpose.OPEN)])
def test_purpose_is_bound(made: Purpose, used: Purpose) -> None:
    _refused(TOKENS, TOKENS.mint(replace(CLAIMS, purpose=made)), used)


def test_wrong_key_is_refused() -> None:
    _refused(Tokens(["some other secret 0123"]), TOKENS.mint(CLAIMS))
    _refused(Tokens(["some other secret 0123"]), VECTORS[0][1])


def test_rotation_accepts_old_keys_mints_with_the_new_and_retires() -> None:
    old = Tokens([OLD])
    token = old.mint(CLAIMS)
    assert TOKENS.verify(token, Purpose.OPEN) == CLAIMS
    new_token = TOKENS.mint(CLAIMS)
    assert _raw(new_token)[1] == tokens_module._Key.derive(NEW.encode()).key_id
    _refused(old, new_token)
    _refused(Tokens([NEW]), token)  # the previous secret retired


def test_colliding_key_ids_still_verify() -> None:
    first = "collision secret 0000"
    kid = tokens_module._Key.derive(first.encode()).key_id
    other = next(s for s in (f"collision secret {i:04}" for i in range(1, 10_000))
                 if tokens_module._Key.derive(s.encode()).key_id == kid)
    both = Tokens([first, other])
    assert both.verify(Tokens([other]).mint(CLAIMS), Purpose.OPEN) == CLAIMS
    assert both.verify(Tokens([first]).mint(CLAIMS), Purpose.OPEN) == CLAIMS


class _Counting:
    def __init__(self, aead: AESSIV, log: list[int], n: int) -> None:
        self.aead, self.log, self.n = aead, log, n

    def decrypt(self, data: bytes, associated_data: Any) -> bytes:
        self.log.append(self.n)
        return self.aead.decrypt(data, associated_data)


def _counted(tokens: Tokens) -> list[int]:
    log: list[int] = []
    tokens._keys = [replace(k, aead=cast(AESSIV, _Counting(k.aead, log, i)))
                    for i, k in enumerate(tokens._keys)]
    return log


def test_one_attempt_per_key_for_invalid_tokens_and_the_right_key_first() -> None:
    secrets = [NEW, OLD, "third secret 0123456789"]
    tokens = Tokens(secrets)
    log = _counted(tokens)
    made_with_old = Tokens([OLD]).mint(CLAIMS)
    assert tokens.verify(made_with_old, Purpose.OPEN) == CLAIMS
    assert log == [1]  # the key id picked the previous secret straight away
    raw = bytearray(_raw(made_with_old))
    raw[-1] ^= 1
    for kid in {raw[1], 0, 255, tokens._keys[0].key_id}:  # whatever the key id says
        raw[1] = kid
        log.clear()
        _refused(tokens, _b64(bytes(raw)))
        assert sorted(log) == [0, 1, 2]
    log.clear()
    _refused(tokens, made_with_old, Purpose.UNSUBSCRIBE)
    assert sorted(log) == [0, 1, 2]


def test_refusals_all_say_the_same() -> None:
    token = TOKENS.mint(CLAIMS)
    raw = bytearray(_raw(token))
    raw[5] ^= 1
    messages = {
        _refused(TOKENS, ""),
        _refused(TOKENS, "A" * 5000),
        _refused(TOKENS, "!!!!"),
        _refused(TOKENS, token[:20]),
        _refused(TOKENS, _b64(bytes(raw))),
        _refused(TOKENS, token, Purpose.UNSUBSCRIBE),
        _refused(Tokens(["some other secret 0123"]), token),
        _refused(Tokens([VECTOR_SECRET]), V1_TOKEN),
    }
    with pytest.raises(TokenError) as expired:
        TOKENS.verify(token, Purpose.OPEN, max_age=1)
    assert messages == {str(expired.value)} == {"invalid or expired token"}


def test_length_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(text: str) -> bytes:
        raise AssertionError("decoded")

    monkeypatch.setattr(tokens_module, "_unb64", boom)
    _refused(TOKENS, "A" * 2561)
    _refused(TOKENS, "")


@pytest.mark.parametrize("bad", ["", "x", "!!!!", "A" * 5000, "é" * 10, "A" * 26, "AgA"])
def test_garbage_is_refused(bad: str) -> None:
    _refused(TOKENS, bad)


@given(st.binary(min_size=0, max_size=200))
def test_random_bytes_never_verify_or_crash(data: bytes) -> None:
    _refused(TOKENS, _b64(data))
    _refused(TOKENS, _b64(bytes([2, data[0] if data else 0]) + data))


@given(st.text(max_size=300))
def test_random_text_never_verifies_or_crashes(text: str) -> None:
    _refused(TOKENS, text)


# -- round trip ----------------------------------------------------------------


def _fits(s: str) -> bool:
    return len(s.encode("utf-8", "surrogatepass")) <= 255 and s.encode("utf-8", "ignore") == \
        s.encode("utf-8", "surrogatepass")


_short = st.text(max_size=80).filter(_fits)
_claims = st.builds(
    Claims,
    purpose=st.sampled_from(Purpose),
    recipient=st.emails().map(str) | _short,
    list_id=st.none() | _short.filter(bool),
    queue_id=_short,
    url_id=st.just(b"") | st.text(min_size=0, max_size=5000).map(url_identity),
    issued_at=st.integers(min_value=1, max_value=2**32 - 1),
    forward=st.just("") | st.text(min_size=1, max_size=300).filter(
        lambda u: 0 < len(u.encode("utf-8", "surrogatepass")) <= 1024
        and u.encode("utf-8", "surrogatepass") == u.encode("utf-8", "replace")),
)


@given(_claims)
def test_round_trip_any_claims(claims: Claims) -> None:
    token = TOKENS.mint(claims)
    assert TOKENS.verify(token, claims.purpose) == claims
    assert _reference_mint(NEW, claims) == token
    assert len(token) <= 2560
    other = Purpose.UNSUBSCRIBE if claims.purpose is Purpose.OPEN else Purpose.OPEN
    _refused(TOKENS, token, other)


def test_bad_secrets_and_claims() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        Tokens([])
    with pytest.raises(ValueError, match="at least 8"):
        Tokens(["short"])
    with pytest.raises(ValueError, match="255"):
        TOKENS.mint(Claims(Purpose.OPEN, "a" * 300, None, "Q"))
    with pytest.raises(ValueError, match="url_identity"):
        TOKENS.mint(replace(CLAIMS, url_id=b"123"))
    with pytest.raises(ValueError, match="32-bit"):
        TOKENS.mint(replace(CLAIMS, issued_at=2**32))
    with pytest.raises(ValueError, match="1024"):
        TOKENS.mint(replace(CLAIMS, forward="https://x.example/" + "a" * 1100))


def test_longest_claims_fit_the_length_limit() -> None:
    longest = Claims(Purpose.UNSUBSCRIBE, "r" * 255, "l" * 255, "q" * 255, b"", 2**32 - 1,
                     "f" * 1024)
    assert TOKENS.verify(TOKENS.mint(longest), Purpose.UNSUBSCRIBE) == longest


def test_forward_claim_is_bound() -> None:
    token = TOKENS.mint(replace(CLAIMS, forward="https://t.example.com/open?id=1"))
    assert TOKENS.verify(token, Purpose.OPEN).forward == "https://t.example.com/open?id=1"
    raw = bytearray(_raw(token))
    raw[-1] ^= 1  # the last byte of the forward URL
    _refused(TOKENS, _b64(bytes(raw)))


# -- secrets -------------------------------------------------------------------


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


def test_shared_store_needs_a_configured_secret(tmp_path: Path) -> None:
    generated = tmp_path / "token.secret"
    with pytest.raises(ConfigError) as info:
        load_secrets(TokensConfig(), generated, shared_store=True)
    assert info.value.key == "tokens.secret" and "PostgreSQL" in info.value.reason
    assert "\n" not in str(info.value)
    assert not generated.exists()
    cfg = TokensConfig(secret="current-secret-1234")
    assert load_secrets(cfg, generated, shared_store=True) == (["current-secret-1234"], False)
    file = tmp_path / "secrets"
    file.write_text("shared-secret-abcdefgh\n")
    assert load_secrets(TokensConfig(secret_file=file), generated, shared_store=True) == (
        ["shared-secret-abcdefgh"], False)


def test_form_tokens_are_bound_to_the_link_and_survive_rotation() -> None:
    old, new = Tokens(["old-secret-0123456789"]), Tokens(["new-secret-0123456789",
                                                           "old-secret-0123456789"])
    link = old.mint(Claims(Purpose.UNSUBSCRIBE, "ann@example.org", None, "Q1"))
    other = old.mint(Claims(Purpose.UNSUBSCRIBE, "bob@example.org", None, "Q1"))
    form = old.form_token(link)
    assert len(form) == 22 and form == old.form_token(link)  # 16 bytes, base64url
    assert old.check_form_token(link, form) and new.check_form_token(link, form)
    assert new.check_form_token(link, new.form_token(link))
    assert not old.check_form_token(other, form)
    assert not Tokens(["another-secret-012345"]).check_form_token(link, form)
    flipped = ("B" if form[0] == "A" else "A") + form[1:]
    for garbage in ("", "A", form + "=", form[:-1], "é" * 22, flipped):
        assert not old.check_form_token(link, garbage), garbage


def test_issued_at_zero_mints_now_exactly_as_an_explicit_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = Tokens(["a test secret 0123456789"])
    now = 1_765_000_000
    monkeypatch.setattr("beacon_proxy.tokens.time.time", lambda: now + 0.75)
    claims = Claims(Purpose.UNSUBSCRIBE, "ann@example.org", "news.example", "Q1")
    token = tokens.mint(claims)
    assert token == tokens.mint(replace(claims, issued_at=now))  # AES-SIV: deterministic
    assert tokens.verify(token, Purpose.UNSUBSCRIBE).issued_at == now
    with pytest.raises(ValueError, match="positive 32-bit"):
        tokens.mint(replace(claims, issued_at=-1))


def _old_pack(c: Claims, issued_at: int) -> bytes:
    """``tokens._pack`` as it was, a concatenation per claim (the reference)."""
    def pack_str(value: str) -> bytes:
        raw = value.encode("utf-8")
        if len(raw) > 255:
            raise ValueError("claim longer than 255 bytes")
        return bytes([len(raw)]) + raw

    if len(c.url_id) not in (0, 8):
        raise ValueError("url_id must come from url_identity()")
    if not 0 < issued_at < 2**32:
        raise ValueError("issued_at must be a positive 32-bit unix time")
    out = (struct.pack(">I", issued_at) + pack_str(c.recipient) + pack_str(c.list_id or "")
           + pack_str(c.queue_id) + bytes([len(c.url_id)]) + c.url_id)
    if c.forward:
        raw = c.forward.encode("utf-8")
        if len(raw) > 1024:
            raise ValueError("forward URL longer than 1024 bytes")
        out += struct.pack(">H", len(raw)) + raw
    return out


_CLAIM_TEXT = st.one_of(st.text(max_size=8), st.sampled_from(
    ["", "a@b.org", "\udce9", "x" * 255, "x" * 256, "\u00e9" * 128, "\u00e9" * 127]))


@settings(max_examples=300)
@given(_CLAIM_TEXT, st.one_of(st.none(), _CLAIM_TEXT), _CLAIM_TEXT,
       st.sampled_from([b"", b"12345678", b"1234"]),
       st.sampled_from(["", "https://s.example/u", "\udce9", "y" * 1025]),
       st.sampled_from([0, 1, 1_700_000_000, 2**32 - 1, 2**32]))
def test_claims_pack_as_before(recipient: str, list_id: str | None, queue_id: str,
                               url_id: bytes, forward: str, issued_at: int) -> None:
    """The same plaintext, or the same error (type and text), for any claims."""
    claims = Claims(Purpose.UNSUBSCRIBE, recipient, list_id, queue_id, url_id, 0, forward)
    try:
        expected: bytes | tuple[type, str] = _old_pack(claims, issued_at)
    except ValueError as exc:
        expected = (type(exc), str(exc))
    try:
        got: bytes | tuple[type, str] = tokens_module._pack(claims, issued_at)
    except ValueError as exc:
        got = (type(exc), str(exc))
    assert got == expected
