"""Drain a JetStream stream with a runner and a sink until its durable consumer acknowledged
every event: events/s. Shared by the benchmarks, and copied beside ``typed_drain.py`` into an
earlier commit's tree by ``typed_loading.py --before`` (so it imports only ``services``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats

from services.consumers.runner.jetstream import JetStreamRunner
from services.consumers.runner.settings import RunnerSettings
from services.stream.dead_letters import JetStreamDeadLetter


async def drain(
    stream_url: str,
    dead_letter: str,
    sink: Any,
    name: str,
    events: int,
    max_events: int,
    max_seconds: float,
    close_when_caught_up: bool = False,
    stream: str = "EVENTS",
) -> float:
    """Run the runner until the durable consumer acknowledged everything; events/s."""
    settings = RunnerSettings(
        name, max_events, max_seconds, health_port=None, close_when_caught_up=close_when_caught_up
    )
    runner = JetStreamRunner(stream_url, sink, JetStreamDeadLetter(dead_letter), settings)
    stop = asyncio.Event()
    nc = await nats.connect(stream_url.rpartition("/")[0])
    js = nc.jetstream()
    started = time.perf_counter()
    task = asyncio.create_task(runner.run(stop))
    while True:
        await asyncio.sleep(0.05)
        try:
            info = await js.consumer_info(stream, name)
        except Exception:
            continue
        if info.ack_floor.stream_seq >= events:
            elapsed = time.perf_counter() - started
            break
    stop.set()
    await task
    await nc.close()
    return events / elapsed
