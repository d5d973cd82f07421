"""The long-running consumer on NATS JetStream (the Kubernetes runtime).

One durable **pull** consumer per consumer name (``LIFTOFF_CONSUMER_NAME``) on the stream named
in ``LIFTOFF_STREAM_URL``, created if missing:

- explicit ack, unlimited redeliveries (a sink parks what can never succeed; nothing is
  dropped by the server); created delivering every message the stream holds (archiver,
  loader) or, with ``start_at_end`` (broadcasters), only what arrives after its creation, so a
  destination added to a running stack is not sent the whole retention. An existing durable
  keeps its position and deliver policy (the server cannot change either). A durable that the
  stream's recorded set (``services.stream.durables``) no longer declares is not re-created:
  its destination was removed and its process is about to be.
- ``ack_wait`` = ``LIFTOFF_CONSUMER_ACK_WAIT_SECONDS`` (default 30 s) and ``max_ack_pending`` =
  twice the batch size (at least 1000). While a batch is being gathered or handled — including
  while the sink retries a down backend — its messages are kept alive with ``in_progress`` every
  ``ack_wait / 3``, so ``ack_wait`` need not exceed the worst batch time; it only bounds how long
  a *crashed* consumer's messages wait before redelivery.
- Batches are bounded by size (``max_events``) and age (``max_seconds`` since the first message
  of the batch arrived), or (``close_when_caught_up``) as soon as nothing is pending after it
  (:func:`~services.consumers.runner.acks.nothing_pending`: light load → small batches at once,
  a backlog → full ones). The batch goes through :func:`services.consumers.runner.model.process`;
  each message is then acked (done), nak'ed with a delay (retry) or published to the dead letter
  and acked (park). Acks are sent only after ``handle`` returned, i.e. after the output is durable.
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
  the current batch goes to the sink, so at most two batches are in hand (``max_ack_pending``),
  and at most ``buffer_bytes`` (``services.consumers.runner.budget``: pull requests carry
  ``max_bytes``, a batch goes to the sink at half of it).

Probes on ``LIFTOFF_HEALTH_PORT`` (default 8081): ``/healthz`` 200 while the loop is making
progress (it iterates at least every second, also while retrying), ``/readyz`` 200 while
connected to NATS with the durable consumer bound, ``/metrics`` counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import DEFAULT_PREFIX, AckPolicy, ConsumerConfig, DeliverPolicy

from services.consumers.runner.acks import Acknowledging, Stopped, flush, nothing_pending
from services.consumers.runner.budget import (
    MESSAGE_OVERHEAD,
    batch_full_by_bytes,
    pull_limit,
)
from services.consumers.runner.model import (
    Sink,
)
from services.consumers.runner.settings import RunnerSettings as RunnerSettings
from services.consumers.runner.signals import Signals
from services.observability import Counters
from services.stream.address import JetStreamAddress
from services.stream.dead_letters import DeadLetter
from services.stream.durables import declares
from services.stream.jetstream import stream_credentials

log = logging.getLogger("liftoff.consumer.jetstream")

T = TypeVar("T")


_NORMAL_ENDS = ("Message Size Exceeds MaxBytes", "Batch Completed")
"""How the server ends a pull request that had ``max_bytes`` (status 409): not failures."""


class NotDeclared(Exception):
    """The durable is gone and the stream's recorded set no longer names it: not re-created."""


class JetStreamRunner(Signals, Acknowledging):
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
        self._closing = False  # set just before our own close: its disconnect is no warning
        self._sub: Any = None
        self._batch: list[Msg] = []  # the batch being gathered or handled
        self._incoming: list[Msg] = []  # delivered, not yet in a batch (filled by _on_message)
        self._incoming_since = 0.0  # when the oldest message in _incoming arrived
        self._incoming_bytes = 0  # what _incoming costs the byte budget (runner.budget)
        self._batch_bytes = 0  # what the batch being gathered or handled costs it
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
        self._caught_up = False  # the latest message delivered had nothing pending after it
        self._progress = time.monotonic()
        self._stop = asyncio.Event()
        self._lag_reported: set[str] = set()
        self._bound = False  # the durable consumer exists and is ours to pull from

    # --- probes -------------------------------------------------------------------------------

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
            except Stopped:
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
                self._closing = True
                with contextlib.suppress(Exception):
                    await self._nc.close()
            if health is not None:
                health.close()
            log.info("consumer stopped", extra={"fields": {"consumer": self.name}})

    @property
    def name(self) -> str:
        return self.settings.consumer_name

    async def _until_stopped(self, work: Awaitable[T]) -> T:
        """Await ``work`` unless stop is requested first (then cancel it, raise Stopped)."""
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
            raise Stopped
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
            raise Stopped

    async def _connect(self) -> None:
        async def on_error(error: Exception) -> None:
            log.debug("NATS connection error", extra={"fields": {"error": repr(error)}})

        async def on_disconnected() -> None:
            # Our own close at the end disconnects too: no warning for that.
            if self._closing:
                log.debug("closed the NATS connection")
            else:
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
            deliver_policy=DeliverPolicy.NEW if self.settings.start_at_end else DeliverPolicy.ALL,
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
            if not declares((await js.stream_info(stream)).config.metadata, self.name):
                raise NotDeclared from None
            await js.add_consumer(stream, wanted)
            log.info(
                "created durable consumer",
                extra={"fields": {"consumer": self.name, "deliver": wanted.deliver_policy}},
            )
            return
        if (current.ack_wait, current.max_ack_pending, current.filter_subject) != (
            wanted.ack_wait,
            wanted.max_ack_pending,
            wanted.filter_subject,
        ):
            # Where it starts is fixed at creation: keep the existing durable's.
            wanted.deliver_policy = current.deliver_policy
            try:
                # nats-py has no update call: the create request of an existing durable
                # updates what the server lets change (ack wait, max ack pending, filter).
                await js.add_consumer(stream, wanted)
            except nats.js.errors.Error as error:
                log.warning(
                    "could not update the durable consumer; using it as it is",
                    extra={"fields": {"consumer": self.name, "error": repr(error)}},
                )

    async def _bind(self) -> None:
        """Ensure the durable consumer and bind a pull subscription; retry until it works."""
        self._bound = False
        while True:
            self._progress = time.monotonic()
            try:
                await self._ensure_consumer()
                self._bound = True
                if self._inbox is None:
                    inbox = self._nc.new_inbox()
                    self._sub = await self._nc.subscribe(f"{inbox}.*", cb=self._on_message)
                    self._inbox = inbox
                log.info(
                    "consuming",
                    extra={"fields": {"consumer": self.name, "stream": self.address.stream}},
                )
                return
            except NotDeclared:
                log.warning(
                    "the durable consumer was deleted and the stream no longer declares it "
                    "(its destination was removed): not re-creating it",
                    extra={"fields": {"consumer": self.name, "stream": self.address.stream}},
                )
                await self._sleep(5.0)
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
                self._incoming_bytes += len(message.data) + MESSAGE_OVERHEAD
                self._pull_remaining -= 1
                self._caught_up = self.settings.close_when_caught_up and nothing_pending(message)
                if self._pull_remaining <= 0:  # the request is complete (no status follows)
                    self._pull_deadline = 0.0
                    self._wake.set()
                elif self._caught_up or len(incoming) >= self._wake_at:
                    self._wake.set()
            return
        if status == "100" or message.subject != self._pull_subject:
            return  # a heartbeat, or the end of a request already given up on
        # 404 no messages, 408 expired, 409 with max_bytes: its bytes or its count reached,
        # other 409s, 503 ...: this request will deliver nothing more.
        self._pull_deadline = 0.0
        description = str((headers or {}).get("Description", ""))
        if status not in ("404", "408") and description not in _NORMAL_ENDS:
            self._pull_error = f"{status} {(headers or {}).get('Description', '')}".strip()
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
        limit = self._byte_limit(wanted)
        if limit is not None:
            wanted, max_bytes = limit
        if wanted <= 0:
            return
        expires = self.settings.pull_expires_seconds
        self._pulls += 1
        self._pull_subject = f"{self._inbox}.{self._pulls}"
        # Without an answer by then (connection lost) the request counts as over; if it still
        # delivers, its messages are simply taken into the next batch.
        self._pull_deadline = now + expires + 1.0
        self._pull_remaining = wanted
        request = b'{"batch":%d,"expires":%d' % (wanted, int(expires * 1e9))
        request += b',"max_bytes":%d}' % max_bytes if limit is not None else b"}"
        try:
            await self._nc.publish(self._next_subject, request, reply=self._pull_subject)
        except Exception as error:  # closed, or the reconnect buffer is full: try again
            self._pull_deadline = 0.0
            log.debug("pull request failed", extra={"fields": {"error": repr(error)}})
            await self._sleep(0.2)

    def _byte_limit(self, wanted: int) -> tuple[int, int] | None:
        """(messages, payload bytes) the next pull may ask for within the byte budget."""
        budget = self.settings.buffer_bytes
        if budget is None:
            return None
        held = (len(self._batch) + len(self._incoming), self._batch_bytes + self._incoming_bytes)
        return pull_limit(budget, held, wanted)

    def _take_incoming(self, batch: list[Msg]) -> None:
        """Move what arrived into the batch, up to its event count."""
        take = self.settings.batch_max_events - len(batch)
        taken = self._incoming[:take]
        moved = sum(len(m.data) for m in taken) + MESSAGE_OVERHEAD * len(taken)
        batch.extend(taken)
        del self._incoming[:take]  # any rest keeps its (earlier) arrival time: conservative
        self._batch_bytes += moved
        self._incoming_bytes -= moved

    def _batch_ready(self, batch: list[Msg], age: float) -> bool:
        """Full, old enough, or (``close_when_caught_up``) nothing more pending."""
        settings, caught_up = self.settings, self._caught_up and not self._incoming
        ready = (
            caught_up
            or len(batch) >= settings.batch_max_events
            or age >= settings.batch_max_seconds
        )
        ready = ready or batch_full_by_bytes(settings.buffer_bytes, self._batch_bytes)
        if ready and not self._incoming:
            self._caught_up = False  # its message is in this batch; a later one may set it
        return ready

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
                self._take_incoming(batch)
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
            if batch and self._batch_ready(batch, now - first_at):
                await self._pull(len(self._incoming))  # the next batch arrives meanwhile
                await self._flush(batch)
                batch = []
                self._batch = batch
                self._batch_bytes = 0
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
