"""The delivery engine: one batch of stream messages in, one :class:`Outcome` per message out.

Per request: attempts up to ``RetryPolicy.max_attempts``; between attempts the server's
``Retry-After`` (429/503) or exponential backoff with full jitter; a permanent answer parks the
request's events with the answer as the reason (after splitting the request when the answer may
be caused by a single event); 413 splits the request. Requests of one batch run concurrently
(``concurrency`` at a time). When ``stop`` is set (SIGTERM) or the ``deadline`` (Lambda) would
pass before the next attempt, the unfinished events come back ``deferred``: the caller must not
checkpoint them, the stream delivers them again.

Logs carry counts, HTTP statuses and request labels only — never URLs (GA4's carries its
secret), secrets or event bodies.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from services.consumers.broadcaster.contract import FILTERED_LOG_MESSAGE, FILTERED_LOG_TOTAL
from services.consumers.broadcaster.filters import Filters
from services.consumers.broadcaster.model import (
    Accepted,
    DestinationType,
    Event,
    JsonObject,
    Outcome,
    Rejected,
    Request,
    ResendWithout,
    Retry,
    TooLarge,
    Unit,
    Unsendable,
    Verdict,
    batch_units,
)
from services.consumers.broadcaster.retry import RetryPolicy
from services.observability import Counters

log = logging.getLogger("liftoff.broadcaster")
# httpx logs every request URL at INFO (and httpcore its traffic at DEBUG); GA4's URL carries
# the API secret, so those loggers only ever pass warnings, whatever LIFTOFF_LOG_LEVEL says.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

FILTERED = "liftoff_broadcaster_filtered_total"

Keepalive = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class EventFilter:
    """``sources``: empty = every source. ``events``: empty = every event of every type; when
    set, only ``track`` events with one of these names pass. ``filters``: the destination's
    filters (:mod:`services.consumers.broadcaster.filters`), checked against ``names`` (the
    destination's own name, then its type's Segment names)."""

    sources: frozenset[str] = frozenset()
    events: frozenset[str] = frozenset()
    filters: Filters = field(default_factory=Filters)
    names: tuple[str, ...] = ()

    def passes(self, event: JsonObject) -> bool:
        return self.refusal(event) is None

    def refusal(self, event: JsonObject) -> str | None:
        """Why the event is not sent (the ``reason`` label of the filtered counter), or None."""
        if self.sources and event["liftoff"]["source"] not in self.sources:
            return "source"
        if self.events and not (event["type"] == "track" and event.get("event") in self.events):
            return "event"
        return self.filters.refusal(event, self.names)

    def shape(self, event: JsonObject) -> JsonObject:
        return self.filters.shape(event)


@dataclass
class _Batch:
    """Bookkeeping for one deliver() call."""

    outcomes: list[list[Outcome]]
    stop: asyncio.Event
    deadline: float | None
    keepalive: Keepalive | None
    policy: RetryPolicy
    pending: set[asyncio.Task[None]] = field(default_factory=set)
    filtered: dict[str, int] = field(default_factory=dict)
    """Events the destination's filters refused, by reason."""

    def record(self, units: Sequence[Unit], outcome: Outcome) -> None:
        for item in units:
            self.outcomes[item.index].append(outcome)


class Broadcaster:
    """Delivers batches to one destination. Reuse one instance (and its HTTP connections)."""

    def __init__(
        self,
        name: str,
        destination: DestinationType,
        client: httpx.AsyncClient,
        *,
        event_filter: EventFilter | None = None,
        policy: RetryPolicy | None = None,
        concurrency: int = 4,
        keepalive_interval: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.destination = destination
        self.client = client
        self.filter = event_filter or EventFilter()
        self.policy = policy or RetryPolicy()
        self.keepalive_interval = keepalive_interval
        self._slots = asyncio.Semaphore(concurrency)
        self._rng = rng or random.Random()
        self.counters = Counters()
        for metric, text in (
            ("liftoff_broadcast_events_total", "Events by outcome"),
            (
                FILTERED,
                "Events a destination's filters kept from it (acknowledged, never retried), by "
                "reason: source, event, integrations, consent, drop, sample",
            ),
            (
                "liftoff_broadcast_requests_total",
                "HTTP attempts by destination, result and status class (2xx..5xx, timeout, "
                "connection)",
            ),
        ):
            self.counters.describe(metric, text)

    # --- the batch ------------------------------------------------------------------------------

    async def deliver(
        self,
        messages: Sequence[bytes],
        *,
        stop: asyncio.Event | None = None,
        deadline: float | None = None,
        keepalive: Keepalive | None = None,
        policy: RetryPolicy | None = None,
    ) -> list[Outcome]:
        """One outcome per message, in order. ``deadline`` is a ``time.monotonic()`` value;
        ``policy`` overrides the broadcaster's retry policy for this batch."""
        batch = _Batch(
            [[] for _ in messages],
            stop or asyncio.Event(),
            deadline,
            keepalive,
            policy or self.policy,
        )
        by_channel: dict[Hashable, list[Unit]] = {}
        for index, data in enumerate(messages):
            decoded = Event.decode(data)
            if decoded.event is None:
                batch.outcomes[index].append(Outcome("parked", f"invalid event: {decoded.problem}"))
                continue
            refusal = self.filter.refusal(decoded.event)
            if refusal is not None:
                self.counters.add(FILTERED, destination=self.name, reason=refusal)
                batch.filtered[refusal] = batch.filtered.get(refusal, 0) + 1
                batch.outcomes[index].append(Outcome("skipped", f"filtered out ({refusal})"))
                continue
            try:
                units = self.destination.units(index, self.filter.shape(decoded.event))
            except Unsendable as error:
                batch.outcomes[index].append(Outcome("parked", str(error)))
                continue
            if not units:
                reason = self.destination.skip_reason(decoded.event)
                batch.outcomes[index].append(Outcome("skipped", reason))
                continue
            for item in units:
                _, max_bytes = self.destination.limits(item.channel)
                if item.size + self.destination.overhead(item.channel) > max_bytes:
                    reason = f"event too large for {self.destination.type_name} ({item.size} bytes)"
                    batch.outcomes[index].append(Outcome("parked", reason))
                else:
                    by_channel.setdefault(item.channel, []).append(item)
        requests: list[Request] = []
        for channel, units in by_channel.items():
            max_units, max_bytes = self.destination.limits(channel)
            overhead = self.destination.overhead(channel)
            for group in batch_units(units, max_units, max_bytes, overhead):
                requests.append(self.destination.encode(channel, group))
        if requests:
            await asyncio.gather(*(self._run(request, batch) for request in requests))
        outcomes = [_combine(results) for results in batch.outcomes]
        self._count(outcomes, batch.filtered)
        return outcomes

    def _count(self, outcomes: list[Outcome], filtered: dict[str, int]) -> None:
        """The batch's outcomes into the counters; what the filters refused into the log too
        (on AWS a metric filter reads that line: a Lambda function serves no /metrics)."""
        for outcome in outcomes:
            self.counters.add(
                "liftoff_broadcast_events_total", destination=self.name, outcome=outcome.status
            )
        if filtered:
            log.info(
                FILTERED_LOG_MESSAGE,
                extra={
                    "fields": {
                        "destination": self.name,
                        FILTERED_LOG_TOTAL: sum(filtered.values()),
                        "reasons": dict(sorted(filtered.items())),
                    }
                },
            )

    # --- one request, with retries --------------------------------------------------------------

    async def _run(self, request: Request, batch: _Batch) -> None:
        attempt = 0
        while True:
            if batch.stop.is_set():
                batch.record(request.units, Outcome("deferred", "shutting down", attempt))
                return
            attempt += 1
            verdict, fields = await self._try(request, attempt)
            if isinstance(verdict, Accepted):
                self._accepted(request, verdict, batch, attempt, fields)
                return
            if isinstance(verdict, ResendWithout) and verdict.rejected:
                keep = self._park_rejected(request, verdict, batch, attempt, fields)
                if not keep:
                    return
                request, attempt = self.destination.encode(request.channel, keep), 0
                continue
            if isinstance(verdict, TooLarge | Rejected | ResendWithout):
                await self._refused(request, verdict, batch, attempt, fields)
                return
            assert isinstance(verdict, Retry)
            if not await self._may_retry(request, verdict, batch, attempt, fields):
                return

    async def _try(self, request: Request, attempt: int) -> tuple[Verdict, dict[str, Any]]:
        """One attempt, counted; the fields every log line about it carries."""
        async with self._slots:
            verdict, status = await self._attempt(request)
        self.counters.add(
            "liftoff_broadcast_requests_total",
            destination=self.name,
            result=type(verdict).__name__.lower(),
            status_class=_status_class(status),
        )
        fields = {
            "destination": self.name,
            "request": request.label,
            "events": len(request.units),
            "status": status,
            "attempt": attempt,
        }
        return verdict, fields

    @staticmethod
    def _accepted(
        request: Request, verdict: Accepted, batch: _Batch, attempt: int, fields: dict[str, Any]
    ) -> None:
        for position, item in enumerate(request.units):
            if position in verdict.rejected:
                outcome = Outcome("parked", verdict.rejected[position], attempt)
            else:
                outcome = Outcome("delivered", "", attempt)
            batch.record([item], outcome)
        log.debug("delivered", extra={"fields": {**fields, "rejected": len(verdict.rejected)}})

    @staticmethod
    def _park_rejected(
        request: Request,
        verdict: ResendWithout,
        batch: _Batch,
        attempt: int,
        fields: dict[str, Any],
    ) -> list[Any]:
        """Park the events the destination refused; the others, to send again."""
        log.info(
            "destination rejected some events",
            extra={"fields": {**fields, "rejected": len(verdict.rejected)}},
        )
        keep = []
        for position, item in enumerate(request.units):
            if position in verdict.rejected:
                batch.record([item], Outcome("parked", verdict.rejected[position], attempt))
            else:
                keep.append(item)
        return keep

    async def _refused(
        self,
        request: Request,
        verdict: TooLarge | Rejected | ResendWithout,
        batch: _Batch,
        attempt: int,
        fields: dict[str, Any],
    ) -> None:
        """Split a refused request to isolate what the destination refuses, or park it."""
        reason = getattr(verdict, "reason", "rejected")
        splittable = isinstance(verdict, TooLarge) or getattr(verdict, "isolate", True)
        if splittable and len(request.units) > 1:
            log.info("splitting a rejected request", extra={"fields": {**fields, "reason": reason}})
            half = len(request.units) // 2
            parts = (request.units[:half], request.units[half:])
            await asyncio.gather(
                *(self._run(self.destination.encode(request.channel, p), batch) for p in parts)
            )
            return
        log.warning("parking rejected events", extra={"fields": {**fields, "reason": reason}})
        batch.record(request.units, Outcome("parked", reason, attempt))

    async def _may_retry(
        self, request: Request, verdict: Retry, batch: _Batch, attempt: int, fields: dict[str, Any]
    ) -> bool:
        """Wait before the next attempt; False (and the events parked or deferred) when there
        is none: the last attempt, the deadline, or a shutdown."""
        if attempt >= batch.policy.max_attempts:
            reason = f"gave up after {attempt} attempts: {verdict.reason}"
            log.warning(
                "parking after the last attempt",
                extra={"fields": {**fields, "reason": verdict.reason}},
            )
            batch.record(request.units, Outcome("parked", reason, attempt))
            return False
        delay = batch.policy.delay(attempt, verdict.after, self._rng)
        log.info(
            "will retry",
            extra={
                "fields": {**fields, "reason": verdict.reason, "delay_seconds": round(delay, 3)}
            },
        )
        if batch.deadline is not None and time.monotonic() + delay > batch.deadline:
            reason = f"not delivered before the deadline: {verdict.reason}"
            batch.record(request.units, Outcome("deferred", reason, attempt))
            return False
        if not await self._wait(delay, batch):
            batch.record(request.units, Outcome("deferred", "shutting down", attempt))
            return False
        return True

    async def _attempt(self, request: Request) -> tuple[Verdict, int | str]:
        headers = dict(request.headers)
        if request.sign is not None:
            headers.update(request.sign(request.body))
        try:
            response = await self.client.post(request.url, content=request.body, headers=headers)
        except httpx.TimeoutException as error:
            return Retry(f"timed out ({type(error).__name__})"), "timeout"
        except httpx.TransportError as error:
            return Retry(f"connection failed ({type(error).__name__})"), "connection"
        verdict = self.destination.verdict(
            request, response.status_code, response.headers, response.content
        )
        return verdict, response.status_code

    async def _wait(self, delay: float, batch: _Batch) -> bool:
        """Sleep ``delay`` seconds unless stopped (→ False); tell the stream we are still busy."""
        end = time.monotonic() + delay
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return not batch.stop.is_set()
            try:
                await asyncio.wait_for(batch.stop.wait(), min(remaining, self.keepalive_interval))
                return False
            except TimeoutError:
                pass
            if batch.keepalive is not None and end - time.monotonic() > 0:
                await batch.keepalive()


def _combine(results: list[Outcome]) -> Outcome:
    """One event's outcome from its units' outcomes: deferred wins (nothing may be lost), then
    parked (the event goes to the dead letter with every reason), then delivered."""
    if not results:
        return Outcome("deferred", "no result (internal error)")
    if len(results) == 1:
        return results[0]
    attempts = max(r.attempts for r in results)
    for status in ("deferred", "parked"):
        matching = [r for r in results if r.status == status]
        if matching:
            reason = "; ".join(dict.fromkeys(r.reason for r in matching if r.reason))
            return Outcome(status, reason, attempts)
    return Outcome(results[0].status, results[0].reason, attempts)


def _status_class(status: int | str) -> str:
    """`2xx`..`5xx` for an HTTP answer; `timeout` / `connection` when there was none."""
    return f"{status // 100}xx" if isinstance(status, int) else str(status)
