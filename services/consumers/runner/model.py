"""The stream-consumer framework: one sink, two runtimes (JetStream process, Kinesis Lambda).

How a consumer plugs in
-----------------------
Write a *sink*: an object with four async methods (see :class:`Sink`)::

    class MySink:
        async def start(self) -> None: ...          # open clients (called once)
        async def check_ready(self) -> None: ...    # raise SinkUnavailable if not usable
        async def handle(self, batch: Sequence[Delivery]) -> Sequence[Outcome]: ...
        async def close(self) -> None: ...

``handle`` receives a batch of :class:`Delivery` in stream order (each already decoded and
checked against the stream contract of :mod:`services.events.model`: ``delivery.message_id`` /
``.source`` / ``.type`` / ``.received_at`` are set, ``delivery.envelope`` holds the common
fields typed (:class:`Envelope`), and ``delivery.event`` is the whole JSON object, decoded on
first access) and returns one outcome per delivery, in the same order:

- :data:`DONE` — the output for this event is durable; the framework checkpoints it
  (JetStream ack / the record is not reported as a Lambda batch-item failure).
- :class:`Retry` ``(delay=..., reason=...)`` — try this event again later (JetStream ``nak`` with
  that delay, default exponential in ``delivery.attempts``; on Lambda the record is reported
  failed, so the event-source mapping retries it).
- :class:`Park` ``(reason)`` — this event can never succeed: the framework publishes it to the
  dead letter (:mod:`services.stream.dead_letters`) with the reason, then checkpoints it. If the
  dead letter is unavailable the event is retried instead (never dropped).

Whole-batch failures: raise :class:`SinkUnavailable` when the *sink's* backend is down (S3,
Postgres...). The JetStream runner then keeps the same batch in memory, keeps its messages
alive (``in_progress``) and calls ``handle`` again with backoff until it succeeds or the process
is asked to stop; the Lambda runtime reports every record failed. So ``handle`` must be
idempotent for a batch it has seen before — which every consumer must be anyway, since the
stream redelivers after a crash.

Any *other* exception is treated as a bug or a poison event: the batch is bisected and the
halves handled separately; a single event that still raises is retried until it has been
delivered :data:`POISON_ATTEMPTS` times, then parked with the exception as the reason. One bad
event therefore never blocks the stream. Events that are not valid JSON or break the stream
contract never reach the sink: the framework parks them itself.

Running it: :func:`services.consumers.runner.process.run_consumer` (``python -m services <name>``:
durable pull consumer, batches bounded by size and age, health endpoints, SIGTERM) and
:class:`services.consumers.runner.kinesis.LambdaConsumer` (Kinesis event-source-mapping handler with
partial batch failure reporting). A CLI command is three lines::

    def run_archiver(env):
        from services.consumers.runner.process import run_consumer
        return run_consumer(env, build_sink=lambda: Archiver.from_env(env), ...)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from services.events.model import EVENT_TYPES

log = logging.getLogger("liftoff.consumer")

POISON_ATTEMPTS = 3
"""A single event whose ``handle`` raised (not SinkUnavailable) is parked at this attempt."""


class SinkUnavailable(Exception):
    """The sink's backend is down or timed out: retry the whole batch later, unchanged."""


@dataclass(frozen=True, slots=True)
class Done:
    pass


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float | None = None
    """Seconds before redelivery; None = the framework's backoff for ``delivery.attempts``."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Park:
    reason: str


Outcome = Done | Retry | Park
DONE = Done()


@dataclass(frozen=True, slots=True)
class Position:
    """Where a message sits on the stream; immutable, so stable under redelivery and replay.

    JetStream: ``partition`` = stream name, ``sequence`` = stream sequence (dense: 1, 2, 3 ...).
    Kinesis: ``partition`` = shard id, ``sequence`` = the record's sequence number (increasing,
    not dense)."""

    stream: str  # "jetstream" | "kinesis"
    partition: str
    sequence: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.sequence}"


class _Liftoff(msgspec.Struct, gc=False):
    source: str | None = None


class Envelope(msgspec.Struct, rename="camel", gc=False):
    """The fields of an event that consumers read, in one typed decoding pass (no dicts):
    identifiers and timestamps as the strings sent, the free-form objects as their JSON text
    (:class:`msgspec.Raw`, a slice of the message: no re-encoding; empty when absent, ``null``
    when null). Decoding fails (and
    :func:`decode` falls back to the JSON object) when any of them has another type. Not
    tracked by the garbage collector: it holds no containers, so it cannot be in a cycle."""

    message_id: str | None = None
    type: str | None = None
    received_at: str | None = None
    liftoff: _Liftoff | None = None
    event: str | None = None
    name: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    group_id: str | None = None
    previous_id: str | None = None
    timestamp: str | None = None
    sent_at: str | None = None
    original_timestamp: str | None = None
    properties: msgspec.Raw = msgspec.Raw()
    traits: msgspec.Raw = msgspec.Raw()
    context: msgspec.Raw = msgspec.Raw()


@dataclass(slots=True)
class Delivery:
    """One message as delivered to a consumer."""

    data: bytes
    position: Position
    arrival: datetime
    """When the stream stored it (JetStream message timestamp / Kinesis
    approximateArrivalTimestamp) — immutable per message."""
    subject: str = ""
    """JetStream subject, or the Kinesis partition key."""
    attempts: int = 1
    """How many times this message has been delivered (1 = first time)."""
    _event: dict[str, Any] | None = None
    envelope: Envelope | None = None
    """The common fields typed, set by :func:`decode` when they all have their usual types."""
    message_id: str = ""
    source: str = ""
    type: str = ""
    received_at: datetime = field(default=datetime.min.replace(tzinfo=UTC))
    handle: Any = field(default=None, repr=False)
    """The runtime's own message object (nats Msg / Kinesis record); sinks ignore it."""

    @property
    def event(self) -> dict[str, Any]:
        """The whole event as a JSON object ({} before :func:`decode` accepted it); decoded
        on first access: a sink that reads only the envelope never pays for the dicts."""
        if self._event is None:
            if self.envelope is None:
                return {}
            self._event = _decoder.decode(self.data)
        return self._event

    @event.setter
    def event(self, value: dict[str, Any]) -> None:
        self._event = value


_decoder = msgspec.json.Decoder()
_envelope_decoder = msgspec.json.Decoder(Envelope)


def parse_timestamp(text: object) -> datetime | None:
    """An ISO-8601 timestamp as a timezone-aware datetime (naive = UTC), or None."""
    if not isinstance(text, str) or not 10 <= len(text) <= 40:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def decode(delivery: Delivery) -> str | None:
    """Fill in the event fields of ``delivery``; return why it breaks the contract, or None."""
    # The common case in one typed pass; anything unusual (a field of another type, a broken
    # contract, invalid JSON) takes the general path below, which also words the reason.
    try:
        envelope = _envelope_decoder.decode(delivery.data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        envelope = None
    if envelope is not None:
        message_id, event_type, liftoff = envelope.message_id, envelope.type, envelope.liftoff
        source = liftoff.source if liftoff is not None else None
        if (
            message_id
            and event_type in EVENT_TYPES
            and source
            and "/" not in source
            and "=" not in source
            and (received_at := parse_timestamp(envelope.received_at)) is not None
        ):
            delivery._event = None
            _accept(delivery, envelope, message_id, source, event_type, received_at)
            return None
    return _decode_object(delivery)


def _decode_object(delivery: Delivery) -> str | None:
    """:func:`decode` through the whole JSON object: any field types, the reasons worded."""
    try:
        event = _decoder.decode(delivery.data)
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        return f"not valid JSON: {error}"
    if not isinstance(event, dict):
        return "not a JSON object"
    message_id = event.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        return "messageId missing or not a non-empty string"
    event_type = event.get("type")
    if event_type not in EVENT_TYPES:
        return f"type {event_type!r} is not one of {', '.join(EVENT_TYPES)}"
    liftoff = event.get("liftoff")
    source = liftoff.get("source") if isinstance(liftoff, dict) else None
    if not isinstance(source, str) or not source or "/" in source or "=" in source:
        return "liftoff.source missing or not a valid source name"
    received_at = parse_timestamp(event.get("receivedAt"))
    if received_at is None:
        return f"receivedAt {event.get('receivedAt')!r} is not an ISO-8601 timestamp"
    delivery.event = event
    _accept(delivery, None, message_id, source, event_type, received_at)
    return None


def _accept(
    delivery: Delivery,
    envelope: Envelope | None,
    message_id: str,
    source: str,
    event_type: str,
    received_at: datetime,
) -> None:
    """What :func:`decode` found, on the delivery."""
    delivery.envelope = envelope
    delivery.message_id = message_id
    delivery.source = source
    delivery.type = event_type
    delivery.received_at = received_at.astimezone(UTC)


class Sink(Protocol):
    async def start(self) -> None:
        """Open clients. May fail fast on configuration errors; not on a down backend."""

    async def check_ready(self) -> None:
        """Raise SinkUnavailable unless the backend is usable (readiness only)."""

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Outcome]:
        """Make the batch durable; one outcome per delivery, same order."""

    async def close(self) -> None: ...


def retry_delay(attempts: int, base: float = 0.5, ceiling: float = 60.0) -> float:
    """Exponential backoff for the ``attempts``-th delivery: 0.5 s, 1 s, 2 s ... ≤ ceiling."""
    return min(ceiling, base * 2.0 ** max(0, attempts - 1))


async def process(sink: Sink, deliveries: Sequence[Delivery]) -> list[Outcome]:
    """Run one batch through ``sink``: contract check, handle, bisect on unexpected errors.

    Raises SinkUnavailable (whole batch, nothing decided) — the runtime retries or fails it."""
    outcomes: list[Outcome | None] = [None] * len(deliveries)
    valid: list[int] = []
    for index, delivery in enumerate(deliveries):
        problem = decode(delivery)
        if problem is None:
            valid.append(index)
        else:
            outcomes[index] = Park(f"breaks the stream contract: {problem}")
    if valid:
        results = await _handle_isolating(sink, [deliveries[i] for i in valid])
        for index, outcome in zip(valid, results, strict=True):
            outcomes[index] = outcome
    return [outcome if outcome is not None else DONE for outcome in outcomes]


async def _handle_isolating(sink: Sink, batch: list[Delivery]) -> list[Outcome]:
    try:
        results = list(await sink.handle(batch))
        if len(results) != len(batch):
            raise RuntimeError(f"sink returned {len(results)} outcomes for {len(batch)} events")
        return results
    except SinkUnavailable:
        raise
    except Exception as error:
        if len(batch) > 1:
            log.warning(
                "sink raised; bisecting the batch",
                extra={"fields": {"events": len(batch), "error": repr(error)[:500]}},
            )
            middle = len(batch) // 2
            first = await _handle_isolating(sink, batch[:middle])
            return first + await _handle_isolating(sink, batch[middle:])
        delivery = batch[0]
        if delivery.attempts >= POISON_ATTEMPTS:
            return [Park(f"sink raised on attempt {delivery.attempts}: {error!r}"[:1000])]
        log.warning(
            "sink raised on one event; will retry",
            extra={"fields": {"position": str(delivery.position), "error": repr(error)[:500]}},
        )
        return [Retry(reason=repr(error)[:500])]
