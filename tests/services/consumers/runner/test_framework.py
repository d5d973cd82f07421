"""The consumer framework on a real nats-server: batching, outcomes, backend outages, poison."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import nats
import pytest

from services.consumers.runner.model import DONE, Delivery, Outcome, Retry, SinkUnavailable
from tests.servers import ServerProcess, nats_url
from tests.services.consumers.conftest import (
    event,
    publish,
    read_dead_letters,
    run_consumer_until,
    settings,
)

pytestmark = pytest.mark.servers


class Recorder:
    """A sink that records every batch and answers through ``decide``."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int]]] = []

    async def start(self) -> None: ...

    async def check_ready(self) -> None: ...

    async def close(self) -> None: ...

    def decide(self, delivery: Delivery) -> Outcome:
        return DONE

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Outcome]:
        self.batches.append([(d.message_id, d.attempts) for d in batch])
        return [self.decide(d) for d in batch]

    def handled(self) -> list[str]:
        return [message_id for batch in self.batches for message_id, _ in batch]


def test_batches_are_bounded_and_every_event_is_acknowledged_once(
    jetstream: tuple[str, str], dead_letter_url: str
) -> None:
    url, _ = jetstream
    asyncio.run(publish(url, [event(i) for i in range(25)]))
    sink = Recorder()
    run_consumer_until(url, sink, settings("c", batch_max_events=10), dead_letter_url)
    assert all(1 <= len(batch) <= 10 for batch in sink.batches)
    assert sink.handled() == [f"m-{i}" for i in range(25)]  # in stream order, once each


def test_retry_redelivers_later_with_the_attempt_count(
    jetstream: tuple[str, str], dead_letter_url: str
) -> None:
    url, _ = jetstream
    asyncio.run(publish(url, [event(i) for i in range(5)]))

    class RetryOnce(Recorder):
        def decide(self, delivery: Delivery) -> Outcome:
            if delivery.message_id == "m-3" and delivery.attempts == 1:
                return Retry(delay=0.2, reason="429 from the destination")
            return DONE

    sink = RetryOnce()
    run_consumer_until(url, sink, settings("c"), dead_letter_url)
    attempts = [entry for batch in sink.batches for entry in batch if entry[0] == "m-3"]
    assert attempts == [("m-3", 1), ("m-3", 2)]
    assert sorted(set(sink.handled())) == [f"m-{i}" for i in range(5)]


def test_sink_unavailable_retries_the_same_batch_until_it_is_durable(
    jetstream: tuple[str, str], dead_letter_url: str
) -> None:
    url, _ = jetstream
    asyncio.run(publish(url, [event(i) for i in range(6)]))

    class DownTwice(Recorder):
        async def handle(self, batch: Sequence[Delivery]) -> Sequence[Outcome]:
            self.batches.append([(d.message_id, d.attempts) for d in batch])
            if len(self.batches) <= 2:
                raise SinkUnavailable("backend down")
            return [DONE] * len(batch)

    sink = DownTwice()
    run_consumer_until(url, sink, settings("c", batch_max_events=6), dead_letter_url)
    # The same messages, kept in hand (not redelivered: still attempt 1) until they were durable.
    assert sink.batches[:3] == [[(f"m-{i}", 1) for i in range(6)]] * 3
    assert len(sink.batches) == 3


def test_a_poison_event_is_isolated_and_parked_the_rest_flows(
    shared_nats: ServerProcess, jetstream: tuple[str, str], dead_letter_url: str
) -> None:
    url, _ = jetstream
    asyncio.run(publish(url, [event(i) for i in range(8)]))

    class Crashes(Recorder):
        async def handle(self, batch: Sequence[Delivery]) -> Sequence[Outcome]:
            self.batches.append([(d.message_id, d.attempts) for d in batch])
            if any(d.message_id == "m-5" for d in batch):
                raise ValueError("cannot encode m-5")
            return [DONE] * len(batch)

    sink = Crashes()
    consumer = f"poison-{jetstream[1]}"
    run_consumer_until(url, sink, settings(consumer, batch_max_events=8), dead_letter_url)
    done = {m for batch in sink.batches if ("m-5", 1) not in batch for m, _ in batch}
    assert {f"m-{i}" for i in range(8)} - {"m-5"} <= done
    parked = asyncio.run(read_dead_letters(nats_url(shared_nats), consumer))
    assert [headers["Liftoff-Message-Id"] for headers, _ in parked] == ["m-5"]
    assert parked[0][0]["Liftoff-Attempts"] == "3"
    assert "ValueError('cannot encode m-5')" in parked[0][0]["Liftoff-Reason"]


def test_a_deleted_durable_consumer_is_created_again_and_consumption_resumes(
    shared_nats: ServerProcess, jetstream: tuple[str, str], dead_letter_url: str
) -> None:
    url, stream = jetstream
    asyncio.run(publish(url, [event(i) for i in range(5)]))
    sink = Recorder()
    consumer = f"deleted-{stream}"

    async def delete_consumer() -> None:
        nc = await nats.connect(nats_url(shared_nats))
        try:
            await nc.jetstream(timeout=5).delete_consumer(stream, consumer)
        finally:
            await nc.close()

    deleted: list[bool] = []

    def done() -> bool:
        if not deleted and len(sink.handled()) >= 5:
            # done() runs inside the runner's event loop: delete from another thread.
            deleter = threading.Thread(target=lambda: asyncio.run(delete_consumer()))
            deleter.start()
            deleter.join()
            deleted.append(True)
        return len(set(sink.handled())) >= 5 and len(sink.handled()) >= 10

    run_consumer_until(url, sink, settings(consumer), dead_letter_url, done=done, deadline=60)
    # The recreated consumer delivers the whole stream again (deliver all): the sink saw it
    # twice, which sinks tolerate (idempotent).
    assert sink.handled() == [f"m-{i}" for i in range(5)] * 2
