"""The broadcaster's vocabulary: inbound events, per-event outcomes, requests and verdicts.

A destination type (webhook, mixpanel, ...) is a :class:`DestinationType`: it maps each event
to zero or more *units* on a *channel* (Mixpanel: ``import`` / ``engage`` / ``groups``; GA4: one
channel per client), encodes lists of units into HTTP :class:`Request` objects within the API's
documented limits, and reads each answer into a :class:`Verdict`. Retrying, backing off,
splitting and parking are the engine's job (:mod:`services.consumers.broadcaster.delivery`), the
same for every type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

JsonObject = dict[str, Any]

# --- what comes in -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One stream message, decoded. ``event`` is None when the bytes are not a usable event;
    ``problem`` then says why (the event is parked with that reason, never sent)."""

    event: JsonObject | None
    problem: str | None = None

    @classmethod
    def decode(cls, data: bytes) -> Event:
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            return cls(None, f"not a JSON event: {error.__class__.__name__} at byte {_pos(error)}")
        if not isinstance(value, dict):
            return cls(None, f"not a JSON object but {type(value).__name__}")
        problem = _contract_problem(value)
        return cls(None, problem) if problem else cls(value)


def _pos(error: Exception) -> int:
    return getattr(error, "pos", None) or getattr(error, "start", 0) or 0


def _contract_problem(event: JsonObject) -> str | None:
    """The guarantees of services/events/model.py that the mappings rely on."""
    kind = event.get("type")
    if kind not in ("track", "identify", "page", "screen", "group", "alias"):
        return f"unknown event type {kind!r}"
    if not isinstance(event.get("messageId"), str) or not event["messageId"]:
        return "messageId missing or not a string"
    if not present_id(event.get("userId")) and not present_id(event.get("anonymousId")):
        return "neither userId nor anonymousId"
    liftoff = event.get("liftoff")
    if not isinstance(liftoff, dict) or not isinstance(liftoff.get("source"), str):
        return "liftoff.source missing"
    if kind == "track" and (not isinstance(event.get("event"), str) or not event["event"]):
        return "track event without an event name"
    try:
        event_time(event)
    except ValueError as error:
        return str(error)
    return None


def present_id(value: Any) -> bool:
    return (isinstance(value, str) and value != "") or (
        isinstance(value, int | float) and not isinstance(value, bool)
    )


def id_text(value: Any) -> str | None:
    """userId/anonymousId as a string (they may be numbers on the wire), None when absent."""
    if not present_id(value):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def event_time(event: JsonObject) -> datetime:
    """The event's ``timestamp`` (skew-corrected by the collector) as an aware datetime."""
    raw = event.get("timestamp")
    if not isinstance(raw, str):
        raise ValueError("timestamp missing")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"timestamp {raw[:40]!r} is not ISO-8601") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def epoch_millis(event: JsonObject) -> int:
    return round(event_time(event).timestamp() * 1000)


def as_object(value: Any) -> JsonObject:
    return value if isinstance(value, dict) else {}


def context_value(event: JsonObject, *path: str) -> Any:
    value: Any = event.get("context")
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


# --- what goes out -----------------------------------------------------------------------------


class Unsendable(Exception):
    """The event cannot be expressed in the destination's format: it is parked with this reason."""


@dataclass(frozen=True, slots=True)
class Unit:
    """One thing to send for one event (the event at ``index`` of the batch)."""

    index: int
    channel: Hashable
    body: Any
    size: int  # bytes of the unit's JSON encoding, for request size limits


@dataclass(slots=True)
class Request:
    """One HTTP POST carrying ``units``. ``sign`` (webhook) returns extra headers per attempt."""

    channel: Hashable
    units: list[Unit]
    url: str
    body: bytes
    headers: dict[str, str]
    label: str  # for logs: never contains secrets (GA4's URL does)
    sign: Callable[[bytes], dict[str, str]] | None = None

    @property
    def indices(self) -> list[int]:
        return [unit.index for unit in self.units]


# --- how an answer is read --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Accepted:
    """Delivered; ``rejected`` maps positions *within the request's units* to a permanent reason
    (Mixpanel /import answers 400 yet ingests the events that passed validation)."""

    rejected: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Retry:
    """Transient (5xx, 429, timeouts): try again; ``after`` seconds when the server said so."""

    reason: str
    after: float | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Permanent for the whole request. ``isolate``: the request may be split to find the bad
    events (a 400 caused by one event); False for errors every event would get (401, 403)."""

    reason: str
    isolate: bool = True


@dataclass(frozen=True, slots=True)
class ResendWithout:
    """Nothing was ingested; ``rejected`` (unit positions) are permanently bad and the others
    should be sent again without them (Amplitude's documented 400 handling)."""

    rejected: Mapping[int, str]


@dataclass(frozen=True, slots=True)
class TooLarge:
    """413: split the request in halves."""

    reason: str


Verdict = Accepted | Retry | Rejected | ResendWithout | TooLarge

OutcomeStatus = Literal["delivered", "skipped", "parked", "deferred"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one event of a batch.

    - ``delivered``: the destination acknowledged it → checkpoint.
    - ``skipped``: filtered out, or a type the destination has no use for → checkpoint.
    - ``parked``: permanently undeliverable or out of attempts → dead-letter it, then checkpoint.
    - ``deferred``: not finished (shutdown, Lambda deadline) → do NOT checkpoint; redelivered.
    """

    status: OutcomeStatus
    reason: str = ""
    attempts: int = 0


class DestinationType:
    """Base for the four types; see each module for what it sends and skips."""

    type_name = ""
    #: Per-channel (units per request, bytes per request body).
    max_units = 500
    max_bytes = 1_000_000

    def units(self, index: int, event: JsonObject) -> list[Unit]:
        """Units for one event; ``[]`` means skipped; raise Unsendable to park it."""
        raise NotImplementedError

    def skip_reason(self, event: JsonObject) -> str:
        return f"{event.get('type')} events are not sent to {self.type_name} destinations"

    def limits(self, channel: Hashable) -> tuple[int, int]:
        """(units per request, bytes per request body) on ``channel``."""
        return self.max_units, self.max_bytes

    def overhead(self, channel: Hashable) -> int:
        """Bytes of a request body besides its units (envelope, credentials)."""
        return 256

    def encode(self, channel: Hashable, units: list[Unit]) -> Request:
        raise NotImplementedError

    def verdict(
        self, request: Request, status: int, headers: Mapping[str, str], body: bytes
    ) -> Verdict:
        return default_verdict(status, headers, body)


def unit(index: int, channel: Hashable, body: Any) -> Unit:
    return Unit(index, channel, body, len(compact_json(body)))


def compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def default_verdict(status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
    """Status-code classification shared by every type (types refine it)."""
    from services.consumers.broadcaster.retry import retry_after_seconds

    if 200 <= status < 300:
        return Accepted()
    if status == 429 or status in (408, 425) or status >= 500:
        return Retry(f"HTTP {status}", retry_after_seconds(headers.get("retry-after")))
    if status == 413:
        return TooLarge("HTTP 413 (request too large)")
    detail = snippet(body)
    isolate = status in (400, 422)
    return Rejected(f"HTTP {status}{': ' + detail if detail else ''}", isolate=isolate)


def snippet(body: bytes, limit: int = 200) -> str:
    """A short, single-line excerpt of an error answer (third-party error text, not our data)."""
    text = body[: limit * 2].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:limit]


def batch_units(
    units: Sequence[Unit], max_units: int, max_bytes: int, overhead: int
) -> list[list[Unit]]:
    """Greedy split into groups of at most ``max_units`` whose encoded size stays under
    ``max_bytes`` (``overhead`` = envelope bytes; +1 per unit for the separating comma)."""
    groups: list[list[Unit]] = []
    current: list[Unit] = []
    size = overhead
    for item in units:
        if current and (len(current) >= max_units or size + item.size + 1 > max_bytes):
            groups.append(current)
            current, size = [], overhead
        current.append(item)
        size += item.size + 1
    if current:
        groups.append(current)
    return groups
