"""A delete first waits for the consumer that writes its store to acknowledge what the stream
held (real nats-server, durable pull consumers acknowledged by hand as a consumer would)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from services.regulations.settle import ConsumersBehind, wait_for_writer, writer_of
from services.stream.base import StreamSettings
from services.stream.jetstream import ensure_stream
from tests.servers import ServerProcess, nats_url

pytestmark = pytest.mark.servers


def partitioned_stream(server: ServerProcess, events: int) -> tuple[str, str]:
    """(URL of a 2-partition stream, its name) with ``events`` messages in each partition."""
    suffix = uuid.uuid4().hex[:10]
    url = f"{nats_url(server)}/S{suffix}?subject_prefix=s{suffix}&partitions=2"
    asyncio.run(ensure_stream(url, StreamSettings(retention_hours=1, duplicate_window_seconds=60)))

    async def publish() -> None:
        nc = await nats.connect(nats_url(server))
        js = nc.jetstream()
        for partition in (0, 1):
            for n in range(events):
                await js.publish(f"s{suffix}.{partition}.web", f"{partition}-{n}".encode())
        await nc.close()

    asyncio.run(publish())
    return url, f"S{suffix}"


def acknowledge(server: ServerProcess, stream: str, durable: str, count: int) -> None:
    """What a consumer does: fetch ``count`` messages of each partition and acknowledge them."""

    async def run() -> None:
        nc = await nats.connect(nats_url(server))
        js = nc.jetstream()
        for partition in (0, 1):
            name = f"{stream}-{partition}"
            config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT)
            await js.add_consumer(name, config)
            subscription = await js.pull_subscribe_bind(durable, name)
            if count:
                for message in await subscription.fetch(count, timeout=5):
                    await message.ack_sync()
        await nc.close()

    asyncio.run(run())


def test_the_writer_of_each_target() -> None:
    assert writer_of("archive") == "archiver" and writer_of("warehouse") == "loader"
    assert writer_of("destination:crm") == "broadcaster-crm"
    assert writer_of("dead-letters") is None and writer_of("suppression") is None
    assert wait_for_writer("sqs://queue", None, "archive", 1) is None  # not JetStream


def test_a_delete_waits_for_the_writer_to_acknowledge_what_the_stream_held(
    shared_nats: ServerProcess,
) -> None:
    created, stream = partitioned_stream(shared_nats, events=5)
    # As the Kubernetes pod has it: the stream's name only, its partitions found on the server.
    url = f"{nats_url(shared_nats)}/{stream}"
    assert "partitions=2" in created
    # No archiver durable on the stream: nothing of it in flight.
    settled = wait_for_writer(url, None, "archive", 1)
    assert settled == {"durable": "archiver", "caught_up_to": {f"{stream}-0": 5, f"{stream}-1": 5}}

    acknowledge(shared_nats, stream, "archiver", 3)
    with pytest.raises(ConsumersBehind) as behind:
        wait_for_writer(url, None, "archive", 1)
    assert f"archiver on {stream}-0 has acknowledged up to 3 of 5 (2 pending)" in str(behind.value)
    assert f"archiver on {stream}-1 has acknowledged up to 3 of 5 (2 pending)" in str(behind.value)
    assert wait_for_writer(url, None, "warehouse", 1) is not None  # the loader: no durable

    # The consumer catches up while the delete waits: the wait ends then.
    def catch_up() -> None:
        time.sleep(1.0)

        async def rest() -> None:
            nc = await nats.connect(nats_url(shared_nats))
            js = nc.jetstream()
            for partition in (0, 1):
                subscription = await js.pull_subscribe_bind("archiver", f"{stream}-{partition}")
                for message in await subscription.fetch(2, timeout=5):
                    await message.ack_sync()
            await nc.close()

        asyncio.run(rest())

    helper = threading.Thread(target=catch_up)
    helper.start()
    # Returns (had the limit passed first, it would raise ConsumersBehind).
    assert wait_for_writer(url, None, "archive", 60) is not None
    helper.join()
