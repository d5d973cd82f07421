"""What a JetStream consumer process tells about itself: its counters (Prometheus text on
``/metrics``), its probes (``/healthz``: the loop makes progress; ``/readyz``: connected and
bound), and the lag of every durable consumer of its stream and the dead-letter stream's fill,
read from the server every ``lag_interval_seconds``."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from services.observability import Counters
from services.stream.address import JetStreamAddress
from services.stream.dead_letters import DeadLetter

if TYPE_CHECKING:
    from services.consumers.runner.settings import RunnerSettings

log = logging.getLogger("liftoff.consumer.jetstream")


class Signals:
    """The part of :class:`~services.consumers.runner.jetstream.JetStreamRunner` that reports."""

    address: JetStreamAddress
    sink: Any
    dead_letter: DeadLetter
    settings: RunnerSettings
    counters: Counters
    _nc: Any
    _sub: Any
    _progress: float
    _bound: bool
    _lag_reported: set[str]
    """The durable consumers whose lag was reported in the last round."""

    @property
    def name(self) -> str:
        raise NotImplementedError

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

    async def _healthz(self) -> tuple[int, str]:
        idle = time.monotonic() - self._progress
        if idle < self.settings.liveness_seconds:
            return 200, "ok\n"
        return 503, f"no progress for {idle:.0f}s\n"

    async def _readyz(self) -> tuple[int, str]:
        if self._nc is not None and self._nc.is_connected and self._sub is not None and self._bound:
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
        infos = await js.consumers_info(stream)
        present = {info.name or info.config.durable_name or "" for info in infos}
        reported = self._lag_reported
        # A durable deleted since the last round (its destination removed) stops being
        # reported: its last lag would otherwise stay, and its age alert fire, forever.
        for gone in sorted(reported - present):
            self.counters.forget("liftoff_consumer_lag_events", consumer=gone, stream=stream)
            self.counters.forget("liftoff_consumer_lag_seconds", consumer=gone, stream=stream)
        self._lag_reported = present - {""}
        for info in infos:
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
