"""``close_when_caught_up`` (the loader's runner) on a real nats-server: a batch is handled as
soon as nothing is pending on the stream, not after its age; under a backlog batches still
fill to their size."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from services.consumers.runner.jetstream import JetStreamRunner
from services.consumers.runner.model import DONE, Delivery, Outcome
from services.stream.dead_letters import JetStreamDeadLetter
from tests.services.consumers.conftest import event, publish, settings

pytestmark = pytest.mark.servers


class Recording:
    """A sink that keeps the size of every batch it is handed."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def start(self) -> None: ...

    async def check_ready(self) -> None: ...

    async def close(self) -> None: ...

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Outcome]:
        self.sizes.append(len(batch))
        return [DONE] * len(batch)


async def run_until(
    url: str, dead_letter_url: str, sink: Recording, handled: int, trickle: int = 0
) -> None:
    """Run the runner (batches of 100, 60 s age, caught-up closing) until ``handled`` events
    went through ``sink``, publishing ``trickle`` events one by one meanwhile. A bounded wait
    of 20 s: without caught-up closing the first batch alone would wait 60 s."""
    runner_settings = settings(
        "loader", batch_max_events=100, batch_max_seconds=60.0, close_when_caught_up=True
    )
    stop = asyncio.Event()
    runner = JetStreamRunner(url, sink, JetStreamDeadLetter(dead_letter_url), runner_settings)
    task = asyncio.create_task(runner.run(stop))
    try:
        for index in range(trickle):
            await asyncio.sleep(0.2)
            await publish(url, [event(index, prefix="trickle")])
        give_up = time.monotonic() + 20
        while sum(sink.sizes) < handled and time.monotonic() < give_up:
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


def test_light_load_is_handled_without_waiting_for_the_batch_age(
    jetstream: tuple[str, str], dead_letter_url: str
) -> None:
    url, _ = jetstream
    sink = Recording()
    asyncio.run(run_until(url, dead_letter_url, sink, handled=5, trickle=5))
    assert sum(sink.sizes) == 5
    assert len(sink.sizes) >= 2  # not one batch gathered for its age


def test_a_backlog_still_fills_the_batches(
    jetstream: tuple[str, str], dead_letter_url: str
) -> None:
    url, _ = jetstream
    asyncio.run(publish(url, [event(index) for index in range(450)]))
    sink = Recording()
    asyncio.run(run_until(url, dead_letter_url, sink, handled=450))
    assert sink.sizes == [100, 100, 100, 100, 50]
