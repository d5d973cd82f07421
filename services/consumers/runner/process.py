"""A consumer process on JetStream: its runner (one per partition of the stream, sharing one
sink and one dead letter), the signals that stop it, and ``python -m services <consumer>``."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from typing import Any

from services.consumers.runner.budget import share
from services.consumers.runner.contract import (
    DEFAULT_ACK_WAIT_SECONDS,
    DEFAULT_BUFFER_BYTES,
    DEFAULT_HEALTH_HOST,
    DEFAULT_HEALTH_PORT,
    DEFAULT_LAG_INTERVAL_SECONDS,
    DEFAULT_SHUTDOWN_GRACE_SECONDS,
    ConsumerRuntime,
)
from services.consumers.runner.jetstream import JetStreamRunner, RunnerSettings
from services.consumers.runner.model import Delivery, Outcome, Sink
from services.contract import level_of, or_default
from services.observability import Counters, configure_logging
from services.stream.address import JetStreamAddress
from services.stream.contract import dead_letter_or_default, stream_url
from services.stream.dead_letters import DeadLetter, DeadLetterUsage
from services.stream.dead_letters import Delivery as Parked

log = logging.getLogger("liftoff.consumer.jetstream")


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

    async def park(self, delivery: Parked, reason: str, consumer: str) -> None:
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
            # One byte budget per process: each partition's runner holds its share.
            replace(settings, health_port=None, buffer_bytes=share(settings.buffer_bytes, count)),
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
        sink = build_sink()
        tune_gc()
        fields = {
            "consumer": settings.consumer_name,
            "batch_max_events": settings.batch_max_events,
            "batch_max_seconds": settings.batch_max_seconds,
        }
        if address.partitions > 1:
            log.info(
                "starting consumer", extra={"fields": {**fields, "partitions": address.partitions}}
            )
            await _run_partitions(address, sink, dead_letter, settings, stop)
            return
        log.info("starting consumer", extra={"fields": fields})
        await JetStreamRunner(stream_url, sink, dead_letter, settings).run(stop)

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
        buffer_bytes=or_default(runtime.buffer_bytes, DEFAULT_BUFFER_BYTES),
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


def run_batches(
    runtime: ConsumerRuntime[str],
    name: str,
    batches: tuple[int | None, float | None],
    defaults: tuple[int, float],
    build_sink: Callable[[], Sink],
    *,
    start_at_end: bool = False,
    close_when_caught_up: bool = False,
) -> int:
    """``python -m services <consumer>``: ``batches`` (its batch bounds, unset → ``defaults``)
    and its sink, run on its runtime settings; ``start_at_end``: a new durable gets only what
    arrives after it is created; ``close_when_caught_up``: a batch is handled as soon as nothing
    is pending on the stream (:class:`RunnerSettings`)."""
    events, seconds = batches
    settings = runner_settings(
        runtime, name, or_default(events, defaults[0]), or_default(seconds, defaults[1])
    )
    settings = replace(
        settings, start_at_end=start_at_end, close_when_caught_up=close_when_caught_up
    )
    return run_process(runtime, settings, build_sink)
