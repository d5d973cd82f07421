"""Parse and validate Segment HTTP Tracking API bodies, and turn them into stream records.

Limits follow Segment's documentation: 32 KiB per event (its raw JSON), 500 KiB per request
(after gzip decoding), at most 2500 events per batch. Beyond Segment's: JSON nested at most
``MAX_JSON_DEPTH`` levels inside an event, every timestamp within the calendar once converted to
UTC (and after clock-skew correction), and a ``messageId`` grammar (see ``MESSAGE_ID``).

The limits hold for the event *as published*, not only as sent: the batch's ``context`` and
``integrations`` are merged into every event, so each is refused at the request level past 32
KiB or ``MAX_JSON_DEPTH - 1`` levels, an event over ``MAX_PUBLISHED_EVENT_BYTES`` or
``MAX_JSON_DEPTH`` once merged and enriched is quarantined, and a request may put on the
stream at most ``PUBLISHED_BYTES_PER_BODY_BYTE`` times its body plus
``PUBLISHED_BYTES_PER_EVENT`` per event (:func:`published_bound`): one 500 KB request used to
publish ~420 MB by repeating a large batch context in a thousand events.

Two kinds of problem: a *request-level* one (body not JSON, not UTF-8, not an object/batch,
too large, ...) raises :class:`InvalidInput` and nothing is published; an *event-level* one
(one event of a readable request breaks a rule) is returned by
:func:`services.events.records.validate_events` as a :class:`~services.events.records.Rejected`
next to the valid events' records, so the caller can quarantine it and still
accept its neighbours.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from services.events.limits import (
    MAX_BATCH_EVENTS,
    MAX_EVENT_BYTES,
    MAX_JSON_DEPTH,
    MAX_REQUEST_BYTES,
    PUBLISHED_BYTES_PER_BODY_BYTE,
    PUBLISHED_BYTES_PER_EVENT,
    InvalidInput,
)
from services.events.raw_json import nested_deeper_than, top_level_members

# --- the validation schema: only the fields we check; everything else passes through untouched.

Identifier = str | int
NonEmptyText = Annotated[str, msgspec.Meta(min_length=1)]
JsonObject = dict[str, Any]


class _Event(msgspec.Struct, tag_field="type", kw_only=True):
    userId: Identifier | None = None
    anonymousId: Identifier | None = None
    messageId: str | None = None
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    context: JsonObject | None = None
    integrations: JsonObject | None = None


class _Track(_Event, tag="track"):
    event: NonEmptyText
    properties: JsonObject | None = None


class _Identify(_Event, tag="identify"):
    traits: JsonObject | None = None


class _Page(_Event, tag="page"):
    name: str | None = None
    properties: JsonObject | None = None


class _Screen(_Event, tag="screen"):
    name: str | None = None
    properties: JsonObject | None = None


class _Group(_Event, tag="group"):
    groupId: Identifier
    traits: JsonObject | None = None


class _Alias(_Event, tag="alias"):
    previousId: Identifier


_AnyEvent = _Track | _Identify | _Page | _Screen | _Group | _Alias


class _Batch(msgspec.Struct):
    batch: list[msgspec.Raw]
    sentAt: str | None = None
    writeKey: str | None = None
    context: JsonObject | None = None
    integrations: JsonObject | None = None


_json_decoder = msgspec.json.Decoder()
_event_decoder = msgspec.json.Decoder(_AnyEvent)
_batch_decoder = msgspec.json.Decoder(_Batch)
_json_encoder = msgspec.json.Encoder()

_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def _validation_error(error: msgspec.ValidationError, index: int | None) -> InvalidInput:
    text = str(error)
    field = None
    if found := _MISSING_FIELD.search(text):
        field = found.group(1)
    at = _AT_PATH.search(text)
    if at:
        path = at.group(1)
        field = f"{path}.{field}" if field and path else (field or path or None)
        text = text[: at.start()]
    where = f"event {index}" if index is not None else "request"
    detail = f"{where}: field `{field}`: {text}" if field else f"{where}: {text}"
    return InvalidInput(400, "invalid_event", detail, index=index, field=field)


def _decode(decoder: Any, raw: bytes, index: int | None) -> Any:
    """Decode with every decoder failure mapped to a 400 naming the event (or the request)."""
    where = f"event {index}" if index is not None else "request body"
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as error:
        if str(error).startswith(_OUT_OF_RANGE):
            raise _number_out_of_range(raw, index) from None
        raise _validation_error(error, index) from None
    except msgspec.DecodeError as error:
        raise InvalidInput(400, "malformed_json", f"{where}: {error}", index=index) from None
    except UnicodeDecodeError as error:
        raise InvalidInput(
            400, "invalid_utf8", f"{where}: not valid UTF-8 ({error.reason})", index=index
        ) from None
    except RecursionError:
        raise InvalidInput(
            400, "nesting_too_deep", f"{where}: JSON nested too deeply", index=index
        ) from None


_OUT_OF_RANGE = "Number out of range"
_float_text_decoder = msgspec.json.Decoder(float_hook=str)
"""Decodes what the plain decoder refuses as out of range: each float kept as its text."""


class NumberOutOfRange(InvalidInput):
    """JSON that is well formed but holds a number no 64-bit float can hold (``1e999``): the
    event cannot be published as it is, but the body was readable (an event-level problem)."""


def _number_out_of_range(raw: bytes, index: int | None) -> NumberOutOfRange:
    # msgspec's path names no object key ("$[...]"): the top-level member holding the number
    # is the field, found the same way whichever decoder met it.
    field = next(
        (
            json.loads(raw[member[0] : member[1]].decode("utf-8", "surrogateescape"))
            for member in top_level_members(raw)
            if _out_of_range(raw[member[1] : member[2]].partition(b":")[2])
        ),
        None,
    )
    where = f"event {index}" if index is not None else "request body"
    detail = f"{where}: field `{field}`: " if field else f"{where}: "
    return NumberOutOfRange(
        400,
        "number_out_of_range",
        detail + "a number is outside what a 64-bit float holds (about +-1.8e308)",
        index=index,
        field=field,
    )


def _out_of_range(value: bytes) -> bool:
    try:
        _json_decoder.decode(value)
    except msgspec.ValidationError:
        return True
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return False
    return False


def _check_depth(raw: bytes, index: int) -> None:
    """Refuse an event nested deeper than MAX_JSON_DEPTH."""
    if nested_deeper_than(raw, MAX_JSON_DEPTH):
        raise InvalidInput(
            400,
            "nesting_too_deep",
            f"event {index}: JSON nested deeper than {MAX_JSON_DEPTH} levels",
            index=index,
        )


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """A request body decoded enough to authenticate it: events still raw JSON."""

    raw_events: list[bytes]
    write_key: str | None
    sent_at: datetime | None
    sent_at_text: str | None
    batch_context: JsonObject | None
    batch_integrations: JsonObject | None
    document: JsonObject | None = None
    """Single-event paths: the body already decoded (it had to be, to find the write key)."""
    body_bytes: int | None = None
    """The decoded body's size: what bounds the bytes the request may publish (None: the
    events' own sizes, e.g. one event replayed from the quarantine)."""
    event_error: InvalidInput | None = None
    """Single-event paths: why the event, readable enough to authenticate, cannot be published."""


def published_bound(parsed: ParsedBody) -> int:
    """The most bytes the events of one request may add up to as published."""
    body = parsed.body_bytes
    if body is None:
        body = sum(map(len, parsed.raw_events))
    return PUBLISHED_BYTES_PER_BODY_BYTE * body + PUBLISHED_BYTES_PER_EVENT * len(parsed.raw_events)


def parse_body(body: bytes, event_type: str | None) -> ParsedBody:
    """Decode the envelope: ``event_type`` None means ``/v1/batch``, else a single-event path."""
    if len(body) > MAX_REQUEST_BYTES:
        raise InvalidInput(
            413,
            "request_too_large",
            f"request body is {len(body)} bytes; the limit is {MAX_REQUEST_BYTES} bytes",
        )
    if event_type is not None:
        return _parse_single(body)
    envelope = _decode(_batch_decoder, body, None)
    if len(envelope.batch) > MAX_BATCH_EVENTS:
        raise InvalidInput(
            400,
            "too_many_events",
            f"batch has {len(envelope.batch)} events; the limit is {MAX_BATCH_EVENTS}",
            field="batch",
        )
    sent_at = None
    if envelope.sentAt is not None:
        try:
            sent_at = _utc(msgspec.convert(envelope.sentAt, datetime), "sentAt", None)
        except msgspec.ValidationError as error:
            raise InvalidInput(
                400, "invalid_event", f"request: field `sentAt`: {error}", field="sentAt"
            ) from None
    _check_batch_field("context", envelope.context)
    _check_batch_field("integrations", envelope.integrations)
    return ParsedBody(
        [bytes(raw) for raw in envelope.batch],
        envelope.writeKey,
        sent_at,
        envelope.sentAt,
        envelope.context,
        envelope.integrations,
        body_bytes=len(body),
    )


def _parse_single(body: bytes) -> ParsedBody:
    event_error = None
    try:
        document = _decode(_json_decoder, body, None)
    except NumberOutOfRange:
        # Readable JSON, as in a batch, where such an event is quarantined: so here too (the
        # floats kept as text only to find the write key; the event is never published).
        document = _decode(_float_text_decoder, body, None)  # other faults: request-level
        event_error = _number_out_of_range(body, 0)
    if not isinstance(document, dict):
        raise InvalidInput(400, "invalid_event", "request body: expected a JSON object")
    write_key = document.get("writeKey")
    write_key = write_key if isinstance(write_key, str) else None
    return ParsedBody(
        [body], write_key, None, None, None, None, document, len(body), event_error=event_error
    )


def _check_batch_field(name: str, value: JsonObject | None) -> None:
    """The batch's ``context``/``integrations`` go into every event (one level down, under their
    own name): refused at the request level when no event could carry them."""
    if not value:
        return
    encoded = _json_encoder.encode(value)
    if len(encoded) > MAX_EVENT_BYTES:
        raise InvalidInput(
            413,
            "request_too_large",
            f"request: field `{name}`: {len(encoded)} bytes; the batch's `{name}` is merged "
            f"into every event, so it may be at most {MAX_EVENT_BYTES} bytes",
            field=name,
        )
    if nested_deeper_than(encoded, MAX_JSON_DEPTH - 1):
        raise InvalidInput(
            400,
            "nesting_too_deep",
            f"request: field `{name}`: JSON nested deeper than {MAX_JSON_DEPTH - 1} levels "
            f"(merged into every event, it would nest past {MAX_JSON_DEPTH})",
            field=name,
        )


def _utc(moment: datetime, field: str, index: int | None) -> datetime:
    """The instant in UTC; refuses what falls off the calendar (year 1..9999) on conversion."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        where = f"event {index}" if index is not None else "request"
        raise InvalidInput(
            400,
            "invalid_event",
            f"{where}: field `{field}`: {moment.isoformat()} is outside years 1-9999 in UTC",
            index=index,
            field=field,
        ) from None
