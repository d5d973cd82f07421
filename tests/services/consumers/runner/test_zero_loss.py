"""Zero loss under faults, accounted the Jepsen way.

N events go through a real collector process while, on a seeded schedule, the test SIGKILLs
the archiver and loader processes at random moments and restarts them, restarts nats-server
once, and takes S3 away for a while (a TCP proxy in front of moto stops listening and resets
every open connection: the archiver sees connection refused, exactly as from a dead endpoint,
while moto keeps what was already archived — a restarted moto would forget it, in memory).

Two webhook destinations are fed by two broadcaster processes (``python -m services
broadcaster``, one per destination): one healthy, one answering 500 and 429 (``Retry-After``)
for 5 s. Their accounting is at-least-once, and the healthy one must have received events
acknowledged during the failing one's outage before that outage ended (not held back).

At the end every messageId the collector acknowledged is accounted per sink as ok / lost /
duplicated, the table is printed, and the test fails on any loss or duplicate (the destinations
are at-least-once: duplicates are counted, not failed).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest

from services.stream.base import StreamSettings
from services.stream.dead_letters import ensure_dead_letter_stream
from services.stream.jetstream import ensure_stream
from tests.servers import (
    AWS_TEST_ENV,
    LOOPBACK,
    Postgres,
    ServerProcess,
    TcpProxy,
    collector_server,
    consumer_process,
    moto_endpoint,
    nats_server,
    nats_url,
)
from tests.services.consumers.broadcaster.receiver import Received, Receiver
from tests.services.stream.under_test import WRITE_KEYS_JSON

pytestmark = pytest.mark.servers

N = 3000
PER_REQUEST = 25
SEED = 20261127


class Sender(threading.Thread):
    """Sends N events in requests of PER_REQUEST at a steady pace; retries each request (same
    messageIds) until the collector answers 200, like a Segment SDK. Records what was acked."""

    def __init__(
        self,
        base_url: str,
        run_id: str,
        count: int = N,
        stop: threading.Event | None = None,
        last_after: threading.Event | None = None,
    ) -> None:
        super().__init__(daemon=True, name="sender")
        self.base_url = base_url
        self.run_id = run_id
        self.count = count
        self.stop = stop or threading.Event()
        """Set: finish the request in hand (until acknowledged) and send no more."""
        self.last_after = last_after
        """The last request waits for this (at most 120 s): events still to deliver then."""
        self.acknowledged: list[str] = []
        self.acknowledged_at: dict[str, float] = {}
        self.retries = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.base_url, auth=("web-key-1", ""), timeout=10) as client:
                for start in range(0, self.count, PER_REQUEST):
                    if self.stop.is_set():
                        break
                    if self.last_after is not None and start + PER_REQUEST >= self.count:
                        self.last_after.wait(120)
                    ids = [f"{self.run_id}-{i}" for i in range(start, start + PER_REQUEST)]
                    batch = [
                        {
                            "type": "track",
                            "event": "Fault Test",
                            "userId": f"u{i % 50}",
                            "messageId": ids[k],
                            "properties": {"i": i},
                        }
                        for k, i in enumerate(range(start, start + PER_REQUEST))
                    ]
                    self._send_until_acknowledged(client, {"batch": batch})
                    self.acknowledged += ids
                    now = time.monotonic()
                    self.acknowledged_at.update((m, now) for m in ids)
                    time.sleep(0.05)
        except BaseException as error:  # surfaced by the test
            self.error = error

    def _send_until_acknowledged(self, client: httpx.Client, body: dict[str, Any]) -> None:
        give_up = time.monotonic() + 90
        while time.monotonic() < give_up:
            try:
                if client.post("/v1/batch", json=body).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self.retries += 1
            time.sleep(0.2)
        raise AssertionError("the collector never acknowledged a request within 90s")


@pytest.fixture
def s3_behind_proxy(moto: ServerProcess) -> Iterator[tuple[TcpProxy, Any, str]]:
    endpoint = moto_endpoint(moto)
    client = boto3.client("s3", endpoint_url=endpoint, **_aws_kwargs())
    bucket = f"archive-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    proxy = TcpProxy(moto.port).up()
    try:
        yield proxy, client, bucket
    finally:
        proxy.close()


def _aws_kwargs() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_TEST_ENV["AWS_REGION"],
    }


def archived_ids(client: Any, bucket: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for line in gzip.decompress(body).splitlines():
                found[json.loads(line)["messageId"]] += 1
    return found


def warehouse_ids(dsn: str) -> Counter[str]:
    with psycopg.connect(dsn) as connection:
        rows = connection.execute("SELECT message_id FROM events").fetchall()
    return Counter(row[0] for row in rows)


def delivered_ids(receiver: Receiver) -> Counter[str]:
    found: Counter[str] = Counter()
    for request in receiver.delivered("/hook"):
        found.update(event["messageId"] for event in request.json["batch"])
    return found


def account(acknowledged: list[str], seen: Counter[str]) -> tuple[int, int, int, int]:
    """(ok, lost, duplicated, unexpected) over the acknowledged messageIds."""
    ok = sum(1 for m in acknowledged if seen.get(m) == 1)
    lost = sum(1 for m in acknowledged if not seen.get(m))
    duplicated = sum(1 for m in acknowledged if seen.get(m, 0) > 1)
    unexpected = len(set(seen) - set(acknowledged))
    return ok, lost, duplicated, unexpected


def test_zero_loss_under_faults(
    tmp_path: Path, postgres: Postgres, s3_behind_proxy: tuple[TcpProxy, Any, str]
) -> None:
    rng = random.Random(SEED)
    proxy, s3, bucket = s3_behind_proxy
    database = postgres.create_database(f"zl_{uuid.uuid4().hex[:8]}")
    nats = nats_server(tmp_path / "nats").start()
    stream_url = f"{nats_url(nats)}/EVENTS?subject_prefix=events&publish_timeout=2"
    dead_letter_url = f"{nats_url(nats)}/DEADLETTER"
    asyncio.run(ensure_stream(stream_url, StreamSettings(retention_hours=1)))
    asyncio.run(ensure_dead_letter_stream(dead_letter_url, retention_hours=1))

    common = {
        "LIFTOFF_STREAM_URL": stream_url,
        "LIFTOFF_DEAD_LETTER_URL": dead_letter_url,
        "LIFTOFF_CONSUMER_ACK_WAIT_SECONDS": "2",
        "LIFTOFF_CONSUMER_SHUTDOWN_GRACE_SECONDS": "2",
    }
    archiver = consumer_process(
        tmp_path,
        "archiver",
        {
            **common,
            **AWS_TEST_ENV,
            "AWS_ENDPOINT_URL": proxy.url,
            "LIFTOFF_ARCHIVE_BUCKET": bucket,
            "LIFTOFF_ARCHIVE_BATCH_MAX_EVENTS": "300",
            "LIFTOFF_ARCHIVE_BATCH_MAX_SECONDS": "0.5",
            "LIFTOFF_ARCHIVE_WINDOW_EVENTS": "500",
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
    secrets = tmp_path / "webhook-secrets.json"
    secrets.write_text(json.dumps({"signingSecret": "s3cret-for-tests"}))
    healthy_receiver, flaky_receiver = Receiver().start(), Receiver().start()
    outage: dict[str, float] = {}

    def flaky(request: Received) -> tuple[int, dict[str, str], bytes] | None:
        now = time.monotonic()
        if outage and now >= outage["end"] and not outage.get("refused"):
            # On a loaded machine the broadcaster may not have called during the planned
            # window (killed, or catching up): the outage lasts until it has been refused once.
            outage["end"] = now + 1.0
        if not outage or not outage["start"] <= now < outage["end"]:
            return None  # healthy: the receiver's success answer
        outage["refused"] = outage.get("refused", 0) + 1
        if len(flaky_receiver.all()) % 2:
            return 500, {}, b"internal error"
        return 429, {"Retry-After": "1"}, b"slow down"

    flaky_receiver.answer_with(flaky)

    def broadcaster(name: str, receiver: Receiver) -> ServerProcess:
        destination = {"name": name, "type": "webhook", "settings": {"url": f"{receiver.url}/hook"}}
        return consumer_process(
            tmp_path,
            "broadcaster",
            {
                **common,
                "LIFTOFF_DESTINATION": json.dumps(destination),
                "LIFTOFF_DESTINATION_SECRETS_FILE": str(secrets),
                "LIFTOFF_BROADCAST_MAX_ATTEMPTS": "100",
                "LIFTOFF_BROADCAST_BACKOFF_BASE_SECONDS": "0.1",
                "LIFTOFF_BROADCAST_BACKOFF_MAX_SECONDS": "1",
                "LIFTOFF_BROADCAST_BATCH_MAX_SECONDS": "0.3",
            },
            name=f"broadcaster-{name}",
        )

    healthy = broadcaster("healthy", healthy_receiver)
    failing = broadcaster("failing", flaky_receiver)
    collector = collector_server(tmp_path, stream_url, WRITE_KEYS_JSON)
    processes = [collector, archiver, loader, healthy, failing]
    faults: list[str] = []
    try:
        for process in processes:
            process.start()
        # On a loaded machine the fault steps (each restart waits for readiness) can run late:
        # the last request waits for the destination's outage, so it has events to refuse.
        outage_began = threading.Event()
        sender = Sender(
            f"http://{LOOPBACK}:{collector.port}", uuid.uuid4().hex[:8], last_after=outage_began
        )
        started = time.monotonic()
        sender.start()

        def at(offset: float) -> None:
            time.sleep(max(0.0, started + offset - time.monotonic()))

        # The schedule: random moments (seeded), in order, while the sender runs (~8-12 s).
        kills = sorted(rng.uniform(0.5, 9.0) for _ in range(6))
        victims = [rng.choice([archiver, loader, healthy, failing]) for _ in kills]
        nats_restart_at = rng.uniform(2.0, 7.0)
        s3_down_at = rng.uniform(1.0, 6.0)
        destination_down_at = rng.uniform(1.0, 4.0)
        plan = sorted(
            [(t, "kill", v) for t, v in zip(kills, victims, strict=True)]
            + [
                (nats_restart_at, "nats", None),
                (s3_down_at, "s3-down", None),
                (s3_down_at + 4.0, "s3-up", None),
                (destination_down_at, "destination-down", None),
            ],
            key=lambda step: step[0],
        )
        for offset, action, victim in plan:
            at(offset)
            if action == "kill":
                assert victim is not None
                victim.kill()
                faults.append(f"{offset:5.1f}s SIGKILL {victim.name.split(':')[0]}")
                time.sleep(rng.uniform(0.0, 1.0))
                victim.start()
            elif action == "nats":
                nats.stop()
                faults.append(f"{offset:5.1f}s nats-server stopped (restarted after 1 s)")
                time.sleep(1.0)
                nats.start()
            elif action == "destination-down":
                outage.update(start=time.monotonic(), end=time.monotonic() + 5.0)
                outage_began.set()
                faults.append(f"{offset:5.1f}s destination 'failing' answers 500/429 for 5 s")
            elif action == "s3-down":
                proxy.down()
                faults.append(f"{offset:5.1f}s S3 unavailable for 4 s")
            else:
                proxy.up()
        sender.join(timeout=150)
        assert sender.error is None, repr(sender.error)
        assert len(sender.acknowledged) == N

        # Wait (bounded) until both sinks have caught up, then account.
        dsn = postgres.dsn(database)
        give_up = time.monotonic() + 90
        while time.monotonic() < give_up:
            if (
                len(warehouse_ids(dsn)) >= N
                and len(archived_ids(s3, bucket)) >= N
                and len(delivered_ids(healthy_receiver)) >= N
                and len(delivered_ids(flaky_receiver)) >= N
            ):
                break
            time.sleep(0.5)
        time.sleep(1.0)  # let redeliveries in flight land (they must not duplicate anything)
        warehouse = warehouse_ids(dsn)
        archive = archived_ids(s3, bucket)
        destinations = {
            "healthy": delivered_ids(healthy_receiver),
            "failing": delivered_ids(flaky_receiver),
        }
        # Not held back: events acknowledged during the failing destination's outage that the
        # healthy destination received before that outage ended.
        during_outage = {
            m for m, at in sender.acknowledged_at.items() if outage["start"] <= at < outage["end"]
        }
        healthy_in_time = {
            event["messageId"]
            for request in healthy_receiver.delivered("/hook")
            if request.at < outage["end"]
            for event in request.json["batch"]
        } & during_outage
        refused = sum(1 for r in flaky_receiver.all("/hook") if r.status >= 400)
    finally:
        for process in processes:
            process.stop()
        nats.stop()
        healthy_receiver.stop()
        flaky_receiver.stop()

    rows = {
        "warehouse": account(sender.acknowledged, warehouse),
        "archive": account(sender.acknowledged, archive),
    }
    print(
        f"\nzero-loss accounting: {N} events acknowledged by the collector "
        f"({sender.retries} request retries by the client)"
    )
    print(f"faults injected (seed {SEED}):")
    for fault in faults:
        print(f"  {fault}")
    print(f"  {'sink':<12}{'ok':>8}{'lost':>8}{'duplicated':>12}{'unexpected':>12}")
    for sink, (ok, lost, duplicated, unexpected) in rows.items():
        print(f"  {sink:<12}{ok:>8}{lost:>8}{duplicated:>12}{unexpected:>12}   (exactly once)")
    at_least_once = {
        name: account(sender.acknowledged, seen) for name, seen in destinations.items()
    }
    for name, (ok, lost, duplicated, unexpected) in at_least_once.items():
        print(
            f"  {'dest:' + name:<12}{ok:>8}{lost:>8}{duplicated:>12}{unexpected:>12}"
            "   (at least once)"
        )
    print(
        f"  the failing destination refused {refused} requests; the healthy one received "
        f"{len(healthy_in_time)} of the {len(during_outage)} events acknowledged during that "
        "outage before it ended"
    )
    for sink, (ok, lost, duplicated, unexpected) in rows.items():
        assert (lost, duplicated, unexpected) == (0, 0, 0), sink
        assert ok == N, sink
    assert len(warehouse) == N  # exactly N distinct messageIds in the warehouse
    for name, (ok, lost, duplicated, unexpected) in at_least_once.items():
        assert (lost, unexpected) == (0, 0), name
        assert ok + duplicated == N, name
    assert refused > 0  # the outage really happened
    assert during_outage and healthy_in_time  # and did not hold the healthy destination back
