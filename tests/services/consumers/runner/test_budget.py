"""A consumer process holds at most its byte budget of the stream, whatever its partitions.

On a real nats-server, a process reading two partition streams with a backlog of large
events holds, at every batch the sink receives, no more unacknowledged messages (the server's
count, over both durables) than its budget pays for; pull requests limited by ``max_bytes`` end
normally; every event is handled once. Without the budget the same runners would have pulled
the whole backlog at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence

import nats
import pytest

from services.consumers.runner.budget import (
    MESSAGE_OVERHEAD,
    MIN_PULL_BYTES,
    batch_full_by_bytes,
    pull_limit,
    share,
)
from services.consumers.runner.model import DONE, Delivery, Outcome
from services.consumers.runner.process import _run_partitions
from services.events.model import StreamRecord
from services.stream.base import StreamSettings
from services.stream.dead_letters import JetStreamDeadLetter, ensure_dead_letter_stream
from services.stream.jetstream import JetStreamAddress, JetStreamStream, ensure_stream
from tests.servers import ServerProcess, nats_url
from tests.services.consumers.conftest import event, settings
from tests.services.stream.under_test import wait_ready

PADDING = 16 * 1024  # large events: the byte bound, not the count, decides
EVENTS = 600
BUDGET = 4 * 2**20  # for the process: 2 MiB for each of its 2 partition runners


def test_pull_limit_leaves_room_for_what_is_held() -> None:
    # Nothing held: the count from a first guess, the bytes from the whole budget.
    count, max_bytes = pull_limit(2**20 * 4, (0, 0), 10_000)
    assert count == 2**20 * 4 // 4096 and max_bytes == 2**20 * 4 - count * MESSAGE_OVERHEAD
    # Half held, at 3 KiB each: the other half's worth, never more than wanted.
    assert pull_limit(3072 * 100, (50, 3072 * 50), 10_000)[0] == 50
    assert pull_limit(3072 * 100, (50, 3072 * 50), 7)[0] == 7
    # Full: nothing until the batch is handed over; the byte floor still lets a 1 MiB in.
    assert pull_limit(3072 * 100, (100, 3072 * 100), 10_000) == (0, MIN_PULL_BYTES)
    assert batch_full_by_bytes(1000, 500) and not batch_full_by_bytes(1000, 499)
    assert not batch_full_by_bytes(None, 10**12)
    assert share(BUDGET, 2) == BUDGET // 2 and share(None, 8) is None


class Sampling:
    """A sink that, at every batch, asks the server how many messages the process holds."""

    def __init__(self, server: str, streams: list[str], consumer: str) -> None:
        self.server, self.streams, self.consumer = server, streams, consumer
        self.handled: list[str] = []
        self.held: list[int] = []
        self._nc: nats.NATS | None = None

    async def start(self) -> None:
        self._nc = await nats.connect(self.server)

    async def check_ready(self) -> None: ...

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def handle(self, batch: Sequence[Delivery]) -> Sequence[Outcome]:
        assert self._nc is not None
        js = self._nc.jetstream(timeout=5)
        infos = [await js.consumer_info(stream, self.consumer) for stream in self.streams]
        self.held.append(sum(info.num_ack_pending or 0 for info in infos))
        self.handled += [delivery.message_id for delivery in batch]
        return [DONE] * len(batch)


async def fill(url: str) -> int:
    stream = JetStreamStream.from_url(url)
    await stream.start()
    try:
        await wait_ready(stream)
        records = []
        for index in range(EVENTS):
            document = event(index, userId=f"user-{index}", padding="x" * PADDING)
            records.append(
                StreamRecord(
                    document["messageId"], "web", "track", document["userId"],
                    json.dumps(document).encode(),
                )
            )  # fmt: skip
        await stream.publish(records)
        return len(records[0].data)
    finally:
        await stream.close()


@pytest.mark.servers
def test_a_backlog_on_two_partitions_is_drained_within_the_byte_budget(
    shared_nats: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    server = nats_url(shared_nats)
    suffix = uuid.uuid4().hex[:8]
    url = f"{server}/M{suffix}?subject_prefix=m{suffix}&partitions=2"
    asyncio.run(ensure_stream(url, StreamSettings(retention_hours=1)))
    asyncio.run(ensure_dead_letter_stream(f"{server}/DEADLETTER", retention_hours=1))
    size = asyncio.run(fill(url))
    streams = [part.stream for part in JetStreamAddress.parse(url).partition_addresses()]
    sink = Sampling(server, streams, "archiver")
    budgeted = settings(
        "archiver", batch_max_events=10_000, batch_max_seconds=0.3, buffer_bytes=BUDGET
    )

    async def main() -> None:
        stop = asyncio.Event()
        dead_letter = JetStreamDeadLetter(f"{server}/DEADLETTER")
        task = asyncio.create_task(
            _run_partitions(JetStreamAddress.parse(url), sink, dead_letter, budgeted, stop)
        )
        try:
            for _ in range(300):  # a bounded wait, not a timing assertion
                if len(sink.handled) >= EVENTS or task.done():
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await task

    with caplog.at_level(logging.WARNING, logger="liftoff.consumer.jetstream"):
        asyncio.run(main())
    assert sorted(sink.handled) == sorted(f"m-{i}" for i in range(EVENTS))
    # Each runner holds at most its 2 MiB share (or the one pull the floor always allows).
    per_message = size + MESSAGE_OVERHEAD
    allowed = 2 * max(BUDGET // 2, MIN_PULL_BYTES + per_message) // per_message
    assert max(sink.held) <= allowed < EVENTS // 2, (sink.held, allowed)
    assert len(sink.held) > 4  # many batches: the budget, not the count, made them
    failed = [r for r in caplog.records if r.getMessage() == "pull request failed"]
    assert not failed, [r.__dict__.get("fields") for r in failed]  # 409s of max_bytes: normal
