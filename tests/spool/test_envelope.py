"""The envelope's stored JSON: the same bytes as ``dataclasses.asdict`` + ``json.dumps``
(what ``to_json`` did before it built the dict itself), and read back whole."""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from beacon_proxy.spool.envelope import Envelope

_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_MAYBE = st.none() | _TEXT


def _reference(env: Envelope) -> bytes:
    data = dataclasses.asdict(env)
    data["recipients"] = list(env.recipients)
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@settings(max_examples=300)
@given(st.builds(
    Envelope, queue_id=_TEXT, sender=_TEXT, recipients=st.lists(_TEXT, max_size=4).map(tuple),
    received_at=st.floats(allow_nan=False, allow_infinity=False), client_address=_TEXT,
    client_helo=_TEXT, protocol=_TEXT, auth_user=_MAYBE, message_id=_MAYBE, list_id=_MAYBE,
    one_click=_MAYBE, size=st.integers(0, 2**40), smtputf8=st.booleans(), body_type=_MAYBE,
    bounce_of=_MAYBE))
def test_to_json_is_asdicts_json_and_reads_back(env: Envelope) -> None:
    raw = env.to_json()
    assert raw == _reference(env)
    assert Envelope.from_json(raw) == env
