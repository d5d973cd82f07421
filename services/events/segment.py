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
(one event of a readable request breaks a rule) is returned by :func:`validate_events` as a
:class:`Rejected` next to the valid events' records, so the caller can quarantine it and still
accept its neighbours.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import accumulate
from typing import Annotated, Any

import msgspec

from services.events.model import SCHEMA_VERSION, StreamRecord, format_timestamp

MAX_EVENT_BYTES = 32 * 1024
MAX_REQUEST_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500
KINESIS_MAX_PARTITION_KEY = 256
MAX_JSON_DEPTH = 64
"""Containers (objects/arrays) nested inside one event, the event object itself being level 1.
Deeper input past ~1000 levels is refused at the request level (the decoder's recursion bound)."""
MAX_PUBLISHED_EVENT_BYTES = 2 * MAX_EVENT_BYTES
"""An event as published: its 32 KiB as sent, plus room for the batch's context merged into it,
the fields the collector adds (messageId, timestamps, receivedAt, context.ip, liftoff: ~0.4 KB)
and identify ``traits`` copied from ``context.traits`` (RudderStack)."""
PUBLISHED_BYTES_PER_BODY_BYTE = 4
PUBLISHED_BYTES_PER_EVENT = 512
"""With PUBLISHED_BYTES_PER_BODY_BYTE, what one request may put on the stream
(:func:`published_bound`): the fields the collector adds cost up to ~0.4 KB an event (a batch
of 2500 minimal events grows ~7x), and a batch context repeated in every event may add up to
3x the body. Past it the request is refused (413) and nothing is published."""
MESSAGE_ID = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]{0,98}[\x21-\x7e])?")
"""1-100 printable ASCII characters, no leading or trailing space: the messageId travels as the
``Nats-Msg-Id`` header, whose value NATS trims and reads as printable ASCII (ADR-4), so ``" m1"``
and ``"m1"`` would silently deduplicate into one event and ``" "`` would never deduplicate."""


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
            for member in _top_level_members(raw)
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


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# +1 for an opening bracket, -1 for a closing one (indexed by byte value).
_DEPTH_STEP = tuple(1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256))


def _nested_deeper_than(raw: bytes, limit: int) -> bool:
    """Is this JSON (known to decode) nested deeper than ``limit``? Strings removed, then the
    running bracket count, all in C (map/accumulate over bytes), a fraction of a Python walk
    of the decoded value."""
    # Fewer brackets than the limit cannot nest past it: nothing to do for ordinary events.
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > limit


def _check_depth(raw: bytes, index: int) -> None:
    """Refuse an event nested deeper than MAX_JSON_DEPTH."""
    if _nested_deeper_than(raw, MAX_JSON_DEPTH):
        raise InvalidInput(
            400,
            "nesting_too_deep",
            f"event {index}: JSON nested deeper than {MAX_JSON_DEPTH} levels",
            index=index,
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
    if _nested_deeper_than(encoded, MAX_JSON_DEPTH - 1):
        raise InvalidInput(
            400,
            "nesting_too_deep",
            f"request: field `{name}`: JSON nested deeper than {MAX_JSON_DEPTH - 1} levels "
            f"(merged into every event, it would nest past {MAX_JSON_DEPTH})",
            field=name,
        )


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
        index, error.code, error.message, error.field, _without_write_key(raw), _message_id_of(raw)
    )


def _without_write_key(raw: bytes) -> bytes:
    """The event as sent, minus its top-level ``writeKey`` (a credential, kept out of the
    quarantine as out of the stream), whatever its spelling on the wire: ``"write\\u004bey"``
    is the same member to a JSON reader, and the event's bytes need not be UTF-8. Everything
    else is kept byte for byte. ``raw`` is syntactically JSON (the envelope's decoder checked
    it), so a scan of its top-level members suffices; it never recurses, however deep."""
    if b"writeKey" not in raw and b"\\u" not in raw:
        return raw  # no spelling of the name is possible
    members = _top_level_members(raw)
    if not members:
        return raw
    kept = [i for i, (start, end, _) in enumerate(members) if not _is_write_key(raw[start:end])]
    if len(kept) == len(members):
        return raw
    parts = [raw[: members[0][0]]]
    for position, i in enumerate(kept):
        if position:  # the separator that preceded this member as sent
            parts.append(raw[members[i - 1][2] : members[i][0]])
        parts.append(raw[members[i][0] : members[i][2]])
    parts.append(raw[members[-1][2] :])
    return b"".join(parts)


_WHITESPACE = re.compile(rb"[ \t\r\n]*")
_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
"""A string (skipped whole) or a bracket: what matters inside a container value."""
_SCALAR_END = re.compile(rb"[ \t\r\n,}\]]")


def _skip_whitespace(raw: bytes, at: int) -> int:
    return _WHITESPACE.match(raw, at).end()  # type: ignore[union-attr]


_MEMBER = re.compile(
    rb'[ \t\r\n]*("(?:[^"\\]|\\.)*")[ \t\r\n]*:[ \t\r\n]*'
    rb'(?:"(?:[^"\\]|\\.)*"|[^ \t\r\n"\[\]{},:]+|([\[{]))',
    re.DOTALL,
)
"""One member, name and value, in one C-level match; a container value only starts here."""
_AFTER_MEMBER = re.compile(rb"[ \t\r\n]*(,|})")


def _top_level_members(raw: bytes) -> list[tuple[int, int, int]]:
    """(name start, name end, value end) of each member of a top-level object; [] otherwise."""
    members: list[tuple[int, int, int]] = []
    at = _skip_whitespace(raw, 0)
    if raw[at : at + 1] != b"{":
        return []
    if (empty := _AFTER_MEMBER.match(raw, at + 1)) and empty.group(1) == b"}":
        return []
    at += 1
    while True:
        member = _MEMBER.match(raw, at)
        if member is None:
            return []
        value_end = _value_end(raw, member.start(2)) if member.group(2) else member.end()
        members.append((member.start(1), member.end(1), value_end))
        after = _AFTER_MEMBER.match(raw, value_end)
        if after is None or after.group(1) == b"}":
            return members
        at = after.end()


def _value_end(raw: bytes, at: int) -> int:
    """Where the JSON value starting at ``at`` ends (regex scans in C: strings skipped whole,
    brackets counted)."""
    first = raw[at : at + 1]
    if first == b'"':
        match = _JSON_STRING.match(raw, at)
        return match.end() if match else len(raw)
    if first not in (b"{", b"["):
        end = _SCALAR_END.search(raw, at)
        return end.start() if end else len(raw)
    depth = 0
    for token in _STRUCTURE.finditer(raw, at):
        bracket = token.group()
        if bracket in (b"{", b"["):
            depth += 1
        elif bracket in (b"}", b"]"):
            depth -= 1
            if depth == 0:
                return token.end()
    return len(raw)


def _is_write_key(name: bytes) -> bool:
    """Is this JSON string token (quotes included) the name ``writeKey``, however spelled?"""
    if b"\\" not in name:  # no escape: the name is its bytes
        return name == b'"writeKey"'
    # Bytes that are not UTF-8 become lone surrogates: such a name is never "writeKey".
    try:
        return json.loads(name.decode("utf-8", "surrogateescape")) == "writeKey"
    except ValueError:
        return False


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
