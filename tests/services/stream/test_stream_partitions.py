"""Partitioned JetStream streams (``?partitions=N``), against a real nats-server.

The collector routes each event by its user to one of N streams; a user's events stay in one
stream, in order; a retried event is deduplicated in its partition; ensure-stream refuses to
change the partition count of a live stream; a full stream (``max_bytes``) refuses new events
with 503 and keeps every acknowledged one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter, defaultdict

import httpx
import nats
import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from services.stream.base import InvalidStreamUrl, StreamSettings
from services.stream.jetstream import (
    JetStreamAddress,
    PartitionCountChanged,
    ensure_stream,
    partition_of,
)
from tests.servers import ServerProcess, nats_url
from tests.services.collector.test_collector_jetstream import JSON, run_with_client
from tests.services.stream.under_test import read_jetstream

SETTINGS = StreamSettings(retention_hours=1, duplicate_window_seconds=60)
VECTORS_4 = [2, 3, 0, 0, 0, 0, 1, 1]  # partition_of(f"user-{i}", 4), i = 0..7


def partitioned_url(server: ServerProcess, partitions: int) -> tuple[str, str, str]:
    """(URL, stream base name, subject prefix) of a fresh partitioned stream, ensured."""
    suffix = uuid.uuid4().hex[:10]
    stream, prefix = f"P{suffix}", f"p{suffix}"
    url = f"{nats_url(server)}/{stream}?subject_prefix={prefix}&partitions={partitions}"
    asyncio.run(ensure_stream(url, SETTINGS))
    return url, stream, prefix


def test_partition_of_is_kinesis_md5_range_split_and_stable() -> None:
    # Regression vectors: with 4 partitions the partition is the top two bits of MD5(key)
    # (MD5("user-1") = d6d7..., 0b11 -> 3). A change of hash would silently move users.
    assert [partition_of(f"user-{i}", 4) for i in range(8)] == VECTORS_4
    assert partition_of("user-1", 4) == 0xD6 >> 6
    assert partition_of("anything", 1) == 0
    counts = Counter(partition_of(f"anonymous-{i}", 8) for i in range(8000))
    assert set(counts) == set(range(8))
    assert min(counts.values()) > 800  # ~1000 each: an even spread


@pytest.mark.parametrize("value", ["0", "65", "-1", "two", "1.5"])
def test_partitions_url_parameter_is_validated(value: str) -> None:
    with pytest.raises(InvalidStreamUrl, match=f"partitions={value!r} must be a whole number"):
        JetStreamAddress.parse(f"nats://h:4222/EVENTS?partitions={value}")


def test_partition_addresses_name_one_stream_and_subject_space_each() -> None:
    address = JetStreamAddress.parse("nats://a:1,b:2/EVENTS?subject_prefix=events&partitions=3")
    parts = address.partition_addresses()
    assert [(p.stream, p.subject_prefix) for p in parts] == [
        ("EVENTS-0", "events.0"),
        ("EVENTS-1", "events.1"),
        ("EVENTS-2", "events.2"),
    ]
    assert JetStreamAddress.parse(parts[1].url()) == parts[1]
    one = JetStreamAddress.parse("nats://a:1/EVENTS")
    assert [(p.stream, p.subject_prefix) for p in one.partition_addresses()] == [
        ("EVENTS", "events")
    ]


@pytest.mark.servers
def test_collector_routes_each_user_to_one_partition_in_order(
    shared_nats: ServerProcess,
) -> None:
    url, stream, prefix = partitioned_url(shared_nats, 4)
    users = [f"user-{i}" for i in range(12)]
    batches = [
        [
            {"type": "track", "event": "Step", "userId": user, "messageId": f"{user}-{n}"}
            for user in users
        ]
        for n in range(5)
    ]

    async def scenario(client: httpx.AsyncClient) -> list[int]:
        statuses = []
        for batch in batches:
            statuses.append(
                (await client.post("/v1/batch", json={"batch": batch}, headers=JSON)).status_code
            )
        # a client retry of the first request: same messageIds, same partitions, deduplicated
        statuses.append(
            (await client.post("/v1/batch", json={"batch": batches[0]}, headers=JSON)).status_code
        )
        return statuses

    assert run_with_client(url, scenario) == [200] * 6
    seen: dict[str, list[str]] = defaultdict(list)
    where: dict[str, set[int]] = defaultdict(set)
    for index in range(4):
        for message in asyncio.run(read_jetstream(nats_url(shared_nats), f"{stream}-{index}")):
            assert message.subject.startswith(f"{prefix}.{index}.web.")
            user = message.event["userId"]
            seen[user].append(message.event["messageId"])
            where[user].add(index)
    for user in users:
        assert where[user] == {partition_of(user, 4)}, user
        assert seen[user] == [f"{user}-{n}" for n in range(5)], user  # in order, no repeat
    assert len({index for indexes in where.values() for index in indexes}) > 1


@pytest.mark.servers
def test_ensure_stream_refuses_to_change_the_partition_count(shared_nats: ServerProcess) -> None:
    url, stream, _ = partitioned_url(shared_nats, 2)
    assert asyncio.run(ensure_stream(url, SETTINGS)) == "unchanged"
    for count in (1, 4):
        other = url.replace("partitions=2", f"partitions={count}")
        with pytest.raises(PartitionCountChanged) as refused:
            asyncio.run(ensure_stream(other, SETTINGS))
        message = str(refused.value)
        assert f"[{stream + '-0'!r}, {stream + '-1'!r}] (2 partition(s))" in message
        assert f"asked for {count}" in message and "Changing stream.partitions" in message
    single = (
        f"{nats_url(shared_nats)}/S{uuid.uuid4().hex[:8]}?subject_prefix=s{uuid.uuid4().hex[:8]}"
    )
    asyncio.run(ensure_stream(single, SETTINGS))
    with pytest.raises(PartitionCountChanged, match="asked for 3"):
        asyncio.run(ensure_stream(single + "&partitions=3", SETTINGS))


@pytest.mark.servers
def test_a_full_stream_refuses_new_events_with_503_and_keeps_acknowledged_ones(
    shared_nats: ServerProcess,
) -> None:
    suffix = uuid.uuid4().hex[:10]
    # nats-py 2.16 never resolves a publish_async future whose PubAck is an error (nats.py
    # issue 985): the refusal surfaces as the publish timeout, hence a short one here.
    url = f"{nats_url(shared_nats)}/F{suffix}?subject_prefix=f{suffix}&publish_timeout=0.5"
    asyncio.run(ensure_stream(url, StreamSettings(1, 1, 60, max_bytes=20_000)))
    padding = "x" * 900

    async def scenario(client: httpx.AsyncClient) -> list[tuple[int, dict]]:
        answers: list[tuple[int, dict]] = []
        for n in range(60):
            event = {"type": "track", "event": "Big", "userId": "u", "messageId": f"m{n}"}
            event["properties"] = {"padding": padding}
            response = await client.post("/v1/track", json=event, headers=JSON)
            answers.append((response.status_code, response.json()))
            if [status for status, _ in answers[-3:]] == [503] * 3:
                break
        return answers

    answers = run_with_client(url, scenario)
    statuses = [status for status, _ in answers]
    accepted = statuses.index(503)
    assert accepted > 5 and set(statuses[:accepted]) == {200}
    assert statuses[accepted:] == [503] * 3  # refused from then on
    assert answers[accepted][1]["code"] == "stream_unavailable"
    stored = asyncio.run(read_jetstream(nats_url(shared_nats), f"F{suffix}"))
    # every acknowledged event kept, none of the refused ones stored
    assert [m.event["messageId"] for m in stored] == [f"m{n}" for n in range(accepted)]


@pytest.mark.servers
def test_an_existing_stream_is_updated_to_discard_new_with_max_bytes(
    shared_nats: ServerProcess,
) -> None:
    """Stacks deployed before max_bytes had discard old and no limit: the next ensure-stream
    must move them to the refuse-when-full behaviour."""
    suffix = uuid.uuid4().hex[:10]
    url = f"{nats_url(shared_nats)}/O{suffix}?subject_prefix=o{suffix}"

    async def scenario() -> tuple[str, str, object, object]:
        nc = await nats.connect(nats_url(shared_nats))
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(
                name=f"O{suffix}",
                subjects=[f"o{suffix}.>"],
                discard=DiscardPolicy.OLD,
                storage=StorageType.FILE,
                max_age=3600,
                duplicate_window=60,
            )
        )
        settings = StreamSettings(1, 1, 60, max_bytes=10**9)
        first = await ensure_stream(url, settings)
        second = await ensure_stream(url, settings)
        config = (await js.stream_info(f"O{suffix}")).config
        await nc.close()
        return first, second, config.discard, config.max_bytes

    assert asyncio.run(scenario()) == ("updated", "unchanged", DiscardPolicy.NEW, 10**9)
