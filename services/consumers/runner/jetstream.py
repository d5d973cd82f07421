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
  of the batch arrived). The batch goes through :func:`services.consumers.runner.model.process`;
  then each message is acked (done), nak'ed with a delay (retry) or published to the dead letter and
  acked (park). Acks are sent only after ``handle`` returned, i.e. after the output is durable.
- ``SinkUnavailable``: the same batch is handled again with backoff (0.5 s doubling to 10 s).
- SIGTERM/SIGINT: stop fetching; the batch in hand is handled (finish) if that completes within
  ``LIFTOFF_CONSUMER_SHUTDOWN_GRACE_SECONDS`` (default 20), otherwise it is abandoned: its
  messages are nak'ed (not acknowledged: redelivered at once to the next consumer) once the
  outstanding pull request has ended, with every message fetched ahead. Exit 0.
- A nats-server restart is survived: the connection reconnects forever, the durable consumer
  and its ack floor live in the server's file store, and the pull request is re-issued. A
  consumer that stops answering pull requests (deleted, stream recreated) is ensured again.
- Pulling: one pull request (``batch`` + ``expires``) outstanding at a time on a private inbox,
  read by a callback — no task or timer per message; the next batch's request is issued before
  the current batch goes to the sink, so at most two batches are in hand (``max_ack_pending``).

Probes on ``LIFTOFF_HEALTH_PORT`` (default 8081): ``/healthz`` 200 while the loop is making
progress (it iterates at least every second, also while retrying), ``/readyz`` 200 while
connected to NATS with the durable consumer bound, ``/metrics`` counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import DEFAULT_PREFIX, AckPolicy, ConsumerConfig, DeliverPolicy

from services.consumers.runner.contract import (
    DEFAULT_ACK_WAIT_SECONDS,
    DEFAULT_HEALTH_HOST,
    DEFAULT_HEALTH_PORT,
    DEFAULT_LAG_INTERVAL_SECONDS,
    DEFAULT_SHUTDOWN_GRACE_SECONDS,
    ConsumerRuntime,
)
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
from services.contract import level_of, or_default
from services.observability import Counters, configure_logging
from services.stream.address import JetStreamAddress
from services.stream.contract import dead_letter_or_default, stream_url
from services.stream.dead_letters import DeadLetter, DeadLetterUnavailable, DeadLetterUsage
from services.stream.jetstream import stream_credentials

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
    fetch_max: int = 10_000
    """The most messages one pull request asks for (requests never exceed the batch size)."""
    pull_expires_seconds: float = 1.0
    """How long one pull request waits on the server for messages before it expires."""
    liveness_seconds: float = 120.0
    lag_interval_seconds: float = 15.0
    """How often the lag of every durable consumer of the stream is read from the server."""

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
        self._describe_metrics()
        self._nc: Any = None
        self._sub: Any = None
        self._batch: list[Msg] = []  # the batch being gathered or handled
        self._incoming: list[Msg] = []  # delivered, not yet in a batch (filled by _on_message)
        self._incoming_since = 0.0  # when the oldest message in _incoming arrived
        self._abandoned: list[Msg] = []  # stopping: to be given back (nak) by run()
        self._wake = asyncio.Event()  # set by _on_message (and stop) to wake the loop
        self._wake_at = 1  # wake the loop once _incoming holds this many messages
        self._inbox: str | None = None
        self._next_subject = (
            f"{DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{self.address.stream}.{settings.consumer_name}"
        )
        self._pulls = 0
        self._pull_subject = ""  # reply subject of the outstanding pull request
        self._pull_deadline = 0.0  # the outstanding request is over after this (monotonic)
        self._pull_remaining = 0  # messages the outstanding request may still deliver
        self._pull_error: str | None = None
        self._progress = time.monotonic()
        self._stop = asyncio.Event()

    def _describe_metrics(self) -> None:
        describe = self.counters.describe
        describe(
            "liftoff_consumer_events_total", "Events by consumer and outcome (done, retry, park)."
        )
        describe("liftoff_consumer_batches_total", "Batches handled, by consumer.")
        describe(
            "liftoff_consumer_sink_unavailable_total", "Batch attempts that found the sink down."
        )
        describe(
            "liftoff_consumer_acked_sequence", "Highest stream sequence this process acknowledged."
        )
        describe(
            "liftoff_consumer_lag_events",
            "Events of the stream not yet acknowledged by a durable consumer (the server's "
            "view, for every durable consumer of the stream, read by every consumer process).",
        )
        describe(
            "liftoff_consumer_lag_seconds",
            "Age of the oldest event a durable consumer has not acknowledged (0 when caught up).",
        )
        describe(
            "liftoff_dead_letter_stream_bytes",
            "Bytes held by the JetStream dead-letter stream (quarantined and parked events).",
        )
        describe(
            "liftoff_dead_letter_stream_max_bytes",
            "The dead-letter stream's byte bound (-1: none): at it, the oldest are dropped.",
        )
        describe("liftoff_dead_letter_stream_messages", "Messages held by the dead-letter stream.")
        # Series exist from the start, so the first park is an increase (alerts use increase()).
        for outcome in ("done", "retry", "park"):
            self.counters.add(
                "liftoff_consumer_events_total", 0, consumer=self.name, outcome=outcome
            )
        self.counters.add("liftoff_consumer_batches_total", 0, consumer=self.name)
        self.counters.add("liftoff_consumer_sink_unavailable_total", 0, consumer=self.name)

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
        text = self.counters.render()
        extra = getattr(self.sink, "counters", None)  # e.g. a broadcaster's delivery attempts
        if isinstance(extra, Counters):
            text += extra.render()
        return 200, text

    async def _watch_lag(self) -> None:
        """Publish the lag of every durable consumer of the stream, as the server sees it.

        Every consumer process does this for all of them, so a consumer that is stopped (no
        process left to scrape) still shows its growing lag; the alert takes the maximum."""
        while True:
            await asyncio.sleep(self.settings.lag_interval_seconds)
            if self._nc is None or not self._nc.is_connected:
                continue
            try:
                await self._measure_lag()
                await self._measure_dead_letters()
            except Exception as error:  # the next round tries again; lag is advisory
                log.debug("could not read consumer lag", extra={"fields": {"error": repr(error)}})

    async def _measure_dead_letters(self) -> None:
        """The dead-letter stream's fill, read with the lag: at its byte bound the oldest dead
        letters are dropped, and this is what says so beforehand."""
        usage = await self.dead_letter.usage()
        if usage is None:
            return
        for name, value in (
            ("liftoff_dead_letter_stream_bytes", usage.bytes),
            ("liftoff_dead_letter_stream_max_bytes", usage.max_bytes),
            ("liftoff_dead_letter_stream_messages", usage.messages),
        ):
            self.counters.set(name, value, stream=usage.stream)

    async def _measure_lag(self) -> None:
        js = self._nc.jetstream(timeout=5)
        stream = self.address.stream
        now = datetime.now(UTC)
        for info in await js.consumers_info(stream):
            name = info.name or info.config.durable_name
            if not name:
                continue
            pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
            age = 0.0
            if pending:
                floor = info.ack_floor.stream_seq if info.ack_floor else 0
                oldest = await js.get_msg(
                    stream,
                    seq=(floor or 0) + 1,
                    subject=info.config.filter_subject or ">",
                    next=True,
                )
                if oldest.time is not None:
                    age = max(0.0, (now - oldest.time).total_seconds())
            self.counters.set("liftoff_consumer_lag_events", pending, consumer=name, stream=stream)
            self.counters.set("liftoff_consumer_lag_seconds", age, consumer=name, stream=stream)

    # --- lifecycle ----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        health = None
        if self.settings.health_port is not None:
            from services.consumers.runner.health import serve_health

            health = await serve_health(
                self.settings.health_host,
                self.settings.health_port,
                {"/healthz": self._healthz, "/readyz": self._readyz, "/metrics": self._metrics},
            )
        keepalive = asyncio.create_task(self._keepalive(), name="keepalive")
        lag = asyncio.create_task(self._watch_lag(), name="lag")
        waker = asyncio.create_task(self._wake_on_stop(), name="wake-on-stop")
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
            lag.cancel()
            waker.cancel()
            if self._sub is not None and self._nc is not None and self._nc.is_connected:
                # No more deliveries to us: drain = unsubscribe, a round trip, and whatever
                # the server sent before that still goes through _on_message, to be released
                # below with the rest.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._sub.drain(), 2)
            held = self._held()
            if held:  # stopped before these could be handled: give them back
                await self._release(held)
            with contextlib.suppress(Exception):
                await self.sink.close()
            with contextlib.suppress(Exception):
                await self.dead_letter.close()
            if self._nc is not None:
                with contextlib.suppress(Exception):
                    await flush(self._nc, 2)  # the last acks/naks, then go
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

    async def _wake_on_stop(self) -> None:
        await self._stop.wait()
        self._wake.set()

    def _held(self) -> list[Msg]:
        """Every message delivered to us and not yet acknowledged or released."""
        return [*self._abandoned, *self._batch, *self._incoming]

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
            self._pull_deadline = 0.0  # a pull request may have been lost: ask again now
            self._wake.set()

        self._nc = await nats.connect(
            servers=self.address.servers,
            **stream_credentials(),
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
                if self._inbox is None:
                    inbox = self._nc.new_inbox()
                    self._sub = await self._nc.subscribe(f"{inbox}.*", cb=self._on_message)
                    self._inbox = inbox
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
            for message in self._held():
                try:
                    await message.in_progress()
                except Exception:  # not connected: redelivery after ack_wait is the fallback
                    break

    # --- the loop -----------------------------------------------------------------------------
    #
    # Pulling costs nothing per message: one pull request (``batch`` + ``expires``) is kept
    # outstanding on a private inbox whose callback subscription appends each delivery to
    # ``_incoming`` (no task, no timer per message) and wakes the loop only when the batch can
    # be completed, the request has ended, or the first message of a batch arrived. The loop
    # waits with a single timeout: the batch's remaining age (at most 1 s). The request for the
    # next batch is issued before the current one is handed to the sink, so the next batch
    # arrives while the sink works; in hand are therefore at most two batches (the in-flight
    # one and the next), which is what ``max_ack_pending`` allows. Every message in hand is kept
    # alive by ``_keepalive`` and given back (nak) on stop.

    async def _on_message(self, message: Msg) -> None:
        headers = message.headers
        status = headers.get("Status") if headers else None
        if not status:
            if message.reply:  # a JetStream delivery
                incoming = self._incoming
                if not incoming:
                    self._incoming_since = time.monotonic()
                incoming.append(message)
                self._pull_remaining -= 1
                if self._pull_remaining <= 0:  # the request is complete (no status follows)
                    self._pull_deadline = 0.0
                    self._wake.set()
                elif len(incoming) >= self._wake_at:
                    self._wake.set()
            return
        if status == "100" or message.subject != self._pull_subject:
            return  # a heartbeat, or the end of a request already given up on
        # 404 no messages, 408 expired, 409/503 ...: this request will deliver nothing more.
        self._pull_deadline = 0.0
        if status not in ("404", "408"):
            self._pull_error = f"{status} {headers.get('Description', '')}".strip()
        self._wake.set()

    async def _pull(self, buffered: int) -> None:
        """Ask for up to a batch's worth beyond ``buffered``, unless a request is outstanding."""
        now = time.monotonic()
        if now < self._pull_deadline:
            return
        if self._pull_deadline and self._nc.is_connected:
            # Not even a 408 when it expired: the consumer is gone (its stream recreated?).
            self._pull_deadline = 0.0
            self._pull_error = "no answer to the pull request"
            return
        wanted = min(self.settings.fetch_max, self.settings.batch_max_events - buffered)
        if wanted <= 0:
            return
        expires = self.settings.pull_expires_seconds
        self._pulls += 1
        self._pull_subject = f"{self._inbox}.{self._pulls}"
        # Without an answer by then (connection lost) the request counts as over; if it still
        # delivers, its messages are simply taken into the next batch.
        self._pull_deadline = now + expires + 1.0
        self._pull_remaining = wanted
        request = b'{"batch":%d,"expires":%d}' % (wanted, int(expires * 1e9))
        try:
            await self._nc.publish(self._next_subject, request, reply=self._pull_subject)
        except Exception as error:  # closed, or the reconnect buffer is full: try again
            self._pull_deadline = 0.0
            log.debug("pull request failed", extra={"fields": {"error": repr(error)}})
            await self._sleep(0.2)

    async def _consume(self) -> None:
        settings = self.settings
        batch: list[Msg] = []
        self._batch = batch
        first_at = 0.0
        failures = 0
        while not self._stop.is_set():
            self._progress = now = time.monotonic()
            incoming = self._incoming
            if incoming and len(batch) < settings.batch_max_events:
                if not batch:
                    first_at = self._incoming_since
                take = settings.batch_max_events - len(batch)
                batch.extend(incoming[:take])
                del incoming[:take]  # any rest keeps its (earlier) arrival time: conservative
                failures = 0
            if self._pull_error is not None:
                error, self._pull_error = self._pull_error, None
                failures += 1
                log.warning("pull request failed", extra={"fields": {"error": error}})
                await self._sleep(0.5)
                if failures >= 3:  # consumer gone (stream recreated?): ensure it again
                    failures = 0
                    await self._bind()
                continue
            if batch and (
                len(batch) >= settings.batch_max_events
                or now - first_at >= settings.batch_max_seconds
            ):
                await self._pull(len(self._incoming))  # the next batch arrives meanwhile
                await self._flush(batch)
                batch = []
                self._batch = batch
                continue
            await self._pull(len(batch) + len(self._incoming))
            if batch:
                timeout = min(1.0, first_at + settings.batch_max_seconds - now)
                self._wake_at = settings.batch_max_events - len(batch)
            else:
                timeout = 1.0
                self._wake_at = 1
            if len(self._incoming) >= self._wake_at or self._stop.is_set():
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, timeout)):
                    await self._wake.wait()
        # Stop requested: finish the batch in hand (bounded by the grace period) or abandon it.
        if batch:
            await self._flush(batch, finishing=True)
        self._batch = []
        # Let the outstanding pull request end (within its expiry) before anything is given
        # back: nats-server would deliver released messages to it, i.e. to this closing
        # connection, where they would wait for ack_wait. run() then releases what came.
        self._wake_at = 1 << 62
        while time.monotonic() < self._pull_deadline and self._nc.is_connected:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, self._pull_deadline - time.monotonic())):
                    await self._wake.wait()

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
                    except _Stopped:  # SIGTERM while handling: finish within the grace period
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
                except _Stopped:
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
            # The common case, all done: one ack each and nothing else per message.
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
        else:
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
                except (
                    Exception
                ) as error:  # connection lost: the server redelivers; sinks are idempotent
                    log.warning("could not acknowledge", extra={"fields": {"error": repr(error)}})
                    break
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


def tune_gc() -> None:
    """Fewer garbage collections for a consumer process (call once, after start-up imports).

    A batch allocates a few objects per message (nats message, decoded event dicts, delivery)
    that live until the batch is acknowledged, so with CPython's default threshold (a
    collection every 700 allocations) the collector runs every few dozen messages and keeps
    re-scanning whole batches: about half of the per-message decoding cost in measurements.
    Freezing what start-up imported and collecting the young generation every 20,000
    allocations removes most of that; cycles are still collected, just in larger steps."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


class _SharedSink:
    """One sink behind the runners of several partitions: started by the first runner, closed
    by the last, handed one batch at a time (a sink is written for a single caller; each
    partition keeps its own order, and the process has one core's worth of Python anyway)."""

    def __init__(self, sink: Sink, users: int) -> None:
        self._sink = sink
        self._users = users
        self._started = False
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if not self._started:
                await self._sink.start()
                self._started = True

    @property
    def counters(self) -> Any:
        """The sink's own counters (a broadcaster's), which the runners' /metrics include."""
        return getattr(self._sink, "counters", None)

    async def check_ready(self) -> None:
        await self._sink.check_ready()

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Outcome]:
        async with self._lock:
            return await self._sink.handle(batch)

    async def close(self) -> None:
        self._users -= 1
        if self._users == 0:
            await self._sink.close()


class _SharedDeadLetter:
    """One dead-letter client behind several partition runners (started once, closed last)."""

    def __init__(self, dead_letter: DeadLetter, users: int) -> None:
        self._dead_letter = dead_letter
        self._users = users
        self._started: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._started is None:
            self._started = asyncio.ensure_future(self._dead_letter.start())
        await asyncio.shield(self._started)

    async def park(self, delivery: Delivery, reason: str, consumer: str) -> None:
        await self._dead_letter.park(delivery, reason, consumer)

    async def usage(self) -> DeadLetterUsage | None:
        return await self._dead_letter.usage()

    async def close(self) -> None:
        self._users -= 1
        if self._users == 0:
            await self._dead_letter.close()


async def _run_partitions(
    address: JetStreamAddress,
    sink: Sink,
    dead_letter: DeadLetter,
    settings: RunnerSettings,
    stop: asyncio.Event,
) -> None:
    """One runner (durable consumer, same name) per partition stream, sharing the sink, the
    dead letter, the counters and one set of probes: healthy and ready only when every
    partition's runner is."""
    count = address.partitions
    counters = Counters()
    shared_sink, shared_dead_letter = (
        _SharedSink(sink, count),
        _SharedDeadLetter(dead_letter, count),
    )
    runners = [
        JetStreamRunner(
            part.url(),
            shared_sink,
            shared_dead_letter,
            replace(settings, health_port=None),
            counters,
        )
        for part in address.partition_addresses()
    ]

    def every(probe: str) -> Callable[[], Coroutine[Any, Any, tuple[int, str]]]:
        async def check() -> tuple[int, str]:
            for runner in runners:
                status, text = await getattr(runner, probe)()
                if status != 200:
                    return status, f"{runner.address.stream}: {text}"
            return 200, "ok\n"

        return check

    health = None
    if settings.health_port is not None:
        from services.consumers.runner.health import serve_health

        health = await serve_health(
            settings.health_host,
            settings.health_port,
            {
                "/healthz": every("_healthz"),
                "/readyz": every("_readyz"),
                "/metrics": runners[0]._metrics,
            },
        )
    try:
        await asyncio.gather(*(runner.run(stop) for runner in runners))
    finally:
        if health is not None:
            health.close()


def run_consumer(
    stream_url: str,
    build_sink: Callable[[], Sink],
    dead_letter: DeadLetter,
    settings: RunnerSettings,
) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code (0 after a graceful stop). A partitioned
    stream gets one durable consumer per partition stream, all in this process."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        address = JetStreamAddress.parse(stream_url)
        if address.partitions > 1:
            sink = build_sink()
            tune_gc()
            log.info(
                "starting consumer",
                extra={
                    "fields": {
                        "consumer": settings.consumer_name,
                        "partitions": address.partitions,
                        "batch_max_events": settings.batch_max_events,
                        "batch_max_seconds": settings.batch_max_seconds,
                    }
                },
            )
            await _run_partitions(address, sink, dead_letter, settings, stop)
            return
        runner = JetStreamRunner(stream_url, build_sink(), dead_letter, settings)
        tune_gc()
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


def runner_settings(
    runtime: ConsumerRuntime[str], name: str, batch_max_events: int, batch_max_seconds: float
) -> RunnerSettings:
    """What a consumer process runs with: its contract's runtime settings, defaults applied
    (``name``: the durable consumer's default name)."""
    health_port = or_default(runtime.health_port, DEFAULT_HEALTH_PORT)
    return RunnerSettings(
        consumer_name=runtime.consumer_name or name,
        batch_max_events=batch_max_events,
        batch_max_seconds=batch_max_seconds,
        ack_wait_seconds=or_default(runtime.ack_wait_seconds, DEFAULT_ACK_WAIT_SECONDS),
        shutdown_grace_seconds=or_default(
            runtime.shutdown_grace_seconds, DEFAULT_SHUTDOWN_GRACE_SECONDS
        ),
        health_port=health_port or None,
        health_host=runtime.health_host or DEFAULT_HEALTH_HOST,
        lag_interval_seconds=or_default(runtime.lag_interval_seconds, DEFAULT_LAG_INTERVAL_SECONDS),
    )


def run_process(
    runtime: ConsumerRuntime[str],
    settings: RunnerSettings,
    build_sink: Callable[[], Sink],
) -> int:
    """``python -m services <consumer>``: logging, the dead letter, then :func:`run_consumer`."""
    from services.stream.dead_letters import open_dead_letter
    from services.stream.jetstream import check_credentials

    configure_logging(level_of(runtime.log_level))
    check_credentials(runtime.stream)
    url = stream_url(runtime.stream, ("nats",))
    dead_letter = dead_letter_or_default(runtime.dead_letter_url, url)
    return run_consumer(url, build_sink, open_dead_letter(dead_letter), settings)
