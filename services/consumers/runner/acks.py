"""What a JetStream consumer does with a batch it holds: hands it to the sink (again, with
backoff, while the sink is down), then acknowledges each message (done), parks it in the dead
letter with its reason then acknowledges it (park), or nak's it with a delay (retry). Acks are
sent only after the sink returned, i.e. after the output is durable."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import nats.errors
from nats.aio.msg import Msg

from services.consumers.runner.model import (
    Delivery,
    Done,
    Outcome,
    Park,
    Position,
    Retry,
    Sink,
    SinkUnavailable,
    process,
    retry_delay,
)
from services.observability import Counters
from services.stream.dead_letters import DeadLetter, DeadLetterUnavailable

if TYPE_CHECKING:
    from services.consumers.runner.settings import RunnerSettings

log = logging.getLogger("liftoff.consumer.jetstream")

T = TypeVar("T")


class Stopped(Exception):
    """The consumer was asked to stop while it waited."""


async def flush(nc: Any, timeout: float) -> None:
    """``nc.flush(timeout)`` that cannot kill the connection. When a flush times out (the
    server stalled: a GC pause, a full disk, SIGSTOP), nats-py 2.16 cancels the PING's future
    but leaves it queued; the late PONG then finds it, ``set_result`` raises InvalidStateError
    and nats-py's read loop stops for good: the connection still looks connected, but every
    request times out and held messages are kept alive forever (found by the cluster fault
    test). Dropping the cancelled future lets the late PONG find nothing of ours."""
    try:
        await nc.flush(timeout=timeout)
    except nats.errors.FlushTimeoutError:
        pongs = getattr(nc, "_pongs", None)
        if isinstance(pongs, list):
            pongs[:] = [future for future in pongs if not future.cancelled()]
        raise


class Acknowledging:
    """The part of :class:`~services.consumers.runner.jetstream.JetStreamRunner` that settles a
    batch."""

    sink: Sink
    dead_letter: DeadLetter
    settings: RunnerSettings
    counters: Counters
    _nc: Any
    _abandoned: list[Msg]
    _progress: float
    _stop: asyncio.Event

    @property
    def name(self) -> str:
        raise NotImplementedError

    async def _until_stopped(self, work: Awaitable[T]) -> T:
        raise NotImplementedError

    async def _sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def _delivery(self, message: Msg) -> Delivery:
        # The ack subject carries the position: "$JS.ACK.<stream>.<consumer>.<delivered>.
        # <stream seq>.<consumer seq>.<timestamp ns>.<pending>". Parsed here directly (nats-py's
        # Msg.metadata builds frozen dataclasses: the costliest step per message); any other
        # layout (a JetStream domain: "$JS.ACK.<domain>.<hash>...") goes through nats-py.
        tokens = message.reply.split(".")
        if len(tokens) == 9 and tokens[0] == "$JS" and tokens[1] == "ACK":
            stream, delivered, sequence = tokens[2], int(tokens[4]), int(tokens[5])
            arrival = datetime.fromtimestamp(int(tokens[7]) / 1e9, UTC)
        else:
            meta = message.metadata
            stream, delivered, sequence = meta.stream, meta.num_delivered, meta.sequence.stream
            arrival = meta.timestamp.astimezone(UTC) if meta.timestamp else datetime.now(UTC)
        return Delivery(
            data=message.data,
            position=Position("jetstream", stream, sequence),
            arrival=arrival,
            subject=message.subject,
            attempts=delivered,
            handle=message,
        )

    async def _flush(self, batch: list[Msg], finishing: bool = False) -> None:
        deliveries = [self._delivery(message) for message in batch]
        grace = self.settings.shutdown_grace_seconds
        backoff = 0.5
        while True:
            self._progress = time.monotonic()
            task = asyncio.ensure_future(process(self.sink, deliveries))
            try:
                if finishing or self._stop.is_set():
                    outcomes = await asyncio.wait_for(task, grace)
                else:
                    try:
                        outcomes = await self._until_stopped(asyncio.shield(task))
                    except Stopped:  # SIGTERM while handling: finish within the grace period
                        outcomes = await asyncio.wait_for(task, grace)
                break
            except SinkUnavailable as error:
                self.counters.add("liftoff_consumer_sink_unavailable_total", consumer=self.name)
                log.warning(
                    "sink unavailable; retrying the batch",
                    extra={
                        "fields": {
                            "consumer": self.name,
                            "events": len(batch),
                            "delay_seconds": backoff,
                            "error": str(error)[:500],
                        }
                    },
                )
                if finishing or self._stop.is_set():
                    await self._abandon(batch)
                    return
                try:
                    await self._sleep(backoff)
                except Stopped:
                    await self._abandon(batch)
                    return
                backoff = min(10.0, backoff * 2)
            except TimeoutError:  # the grace period ended before the batch was durable
                task.cancel()
                await self._abandon(batch)
                return
        await self._apply(deliveries, outcomes)
        self.counters.add("liftoff_consumer_batches_total", consumer=self.name)

    async def _abandon(self, batch: list[Msg]) -> None:
        """Stopping without the batch durable: run() gives it back (nak) once deliveries to
        this consumer have stopped, so that it is not delivered to us again meanwhile."""
        log.info(
            "abandoning the in-flight batch (not acknowledged)",
            extra={"fields": {"consumer": self.name, "events": len(batch)}},
        )
        self._abandoned.extend(batch)
        batch.clear()

    async def _release(self, batch: list[Msg]) -> None:
        for message in batch:
            try:
                await message.nak()
            except Exception:
                break  # not connected: the server redelivers after ack_wait anyway
        with contextlib.suppress(Exception):
            await flush(self._nc, 2)

    async def _apply(self, deliveries: list[Delivery], outcomes: list[Outcome]) -> None:
        parks = [
            (delivery, outcome)
            for delivery, outcome in zip(deliveries, outcomes, strict=True)
            if isinstance(outcome, Park)
        ]
        parked = await asyncio.gather(
            *(self._park(delivery, outcome.reason) for delivery, outcome in parks)
        )
        park_ok = {id(d): ok for (d, _), ok in zip(parks, parked, strict=True)}
        counts = {"done": 0, "park": 0, "retry": 0}  # added once per batch, not per message
        acked: dict[str, int] = {}  # stream -> highest sequence acknowledged
        if not parks and all(isinstance(outcome, Done) for outcome in outcomes):
            await self._ack_all(deliveries, counts, acked)
        else:
            await self._settle_each(deliveries, outcomes, park_ok, counts, acked)
        with contextlib.suppress(Exception):
            await flush(self._nc, 5)
        for outcome_name, count in counts.items():
            if count:
                self.counters.add(
                    "liftoff_consumer_events_total", count, consumer=self.name, outcome=outcome_name
                )
        for stream, sequence in acked.items():
            self.counters.set(
                "liftoff_consumer_acked_sequence", sequence, consumer=self.name, stream=stream
            )

    @staticmethod
    async def _ack_all(
        deliveries: list[Delivery], counts: dict[str, int], acked: dict[str, int]
    ) -> None:
        """The common case, all done: one ack each and nothing else per message."""
        done = 0
        try:
            for delivery in deliveries:
                await delivery.handle.ack()
                done += 1
        except Exception as error:  # connection lost: the server redelivers
            log.warning("could not acknowledge", extra={"fields": {"error": repr(error)}})
        counts["done"] = done
        for delivery in deliveries[:done]:
            position = delivery.position
            if position.sequence > acked.get(position.partition, 0):
                acked[position.partition] = position.sequence

    @staticmethod
    async def _settle_each(
        deliveries: list[Delivery],
        outcomes: list[Outcome],
        park_ok: dict[int, bool],
        counts: dict[str, int],
        acked: dict[str, int],
    ) -> None:
        """Ack what is done or parked, nak the rest with its delay."""
        for delivery, outcome in zip(deliveries, outcomes, strict=True):
            message: Msg = delivery.handle
            try:
                if isinstance(outcome, Done) or (
                    isinstance(outcome, Park) and park_ok[id(delivery)]
                ):
                    await message.ack()
                    counts["done" if isinstance(outcome, Done) else "park"] += 1
                    position = delivery.position
                    acked[position.partition] = max(
                        acked.get(position.partition, 0), int(position.sequence)
                    )
                else:
                    delay = outcome.delay if isinstance(outcome, Retry) else None
                    await message.nak(
                        delay=delay if delay is not None else retry_delay(delivery.attempts)
                    )
                    counts["retry"] += 1
            except Exception as error:  # connection lost: the server redelivers; sinks are
                # idempotent
                log.warning("could not acknowledge", extra={"fields": {"error": repr(error)}})
                break

    async def _park(self, delivery: Delivery, reason: str) -> bool:
        try:
            await self.dead_letter.park(delivery, reason, self.name)
        except DeadLetterUnavailable as error:
            log.warning(
                "dead letter unavailable; the event will be retried",
                extra={"fields": {"position": str(delivery.position), "error": str(error)}},
            )
            return False
        log.warning(
            "parked an event",
            extra={
                "fields": {
                    "consumer": self.name,
                    "position": str(delivery.position),
                    "message_id": delivery.message_id,
                    "reason": reason[:300],
                }
            },
        )
        return True


def nothing_pending(message: Msg) -> bool:
    """Whether the stream had no message pending for this consumer after ``message``: the ack
    subject's last token ("$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer
    seq>.<timestamp ns>.<pending>"); another layout (a JetStream domain) through nats-py."""
    reply = message.reply
    if reply.count(".") == 8 and reply.startswith("$JS.ACK."):
        return reply.endswith(".0")
    try:
        return message.metadata.num_pending == 0
    except Exception:  # not a JetStream reply: no opinion, the batch age decides
        return False
