"""Consumers on a partitioned stream: one durable consumer per partition, one process.

The archiver and the loader run as real processes on a 4-partition stream fed by the
collector's own adapter (events routed by user). Every event reaches the warehouse and the
archive exactly once, archive keys and lines carry the partition stream, every partition's
durable consumer is drained, and a bad event is parked with its partition in the position.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.events.model import StreamRecord
from services.stream.base import StreamSettings
from services.stream.jetstream import JetStreamStream, ensure_stream, partition_of
from tests.servers import (
    AWS_TEST_ENV,
    LOOPBACK,
    Postgres,
    ServerProcess,
    consumer_process,
    moto_endpoint,
    nats_url,
)
from tests.services.consumers.archiver.test_archiver import archive, lines
from tests.services.consumers.conftest import consumer_state, event, read_dead_letters
from tests.services.consumers.runner.test_consumer_process import wait_until
from tests.services.consumers.runner.test_zero_loss import warehouse_ids
from tests.services.stream.under_test import wait_ready

pytestmark = pytest.mark.servers

PARTITIONS = 4


async def publish_routed(url: str, documents: list[dict[str, Any]], bad: bytes) -> None:
    stream = JetStreamStream.from_url(url)
    await stream.start()
    try:
        await wait_ready(stream)
        await stream.publish(
            [
                StreamRecord(d["messageId"], "web", "track", d["userId"], json.dumps(d).encode())
                for d in documents
            ]
        )
        await stream.publish([StreamRecord("bad", "web", "track", "user-bad", bad)])
    finally:
        await stream.close()


def test_archiver_and_loader_read_every_partition(
    tmp_path: Path,
    shared_nats: ServerProcess,
    postgres: Postgres,
    bucket: tuple[Any, str],
    moto: ServerProcess,
    dead_letter_url: str,
) -> None:
    suffix = uuid.uuid4().hex[:8]
    base = f"{nats_url(shared_nats)}/Q{suffix}?subject_prefix=q{suffix}"
    url = f"{base}&partitions={PARTITIONS}"
    asyncio.run(ensure_stream(url, StreamSettings(retention_hours=1)))
    s3, bucket_name = bucket
    database = postgres.create_database(f"p_{suffix}")
    common = {
        "LIFTOFF_STREAM_URL": url,
        "LIFTOFF_DEAD_LETTER_URL": dead_letter_url,
        "LIFTOFF_CONSUMER_SHUTDOWN_GRACE_SECONDS": "3",
    }
    archiver = consumer_process(
        tmp_path,
        "archiver",
        {
            **common,
            **AWS_TEST_ENV,
            "AWS_ENDPOINT_URL": moto_endpoint(moto),
            "LIFTOFF_CONSUMER_NAME": f"archiver-{suffix}",
            "LIFTOFF_ARCHIVE_BUCKET": bucket_name,
            "LIFTOFF_ARCHIVE_BATCH_MAX_SECONDS": "0.2",
        },
    )
    loader = consumer_process(
        tmp_path,
        "loader",
        {
            **common,
            **postgres.env(database),
            "LIFTOFF_CONSUMER_NAME": f"loader-{suffix}",
            "LIFTOFF_LOADER_BATCH_MAX_SECONDS": "0.2",
        },
    )
    documents = [event(i, prefix=suffix, userId=f"user-{i % 13}") for i in range(200)]
    partitions = {partition_of(d["userId"], PARTITIONS) for d in documents}
    assert partitions == set(range(PARTITIONS))  # the data really spans every partition
    with archiver, loader:
        for process in (archiver, loader):
            assert httpx.get(f"http://{LOOPBACK}:{process.port}/readyz").status_code == 200
        asyncio.run(publish_routed(url, documents, b"not json"))
        for index in range(PARTITIONS):
            part = f"{nats_url(shared_nats)}/Q{suffix}-{index}?subject_prefix=q{suffix}.{index}"
            for name in (f"archiver-{suffix}", f"loader-{suffix}"):
                wait_until(lambda p=part, n=name: asyncio.run(consumer_state(p, n)) == (0, 0))
        metrics = httpx.get(f"http://{LOOPBACK}:{loader.port}/metrics").text
        # one process, one set of counters over every partition's runner
        assert (
            f'liftoff_consumer_events_total{{consumer="loader-{suffix}",outcome="done"}} 200.0'
            in (metrics)
        )

    wanted = sorted(d["messageId"] for d in documents)
    warehouse = warehouse_ids(postgres.dsn(database))
    assert sorted(warehouse) == wanted and set(warehouse.values()) == {1}
    objects = archive(s3, bucket_name)
    archived = [line for body in objects.values() for line in lines(body)]
    assert sorted(line["messageId"] for line in archived) == wanted
    for key, body in objects.items():
        stream = key.rsplit("/", 1)[1].rsplit("-", 1)[0]  # "<partition stream>-<window>"
        assert stream in {f"Q{suffix}-{i}" for i in range(PARTITIONS)}, key
        for line in lines(body):
            assert line["liftoff"]["position"]["partition"] == stream
            assert partition_of(line["userId"], PARTITIONS) == int(stream.rsplit("-", 1)[1])
    bad_partition = partition_of("user-bad", PARTITIONS)
    parked = asyncio.run(read_dead_letters(nats_url(shared_nats), f"loader-{suffix}"))
    positions = [headers["Liftoff-Position"] for headers, _ in parked]
    assert len(positions) == 1 and positions[0].startswith(f"Q{suffix}-{bad_partition}:")


def test_the_shared_sink_exposes_the_sinks_own_counters() -> None:
    """A broadcaster's delivery counters reach /metrics through the partitions' shared sink."""
    from services.consumers.runner.process import _SharedSink
    from services.observability import Counters

    class WithCounters:
        counters = Counters()

    sink = WithCounters()
    assert _SharedSink(sink, 4).counters is sink.counters  # type: ignore[arg-type]
