"""Validation and enrichment of Segment payloads (pure functions, no servers)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from services.events.limits import (
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_JSON_DEPTH,
    MAX_REQUEST_BYTES,
    InvalidInput,
)
from services.events.model import format_timestamp
from services.events.records import build_records, validate_events
from services.events.segment import parse_body

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


# --- event-level problems: each event judged on its own (the collector quarantines them) ------


def judged(body: bytes | dict[str, Any], event_type: str | None = None, **kwargs: Any) -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return validate_events(parse_body(raw, event_type), event_type, "web", RECEIVED, **kwargs)


VALID = {"type": "track", "event": "ok", "userId": "u", "messageId": "m-ok"}


def batch_with(bad_event_json: bytes) -> bytes:
    return b'{"batch":[' + json.dumps(VALID).encode() + b"," + bad_event_json + b"]}"


def nested(depth: int) -> bytes:
    """An event whose JSON nests `depth` containers, the event object included."""
    inner = b"1"
    for _ in range(depth - 1):
        inner = b'{"a":' + inner + b"}"
    return b'{"type":"track","event":"e","userId":"u","properties":' + inner + b"}"


@pytest.mark.parametrize(
    ("bad", "code", "field"),
    [
        (b'{"type":"track","event":"\xff\xfe","userId":"u"}', "invalid_utf8", None),
        (b'{"type":"track","event":"e","userId":"u","\xc3":1}', "invalid_utf8", None),
        (nested(MAX_JSON_DEPTH + 1), "nesting_too_deep", None),
        (b"7", "invalid_event", None),
        (
            b'{"type":"track","event":"e","userId":"u","timestamp":"9999-12-31T23:59:59-10:00"}',
            "invalid_event",
            "timestamp",
        ),
        (
            b'{"type":"track","event":"e","userId":"u","originalTimestamp":"0001-01-01T00:00:00+01:00"}',
            "invalid_event",
            "originalTimestamp",
        ),
        (
            b'{"type":"track","event":"e","userId":"u","sentAt":"9999-12-31T23:00:00-05:00"}',
            "invalid_event",
            "sentAt",
        ),
        (
            b'{"type":"track","event":"e","userId":"u","timestamp":"0001-01-01T00:00:00Z",'
            b'"sentAt":"9999-12-31T00:00:00Z"}',
            "invalid_event",
            "sentAt",
        ),
        (
            b'{"type":"track","event":"e","userId":"u","timestamp":"9999-12-31T00:00:00Z",'
            b'"sentAt":"0001-01-01T00:00:00Z"}',
            "invalid_event",
            "sentAt",
        ),
    ],
)
def test_event_level_problems_are_rejected_alone(bad: bytes, code: str, field: str | None) -> None:
    result = judged(batch_with(bad))
    assert [json.loads(r.data)["messageId"] for r in result.records] == ["m-ok"]
    (rejected,) = result.rejected
    assert (rejected.index, rejected.code, rejected.field) == (1, code, field)
    assert rejected.raw == bad  # kept byte for byte, for the quarantine
    assert "event 1" in rejected.reason


def test_nesting_at_the_limit_is_accepted() -> None:
    result = judged(batch_with(nested(MAX_JSON_DEPTH)))
    assert (len(result.records), result.rejected) == (2, [])


@pytest.mark.parametrize("body", [nested(1100), b'{"batch":[' + nested(1100) + b"]}"])
def test_nesting_past_the_decoders_bound_is_a_request_level_400(body: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_body(body, "track" if body.startswith(b'{"type"') else None)
    assert (caught.value.status, caught.value.code) == (400, "nesting_too_deep")


@pytest.mark.parametrize(
    "message_id",
    [" m1", "m1 ", "   ", "", "m\t1", "m\n1", "m\x00", "идентификатор", "m" * 101, "a\u00a0"],
)
def test_message_id_grammar(message_id: str) -> None:
    result = judged({"batch": [VALID, {**VALID, "messageId": message_id}]})
    (rejected,) = result.rejected
    assert (rejected.index, rejected.field) == (1, "messageId")
    assert rejected.message_id is None  # never used as a header when it breaks the grammar


@pytest.mark.parametrize("message_id", ["m", "ajs-next-0f3a", "a b", "m" * 100, "x:y/z@1"])
def test_message_ids_that_fit_the_grammar(message_id: str) -> None:
    (record,) = judged({"batch": [{**VALID, "messageId": message_id}]}).records
    assert record.message_id == message_id


def test_rejected_event_keeps_its_valid_message_id() -> None:
    result = judged({"batch": [{"type": "track", "userId": "u", "messageId": "m-7"}]})
    assert result.rejected[0].message_id == "m-7"


@pytest.mark.parametrize(
    "body",
    [
        b'{"event":"\xff","userId":"u"}',
        b'{"event":"e"',
        b"[1]",
        b'"text"',
    ],
)
def test_unreadable_single_event_body_is_request_level(body: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_body(body, "track")
    assert caught.value.status == 400


def test_single_event_path_with_an_invalid_event_is_event_level() -> None:
    result = judged({"userId": "u"}, "track")
    assert result.records == []
    assert (result.rejected[0].index, result.rejected[0].field) == (0, "event")


def test_bad_batch_sent_at_is_request_level() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_body(b'{"batch":[],"sentAt":"9999-12-31T23:59:59-10:00"}', None)
    assert (caught.value.status, caught.value.field) == (400, "sentAt")


# --- normalisation of what real clients send -------------------------------------------------


def test_rudderstack_identify_traits_in_context_are_copied_to_traits() -> None:
    (event,) = enrich({"userId": "u", "context": {"traits": {"email": "a@b.c"}}}, "identify")
    assert event["traits"] == {"email": "a@b.c"}
    assert event["context"]["traits"] == {"email": "a@b.c"}


def test_identify_traits_win_over_context_traits() -> None:
    (event,) = enrich(
        {"userId": "u", "traits": {"plan": "pro"}, "context": {"traits": {"plan": "free"}}},
        "identify",
    )
    assert event["traits"] == {"plan": "pro"}


def test_context_traits_are_not_copied_for_other_types() -> None:
    (event,) = enrich({"userId": "u", "event": "e", "context": {"traits": {"a": 1}}}, "track")
    assert "traits" not in event


def ip_of(body: dict[str, Any], **kwargs: Any) -> Any:
    (record,) = judged({"batch": [body]}, **kwargs).records
    return json.loads(record.data).get("context", {}).get("ip", "absent")


def test_context_ip_is_filled_from_the_client_address_when_absent() -> None:
    assert ip_of(VALID, client_ip="203.0.113.9") == "203.0.113.9"
    assert ip_of({**VALID, "context": {"ip": None}}, client_ip="203.0.113.9") == "203.0.113.9"
    assert ip_of({**VALID, "context": {"ip": "198.51.100.1"}}, client_ip="203.0.113.9") == (
        "198.51.100.1"  # a server-side SDK forwarding its end user's address keeps it
    )
    assert ip_of(VALID) == "absent"


def test_ip_collection_off_keeps_no_address_at_all() -> None:
    sent = {**VALID, "context": {"ip": "198.51.100.1", "locale": "de"}}
    assert ip_of(sent, client_ip="203.0.113.9", collect_ip=False) == "absent"
    assert ip_of(VALID, client_ip="203.0.113.9", collect_ip=False) == "absent"
    (record,) = judged({"batch": [sent]}, client_ip="1.2.3.4", collect_ip=False).records
    assert json.loads(record.data)["context"] == {"locale": "de"}


def test_a_rejected_event_keeps_no_write_key() -> None:
    result = judged({"userId": "u", "writeKey": "web-key-1", "properties": {"a": 1}}, "track")
    (rejected,) = result.rejected
    assert json.loads(rejected.raw) == {"userId": "u", "properties": {"a": 1}}
    assert b"web-key-1" not in rejected.raw


@pytest.mark.parametrize("inner", [b"[]", b"{}", b'{"a":[{"b":[]}]}'])
def test_depth_counts_every_container_kind(inner: bytes) -> None:
    # Alternating objects and arrays, exactly at the limit and one past it.
    def alternating(depth: int) -> bytes:
        body = b"1"
        for level in range(depth - 1):
            body = b"[" + body + b"]" if level % 2 else b'{"k":' + body + b"}"
        return b'{"type":"track","event":"e","userId":"u","p":' + body + b"}"

    assert judged(batch_with(alternating(MAX_JSON_DEPTH))).rejected == []
    (rejected,) = judged(batch_with(alternating(MAX_JSON_DEPTH + 1))).rejected
    assert rejected.code == "nesting_too_deep"
    # Brackets inside strings do not count.
    quoted = b'{"type":"track","event":"' + b"[" * 100 + b'","userId":"u","p":' + inner + b"}"
    assert judged(batch_with(quoted)).rejected == []
