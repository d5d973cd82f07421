"""The archiver against a real nats-server and S3 on moto: layout, content, replay, S3 outage."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from typing import Any

import boto3
import botocore.config
import pytest

from services.consumers.archiver.sink import Archiver, ArchiverConfig, merge_lines
from services.consumers.runner.jetstream import JetStreamRunner
from services.stream.dead_letters import JetStreamDeadLetter
from tests.servers import ServerProcess, TcpProxy, nats_url
from tests.services.consumers.conftest import (
    consumer_state,
    event,
    publish,
    read_dead_letters,
    run_consumer_until,
    settings,
)

pytestmark = pytest.mark.servers


def archive(client: Any, bucket: str) -> dict[str, bytes]:
    """Every object in the bucket: key → raw (gzip) bytes."""
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            objects[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return objects


def lines(body: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress(body).splitlines()]


def archiver(bucket: str, window: int = 10, endpoint: str | None = None) -> Archiver:
    return Archiver(ArchiverConfig(bucket=bucket, window_events=window, endpoint_url=endpoint))


def mixed_events() -> list[dict[str, Any]]:
    """25 events: two sources, two hours."""
    events = []
    for i in range(25):
        source = "web" if i % 3 else "ios"
        hour = "20" if i < 15 else "21"
        events.append(event(i, source=source, received_at=f"2026-11-27T{hour}:0{i % 10}:00.000Z"))
    return events


def test_hive_partitions_window_keys_and_content(
    jetstream: tuple[str, str], bucket: tuple[Any, str], dead_letter_url: str
) -> None:
    url, stream = jetstream
    client, name = bucket
    sent = mixed_events()
    asyncio.run(publish(url, sent))
    run_consumer_until(
        url, archiver(name), settings("archiver", batch_max_events=7), dead_letter_url
    )

    objects = archive(client, name)
    # Stream sequences 1..25 in windows of 10: [0-9], [10-19], [20-29]; split by source and hour.
    expected_keys = set()
    for sequence, sent_event in enumerate(sent, start=1):
        hour = sent_event["receivedAt"][11:13]
        source = sent_event["liftoff"]["source"]
        expected_keys.add(
            f"source={source}/year=2026/month=11/day=27/hour={hour}/"
            f"{stream}-{sequence // 10 * 10:020d}.json.gz"
        )
    assert set(objects) == expected_keys
    archived = [line for body in objects.values() for line in lines(body)]
    assert sorted(line["messageId"] for line in archived) == sorted(e["messageId"] for e in sent)
    by_id = {e["messageId"]: e for e in sent}
    for line in archived:
        position = line["liftoff"].pop("position")
        assert position["partition"] == stream
        assert line == by_id[line["messageId"]]  # the event exactly as on the stream
    for body in objects.values():  # each object is sorted by stream position
        sequences = [int(line["liftoff"]["position"]["sequence"]) for line in lines(body)]
        assert sequences == sorted(sequences)


def test_replaying_the_whole_stream_changes_no_object(
    jetstream: tuple[str, str], bucket: tuple[Any, str], dead_letter_url: str
) -> None:
    url, _ = jetstream
    client, name = bucket
    asyncio.run(publish(url, mixed_events()))
    run_consumer_until(
        url, archiver(name), settings("archiver", batch_max_events=4), dead_letter_url
    )
    first = archive(client, name)
    etags = {k: client.head_object(Bucket=name, Key=k)["ETag"] for k in first}

    # A second durable consumer replays the stream from the start with other batch boundaries,
    # then more events arrive and both runs overlap the partly filled last window.
    run_consumer_until(
        url, archiver(name), settings("archiver-replay", batch_max_events=9), dead_letter_url
    )
    assert archive(client, name) == first  # same keys, same bytes
    assert {k: client.head_object(Bucket=name, Key=k)["ETag"] for k in first} == etags

    # Sequences 26..29 join window 20 of hour 21 (objects that already exist).
    more = [event(100 + i, received_at="2026-11-27T21:30:00.000Z") for i in range(4)]
    asyncio.run(publish(url, more))
    run_consumer_until(
        url, archiver(name), settings("archiver", batch_max_events=4), dead_letter_url
    )
    run_consumer_until(
        url, archiver(name), settings("archiver-replay", batch_max_events=2), dead_letter_url
    )
    after = archive(client, name)
    all_ids = [line["messageId"] for body in after.values() for line in lines(body)]
    assert len(all_ids) == len(set(all_ids)) == 29
    assert len(after) == len(first)  # the new events joined existing window objects


def test_re_archiving_the_same_positions_gives_byte_identical_objects(
    jetstream: tuple[str, str], bucket: tuple[Any, str], dead_letter_url: str
) -> None:
    """The archive's promise: the same lines, the same bytes (a rebuilt archive, another
    region's copy, a checksum kept elsewhere all agree). gzip headers carry a modification
    time, so the second archive is written in a later second than the first."""
    url, _ = jetstream
    client, first_bucket = bucket
    second_bucket = f"{first_bucket}-again"
    client.create_bucket(Bucket=second_bucket)
    asyncio.run(publish(url, mixed_events()))
    run_consumer_until(
        url, archiver(first_bucket), settings("archiver", batch_max_events=4), dead_letter_url
    )
    written = time.time()
    while int(time.time()) == int(written):  # at most a second: gzip's mtime is in seconds
        time.sleep(0.05)
    run_consumer_until(
        url, archiver(second_bucket), settings("archiver-b", batch_max_events=9), dead_letter_url
    )
    first, second = archive(client, first_bucket), archive(client, second_bucket)
    assert first and second == first


def test_merge_is_idempotent_and_keeps_one_line_per_message_id() -> None:
    def line(sequence: int, message_id: str) -> bytes:
        return json.dumps(
            {"messageId": message_id, "liftoff": {"position": {"sequence": str(sequence)}}}
        ).encode()

    existing = [line(3, "a"), line(5, "b")]
    merged = merge_lines(existing, [(4, "c", line(4, "c")), (5, "b", line(5, "b-new"))])
    assert merged == [line(3, "a"), line(4, "c"), line(5, "b")]
    assert merge_lines(merged, [(3, "a", line(3, "a")), (4, "c", line(4, "c"))]) == merged
    # The same messageId at two positions (a retry the stream did not deduplicate): kept once.
    assert merge_lines([], [(9, "x", line(9, "x")), (7, "x", line(7, "x"))]) == [line(7, "x")]


def test_bad_events_are_parked_and_do_not_block(
    shared_nats: ServerProcess,
    jetstream: tuple[str, str],
    bucket: tuple[Any, str],
    dead_letter_url: str,
) -> None:
    url, _ = jetstream
    client, name = bucket
    consumer = f"archiver-{name[-6:]}"
    asyncio.run(
        publish(
            url,
            [
                event(1),
                b"{not json",
                json.dumps({"type": "track", "messageId": "no-source"}).encode(),
                json.dumps(event(2, receivedAt="yesterday")).encode(),
                event(3),
            ],
        )
    )
    run_consumer_until(url, archiver(name), settings(consumer), dead_letter_url)
    archived = [
        line["messageId"] for body in archive(client, name).values() for line in lines(body)
    ]
    assert sorted(archived) == ["m-1", "m-3"]
    parked = asyncio.run(read_dead_letters(nats_url(shared_nats), consumer))
    assert [headers["Liftoff-Position"].rpartition(":")[2] for headers, _ in parked] == [
        "2",
        "3",
        "4",
    ]
    assert parked[0][1] == b"{not json"  # the original bytes, unchanged
    reasons = [headers["Liftoff-Reason"] for headers, _ in parked]
    assert "not valid JSON" in reasons[0]
    assert "liftoff.source" in reasons[1]
    assert "receivedAt" in reasons[2]
    assert all(headers["Liftoff-Consumer"] == consumer for headers, _ in parked)


def test_s3_outage_holds_the_batch_unacknowledged_then_archives_it(
    jetstream: tuple[str, str], bucket: tuple[Any, str], dead_letter_url: str, moto: ServerProcess
) -> None:
    url, _ = jetstream
    client, name = bucket
    proxy = TcpProxy(moto.port)  # not listening yet: S3 refuses connections
    s3 = boto3.client(
        "s3",
        endpoint_url=proxy.url,
        config=botocore.config.Config(
            retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2
        ),
    )
    sink = Archiver(ArchiverConfig(bucket=name, window_events=10), client=s3)
    asyncio.run(publish(url, [event(i) for i in range(12)]))
    while_down: list[tuple[int, int]] = []

    async def scenario() -> None:
        stop = asyncio.Event()
        runner = JetStreamRunner(
            url, sink, JetStreamDeadLetter(dead_letter_url), settings("archiver")
        )
        task = asyncio.create_task(runner.run(stop))
        try:
            # While S3 is down the consumer holds all 12 messages and acknowledges none.
            for _ in range(300):
                await asyncio.sleep(0.1)
                if runner.counters.value("liftoff_consumer_sink_unavailable_total") >= 2:
                    while_down.append(await consumer_state(url, "archiver"))
                    break
            proxy.up()
            for _ in range(300):
                await asyncio.sleep(0.1)
                if await consumer_state(url, "archiver") == (0, 0):
                    break
        finally:
            stop.set()
            await task

    try:
        asyncio.run(scenario())
    finally:
        proxy.close()
    assert while_down == [(0, 12)]
    archived = [
        line["messageId"] for body in archive(client, name).values() for line in lines(body)
    ]
    assert sorted(archived) == sorted(f"m-{i}" for i in range(12))
