"""The typed decoding path (envelope) decides and maps every event exactly as the general path
through the whole JSON object does: same contract verdict, same row."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.consumers.loader.sink import row_of
from services.consumers.runner.model import Delivery, Position, _decode_object, decode

MISSING = object()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)
timestamps = st.sampled_from(
    ["2026-11-27T20:19:01.000Z", "2026-11-27T20:19:01+02:00", "2026-11-27", "yesterday", ""]
)


# Each field: its usual type (or absent, null, empty) most of the time, rarely another type
# (which sends the whole event down the general path).
def field(usual: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(*[usual] * 12, st.just(MISSING), st.none(), json_values)


identifiers = field(st.one_of(st.text(max_size=8), st.just("")))


def contract(
    usual: st.SearchStrategy[Any], broken: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """Mostly valid (so that most examples reach the row), sometimes broken."""
    return st.one_of(*[usual] * 12, broken, st.just(MISSING), st.none(), json_values)


objects = st.dictionaries(st.text(max_size=4), json_values, max_size=3)
events = st.fixed_dictionaries(
    {
        "messageId": contract(st.text(min_size=1, max_size=8), st.just("")),
        "type": contract(
            st.sampled_from(["track", "identify", "page", "screen", "group", "alias"]),
            st.just("click"),
        ),
        "receivedAt": contract(st.just("2026-11-27T20:19:03.512Z"), timestamps),
        "liftoff": contract(
            st.fixed_dictionaries({"source": st.just("web")}),
            st.fixed_dictionaries({"source": field(st.sampled_from(["web", "a/b", "a=b"]))}),
        ),
        "event": identifiers,
        "name": identifiers,
        "userId": identifiers,
        "anonymousId": identifiers,
        "groupId": identifiers,
        "previousId": identifiers,
        "timestamp": field(timestamps),
        "sentAt": field(timestamps),
        "originalTimestamp": field(timestamps),
        "properties": field(objects),
        "traits": field(objects),
        "context": field(objects),
    }
)


def present(document: Any) -> Any:
    """The document without the fields drawn as absent."""
    if isinstance(document, dict):
        return {key: present(value) for key, value in document.items() if value is not MISSING}
    return document


def delivery_of(data: bytes) -> Delivery:
    return Delivery(data, Position("jetstream", "EVENTS", 7), datetime(2026, 11, 27, tzinfo=UTC))


def comparable(row: tuple[Any, ...] | str) -> tuple[Any, ...] | str:
    """jsonb columns as the values they hold (the typed path keeps the sent text, the general
    path re-encodes: the same JSON value, other whitespace)."""
    if isinstance(row, str):
        return row
    return tuple(
        json.loads(bytes(value)) if index in (13, 14, 15, 16) and value is not None else value
        for index, value in enumerate(row)
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events, st.booleans())
def test_the_typed_path_agrees_with_the_general_path(
    document: dict[str, Any], spaced: bool
) -> None:
    sent = present(document)
    data = json.dumps(sent, indent=1 if spaced else None).encode()
    typed, general = delivery_of(data), delivery_of(data)
    verdict = decode(typed)
    assert verdict == _decode_object(general)
    if verdict is not None:
        return
    event(f"typed path: {typed.envelope is not None}")
    assert (typed.message_id, typed.source, typed.type, typed.received_at) == (
        general.message_id,
        general.source,
        general.type,
        general.received_at,
    )
    assert typed.event == general.event == msgspec.json.decode(data)
    assert comparable(row_of(typed)) == comparable(row_of(general))


def test_usual_events_take_the_typed_path() -> None:
    data = json.dumps(
        {
            "type": "track",
            "event": "Order Completed",
            "userId": "u-1",
            "messageId": "m-1",
            "properties": {"total": 19.99},
            "receivedAt": "2026-11-27T20:19:03.512Z",
            "timestamp": "2026-11-27T20:19:01.000Z",
            "liftoff": {"source": "web", "schema": 1},
        }
    ).encode()
    delivery = delivery_of(data)
    assert decode(delivery) is None
    assert delivery.envelope is not None
    row = row_of(delivery)
    assert not isinstance(row, str)
    assert bytes(row[13]) == b'{"total": 19.99}'  # the sent text itself, not re-encoded
    assert row[14] is None and row[15] is None and row[16] is data


@pytest.mark.parametrize(
    "change",
    [
        {"messageId": ""},
        {"messageId": 5},
        {"type": "click"},
        {"liftoff": {"source": "a/b"}},
        {"liftoff": {"source": "a=b"}},
        {"liftoff": {"source": ""}},
        {"liftoff": "web"},
        {"receivedAt": "yesterday"},
        {"receivedAt": None},
    ],
)
def test_a_broken_contract_gets_the_general_paths_reason(change: dict[str, Any]) -> None:
    document = {
        "type": "track",
        "messageId": "m-1",
        "receivedAt": "2026-11-27T20:19:03.512Z",
        "timestamp": "2026-11-27T20:19:01.000Z",
        "liftoff": {"source": "web"},
    }
    data = json.dumps({**document, **change}).encode()
    verdict = decode(delivery_of(data))
    assert verdict is not None
    assert verdict == _decode_object(delivery_of(data))
