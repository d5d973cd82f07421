"""Segment events into stream records, one event at a time: each valid event's record
(identity, timestamps, context merged and enriched), a :class:`Rejected` with the reason for
each invalid one, and the bound on what one request may publish. The request itself is parsed
by :mod:`services.events.segment`."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from services.events.limits import (
    KINESIS_MAX_PARTITION_KEY,
    MAX_EVENT_BYTES,
    MAX_PUBLISHED_EVENT_BYTES,
    MESSAGE_ID,
    PUBLISHED_BYTES_PER_BODY_BYTE,
    PUBLISHED_BYTES_PER_EVENT,
    InvalidInput,
)
from services.events.model import SCHEMA_VERSION, StreamRecord, format_timestamp
from services.events.raw_json import without_write_key
from services.events.segment import (
    Identifier,
    JsonObject,
    ParsedBody,
    _Alias,
    _AnyEvent,
    _check_depth,
    _decode,
    _event_decoder,
    _Group,
    _Identify,
    _json_decoder,
    _json_encoder,
    _utc,
    _validation_error,
    published_bound,
)

# Every code a Rejected can carry (the 400s an event of a valid request can get): the
# collector starts its quarantine counter at 0 for each, so the first burst is an increase.
REJECTION_CODES = (
    "event_too_large",
    "invalid_event",
    "invalid_utf8",
    "malformed_json",
    "missing_identity",
    "nesting_too_deep",
    "number_out_of_range",
)


@dataclass(frozen=True, slots=True)
class Rejected:
    """One event refused for an event-level reason; ``raw`` is its JSON exactly as sent."""

    index: int
    code: str
    reason: str
    field: str | None
    raw: bytes
    """The event's JSON exactly as sent (without a ``writeKey`` it carried)."""
    message_id: str | None
    """The event's messageId when it had a valid one, else None."""

    def as_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"index": self.index, "code": self.code, "reason": self.reason}
        if self.field is not None:
            answer["field"] = self.field
        return answer


@dataclass(frozen=True, slots=True)
class Validated:
    records: list[StreamRecord]
    rejected: list[Rejected]


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
    """Every event's stream record; the first invalid event raises (for callers that need
    all-or-nothing, e.g. tests and benchmarks; the collector uses :func:`validate_events`)."""
    validated = validate_events(parsed, event_type, source, received_at)
    if validated.rejected:
        first = validated.rejected[0]
        raise InvalidInput(400, first.code, first.reason, index=first.index, field=first.field)
    return validated.records


def validate_events(
    parsed: ParsedBody,
    event_type: str | None,
    source: str,
    received_at: datetime,
    *,
    client_ip: str | None = None,
    collect_ip: bool = True,
) -> Validated:
    """Validate each event on its own: records for the valid ones, a :class:`Rejected` (with
    the reason) for each invalid one. ``client_ip`` fills ``context.ip`` when the event has
    none; with ``collect_ip`` false no IP is kept at all (a client-sent ``context.ip`` is
    removed too). Raises :class:`InvalidInput` (413) as soon as the events as published add
    up to more than :func:`published_bound`: nothing of such a request is published."""
    received_text = format_timestamp(received_at)
    records: list[StreamRecord] = []
    rejected: list[Rejected] = []
    ip = client_ip if collect_ip else None
    bound, published = published_bound(parsed), 0
    for index, raw in enumerate(parsed.raw_events):
        try:
            if len(raw) > MAX_EVENT_BYTES:
                raise InvalidInput(
                    400,
                    "event_too_large",
                    f"event {index} is {len(raw)} bytes; the limit is {MAX_EVENT_BYTES} bytes",
                    index=index,
                )
            record = _build_record(
                parsed, raw, index, event_type, source, received_at, received_text, ip, collect_ip
            )
        except InvalidInput as error:
            # What it would have published when that is what was too large; else what the
            # quarantine will hold.
            published += error.size if isinstance(error, _TooLargeAsPublished) else len(raw)
            rejected.append(_rejected(index, raw, error))
        else:
            published += len(record.data)
            records.append(record)
        if published > bound:
            raise _published_too_large(parsed, published, bound, index)
    return Validated(records, rejected)


class _TooLargeAsPublished(InvalidInput):
    def __init__(self, index: int, size: int) -> None:
        super().__init__(
            400,
            "event_too_large",
            f"event {index} is {size} bytes as published (with the batch's context merged and "
            f"the collector's fields added); the limit is {MAX_PUBLISHED_EVENT_BYTES} bytes",
            index=index,
        )
        self.size = size


def _published_too_large(
    parsed: ParsedBody, published: int, bound: int, index: int
) -> InvalidInput:
    merged = [name for name in ("context", "integrations") if getattr(parsed, f"batch_{name}")]
    return InvalidInput(
        413,
        "published_too_large",
        f"request: its events as published reach {published} bytes by event {index}, past the "
        f"limit of {bound} bytes ({PUBLISHED_BYTES_PER_BODY_BYTE} x the "
        f"{parsed.body_bytes or sum(map(len, parsed.raw_events))}-byte "
        f"body + {PUBLISHED_BYTES_PER_EVENT} per event): the batch's "
        f"{' and '.join(f'`{name}`' for name in merged) or 'fields'} "
        f"{'go' if len(merged) > 1 else 'goes'} into every event; send fewer events per "
        "request, or that context in the events themselves",
        field=merged[0] if merged else None,
    )


def _rejected(index: int, raw: bytes, error: InvalidInput) -> Rejected:
    return Rejected(
        index, error.code, error.message, error.field, without_write_key(raw), _message_id_of(raw)
    )


def _message_id_of(raw: bytes) -> str | None:
    """The messageId of an invalid event when it has a valid one (for the quarantine header)."""
    try:
        value = _message_id_decoder.decode(raw).messageId
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, str) and MESSAGE_ID.fullmatch(value) else None


class _MessageIdOnly(msgspec.Struct):
    messageId: Any = None


_message_id_decoder = msgspec.json.Decoder(_MessageIdOnly)


def _build_record(
    parsed: ParsedBody,
    raw: bytes,
    index: int,
    event_type: str | None,
    source: str,
    received_at: datetime,
    received_text: str,
    client_ip: str | None,
    collect_ip: bool,
) -> StreamRecord:
    event, document = _decoded_event(parsed, raw, index, event_type)
    _check_depth(raw, index)
    identity = _checked_identity(event, index)
    document.pop("writeKey", None)
    message_id = event.messageId or str(uuid.uuid4())
    document["messageId"] = message_id
    _set_times(document, event, parsed, index, received_at, received_text)
    _merge_and_enrich(document, event, parsed, source, client_ip, collect_ip)

    data = _json_encoder.encode(document)
    # The limits hold for what consumers receive, not only for what the client sent. Depth
    # needs no second look: merging puts a batch field one level down (refused at the request
    # level past MAX_JSON_DEPTH - 1), and the collector's own fields nest two levels.
    if len(data) > MAX_PUBLISHED_EVENT_BYTES:
        raise _TooLargeAsPublished(index, len(data))
    return StreamRecord(
        message_id=message_id,
        source=source,
        type=document["type"],
        partition_key=_partition_key(identity),
        data=data,
    )


def _decoded_event(
    parsed: ParsedBody, raw: bytes, index: int, event_type: str | None
) -> tuple[Any, JsonObject]:
    """(the validated fields, the whole event as a dict this event owns)."""
    # Batch events are validated straight from their JSON (2-3x faster than converting the
    # decoded dict); single-event bodies take the type from the path, so they go through a dict.
    if event_type is None:
        return _decode(_event_decoder, raw, index), _decode(_json_decoder, raw, index)
    if parsed.event_error is not None:
        raise parsed.event_error
    document = parsed.document if parsed.document is not None else {}
    document["type"] = event_type
    try:
        return msgspec.convert(document, _AnyEvent), document
    except msgspec.ValidationError as error:
        raise _validation_error(error, index) from None


def _checked_identity(event: Any, index: int) -> str:
    """The event's partition identity (userId, else anonymousId), once the identifiers its type
    requires and its messageId are checked."""
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
    if event.messageId is not None and not MESSAGE_ID.fullmatch(event.messageId):
        raise InvalidInput(
            400,
            "invalid_event",
            f"event {index}: field `messageId`: must be 1-100 printable ASCII characters "
            "without leading or trailing spaces (it is the dedupe key)",
            index=index,
            field="messageId",
        )
    return identity


def _set_times(
    document: JsonObject,
    event: Any,
    parsed: ParsedBody,
    index: int,
    received_at: datetime,
    received_text: str,
) -> None:
    """``timestamp`` corrected for client clock skew from ``sentAt``, ``originalTimestamp``,
    ``sentAt`` (the batch's when the event has none) and ``receivedAt``."""
    client_time = event.timestamp or event.originalTimestamp
    if client_time is not None:
        time_field = "timestamp" if event.timestamp is not None else "originalTimestamp"
        client_time = _utc(client_time, time_field, index)
        if event.originalTimestamp is not None and event.timestamp is not None:
            _utc(event.originalTimestamp, "originalTimestamp", index)
        if document.get("originalTimestamp") is None:
            document["originalTimestamp"] = document["timestamp"]
        sent_at = _utc(event.sentAt, "sentAt", index) if event.sentAt else parsed.sent_at
        if sent_at is not None:
            try:
                document["timestamp"] = format_timestamp(received_at - (sent_at - client_time))
            except OverflowError:
                raise InvalidInput(
                    400,
                    "invalid_event",
                    f"event {index}: field `sentAt`: the clock-skew correction "
                    f"receivedAt - (sentAt - {time_field}) falls outside years 1-9999",
                    index=index,
                    field="sentAt",
                ) from None
        else:
            document["timestamp"] = format_timestamp(client_time)
    else:
        if event.sentAt is not None:
            _utc(event.sentAt, "sentAt", index)
        document["timestamp"] = received_text
    if event.sentAt is None and parsed.sent_at_text is not None:
        document["sentAt"] = parsed.sent_at_text
    document["receivedAt"] = received_text


def _merge_and_enrich(
    document: JsonObject,
    event: Any,
    parsed: ParsedBody,
    source: str,
    client_ip: str | None,
    collect_ip: bool,
) -> None:
    """The batch's context and integrations merged in, ``context.ip``, identify ``traits`` from
    ``context.traits``, and ``liftoff``."""
    if parsed.batch_context:
        document["context"] = _merge(parsed.batch_context, document.get("context"))
    if parsed.batch_integrations:
        document["integrations"] = _merge(parsed.batch_integrations, document.get("integrations"))
    _set_client_ip(document, client_ip, collect_ip)
    if isinstance(event, _Identify) and event.traits is None:
        # RudderStack SDKs send identify traits only in context.traits; Segment's spec (and the
        # warehouse's traits column, Amplitude's identify) read them from traits.
        context_traits = (document.get("context") or {}).get("traits")
        if isinstance(context_traits, dict):
            document["traits"] = dict(context_traits)
    document["liftoff"] = {"source": source, "schema": SCHEMA_VERSION}


def _set_client_ip(document: JsonObject, client_ip: str | None, collect_ip: bool) -> None:
    # The context dict is this event's own (freshly decoded, or a merge copy): changed in place.
    context = document.get("context")
    if not collect_ip:
        if isinstance(context, dict):
            context.pop("ip", None)
        return
    if client_ip is None:
        return
    if context is None:
        document["context"] = {"ip": client_ip}
    elif isinstance(context, dict) and not context.get("ip"):
        context["ip"] = client_ip


def _missing(index: int, field: str, event_type: str) -> InvalidInput:
    return InvalidInput(
        400,
        "invalid_event",
        f"event {index}: field `{field}`: required and non-empty for `{event_type}` events",
        index=index,
        field=field,
    )
