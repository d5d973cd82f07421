"""Validation and enrichment of Segment payloads (pure functions, no servers)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.events import format_timestamp
from services.segment import (
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_REQUEST_BYTES,
    InvalidInput,
    build_records,
    parse_body,
)

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def enrich(body: dict[str, Any], event_type: str | None = None) -> list[dict[str, Any]]:
    parsed = parse_body(json.dumps(body).encode(), event_type)
    return [json.loads(r.data) for r in build_records(parsed, event_type, "web", RECEIVED)]


def rejection(body: bytes | dict[str, Any], event_type: str | None = None) -> InvalidInput:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InvalidInput) as caught:
        build_records(parse_body(raw, event_type), event_type, "web", RECEIVED)
    return caught.value


def test_enriched_event_keeps_original_fields_and_adds_the_contract_fields() -> None:
    original = {
        "type": "track",
        "event": "Order Completed",
        "userId": "u1",
        "messageId": "m-1",
        "properties": {"total": 12.5, "items": [1, 2]},
        "context": {"library": {"name": "analytics-python"}},
        "custom": {"kept": True},
        "writeKey": "web-key-1",
    }
    (event,) = enrich({"batch": [original]})
    assert event["liftoff"] == {"source": "web", "schema": 1}
    assert event["messageId"] == "m-1"
    assert event["receivedAt"] == "2026-01-02T03:04:05.678Z"
    assert event["timestamp"] == "2026-01-02T03:04:05.678Z"  # no client timestamp
    assert "writeKey" not in event
    for key in ("type", "event", "userId", "properties", "context", "custom"):
        assert event[key] == original[key]


def test_missing_message_id_gets_a_uuid4() -> None:
    (event,) = enrich({"userId": "u1", "traits": {}}, "identify")
    assert uuid.UUID(event["messageId"]).version == 4


def test_timestamp_corrects_client_clock_skew_with_sent_at() -> None:
    # The client clock runs 1 hour fast; the event happened 10 s before it was sent.
    body = {
        "batch": [{"type": "page", "anonymousId": "a", "timestamp": "2026-01-02T04:03:55.678Z"}],
        "sentAt": "2026-01-02T04:04:05.678Z",
    }
    (event,) = enrich(body)
    assert event["timestamp"] == "2026-01-02T03:03:55.678Z"  # receivedAt - 10 s
    assert event["originalTimestamp"] == "2026-01-02T04:03:55.678Z"
    assert event["sentAt"] == "2026-01-02T04:04:05.678Z"


def test_event_level_sent_at_wins_and_offsets_are_normalized_to_utc() -> None:
    body = {
        "type": "track",
        "event": "e",
        "userId": 42,
        "timestamp": "2026-01-02T05:00:00+02:00",
        "sentAt": "2026-01-02T05:00:01+02:00",
    }
    (event,) = enrich({"batch": [body], "sentAt": "2000-01-01T00:00:00Z"})
    assert event["timestamp"] == "2026-01-02T03:04:04.678Z"
    assert event["sentAt"] == "2026-01-02T05:00:01+02:00"


def test_timestamp_without_sent_at_is_taken_as_is() -> None:
    (event,) = enrich({"userId": "u", "event": "e", "timestamp": "2025-12-31T23:59:59"}, "track")
    assert event["timestamp"] == "2025-12-31T23:59:59.000Z"


def test_path_decides_the_type_of_single_event_endpoints() -> None:
    (event,) = enrich({"type": "identify", "userId": "u", "event": "e"}, "track")
    assert event["type"] == "track"


def test_batch_context_and_integrations_are_merged_under_the_events_own() -> None:
    body = {
        "batch": [
            {"type": "identify", "userId": "u", "context": {"ip": "1.2.3.4"}},
            {"type": "identify", "userId": "v"},
        ],
        "context": {"ip": "9.9.9.9", "locale": "fr"},
        "integrations": {"All": False},
    }
    first, second = enrich(body)
    assert first["context"] == {"ip": "1.2.3.4", "locale": "fr"}
    assert second["context"] == {"ip": "9.9.9.9", "locale": "fr"}
    assert second["integrations"] == {"All": False}


def test_records_carry_what_the_streams_need() -> None:
    parsed = parse_body(
        json.dumps(
            {
                "batch": [
                    {"type": "group", "anonymousId": "anon", "groupId": "g", "messageId": "m1"},
                    {"type": "alias", "userId": "x" * 300, "previousId": "anon"},
                ]
            }
        ).encode(),
        None,
    )
    group, alias = build_records(parsed, None, "ios", RECEIVED)
    assert (group.message_id, group.source, group.type, group.partition_key) == (
        "m1",
        "ios",
        "group",
        "anon",
    )
    assert len(alias.partition_key) == 64  # long ids are hashed to fit Kinesis's 256 limit


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "track", "userId": "u"}, "event"),
        ({"type": "track", "userId": "u", "event": ""}, "event"),
        ({"type": "track", "event": "e"}, "userId"),
        ({"type": "track", "event": "e", "userId": "", "anonymousId": None}, "userId"),
        ({"type": "group", "userId": "u"}, "groupId"),
        ({"type": "group", "userId": "u", "groupId": ""}, "groupId"),
        ({"type": "alias", "anonymousId": "a", "previousId": "p"}, "userId"),
        ({"type": "alias", "userId": "u"}, "previousId"),
        ({"userId": "u"}, "type"),
        ({"type": "purchase", "userId": "u"}, "type"),
        ({"type": "identify", "userId": ["u"]}, "userId"),
        ({"type": "identify", "userId": "u", "traits": "vip"}, "traits"),
        ({"type": "identify", "userId": "u", "timestamp": "yesterday"}, "timestamp"),
        ({"type": "identify", "userId": "u", "messageId": "a\r\nb"}, "messageId"),
        ({"type": "identify", "userId": "u", "messageId": "m" * 101}, "messageId"),
    ],
)
def test_invalid_events_name_their_index_and_field(event: dict[str, Any], field: str) -> None:
    valid = {"type": "identify", "userId": "ok"}
    error = rejection({"batch": [valid, valid, event]})
    assert (error.status, error.index, error.field) == (400, 2, field)
    assert "event 2" in error.message


def test_event_that_is_not_an_object() -> None:
    error = rejection({"batch": [{"type": "identify", "userId": "u"}, 7]})
    assert (error.status, error.index) == (400, 1)


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b"{not json", "malformed_json", None),
        (b"", "malformed_json", None),
        (b"[]", "invalid_event", None),
        (b'{"events": []}', "invalid_event", "batch"),
        (b'{"batch": {}}', "invalid_event", "batch"),
        (b'{"batch": [], "sentAt": "soon"}', "invalid_event", "sentAt"),
    ],
)
def test_bad_batch_envelopes(body: bytes, code: str, field: str | None) -> None:
    error = rejection(body)
    assert (error.status, error.code, error.field) == (400, code, field)


def test_event_over_32_kib_is_a_400_naming_its_index() -> None:
    big = {"type": "track", "userId": "u", "event": "e", "properties": {"x": "y" * MAX_EVENT_BYTES}}
    error = rejection({"batch": [{"type": "identify", "userId": "u"}, big]})
    assert (error.status, error.code, error.index) == (400, "event_too_large", 1)


def test_request_over_500_kib_is_a_413() -> None:
    body = b" " * (MAX_REQUEST_BYTES + 1)
    error = rejection(body)
    assert (error.status, error.code) == (413, "request_too_large")


def test_too_many_events() -> None:
    error = rejection({"batch": [{}] * (MAX_BATCH_EVENTS + 1)})
    assert (error.status, error.code) == (400, "too_many_events")


def test_format_timestamp_is_utc_with_milliseconds() -> None:
    assert format_timestamp(datetime(2026, 5, 6, 7, 8, 9, 999999)) == "2026-05-06T07:08:09.999Z"
