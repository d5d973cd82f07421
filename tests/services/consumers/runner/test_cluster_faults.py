"""Zero loss on the shape that is deployed: a 3-node JetStream cluster under server faults.

Three nats-servers clustered over routes on loopback ports, each with ``sync_interval: always``
and file storage, the ``EVENTS`` stream at R3 in ``PRODUCTION_PARTITIONS`` partitions (the
production profile's defaults). "The leader" below is the leader of partition ``EVENTS-0``;
the other partitions' leaders are wherever the cluster put them, so every fault also hits some
of them. The collector
publishes through all three servers' URLs; the archiver (S3 on moto) and the loader (real
PostgreSQL) consume. While a client sends events (retrying each request until it gets a 200,
like an SDK), the test, at seeded random moments:

1. SIGKILLs a server that is not the stream leader, and restarts it;
2. SIGKILLs the stream leader, and restarts it;
3. SIGKILLs two servers at once: the stream has no quorum, so the collector must answer 503
   (checked with a probe request); it must acknowledge again once one server is back;
4. SIGSTOPs the stream leader long enough for the other two to elect a new one, then SIGCONTs it.

Every messageId the collector acknowledged is then accounted in the warehouse and the archive as
ok / lost / duplicated, the table is printed, and the test fails on any loss or duplicate.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import boto3
import httpx
import nats
import pytest

from services.stream.address import PRODUCTION_PARTITIONS
from services.stream.base import StreamSettings
from services.stream.dead_letters import ensure_dead_letter_stream
from services.stream.jetstream import ensure_stream
from tests.servers import (
    AWS_TEST_ENV,
    LOOPBACK,
    Postgres,
    ServerProcess,
    collector_server,
    consumer_process,
    moto_endpoint,
    nats_cluster,
    nats_cluster_url,
)
from tests.services.consumers.runner.test_zero_loss import (
    Sender,
    account,
    archived_ids,
    warehouse_ids,
)
from tests.services.stream.under_test import WRITE_KEYS_JSON

pytestmark = pytest.mark.servers

SEED = 20261130
STREAM = "EVENTS"
PARTITIONS = PRODUCTION_PARTITIONS
LED = f"{STREAM}-0"  # the partition whose leader the faults target
# A JetStream follower calls an election 4-9 s after it last heard from its leader
# (nats-server's raft defaults): a pause longer than that forces a leader change.
PAUSE_SECONDS = 10.0
CATCH_UP_SECONDS = 60.0


async def _stream_leader(servers: Sequence[ServerProcess]) -> str | None:
    alive = [s for s in servers if s.running]
    nc = await nats.connect(
        servers=[f"nats://{LOOPBACK}:{s.port}" for s in alive],
        connect_timeout=1,
        max_reconnect_attempts=1,
        allow_reconnect=False,
    )
    try:
        info = await nc.jetstream(timeout=2).stream_info(LED)
        return info.cluster.leader if info.cluster else None
    finally:
        await nc.close()


def stream_leader(servers: Sequence[ServerProcess], deadline: float = 20.0) -> ServerProcess:
    """The server currently leading the stream (waits through an election)."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            name = asyncio.run(_stream_leader(servers))
        except Exception:  # an election or a server still starting: ask again
            name = None
        for server in servers:
            if name and server.name.split(":")[0] == name and server.running:
                return server
        if time.monotonic() > give_up:
            raise AssertionError(f"no stream leader within {deadline}s (last answer: {name!r})")
        time.sleep(0.25)


async def _consumer_states(
    servers: Sequence[ServerProcess],
) -> dict[str, tuple[int, int] | str]:
    """(num_pending, num_ack_pending) per "<consumer>@<partition stream>": a diagnostic for the
    printout only, so a server too busy to answer (a loaded CI machine) is reported, not fatal."""
    nc = await nats.connect(servers=[f"nats://{LOOPBACK}:{s.port}" for s in servers])
    try:
        js = nc.jetstream(timeout=15)
        states: dict[str, tuple[int, int] | str] = {}
        for index in range(PARTITIONS):
            for consumer in ("archiver", "loader"):
                key = f"{consumer}@{STREAM}-{index}"
                try:
                    info = await js.consumer_info(f"{STREAM}-{index}", consumer)
                except nats.errors.Error as error:
                    states[key] = f"unknown ({type(error).__name__})"
                    continue
                states[key] = (info.num_pending, info.num_ack_pending)
        return states
    finally:
        await nc.close()


def create_streams(url: str, deadline: float = 30.0) -> None:
    """EVENTS and DEADLETTER at R3, once the cluster has elected its meta leader."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            asyncio.run(
                ensure_stream(
                    f"{url}/{STREAM}?subject_prefix=events&partitions={PARTITIONS}",
                    StreamSettings(retention_hours=1, replicas=3),
                    connect_deadline=5,
                )
            )
            asyncio.run(ensure_dead_letter_stream(f"{url}/DEADLETTER", 1, replicas=3))
            return
        except Exception:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.5)


def probe(base_url: str, message_id: str) -> int:
    """One single-event request; its HTTP status (0: no answer)."""
    body = {"batch": [{"type": "track", "event": "Probe", "userId": "p", "messageId": message_id}]}
    try:
        response = httpx.post(f"{base_url}/v1/batch", json=body, auth=("web-key-1", ""), timeout=10)
    except httpx.HTTPError:
        return 0
    return response.status_code


def test_three_node_cluster_loses_no_acknowledged_event(
    tmp_path: Path, postgres: Postgres, moto: ServerProcess
) -> None:
    rng = random.Random(SEED)
    servers = nats_cluster(tmp_path / "cluster", 3)
    for server in servers:
        server.log_path.parent.mkdir(parents=True, exist_ok=True)
    processes: list[ServerProcess] = []
    faults: list[str] = []
    probes: list[str] = []
    statuses_without_quorum: list[int] = []
    leaders_seen: list[str] = []
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint(moto),
        aws_access_key_id=AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        region_name=AWS_TEST_ENV["AWS_REGION"],
    )
    bucket = f"archive-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    database = postgres.create_database(f"cf_{uuid.uuid4().hex[:8]}")
    stop_sending = threading.Event()
    sender: Sender | None = None
    try:
        for server in servers:
            server.start()
        cluster = nats_cluster_url(servers)
        create_streams(cluster)
        stream_url = (
            f"{cluster}/{STREAM}?subject_prefix=events&publish_timeout=2&partitions={PARTITIONS}"
        )
        common = {
            "LIFTOFF_STREAM_URL": stream_url,
            "LIFTOFF_DEAD_LETTER_URL": f"{cluster}/DEADLETTER",
            "LIFTOFF_CONSUMER_ACK_WAIT_SECONDS": "2",
            "LIFTOFF_CONSUMER_SHUTDOWN_GRACE_SECONDS": "2",
        }
        archiver = consumer_process(
            tmp_path,
            "archiver",
            {
                **common,
                **AWS_TEST_ENV,
                "AWS_ENDPOINT_URL": moto_endpoint(moto),
                "LIFTOFF_ARCHIVE_BUCKET": bucket,
                "LIFTOFF_ARCHIVE_BATCH_MAX_EVENTS": "300",
                "LIFTOFF_ARCHIVE_BATCH_MAX_SECONDS": "0.5",
            },
        )
        loader = consumer_process(
            tmp_path,
            "loader",
            {
                **common,
                **postgres.env(database),
                "LIFTOFF_LOADER_BATCH_MAX_EVENTS": "200",
                "LIFTOFF_LOADER_BATCH_MAX_SECONDS": "0.3",
            },
        )
        collector = collector_server(tmp_path, stream_url, WRITE_KEYS_JSON)
        processes = [collector, archiver, loader]
        for process in processes:
            process.start()
        base_url = f"http://{LOOPBACK}:{collector.port}"
        run_id = uuid.uuid4().hex[:8]
        sender = Sender(base_url, run_id, count=1_000_000, stop=stop_sending)
        started = time.monotonic()
        sender.start()

        def note(text: str) -> None:
            faults.append(f"{time.monotonic() - started:5.1f}s {text}")

        def leader() -> ServerProcess:
            found = stream_leader(servers)
            leaders_seen.append(found.name.split(":")[0])
            return found

        # 1. a follower crashes and comes back
        time.sleep(rng.uniform(1.0, 2.5))
        current = leader()
        follower = rng.choice([s for s in servers if s is not current])
        follower.kill()
        note(f"SIGKILL {follower.name.split(':')[0]} (follower)")
        time.sleep(rng.uniform(1.0, 2.0))
        follower.start()
        note(f"restarted {follower.name.split(':')[0]}")

        # 2. the leader crashes and comes back
        time.sleep(rng.uniform(1.0, 2.0))
        current = leader()
        current.kill()
        note(f"SIGKILL {current.name.split(':')[0]} (leader)")
        time.sleep(rng.uniform(2.0, 3.0))
        current.start()
        note(f"restarted {current.name.split(':')[0]}")

        # 3. two crash at once: no quorum, the collector must refuse (503), then recover
        time.sleep(rng.uniform(1.0, 2.0))
        leader()  # the stream has settled before the next fault
        first, second = rng.sample(servers, 2)
        first.kill()
        second.kill()
        note(f"SIGKILL {first.name.split(':')[0]} and {second.name.split(':')[0]} (no quorum)")
        time.sleep(1.0)
        probes = [f"{run_id}-probe-{i}" for i in range(3)]
        statuses_without_quorum += [probe(base_url, message_id) for message_id in probes]
        first.start()
        note(f"restarted {first.name.split(':')[0]}")
        recovered_after = None
        give_up = time.monotonic() + 30
        while time.monotonic() < give_up:
            probes.append(f"{run_id}-probe-{len(probes)}")
            if probe(base_url, probes[-1]) == 200:
                recovered_after = time.monotonic() - started
                break
            time.sleep(0.25)
        note(f"collector acknowledging again (recovered: {recovered_after is not None})")
        second.start()
        note(f"restarted {second.name.split(':')[0]}")

        # 4. the leader stalls (SIGSTOP) long enough for an election, then resumes
        time.sleep(rng.uniform(1.0, 2.0))
        paused = leader()
        paused.pause()
        note(f"SIGSTOP {paused.name.split(':')[0]} (leader) for {PAUSE_SECONDS:g} s")
        time.sleep(PAUSE_SECONDS)
        during_pause = leader()
        paused.resume()
        note(f"SIGCONT {paused.name.split(':')[0]}; leader meanwhile: {leaders_seen[-1]}")
        time.sleep(rng.uniform(1.0, 2.0))

        stop_sending.set()
        sender.join(timeout=120)
        assert sender.error is None, repr(sender.error)
        # A refused request may still have been stored (a 503 promises nothing either way): the
        # client sends every probe again until acknowledged, as an SDK would; dedupe by
        # messageId must keep each exactly once.
        for message_id in probes:
            give_up = time.monotonic() + 30
            while probe(base_url, message_id) != 200:
                assert time.monotonic() < give_up, f"probe {message_id} never acknowledged"
                time.sleep(0.25)
        acknowledged = sender.acknowledged + probes

        dsn = postgres.dsn(database)
        # Bounded wait for both sinks. Whatever is still missing afterwards is either lost or
        # held by a consumer that stopped making progress: the pending / unacknowledged counts
        # printed below tell which (this is how a runner whose nats-py read loop had died
        # after the pause was found; see services.consumers.runner.acks.flush).
        sent_at = time.monotonic()
        give_up = sent_at + CATCH_UP_SECONDS
        while time.monotonic() < give_up:
            if len(warehouse_ids(dsn)) >= len(acknowledged) and len(
                archived_ids(s3, bucket)
            ) >= len(acknowledged):
                break
            time.sleep(0.5)
        caught_up_after = time.monotonic() - sent_at
        time.sleep(1.0)  # let redeliveries in flight land (they must not duplicate anything)
        warehouse = warehouse_ids(dsn)
        archive = archived_ids(s3, bucket)
        elapsed = time.monotonic() - started
        states = asyncio.run(_consumer_states(servers))
    finally:
        stop_sending.set()
        for process in processes:
            process.stop()
        for server in servers:
            server.resume()  # a stopped process ignores SIGTERM until it continues
            server.stop()

    rows = {
        "warehouse": account(acknowledged, warehouse),
        "archive": account(acknowledged, archive),
    }
    print(
        f"\n3-node cluster accounting: {len(acknowledged)} events acknowledged by the collector "
        f"in {elapsed:.0f} s ({sender.retries} request retries by the client; R3, "
        f"{PARTITIONS} partitions, sync_interval: always)"
    )
    print(f"faults injected (seed {SEED}):")
    for fault in faults:
        print(f"  {fault}")
    print(f"  collector answers while two servers were down: {statuses_without_quorum}")
    behind = {name: state for name, state in states.items() if state != (0, 0)}
    print(
        f"  sinks caught up {caught_up_after:.1f} s after the last acknowledgement; consumers "
        f"with (pending, unacknowledged) messages at the end: {behind or 'none'}"
    )
    print(f"  {'sink':<12}{'ok':>8}{'lost':>8}{'duplicated':>12}{'unexpected':>12}")
    for sink, (ok, lost, duplicated, unexpected) in rows.items():
        print(f"  {sink:<12}{ok:>8}{lost:>8}{duplicated:>12}{unexpected:>12}   (exactly once)")

    assert statuses_without_quorum and set(statuses_without_quorum) == {503}
    assert recovered_after is not None, "the collector did not recover once quorum returned"
    assert during_pause is not paused, "the pause did not cause a leader change"
    assert len(sender.acknowledged) > 200  # the faults happened under load
    for sink, (ok, lost, duplicated, unexpected) in rows.items():
        assert (lost, duplicated, unexpected) == (0, 0, 0), sink
        assert ok == len(acknowledged), sink
