"""Parse and validate Segment HTTP Tracking API bodies, and turn them into stream records.

Limits follow Segment's documentation: 32 KiB per event (its raw JSON), 500 KiB per request
(after gzip decoding), at most 2500 events per batch.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from services.events import SCHEMA_VERSION, StreamRecord, format_timestamp

MAX_EVENT_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
KINESIS_MAX_PARTITION_KEY = 256


class InvalidInput(Exception):
    """A client error: maps to a 4xx answer naming the problem; nothing of the request is sent."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        index: int | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.index = index
        self.field = field

    def as_json(self) -> dict[str, Any]:
        # Flat, with top-level "code" and "message": the shape Segment SDKs read errors from.
        answer: dict[str, Any] = {"success": False, "code": self.code, "message": self.message}
        if self.index is not None:
            answer["index"] = self.index
        if self.field is not None:
            answer["field"] = self.field
        return answer


# --- the validation schema: only the fields we check; everything else passes through untouched.

Identifier = str | int
NonEmptyText = Annotated[str, msgspec.Meta(min_length=1)]
# messageId travels as a NATS header value: bounded, and no line breaks.
MessageId = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[^\r\n]+$")]
JsonObject = dict[str, Any]


class _Event(msgspec.Struct, tag_field="type", kw_only=True):
    userId: Identifier | None = None
    anonymousId: Identifier | None = None
    messageId: MessageId | None = None
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


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """A request body decoded enough to authenticate it: events still raw JSON."""

    raw_events: list[bytes]
    write_key: str | None
    sent_at: datetime | None
    sent_at_text: str | None
    batch_context: JsonObject | None
    batch_integrations: JsonObject | None


def parse_body(body: bytes, event_type: str | None) -> ParsedBody:
    """Decode the envelope: ``event_type`` None means ``/v1/batch``, else a single-event path."""
    if len(body) > MAX_REQUEST_BYTES:
        raise InvalidInput(
            413,
            "request_too_large",
            f"request body is {len(body)} bytes; the limit is {MAX_REQUEST_BYTES} bytes",
        )
    if event_type is not None:
        write_key = _peek_write_key(body)
        return ParsedBody([body], write_key, None, None, None, None)
    try:
        envelope = _batch_decoder.decode(body)
    except msgspec.ValidationError as error:
        raise _validation_error(error, None) from None
    except msgspec.DecodeError as error:
        raise InvalidInput(400, "malformed_json", f"request body: {error}") from None
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
            sent_at = msgspec.convert(envelope.sentAt, datetime)
        except msgspec.ValidationError as error:
            raise InvalidInput(
                400, "invalid_event", f"request: field `sentAt`: {error}", field="sentAt"
            ) from None
    return ParsedBody(
        [bytes(raw) for raw in envelope.batch],
        envelope.writeKey,
        sent_at,
        envelope.sentAt,
        envelope.context,
        envelope.integrations,
    )


class _WriteKeyOnly(msgspec.Struct):
    writeKey: str | None = None


_write_key_decoder = msgspec.json.Decoder(_WriteKeyOnly)


def _peek_write_key(body: bytes) -> str | None:
    try:
        return _write_key_decoder.decode(body).writeKey
    except msgspec.ValidationError:
        return None
    except msgspec.DecodeError as error:
        raise InvalidInput(400, "malformed_json", f"request body: {error}") from None


def _as_key(identifier: Identifier | None) -> str:
    if identifier is None:
        return ""
    return identifier if isinstance(identifier, str) else str(identifier)


def _partition_key(identity: str) -> str:
    if len(identity) <= KINESIS_MAX_PARTITION_KEY:
        return identity
    return hashlib.sha256(identity.encode()).hexdigest()


def _merge(batch_level: JsonObject | None, event_level: Any) -> Any:
    if not batch_level:
        return event_level
    if event_level is None:
        return dict(batch_level)
    return {**batch_level, **event_level}


def build_records(
    parsed: ParsedBody,
    event_type: str | None,
    source: str,
    received_at: datetime,
) -> list[StreamRecord]:
    """Validate every event and build its stream record; the first bad event raises."""
    received_text = format_timestamp(received_at)
    records: list[StreamRecord] = []
    for index, raw in enumerate(parsed.raw_events):
        if len(raw) > MAX_EVENT_BYTES:
            raise InvalidInput(
                400,
                "event_too_large",
                f"event {index} is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES} bytes",
                index=index,
            )
        records.append(
            _build_record(parsed, raw, index, event_type, source, received_at, received_text)
        )
    return records


def _build_record(
    parsed: ParsedBody,
    raw: bytes,
    index: int,
    event_type: str | None,
    source: str,
    received_at: datetime,
    received_text: str,
) -> StreamRecord:
    # Batch events are validated straight from their JSON (2-3x faster than converting the
    # decoded dict); single-event bodies take the type from the path, so they go through a dict.
    try:
        if event_type is None:
            event = _event_decoder.decode(raw)
            document = _json_decoder.decode(raw)
        else:
            document = _json_decoder.decode(raw)
            if not isinstance(document, dict):
                raise InvalidInput(
                    400, "invalid_event", f"event {index}: expected a JSON object", index=index
                )
            document["type"] = event_type
            event = msgspec.convert(document, _AnyEvent)
    except msgspec.ValidationError as error:
        raise _validation_error(error, index) from None
    except msgspec.DecodeError as error:
        raise InvalidInput(400, "malformed_json", f"event {index}: {error}", index=index) from None

    user_id = _as_key(event.userId)
    identity = user_id or _as_key(event.anonymousId)
    if not identity:
        raise InvalidInput(
            400,
            "missing_identity",
            f"event {index}: `userId` or `anonymousId` is required",
            index=index,
            field="userId",
        )
    if isinstance(event, _Alias):
        if not user_id:
            raise _missing(index, "userId", "alias")
        if not _as_key(event.previousId):
            raise _missing(index, "previousId", "alias")
    elif isinstance(event, _Group) and not _as_key(event.groupId):
        raise _missing(index, "groupId", "group")

    document.pop("writeKey", None)
    message_id = event.messageId or str(uuid.uuid4())
    document["messageId"] = message_id

    client_time = event.timestamp or event.originalTimestamp
    if client_time is not None:
        if document.get("originalTimestamp") is None:
            document["originalTimestamp"] = document["timestamp"]
        sent_at = event.sentAt or parsed.sent_at
        if sent_at is not None:
            skew = _aware(sent_at) - _aware(client_time)
            document["timestamp"] = format_timestamp(received_at - skew)
        else:
            document["timestamp"] = format_timestamp(client_time)
    else:
        document["timestamp"] = received_text
    if event.sentAt is None and parsed.sent_at_text is not None:
        document["sentAt"] = parsed.sent_at_text
    document["receivedAt"] = received_text

    if parsed.batch_context:
        document["context"] = _merge(parsed.batch_context, document.get("context"))
    if parsed.batch_integrations:
        document["integrations"] = _merge(parsed.batch_integrations, document.get("integrations"))
    document["liftoff"] = {"source": source, "schema": SCHEMA_VERSION}

    return StreamRecord(
        message_id=message_id,
        source=source,
        type=document["type"],
        partition_key=_partition_key(identity),
        data=_json_encoder.encode(document),
    )


def _missing(index: int, field: str, event_type: str) -> InvalidInput:
    return InvalidInput(
        400,
        "invalid_event",
        f"event {index}: field `{field}`: required and non-empty for `{event_type}` events",
        index=index,
        field=field,
    )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
