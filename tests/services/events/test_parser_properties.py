"""Property: whatever a client sends, the parser answers a 4xx or accepts — never an exception.

The parser is everything between the request body and the stream records: gzip decoding,
the envelope, and each event's validation and enrichment. Hypothesis runs derandomized (the
same examples on every run, no example database) with a bounded number of examples.
"""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.collector.ingest import ROUTES, decode_content
from services.events.limits import MAX_JSON_DEPTH, MESSAGE_ID, InvalidInput
from services.events.records import validate_events
from services.events.segment import parse_body

# The documented bounds (README, "Hostile input and HTTP limits").
MAX_PUBLISHED_EVENT_BYTES = 64 * 1024
PUBLISHED_BYTES_PER_BODY_BYTE = 4
PUBLISHED_BYTES_PER_EVENT = 512

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PROPERTY = settings(
    derandomize=True,
    database=None,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
timestamps = (
    st.datetimes(timezones=offsets | st.none()).map(lambda d: d.isoformat())
    | st.sampled_from(
        [
            "9999-12-31T23:59:59-10:00",
            "0001-01-01T00:00:00+14:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01",
            "",
        ]
    )
    | st.text(max_size=30)
)
identifiers = st.text(max_size=10) | st.integers() | st.none()
events = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["track", "identify", "page", "screen", "group", "alias", "x"]),
        "event": st.text(max_size=10) | json_values,
        "userId": identifiers,
        "anonymousId": identifiers,
        "groupId": identifiers,
        "previousId": identifiers,
        "messageId": st.text(max_size=12) | st.from_regex(MESSAGE_ID, fullmatch=True) | json_values,
        "timestamp": timestamps,
        "originalTimestamp": timestamps,
        "sentAt": timestamps,
        "context": json_values
        | st.fixed_dictionaries({}, optional={"ip": json_values, "traits": json_values}),
        "traits": json_values,
        "properties": json_values,
        "integrations": json_values,
        "writeKey": json_values,
    },
)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


# What a hostile client puts in the batch-level fields merged into every event: deep, large,
# not an object, or numbers no float holds (spliced in as text: json.dumps cannot write them).
OUT_OF_RANGE = 123456789.5
hostile_values = st.sampled_from(
    [
        nested(MAX_JSON_DEPTH - 1),
        nested(MAX_JSON_DEPTH),
        {"blob": "x" * 20_000},
        {"blob": "x" * 40_000},
        {"a": [OUT_OF_RANGE]},
        [],
        "text",
        None,
    ]
)
batch_fields = st.fixed_dictionaries(
    {},
    optional={
        "sentAt": timestamps | hostile_values,
        "context": json_values | hostile_values,
        "integrations": json_values | hostile_values,
        "writeKey": json_values | hostile_values,
    },
)


def mangle(body: bytes, position: int, junk: bytes) -> bytes:
    """Insert bytes (often invalid UTF-8 or JSON-breaking) somewhere in a valid body."""
    position = position % (len(body) + 1)
    return body[:position] + junk + body[position:]


def parse(body: bytes, route: str, content_encoding: str = "") -> int:
    """The parser end to end; returns 200 or the 4xx status. Anything else raised fails."""
    event_type = ROUTES[route]
    try:
        decoded = decode_content(body, content_encoding)
        parsed = parse_body(decoded, event_type)
        result = validate_events(parsed, event_type, "web", RECEIVED, client_ip="192.0.2.1")
    except InvalidInput as error:
        assert 400 <= error.status < 500, error.status
        assert error.as_json()["message"]
        return error.status
    for record in result.records:
        document = json.loads(record.data)  # valid UTF-8 JSON, always
        assert document["messageId"] == record.message_id
        assert MESSAGE_ID.fullmatch(record.message_id) or len(record.message_id) == 36
        assert document["timestamp"].endswith("Z")
        # The limits hold for the event as published, batch fields merged.
        assert len(record.data) <= MAX_PUBLISHED_EVENT_BYTES
        assert depth(document) <= MAX_JSON_DEPTH
    for rejected in result.rejected:
        assert rejected.reason and 0 <= rejected.index < len(parsed.raw_events)
    assert len(result.records) + len(result.rejected) == len(parsed.raw_events)
    published = sum(len(record.data) for record in result.records)
    assert published <= PUBLISHED_BYTES_PER_BODY_BYTE * len(
        decoded
    ) + PUBLISHED_BYTES_PER_EVENT * len(parsed.raw_events)
    return 200


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


@PROPERTY
@given(
    batch=st.lists(events, max_size=6)
    | st.sampled_from([[{"type": "identify", "userId": "u"}] * 300]),
    envelope=batch_fields,
    junk=st.none() | st.binary(max_size=4) | st.sampled_from([b"\xff", b"\xc3", b"[" * 1200]),
    position=st.integers(min_value=0),
    gzipped=st.booleans(),
)
def test_batches_get_4xx_or_accepted(
    batch: list[dict[str, Any]],
    envelope: dict[str, Any],
    junk: bytes | None,
    position: int,
    gzipped: bool,
) -> None:
    body = json.dumps({**envelope, "batch": batch}).encode()
    body = body.replace(str(OUT_OF_RANGE).encode(), b"1e999")
    if junk is not None:
        body = mangle(body, position, junk)
    parse(gzip.compress(body) if gzipped else body, "/v1/batch", "gzip" if gzipped else "")


@PROPERTY
@given(
    event=events,
    route=st.sampled_from(sorted(r for r, t in ROUTES.items() if t is not None)),
    junk=st.none() | st.binary(max_size=4),
    position=st.integers(min_value=0),
)
def test_single_events_get_4xx_or_accepted(
    event: dict[str, Any], route: str, junk: bytes | None, position: int
) -> None:
    body = json.dumps(event).encode()
    parse(mangle(body, position, junk) if junk is not None else body, route)


@PROPERTY
@given(
    body=st.binary(max_size=300),
    route=st.sampled_from(sorted(ROUTES)),
    encoding=st.sampled_from(["", "gzip", "br", "identity"]),
)
def test_arbitrary_bytes_get_4xx_or_accepted(body: bytes, route: str, encoding: str) -> None:
    parse(body, route, encoding)


def spelled(name: str, escaped: list[bool]) -> str:
    """`name` as a JSON string, each character escaped as \\uXXXX where `escaped` says so."""
    return (
        '"'
        + "".join(
            f"\\u{ord(c):04x}" if escaped[i % len(escaped)] else c for i, c in enumerate(name)
        )
        + '"'
    )


@PROPERTY
@given(
    members=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in ("writeKey", "type")), json_values, max_size=5
    ),
    key=st.text(min_size=1, max_size=20),
    escaped=st.lists(st.booleans(), min_size=1, max_size=8),
    position=st.integers(min_value=0),
    space=st.sampled_from(["", " ", "\n  ", "\t"]),
    junk=st.sampled_from([b"", b"\xff", b"\xc3"]),
)
def test_the_quarantine_never_keeps_a_write_key_whatever_its_spelling(
    members: dict[str, Any],
    key: str,
    escaped: list[bool],
    position: int,
    space: str,
    junk: bytes,
) -> None:
    # An invalid event (no userId) carrying the key: what the quarantine would store.
    texts = [f"{json.dumps(k)}{space}:{space}{json.dumps(v)}" for k, v in members.items()]
    texts.insert(position % (len(texts) + 1), f"{spelled('writeKey', escaped)}:{json.dumps(key)}")
    raw = ("{" + space + f",{space}".join(texts) + space + "}").encode()
    raw = raw[:-1] + (b',"bad":"' + junk + b'"}' if junk else b"}")  # not UTF-8 sometimes
    body = b'{"batch":[' + raw + b"]}"
    result = validate_events(parse_body(body, None), None, "web", RECEIVED)
    (rejected,) = result.rejected
    kept = rejected.raw.decode("utf-8", "surrogateescape")
    document = json.loads(kept)
    assert "writeKey" not in document
    expected = {**members, **({"bad": junk.decode("utf-8", "surrogateescape")} if junk else {})}
    assert document == expected
