"""Pipeline throughput and latency: archiver events/s, loader rows/s vs plain COPY, e2e latency.

    .venv/bin/python benchmarks/pipeline.py [--events 50000] [--rate 500] [--duration 12]
        [--phases runner,archiver,loader,e2e]

Starts its own nats-server, PostgreSQL (durable: fsync on) and moto (S3) on free loopback ports.

0. **Runner alone**: ``--events`` contract events are put on a JetStream stream and drained by
   the JetStream runner with a sink that does nothing (batches of 1000 / 5 s): the framework's
   own cost (pull, decode, acknowledge). Figure: events/s.
1. **Archiver**: the archiver (the real runner and sink, in this process) drains the same
   stream into S3 on moto with batches of 10000 / 1 s. Figure: events/s from the first fetch
   to the last acknowledgement.
2. **Loader**: the same stream drained by the loader (batches of ``--loader-batch``, default
   5000 / 5 s: the defaults) into a fresh database. Baseline in the same round: one plain
   ``COPY`` of the very same rows (the loader's own row tuples, built beforehand, not timed)
   into an identical table in another fresh database of the same server. Figure: loader rows/s
   and its ratio to COPY rows/s (text COPY, and binary COPY with the loader's own types and
   dumper), per round (``--loader-rounds``, each a new durable consumer and databases) and the
   median ratio. Then the same stream replayed by another durable consumer into the loaded
   table: every batch conflicts and takes the staging path (the worst case).
3. **End-to-end latency**: the collector (``python -m services collector``) and the loader
   (``python -m services loader``) as real processes; events offered at ``--rate`` events/s
   (requests of 25) for ``--duration`` s. Latency per event = first time a poller (every 20 ms)
   sees its row in ``events`` minus the time the collector acknowledged its request.
   Percentiles p50/p99; run with the default loader batch age (5 s) and with 0.2 s.

The in-process runners use the garbage-collector settings the consumer processes use
(:func:`services.consumers.runner.process.tune_gc`, applied by ``run_consumer``).

Everything shares the machine's cores (2 on the development machine): the figures are for
comparing changes, not capacity planning.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import boto3  # noqa: E402
import httpx  # noqa: E402
import nats  # noqa: E402
import psycopg  # noqa: E402

from benchmarks.drain import drain  # noqa: E402
from services.consumers.archiver.sink import Archiver, ArchiverConfig  # noqa: E402
from services.consumers.loader.schema import COLUMNS, COPY_TYPES, migrate  # noqa: E402
from services.consumers.loader.sink import (  # noqa: E402
    COPY_OPTIONS,
    EncodedJson,
    EncodedJsonbDumper,
    Loader,
    LoaderConfig,
    row_of,
)
from services.consumers.runner.model import DONE, decode  # noqa: E402
from services.consumers.runner.process import tune_gc  # noqa: E402
from services.stream.base import StreamSettings  # noqa: E402
from services.stream.dead_letters import ensure_dead_letter_stream  # noqa: E402
from services.stream.jetstream import ensure_stream  # noqa: E402
from tests.servers import (  # noqa: E402
    AWS_TEST_ENV,
    LOOPBACK,
    collector_server,
    consumer_process,
    moto_endpoint,
    moto_server,
    nats_server,
    nats_url,
    postgres_server,
)

WRITE_KEYS = json.dumps({"web": "web-key-1"})
PHASES = ("runner", "archiver", "loader", "e2e")


def contract_event(index: int, run: str) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user-{index % 1000}",
        "messageId": f"{run}-{index}",
        "properties": {"orderId": f"o-{index}", "total": 19.99, "items": [{"sku": "a", "n": 2}]},
        "context": {"library": {"name": "analytics-python", "version": "2.3.4"}, "ip": "10.0.0.1"},
        "receivedAt": now,
        "timestamp": now,
        "sentAt": now,
        "liftoff": {"source": "web", "schema": 1},
    }


async def fill_stream(server_url: str, count: int, run: str) -> list[bytes]:
    nc = await nats.connect(server_url)
    js = nc.jetstream(timeout=30)
    payloads = [json.dumps(contract_event(i, run)).encode() for i in range(count)]
    for start in range(0, count, 1000):
        acks = [
            await js.publish_async("events.web.track", payload, stream="EVENTS")
            for payload in payloads[start : start + 1000]
        ]
        await asyncio.gather(*acks)
    await nc.close()
    return payloads


class StagingOnlyLoader(Loader):
    """The loader as it was: every batch through staging + INSERT ... ON CONFLICT."""

    _copy_straight = staticmethod(Loader._copy_through_staging)


class NoOpSink:
    """Every event is done at once: what is left is the runner's own cost."""

    async def start(self) -> None: ...

    async def check_ready(self) -> None: ...

    async def close(self) -> None: ...

    async def handle(self, batch: Any) -> list[Any]:
        return [DONE] * len(batch)


def plain_copy(dsn: str, rows: list[tuple[Any, ...]], binary: bool = False) -> float:
    """One COPY of ``rows`` into an empty ``events`` table, one commit: rows/s. ``binary``: the
    loader's binary format (its own jsonb dumper), else text."""
    if not binary:  # text COPY: the JSON columns as str (the loader keeps them as bytes)
        jsonb = {index for index, name in enumerate(COPY_TYPES) if name == "jsonb"}
        rows = [
            tuple(
                bytes(value).decode()
                if index in jsonb and value is not None and not isinstance(value, str)
                else value
                for index, value in enumerate(row)
            )
            for row in rows
        ]
    with psycopg.connect(dsn) as connection:
        migrate(connection)
        connection.adapters.register_dumper(EncodedJson, EncodedJsonbDumper)
        columns = ", ".join(f'"{c}"' for c in COLUMNS)
        options = COPY_OPTIONS if binary else "FROM STDIN"
        started = time.perf_counter()
        with (
            connection.cursor() as cursor,
            cursor.copy(f"COPY events ({columns}) {options}") as copy,
        ):
            if binary:
                copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)
        connection.commit()
        return len(rows) / (time.perf_counter() - started)


def loader_rows(payloads: list[bytes]) -> list[tuple[Any, ...]]:
    from datetime import UTC, datetime

    from services.consumers.runner.model import Delivery, Position

    rows = []
    for sequence, payload in enumerate(payloads, start=1):
        delivery = Delivery(payload, Position("jetstream", "EVENTS", sequence), datetime.now(UTC))
        assert decode(delivery) is None
        row = row_of(delivery)
        assert not isinstance(row, str)
        rows.append(row)
    return rows


def end_to_end(
    workdir: Path, nats_base: str, postgres: Any, rate: int, duration: float, batch_seconds: float
) -> tuple[list[float], int]:
    run = uuid.uuid4().hex[:6]
    stream = f"E2E{run}"
    url = f"{nats_base}/{stream}?subject_prefix=e2e{run}"
    asyncio.run(ensure_stream(url, StreamSettings(retention_hours=1)))
    database = postgres.create_database(f"e2e_{run}")
    with psycopg.connect(postgres.dsn(database)) as connection:
        migrate(connection)  # what the loader does on connect; the poller needs the table now
    loader = consumer_process(
        workdir,
        "loader",
        {
            **postgres.env(database),
            "LIFTOFF_STREAM_URL": url,
            "LIFTOFF_DEAD_LETTER_URL": f"{nats_base}/DEADLETTER",
            "LIFTOFF_LOADER_BATCH_MAX_SECONDS": str(batch_seconds),
            "LIFTOFF_LOG_LEVEL": "WARNING",
        },
        name=f"loader-{run}",
    )
    collector = collector_server(workdir, url, WRITE_KEYS)
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def poll() -> None:
        with psycopg.connect(postgres.dsn(database), autocommit=True) as connection:
            last = 0
            while not done.is_set() or len(seen) < len(acked):
                rows = connection.execute(
                    "SELECT message_id, stream_sequence FROM events WHERE stream_sequence > %s",
                    (last,),
                ).fetchall()
                now = time.time()
                for message_id, sequence in rows:
                    seen.setdefault(message_id, now)
                    last = max(last, int(sequence))
                if done.is_set() and time.time() > deadline:
                    return
                time.sleep(0.02)

    with collector, loader:
        deadline = time.time() + duration + 30
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        per_request = 25
        with httpx.Client(
            base_url=f"http://{LOOPBACK}:{collector.port}", auth=("web-key-1", "")
        ) as client:
            start = time.perf_counter()
            sent = 0
            while time.perf_counter() - start < duration:
                ids = [f"{run}-{sent + i}" for i in range(per_request)]
                batch = [
                    {
                        "type": "track",
                        "event": "E",
                        "userId": "u",
                        "messageId": m,
                        "properties": {"n": 1},
                    }
                    for m in ids
                ]
                response = client.post("/v1/batch", json={"batch": batch})
                answered = time.time()
                if response.status_code == 200:
                    for message_id in ids:
                        acked[message_id] = answered
                sent += per_request
                pause = start + sent / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
        done.set()
        poller.join(timeout=40)
    latencies = [seen[m] - acked[m] for m in acked if m in seen]
    return latencies, len(acked) - len(latencies)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50000)
    parser.add_argument("--rate", type=int, default=500, help="offered events/s for e2e")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds of e2e load")
    parser.add_argument(
        "--loader-rounds", type=int, default=3, help="loader vs plain COPY rounds (median)"
    )
    parser.add_argument(
        "--loader-batch",
        type=int,
        default=5000,
        help="loader batch size (default: the loader's default)",
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all)",
    )
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if not phases <= set(PHASES):
        parser.error(f"--phases {args.phases!r}: allowed are {', '.join(PHASES)}")

    with tempfile.TemporaryDirectory(prefix="liftoff-bench-") as tmp:
        workdir = Path(tmp)
        with (
            nats_server(workdir / "nats") as nats_proc,
            moto_server(workdir) as moto,
            postgres_server(workdir / "pg", durable=True) as postgres,
        ):
            base = nats_url(nats_proc)
            stream_url = f"{base}/EVENTS?subject_prefix=events"
            dead_letter = f"{base}/DEADLETTER"
            asyncio.run(ensure_stream(stream_url, StreamSettings(retention_hours=1)))
            asyncio.run(ensure_dead_letter_stream(dead_letter, retention_hours=1))
            run = uuid.uuid4().hex[:6]
            payloads = asyncio.run(fill_stream(base, args.events, run))
            size = sum(map(len, payloads)) / len(payloads)
            print(f"{args.events} events on the stream, {size:.0f} bytes each on average")
            tune_gc()  # as run_consumer does in the consumer processes

            if "runner" in phases:
                alone = asyncio.run(
                    drain(stream_url, dead_letter, NoOpSink(), "noop", args.events, 1000, 5.0)
                )
                print(f"runner alone (no-op sink): {alone:,.0f} events/s")

            if "archiver" in phases:
                s3 = boto3.client(
                    "s3",
                    endpoint_url=moto_endpoint(moto),
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                    region_name=AWS_TEST_ENV["AWS_REGION"],
                )
                s3.create_bucket(Bucket="bench")
                archiver = Archiver(
                    ArchiverConfig(
                        bucket="bench",
                        endpoint_url=moto_endpoint(moto),
                        region=AWS_TEST_ENV["AWS_REGION"],
                    ),
                    client=s3,
                )
                archived = asyncio.run(
                    drain(stream_url, dead_letter, archiver, "archiver", args.events, 10000, 1.0)
                )
                objects = s3.list_objects_v2(Bucket="bench").get("KeyCount", 0)
                print(f"archiver: {archived:,.0f} events/s into S3 on moto ({objects} objects)")

            if "loader" in phases:
                rows = loader_rows(payloads)
                ratios, binary_ratios = [], []
                for round_ in range(1, args.loader_rounds + 1):
                    # Each round: the loader into a fresh database (a new durable consumer), then
                    # plain COPYs of the same rows: the ratio is taken within the round.
                    loader_db = postgres.create_database(f"bench_loader_{round_}")
                    loader = Loader(
                        LoaderConfig(
                            {
                                "host": LOOPBACK,
                                "port": str(postgres.port),
                                "user": "postgres",
                                "dbname": loader_db,
                            }
                        )
                    )
                    loaded = asyncio.run(
                        drain(
                            stream_url,
                            dead_letter,
                            loader,
                            f"loader-{round_}",
                            args.events,
                            args.loader_batch,
                            5.0,
                        )
                    )
                    copy_db = postgres.create_database(f"bench_copy_{round_}")
                    copied = plain_copy(postgres.dsn(copy_db), rows)
                    binary_db = postgres.create_database(f"bench_copy_binary_{round_}")
                    binary = plain_copy(postgres.dsn(binary_db), rows, binary=True)
                    ratios.append(loaded / copied)
                    binary_ratios.append(loaded / binary)
                    print(
                        f"loader (round {round_}, batch {args.loader_batch}): {loaded:,.0f} "
                        f"rows/s; plain COPY of the same rows {copied:,.0f} rows/s; ratio "
                        f"{loaded / copied:.2f} (plain binary COPY {binary:,.0f} rows/s; "
                        f"ratio {loaded / binary:.2f})"
                    )
                print(
                    f"loader: median ratio to plain COPY {statistics.median(ratios):.2f} "
                    f"(to plain binary COPY {statistics.median(binary_ratios):.2f}) over "
                    f"{args.loader_rounds} rounds"
                )
                staging_db = postgres.create_database("bench_loader_staging")
                staging = asyncio.run(
                    drain(
                        stream_url,
                        dead_letter,
                        StagingOnlyLoader(
                            replace(
                                loader.cfg,
                                connection={**loader.cfg.connection, "dbname": staging_db},
                            )
                        ),
                        "loader-staging",
                        args.events,
                        args.loader_batch,
                        5.0,
                    )
                )
                print(
                    f"loader, staging path for every batch (the previous design): {staging:,.0f} "
                    f"rows/s; ratio {staging / copied:.2f}"
                )
                # A replay through another durable consumer: every batch is already loaded, so every
                # straight COPY hits the primary key and the batch goes the staging path.
                replay_loader = Loader(loader.cfg)  # a sink is closed when its runner stops
                replayed = asyncio.run(
                    drain(
                        stream_url,
                        dead_letter,
                        replay_loader,
                        "loader-replay",
                        args.events,
                        args.loader_batch,
                        5.0,
                    )
                )
                print(
                    f"loader replay (every batch conflicts, staging path): {replayed:,.0f} rows/s; "
                    f"ratio {replayed / copied:.2f}"
                )

            if "e2e" in phases:
                for batch_seconds in (5.0, 0.2):
                    latencies, missing = end_to_end(
                        workdir, base, postgres, args.rate, args.duration, batch_seconds
                    )
                    print(
                        f"e2e (collector ack -> row in warehouse), offered {args.rate} events/s "
                        f"for {args.duration:.0f} s, loader batch age {batch_seconds} s: "
                        f"p50 {percentile(latencies, 50) * 1000:.0f} ms, "
                        f"p99 {percentile(latencies, 99) * 1000:.0f} ms, "
                        f"mean {statistics.fmean(latencies) * 1000:.0f} ms "
                        f"({len(latencies)} events, {missing} not seen)"
                    )


if __name__ == "__main__":
    main()
