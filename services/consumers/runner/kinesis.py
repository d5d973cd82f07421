"""The same sinks as AWS Lambda handlers on Kinesis event-source-mapping batches.

The mapping must enable ``ReportBatchItemFailures``. Each invocation's records become
:class:`~services.consumers.runner.model.Delivery` objects (``kinesis.data`` base64-decoded;
position = shard id from ``eventID`` + ``sequenceNumber``; arrival =
``approximateArrivalTimestamp``; subject = partition key) and go through
:func:`services.consumers.runner.model.process` exactly as on JetStream. The handler returns
``{"batchItemFailures": [{"itemIdentifier": <sequenceNumber>}]}`` listing every record that is not
done: retries, parks whose dead-letter send failed, and — when the sink raised ``SinkUnavailable`` —
the whole batch. Parked records count as done once the SQS send succeeded. Lambda then checkpoints
below the lowest failed sequence number and retries from there, so what is durable is never re-done
wrongly and what is not is never skipped.

Kinesis does not say how often a record was delivered; ``Delivery.attempts`` is counted per
execution environment (best effort: a new environment starts again at 1). Configure the
mapping's own ``MaximumRetryAttempts`` / on-failure destination as the outer bound.

One event loop, sink and dead letter per execution environment, created on the first
invocation (cold start) and reused.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from services.consumers.runner.contract import FunctionRuntime
from services.consumers.runner.model import (
    Delivery,
    Done,
    Park,
    Position,
    Sink,
    SinkUnavailable,
    process,
)
from services.contract import Env, level_of
from services.observability import configure_logging
from services.stream.contract import dead_letter_or_default
from services.stream.dead_letters import DeadLetter, DeadLetterUnavailable, open_dead_letter

log = logging.getLogger("liftoff.consumer.lambda")

_MAX_TRACKED_ATTEMPTS = 100_000


def delivery_from_record(record: Mapping[str, Any]) -> Delivery:
    kinesis = record["kinesis"]
    try:
        data = base64.b64decode(kinesis.get("data", ""), validate=True)
    except (binascii.Error, ValueError):
        data = b""  # parked by the contract check
    shard = str(record.get("eventID", "")).partition(":")[0] or "shard"
    arrival = kinesis.get("approximateArrivalTimestamp")
    return Delivery(
        data=data,
        position=Position("kinesis", shard, int(kinesis["sequenceNumber"])),
        arrival=(
            datetime.fromtimestamp(float(arrival), UTC)
            if arrival is not None
            else datetime.now(UTC)
        ),
        subject=str(kinesis.get("partitionKey", "")),
        handle=kinesis["sequenceNumber"],
    )


class FunctionSettings(Protocol):
    """A consumer function's settings (its contract's): the runtime part is what this reads."""

    @property
    def runtime(self) -> FunctionRuntime[str]: ...


S = TypeVar("S", bound=FunctionSettings)


class LambdaConsumer(Generic[S]):
    """A Kinesis batch handler for one sink; call it with (event, context). At cold start
    ``parse`` reads the function's environment (its contract) and ``build_sink`` makes the sink
    from those settings."""

    def __init__(
        self, default_name: str, parse: Callable[[Env], S], build_sink: Callable[[S], Sink]
    ) -> None:
        self.default_name = default_name
        self.parse = parse
        self.build_sink = build_sink
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sink: Sink | None = None
        self._dead_letter: DeadLetter | None = None
        self._name = default_name
        self._attempts: dict[tuple[str, int], int] = {}

    def _cold_start(self, env: Mapping[str, str]) -> None:
        settings = self.parse(env)
        runtime = settings.runtime
        configure_logging(level_of(runtime.log_level))
        self._name = runtime.consumer_name or self.default_name
        loop = asyncio.new_event_loop()
        sink = self.build_sink(settings)
        dead_letter = open_dead_letter(dead_letter_or_default(runtime.dead_letter_url, None))
        loop.run_until_complete(sink.start())
        loop.run_until_complete(dead_letter.start())
        self._loop, self._sink, self._dead_letter = loop, sink, dead_letter

    def __call__(self, event: Mapping[str, Any], context: Any = None) -> dict[str, Any]:
        if self._loop is None:
            self._cold_start(os.environ)
        assert self._loop is not None
        return self._loop.run_until_complete(self.handle(event.get("Records") or []))

    async def handle(self, records: list[Mapping[str, Any]]) -> dict[str, Any]:
        assert self._sink is not None and self._dead_letter is not None
        deliveries = [delivery_from_record(record) for record in records]
        if len(self._attempts) > _MAX_TRACKED_ATTEMPTS:
            self._attempts.clear()
        for delivery in deliveries:
            key = (delivery.position.partition, delivery.position.sequence)
            delivery.attempts = self._attempts[key] = self._attempts.get(key, 0) + 1
        try:
            outcomes = await process(self._sink, deliveries)
        except SinkUnavailable as error:
            log.warning(
                "sink unavailable; the whole batch is reported failed",
                extra={"fields": {"records": len(records), "error": str(error)[:500]}},
            )
            return _failures(deliveries)
        failed: list[Delivery] = []
        for delivery, outcome in zip(deliveries, outcomes, strict=True):
            done = isinstance(outcome, Done)
            if isinstance(outcome, Park):
                done = await self._park(delivery, outcome.reason)
            if done:
                self._attempts.pop((delivery.position.partition, delivery.position.sequence), None)
            else:
                failed.append(delivery)
        return _failures(failed)

    async def _park(self, delivery: Delivery, reason: str) -> bool:
        assert self._dead_letter is not None
        try:
            await self._dead_letter.park(delivery, reason, self._name)
        except DeadLetterUnavailable as error:
            log.warning("dead letter unavailable", extra={"fields": {"error": str(error)}})
            return False
        log.warning(
            "parked an event",
            extra={
                "fields": {
                    "consumer": self._name,
                    "position": str(delivery.position),
                    "reason": reason[:300],
                }
            },
        )
        return True

    def reset_for_tests(self) -> None:
        """Forget the cold-start state (tests start several 'cold starts' in one process)."""
        if self._loop is not None:
            if self._sink is not None:
                self._loop.run_until_complete(self._sink.close())
            if self._dead_letter is not None:
                self._loop.run_until_complete(self._dead_letter.close())
            self._loop.close()
        self._loop = self._sink = self._dead_letter = None
        self._attempts.clear()


def _failures(deliveries: list[Delivery]) -> dict[str, Any]:
    return {"batchItemFailures": [{"itemIdentifier": d.handle} for d in deliveries]}
