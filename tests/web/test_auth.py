from __future__ import annotations

from pathlib import Path

import pytest

from beacon_proxy.config import ConfigError, load_config
from beacon_proxy.web.auth import ApiTokens, bearer_token, hash_token, is_token_hash, new_token


def test_tokens_are_checked_against_hashes() -> None:
    a, b = new_token(), new_token()
    assert a != b and len(a) >= 40
    tokens = ApiTokens({"ops": hash_token(a), "crm": hash_token(b)})
    assert tokens.check(a) == "ops" and tokens.check(b) == "crm"
    assert tokens.check(a + "x") is None and tokens.check("") is None
    assert not ApiTokens({}) and tokens
    assert is_token_hash(hash_token(a)) and not is_token_hash("sha256:xyz")
    with pytest.raises(ValueError, match="ops"):
        ApiTokens({"ops": a})


def test_credentials_tell_tokens_of_one_name_apart() -> None:
    a, b = new_token(), new_token()
    tokens = ApiTokens({"ops": hash_token(a)})
    assert tokens.identify(a) == ("ops", hash_token(a)) and tokens.identify(b) is None
    assert tokens.credentials() == {("ops", hash_token(a))}
    tokens.replace({"ops": hash_token(b)})  # rotated under the same name
    assert tokens.credentials() == {("ops", hash_token(b))} and tokens.identify(a) is None
    with pytest.raises(ValueError):
        tokens.replace({"ops": "sha256:bad"})
    assert tokens.credentials() == {("ops", hash_token(b))}  # the old ones are kept


@pytest.mark.parametrize(
    ("header", "token"),
    [(None, None), ("", None), ("Bearer abc", "abc"), ("bearer  abc ", "abc"),
     ("Basic abc", None), ("Bearer", None), ("Bearer ", None)],
)
def test_bearer_header(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


def test_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    h = hash_token("x" * 30)
    path.write_text(f'[api.tokens]\nops = "{h}"\n[store]\npool_size = 3\n'
                    'url = "postgresql://u@db.internal/bp"\n')
    cfg = load_config(path, environ={})
    assert cfg.api.tokens == {"ops": h} and cfg.store.pool_size == 3
    for text, key in [
        ('[api.tokens]\nops = "secret-in-clear"\n', "api.tokens.ops"),
        ('[api]\ntokens = ["sha256:00"]\n', "api.tokens"),
        (f'[api.tokens]\n"bad name" = "{h}"\n', "api.tokens.bad name"),
        ("[api]\ntoken = 1\n", "api.token"),
        ("[store]\npool_size = 0\n", "store.pool_size"),
        ('[store]\nurl = "sqlite://relative.db"\n', "store.url"),
        ('[store]\nurl = "sqlite:///"\n', "store.url"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError) as info:
            load_config(path, environ={})
        assert info.value.key == key, text
