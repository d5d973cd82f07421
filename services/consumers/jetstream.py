"""The long-running consumer on NATS JetStream (the Kubernetes runtime).

One durable **pull** consumer per consumer name (``LIFTOFF_CONSUMER_NAME``) on the stream named
in ``LIFTOFF_STREAM_URL``, created if missing:

- explicit ack, deliver all, unlimited redeliveries (a sink parks what can never succeed;
  nothing is dropped by the server), ``ack_wait`` = ``LIFTOFF_CONSUMER_ACK_WAIT_SECONDS``
  (default 30 s) and ``max_ack_pending`` = twice the batch size (at least 1000). While a batch
  is being gathered or handled — including while the sink retries a down backend — its messages
  are kept alive with ``in_progress`` every ``ack_wait / 3``, so ``ack_wait`` need not exceed
  the worst batch time; it only bounds how long a *crashed* consumer's messages wait before
  redelivery.
- Batches are bounded by size (``max_events``) and age (``max_seconds`` since the first message
  of the batch arrived). The batch goes through :func:`services.consumers.process`; then each
  message is acked (done), nak'ed with a delay (retry) or published to the dead letter and
  acked (park). Acks are sent only after ``handle`` returned, i.e. after the output is durable.
- ``SinkUnavailable``: the same batch is handled again with backoff (0.5 s doubling to 10 s).
- SIGTERM/SIGINT: stop fetching; the batch in hand is handled (finish) if that completes within
  ``LIFTOFF_CONSUMER_SHUTDOWN_GRACE_SECONDS`` (default 20), otherwise it is abandoned: its
  messages are nak'ed (not acknowledged: redelivered at once to the next consumer). Exit 0.
- A nats-server restart is survived: the connection reconnects forever, the durable consumer
  and its ack floor live in the server's file store, and pending fetches are re-issued.

Probes on ``LIFTOFF_HEALTH_PORT`` (default 8081): ``/healthz`` 200 while the loop is making
progress (it iterates at least every second, also while retrying), ``/readyz`` 200 while
connected to NATS with the durable consumer bound, ``/metrics`` counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.consumers import (
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
from services.deadletter import DeadLetter, DeadLetterUnavailable
from services.observability import Counters
from services.streams.jetstream import JetStreamAddress

log = logging.getLogger("liftoff.consumer.jetstream")

T = TypeVar("T")


@dataclass(frozen=True)
class RunnerSettings:
    consumer_name: str
    batch_max_events: int
    batch_max_seconds: float
    ack_wait_seconds: float = 30.0
    shutdown_grace_seconds: float = 20.0
    health_port: int | None = 8081
    health_host: str = "0.0.0.0"
    fetch_max: int = 500
    liveness_seconds: float = 120.0

    @property
    def max_ack_pending(self) -> int:
        return max(1000, 2 * self.batch_max_events)


class _Stopped(Exception):
    pass


class JetStreamRunner:
    def __init__(
        self,
        stream_url: str,
        sink: Sink,
        dead_letter: DeadLetter,
        settings: RunnerSettings,
        counters: Counters | None = None,
    ) -> None:
        self.address = JetStreamAddress.parse(stream_url)
        self.sink = sink
        self.dead_letter = dead_letter
        self.settings = settings
        self.counters = counters or Counters()
        self.counters.describe(
            "liftoff_consumer_events_total", "Events by outcome (done, retry, park)."
        )
        self.counters.describe("liftoff_consumer_batches_total", "Batches handled.")
        self.counters.describe(
            "liftoff_consumer_sink_unavailable_total", "Batch attempts that found the sink down."
        )
        self._nc: Any = None
        self._sub: Any = None
        self._held: list[Msg] = []
        self._progress = time.monotonic()
        self._stop = asyncio.Event()

    # --- probes -------------------------------------------------------------------------------

    async def _healthz(self) -> tuple[int, str]:
        idle = time.monotonic() - self._progress
        if idle < self.settings.liveness_seconds:
            return 200, "ok\n"
        return 503, f"no progress for {idle:.0f}s\n"

    async def _readyz(self) -> tuple[int, str]:
        if self._nc is not None and self._nc.is_connected and self._sub is not None:
            return 200, "ok\n"
        return 503, "not connected to the stream\n"

    async def _metrics(self) -> tuple[int, str]:
        return 200, self.counters.render()

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        health = None
        if self.settings.health_port is not None:
            from services.consumers.health import serve_health

            health = await serve_health(
                self.settings.health_host,
                self.settings.health_port,
                {"/healthz": self._healthz, "/readyz": self._readyz, "/metrics": self._metrics},
            )
        keepalive = asyncio.create_task(self._keepalive(), name="keepalive")
        try:
            await self.sink.start()
            await self.dead_letter.start()
            try:
                await self._until_stopped(self._connect())
                await self._bind()
                await self._consume()
            except _Stopped:
                pass
        finally:
            keepalive.cancel()
            if self._held:  # stopped before the batch could be handled: give it back
                await self._release(self._held)
            with contextlib.suppress(Exception):
                await self.sink.close()
            with contextlib.suppress(Exception):
                await self.dead_letter.close()
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    await self._nc.flush(timeout=2)  # the last acks/naks, then go
                with contextlib.suppress(Exception):
                    await self._nc.close()
            if health is not None:
                health.close()
            log.info("consumer stopped", extra={"fields": {"consumer": self.name}})

    @property
    def name(self) -> str:
        return self.settings.consumer_name

    async def _until_stopped(self, work: Coroutine[Any, Any, T]) -> T:
        """Await ``work`` unless stop is requested first (then cancel it, raise _Stopped)."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise _Stopped
        return task.result()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        if self._stop.is_set():
            raise _Stopped

    async def _connect(self) -> None:
        async def on_error(error: Exception) -> None:
            log.debug("NATS connection error", extra={"fields": {"error": repr(error)}})

        async def on_disconnected() -> None:
            log.warning("disconnected from NATS")

        async def on_reconnected() -> None:
            log.info("reconnected to NATS")

        self._nc = await nats.connect(
            servers=self.address.servers,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )

    def _wanted(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.name,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.ack_wait_seconds,
            max_deliver=-1,
            max_ack_pending=self.settings.max_ack_pending,
            filter_subject=f"{self.address.subject_prefix}.>",
        )

    async def _ensure_consumer(self) -> None:
        js = self._nc.jetstream(timeout=5)
        stream, wanted = self.address.stream, self._wanted()
        try:
            current = (await js.consumer_info(stream, self.name)).config
        except nats.js.errors.NotFoundError:
            await js.add_consumer(stream, wanted)
            log.info("created durable consumer", extra={"fields": {"consumer": self.name}})
            return
        if (current.ack_wait, current.max_ack_pending, current.filter_subject) != (
            wanted.ack_wait,
            wanted.max_ack_pending,
            wanted.filter_subject,
        ):
            try:
                await js.update_consumer(stream, wanted)
            except nats.js.errors.Error as error:
                log.warning(
                    "could not update the durable consumer; using it as it is",
                    extra={"fields": {"consumer": self.name, "error": repr(error)}},
                )

    async def _bind(self) -> None:
        """Ensure the durable consumer and bind a pull subscription; retry until it works."""
        while True:
            self._progress = time.monotonic()
            try:
                await self._ensure_consumer()
                self._sub = await self._nc.jetstream(timeout=5).pull_subscribe_bind(
                    durable=self.name, stream=self.address.stream
                )
                log.info(
                    "consuming",
                    extra={"fields": {"consumer": self.name, "stream": self.address.stream}},
                )
                return
            except (TimeoutError, nats.errors.Error) as error:
                log.warning(
                    "cannot bind the consumer yet (stream missing or broker down)",
                    extra={"fields": {"consumer": self.name, "error": repr(error)}},
                )
                await self._sleep(1.0)

    async def _keepalive(self) -> None:
        interval = max(0.2, self.settings.ack_wait_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            for message in list(self._held):
                try:
                    await message.in_progress()
                except Exception:  # not connected: redelivery after ack_wait is the fallback
                    break

    # --- the loop -----------------------------------------------------------------------------

    async def _consume(self) -> None:
        settings = self.settings
        batch: list[Msg] = []
        self._held = batch
        first_at = 0.0
        failures = 0
        while not self._stop.is_set():
            self._progress = now = time.monotonic()
            room = settings.batch_max_events - len(batch)
            remaining = first_at + settings.batch_max_seconds - now if batch else 1.0
            if batch and (room <= 0 or remaining <= 0):
                await self._flush(batch)
                batch = []
                self._held = batch
                continue
            try:
                messages = await self._sub.fetch(
                    min(room, settings.fetch_max), timeout=max(0.05, min(1.0, remaining))
                )
                failures = 0
            except TimeoutError:  # nats.errors.TimeoutError or asyncio's, depending on the path
                continue
            except (nats.js.errors.NotFoundError, nats.js.errors.APIError) as error:
                failures += 1
                log.warning("fetch failed", extra={"fields": {"error": repr(error)}})
                await self._sleep(0.5)
                if failures >= 3:  # consumer gone (stream recreated?): ensure it again
                    await self._bind()
                continue
            except Exception as error:  # disconnected, closed, slow consumer ...: try again
                log.debug("fetch failed", extra={"fields": {"error": repr(error)}})
                await self._sleep(0.2)
                continue
            if messages and not batch:
                first_at = time.monotonic()
            batch.extend(m for m in messages if m.reply)
        # Stop requested: finish the batch in hand (bounded by the grace period) or abandon it.
        if batch:
            await self._flush(batch, finishing=True)
        self._held = []

    def _delivery(self, message: Msg) -> Delivery:
        meta = message.metadata
        return Delivery(
            data=message.data,
            position=Position("jetstream", meta.stream, meta.sequence.stream),
            arrival=meta.timestamp.astimezone(UTC) if meta.timestamp else datetime.now(UTC),
            subject=message.subject,
            attempts=meta.num_delivered,
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
                    except _Stopped:  # SIGTERM while handling: finish within the grace period
                        outcomes = await asyncio.wait_for(task, grace)
                break
            except SinkUnavailable as error:
                self.counters.add("liftoff_consumer_sink_unavailable_total")
                log.warning(
                    "sink unavailable; retrying the batch",
                    extra={
                        "fields": {
                            "consumer": self.name,
                            "events": len(batch),
                            "retry_in": backoff,
                            "error": str(error)[:500],
                        }
                    },
                )
                if finishing or self._stop.is_set():
                    await self._abandon(batch)
                    return
                try:
                    await self._sleep(backoff)
                except _Stopped:
                    await self._abandon(batch)
                    return
                backoff = min(10.0, backoff * 2)
            except TimeoutError:  # the grace period ended before the batch was durable
                task.cancel()
                await self._abandon(batch)
                return
        await self._apply(deliveries, outcomes)
        self.counters.add("liftoff_consumer_batches_total")

    async def _abandon(self, batch: list[Msg]) -> None:
        log.info(
            "abandoning the in-flight batch (not acknowledged)",
            extra={"fields": {"consumer": self.name, "events": len(batch)}},
        )
        await self._release(batch)
        batch.clear()

    async def _release(self, batch: list[Msg]) -> None:
        for message in batch:
            try:
                await message.nak()
            except Exception:
                break  # not connected: the server redelivers after ack_wait anyway
        with contextlib.suppress(Exception):
            await self._nc.flush(timeout=2)

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
        for delivery, outcome in zip(deliveries, outcomes, strict=True):
            message: Msg = delivery.handle
            try:
                if isinstance(outcome, Done) or (
                    isinstance(outcome, Park) and park_ok[id(delivery)]
                ):
                    await message.ack()
                    self.counters.add(
                        "liftoff_consumer_events_total",
                        outcome="done" if isinstance(outcome, Done) else "park",
                    )
                else:
                    delay = outcome.delay if isinstance(outcome, Retry) else None
                    await message.nak(
                        delay=delay if delay is not None else retry_delay(delivery.attempts)
                    )
                    self.counters.add("liftoff_consumer_events_total", outcome="retry")
            except (
                Exception
            ) as error:  # connection lost: the server redelivers; sinks are idempotent
                log.warning("could not acknowledge", extra={"fields": {"error": repr(error)}})
                break
        with contextlib.suppress(Exception):
            await self._nc.flush(timeout=5)

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


def run_consumer(
    stream_url: str,
    build_sink: Callable[[], Sink],
    dead_letter: DeadLetter,
    settings: RunnerSettings,
) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (0 after a graceful stop)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        runner = JetStreamRunner(stream_url, build_sink(), dead_letter, settings)
        log.info(
            "starting consumer",
            extra={
                "fields": {
                    "consumer": settings.consumer_name,
                    "batch_max_events": settings.batch_max_events,
                    "batch_max_seconds": settings.batch_max_seconds,
                }
            },
        )
        await runner.run(stop)

    asyncio.run(main())
    return 0
