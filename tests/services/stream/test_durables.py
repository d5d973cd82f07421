"""Destinations added to and removed from a running stack, on a real nats-server.

Removing a destination: the setup (ensure-stream, told the declared consumers) deletes the
removed broadcaster's durable on every partition stream and never one liftoff did not create;
the broadcaster process still running until its Deployment goes does not re-create it; every
consumer process stops reporting its lag (so `LiftoffConsumerLagAge` cannot fire for it
forever). Adding one: the setup creates its durable at the stream's end (no replay of the
retention to a third party, nothing missed before its process starts), the archiver's and
loader's at the start, and an existing durable keeps its place.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import nats
import nats.js.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.consumers.runner.jetstream import JetStreamRunner
from services.stream.base import StreamSettings
from services.stream.dead_letters import JetStreamDeadLetter, ensure_dead_letter_stream
from services.stream.durables import DECLARED_KEY
from services.stream.jetstream import JetStreamAddress, ensure_stream
from tests.servers import ServerProcess, nats_url
from tests.services.consumers.conftest import event, publish, settings
from tests.services.consumers.runner.test_framework import Recorder

pytestmark = pytest.mark.servers

DECLARED = ("archiver", "loader", "broadcaster-crm", "broadcaster-ga4")


@pytest.fixture
def dead_letter_url(shared_nats: ServerProcess) -> str:
    url = f"{nats_url(shared_nats)}/DEADLETTER"
    asyncio.run(ensure_dead_letter_stream(url, retention_hours=1))
    return url


def fresh_url(server: ServerProcess, partitions: int = 1) -> str:
    suffix = uuid.uuid4().hex[:10]
    url = f"{nats_url(server)}/D{suffix}?subject_prefix=d{suffix}"
    return url + (f"&partitions={partitions}" if partitions > 1 else "")


def ensure(url: str, consumers: Sequence[str] | None) -> str:
    settings = StreamSettings(retention_hours=1, consumers=None if consumers is None else (
        tuple(consumers)
    ))  # fmt: skip
    return asyncio.run(ensure_stream(url, settings))


async def durables(server_url: str, stream: str) -> dict[str, ConsumerConfig]:
    nc = await nats.connect(server_url)
    try:
        infos = await nc.jetstream(timeout=5).consumers_info(stream)
        return {info.name: info.config for info in infos}
    finally:
        await nc.close()


async def stream_metadata(server_url: str, stream: str) -> dict[str, str]:
    nc = await nats.connect(server_url)
    try:
        return (await nc.jetstream(timeout=5).stream_info(stream)).config.metadata or {}
    finally:
        await nc.close()


async def add_durables(server_url: str, stream: str, subjects: str, names: Sequence[str]) -> None:
    """Durables as a consumer process (of the previous release too) creates them."""
    nc = await nats.connect(server_url)
    try:
        js = nc.jetstream(timeout=5)
        for name in names:
            await js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=name,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_policy=AckPolicy.EXPLICIT,
                    filter_subject=subjects,
                ),
            )
    finally:
        await nc.close()


def test_setup_deletes_removed_destinations_durables_on_every_partition_and_only_liftoffs(
    shared_nats: ServerProcess,
) -> None:
    url = fresh_url(shared_nats, partitions=2)
    server = nats_url(shared_nats)
    assert ensure(url, DECLARED) == "created"
    parts = JetStreamAddress.parse(url).partition_addresses()
    for part in parts:
        # The setup created the declared durables, each starting where its consumer should.
        configs = asyncio.run(durables(server, part.stream))
        assert set(configs) == set(DECLARED)
        assert configs["broadcaster-ga4"].deliver_policy == DeliverPolicy.NEW
        assert configs["loader"].deliver_policy == DeliverPolicy.ALL
        assert configs["loader"].filter_subject == f"{part.subject_prefix}.>"
        # An operator's own durable, never liftoff's to delete.
        asyncio.run(add_durables(server, part.stream, f"{part.subject_prefix}.>", ["ops-audit"]))

    assert ensure(url, ["archiver", "loader", "broadcaster-crm"]) == "updated"
    for part in parts:
        assert set(asyncio.run(durables(server, part.stream))) == {
            "archiver",
            "loader",
            "broadcaster-crm",
            "ops-audit",
        }
        metadata = asyncio.run(stream_metadata(server, part.stream))
        assert metadata[DECLARED_KEY] == "archiver,broadcaster-crm,loader"

    # Unchanged settings: nothing to do. Not told the consumers: nothing deleted, set kept.
    assert ensure(url, ["loader", "archiver", "broadcaster-crm"]) == "unchanged"
    assert ensure(url, None) == "unchanged"
    assert set(asyncio.run(durables(server, parts[0].stream))) >= {"archiver", "ops-audit"}


async def until(check: Callable[[], Awaitable[bool]], deadline: float, what: str) -> None:
    """Wait until ``check()`` holds (a bounded wait, not a timing assertion)."""
    give_up = time.monotonic() + deadline
    while not await check():
        if time.monotonic() > give_up:
            raise AssertionError(f"not within {deadline}s: {what}")
        await asyncio.sleep(0.1)


def test_removed_destination_is_not_recreated_and_its_lag_series_stops(
    shared_nats: ServerProcess, dead_letter_url: str
) -> None:
    url = fresh_url(shared_nats)
    server, stream = nats_url(shared_nats), JetStreamAddress.parse(url).stream
    ensure(url, DECLARED)
    asyncio.run(publish(url, [event(i) for i in range(5)]))

    def runner(name: str) -> JetStreamRunner:
        return JetStreamRunner(
            url,
            Recorder(),
            JetStreamDeadLetter(dead_letter_url),
            settings(name, lag_interval_seconds=0.3, start_at_end=name.startswith("broad")),
        )

    archiver, removed = runner("archiver"), runner("broadcaster-ga4")

    async def main() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(r.run(stop)) for r in (archiver, removed)]

        async def lag_reported() -> bool:
            text = (await archiver._metrics())[1]
            return 'consumer="broadcaster-ga4"' in text

        try:
            await until(lag_reported, 15, "the archiver reports the broadcaster's lag")
            # The destination is removed: the setup Job runs while its process still runs.
            await asyncio.to_thread(ensure, url, ["archiver", "loader", "broadcaster-crm"])

            async def series_gone() -> bool:
                return not await lag_reported()

            await until(series_gone, 15, "the deleted durable's lag series is dropped")
            # Long enough for the process to notice its durable is gone and to try to bind
            # again (three failed pulls, 0.5 s apart, then the bind).
            await asyncio.sleep(4)
            assert "broadcaster-ga4" not in await durables(server, stream)
            assert (await removed._readyz())[0] == 503
            assert not any(task.done() for task in tasks)  # alive, waiting to be removed
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    asyncio.run(main())


def test_new_broadcaster_starts_at_the_setup_others_at_the_start_existing_keep_their_place(
    shared_nats: ServerProcess, dead_letter_url: str
) -> None:
    url = fresh_url(shared_nats)
    server, stream = nats_url(shared_nats), JetStreamAddress.parse(url).stream
    ensure(url, None)  # the stream as the previous release set it up
    address = JetStreamAddress.parse(url)
    # broadcaster-crm existed before the upgrade: created delivering everything, as then.
    asyncio.run(add_durables(server, stream, f"{address.subject_prefix}.>", ["broadcaster-crm"]))
    asyncio.run(publish(url, [event(i, prefix="old") for i in range(5)]))
    # The upgrade's setup Job, with broadcaster-ga4 added: its durable starts here, so what
    # arrives before its process first starts is not missed.
    ensure(url, ["archiver", "broadcaster-crm", "broadcaster-ga4", "loader"])
    asyncio.run(publish(url, [event(i, prefix="mid") for i in range(2)]))
    sinks = {name: Recorder() for name in ("archiver", "broadcaster-crm", "broadcaster-ga4")}
    runners = [
        JetStreamRunner(
            url,
            sink,
            JetStreamDeadLetter(dead_letter_url),
            settings(name, start_at_end=name.startswith("broadcaster-")),
        )
        for name, sink in sinks.items()
    ]

    async def main() -> None:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(r.run(stop)) for r in runners]

        async def bound() -> bool:
            return [(await r._readyz())[0] for r in runners] == [200] * len(runners)

        async def all_handled() -> bool:
            counts = [len(sink.handled()) for sink in sinks.values()]
            return all(c >= w for c, w in zip(counts, [10, 10, 5], strict=True))

        try:
            await until(bound, 15, "every runner bound its durable")
            await publish(url, [event(i, prefix="new") for i in range(3)])
            await until(all_handled, 15, "every consumer handled what it should")
            await asyncio.sleep(0.5)  # anything more would show now
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    asyncio.run(main())
    old = [f"old-{i}" for i in range(5)]
    later = [f"mid-{i}" for i in range(2)] + [f"new-{i}" for i in range(3)]
    assert sinks["archiver"].handled() == old + later
    assert sinks["broadcaster-crm"].handled() == old + later  # its place kept
    assert sinks["broadcaster-ga4"].handled() == later  # a new destination: no replay
    configs = asyncio.run(durables(server, stream))
    assert configs["broadcaster-ga4"].deliver_policy == DeliverPolicy.NEW
    assert configs["broadcaster-crm"].deliver_policy == DeliverPolicy.ALL
    assert configs["archiver"].deliver_policy == DeliverPolicy.ALL
    # The processes set their own ack wait on the durables the setup created.
    assert configs["broadcaster-ga4"].ack_wait == settings("x").ack_wait_seconds
