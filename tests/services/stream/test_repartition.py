"""Changing the partition count of a live stream, as the README's procedure says, on a real
nats-server: refused while the old streams exist; after the consumers drained and the old
stream was deleted, the setup creates the new streams with the declared durables, and one
consumer process reads every new partition. (The program refuses the change at preview unless
`repartitionFrom` names the old count: tests/components/stream/test_partitions.py.)"""

from __future__ import annotations

import asyncio
import json
import uuid

import nats
import pytest

from services.consumers.runner.process import _run_partitions
from services.events.model import StreamRecord
from services.stream.base import StreamSettings
from services.stream.dead_letters import JetStreamDeadLetter, ensure_dead_letter_stream
from services.stream.jetstream import (
    JetStreamAddress,
    JetStreamStream,
    PartitionCountChanged,
    ensure_stream,
)
from tests.servers import ServerProcess, nats_url
from tests.services.consumers.conftest import event, publish, settings
from tests.services.consumers.runner.test_framework import Recorder
from tests.services.stream.test_durables import until
from tests.services.stream.under_test import wait_ready

pytestmark = pytest.mark.servers
SETTINGS = StreamSettings(retention_hours=1, consumers=("archiver",))


async def pending(url: str, consumer: str) -> int:
    address = JetStreamAddress.parse(url)
    nc = await nats.connect(address.servers)
    try:
        js = nc.jetstream(timeout=5)
        infos = [await js.consumer_info(p.stream, consumer) for p in address.partition_addresses()]
        return sum((i.num_pending or 0) + (i.num_ack_pending or 0) for i in infos)
    finally:
        await nc.close()


async def delete_stream(server: str, stream: str) -> None:
    nc = await nats.connect(server)
    try:
        await nc.jetstream(timeout=5).delete_stream(stream)
    finally:
        await nc.close()


async def publish_routed(url: str, prefix: str, count: int) -> None:
    stream = JetStreamStream.from_url(url)
    await stream.start()
    try:
        await wait_ready(stream)
        documents = [event(i, prefix=prefix, userId=f"user-{i}") for i in range(count)]
        await stream.publish(
            [
                StreamRecord(d["messageId"], "web", "track", d["userId"], json.dumps(d).encode())
                for d in documents
            ]
        )
    finally:
        await stream.close()


def drain(url: str, sink: Recorder, dead_letter: str, wanted: int) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        address = JetStreamAddress.parse(url)
        runner = settings("archiver", batch_max_seconds=0.2)
        task = asyncio.create_task(
            _run_partitions(address, sink, JetStreamDeadLetter(dead_letter), runner, stop)
        )

        async def done() -> bool:
            return len(sink.handled()) >= wanted and await pending(url, "archiver") == 0

        try:
            await until(done, 20, f"{wanted} events handled and acknowledged")
        finally:
            stop.set()
            await task

    asyncio.run(main())


def test_the_repartitioning_procedure_moves_a_live_stream_to_more_partitions(
    shared_nats: ServerProcess,
) -> None:
    server = nats_url(shared_nats)
    dead_letter = f"{server}/DEADLETTER"
    asyncio.run(ensure_dead_letter_stream(dead_letter, retention_hours=1))
    base = f"{server}/R{uuid.uuid4().hex[:8]}"
    one, four = f"{base}?subject_prefix=r1", f"{base}?subject_prefix=r1&partitions=4"
    assert asyncio.run(ensure_stream(one, SETTINGS)) == "created"
    asyncio.run(publish(one, [event(i, prefix="before") for i in range(30)]))
    with pytest.raises(PartitionCountChanged, match="1 partition"):
        asyncio.run(ensure_stream(four, SETTINGS))

    # The procedure: ingestion stopped, every durable consumer drained, the old stream deleted.
    before = Recorder()
    drain(one, before, dead_letter, 30)
    asyncio.run(delete_stream(server, JetStreamAddress.parse(one).stream))
    assert asyncio.run(ensure_stream(four, SETTINGS)) == "created"

    after = Recorder()
    asyncio.run(publish_routed(four, "after", 40))
    drain(four, after, dead_letter, 40)
    assert sorted(before.handled()) == sorted(f"before-{i}" for i in range(30))
    assert sorted(after.handled()) == sorted(f"after-{i}" for i in range(40))
