"""Replay throughput against the archiver's read rates, in the same run.

    .venv/bin/python benchmarks/replay.py [--events 100000] [--rounds 3]

"The archiver's read rate" (issue 20's target: replay ≥ 0.8 times it, the target not being the
bottleneck) is read both ways. Starts moto (S3) and nats-server on free loopback ports; makes
``--events`` realistic ~1.2 KB ``track`` events (benchmarks/consumer_backlog.py's) of one hour;
writes them to an archive through the archiver's own sink (two partitions routed by user,
10,000-event windows: the production default) and publishes the same events to a JetStream
stream. Then, alternating, for ``--rounds`` rounds:

- **read (heads)**: the rate of reading the archive back: every object of the hour streamed
  and gunzipped line by line with the head of each line decoded (``services.consumers.reconcile
  .repair.archive_lines``, what the reconciliation reads with);
- **read (whole events)**: the same, each line decoded whole (what any reader of the events
  pays);
- **replay**: ``services.consumers.replay`` walking the same hour (objects merged per partition
  by sequence, each line turned back into the stream event and checked against the contract)
  into a target that only counts — the target is not the bottleneck — in its 500-event batches
  with the progress file written after each;
- **archiver (stream)**: the archiver's own read rate: the real JetStream runner and archiver
  sink (in this process, with the consumer processes' garbage-collector settings, as
  benchmarks/pipeline.py runs it; batches of 10,000 / 1 s) drain the stream into a new bucket
  from a new durable consumer: events/s from its start to the last acknowledgement.

Prints events/s of each round, the medians and the replay's ratio to each read rate (of the
medians, and the median of the rounds' own ratios).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import boto3  # noqa: E402
import msgspec  # noqa: E402
import nats  # noqa: E402

from benchmarks.consumer_backlog import realistic_event  # noqa: E402
from benchmarks.drain import drain  # noqa: E402
from services.consumers.archiver.sink import Archiver, ArchiverConfig  # noqa: E402
from services.consumers.reconcile.repair import archive_lines  # noqa: E402
from services.consumers.replay.command import Pace, Summary, replay  # noqa: E402
from services.consumers.replay.lines import ArchivedEvent  # noqa: E402
from services.consumers.replay.progress import Progress  # noqa: E402
from services.consumers.replay.window import Reading, Selection, parse_time, walk  # noqa: E402
from services.consumers.runner.model import Delivery, Position, decode  # noqa: E402
from services.consumers.runner.process import tune_gc  # noqa: E402
from services.stream.base import StreamSettings  # noqa: E402
from services.stream.dead_letters import ensure_dead_letter_stream  # noqa: E402
from services.stream.jetstream import ensure_stream  # noqa: E402
from tests.servers import (  # noqa: E402
    AWS_TEST_ENV,
    moto_endpoint,
    moto_server,
    nats_server,
    nats_url,
)

HOUR = "2026-11-27T10:00Z"


class Counting:
    """A target that takes every batch at once."""

    batch_events = 500

    def __init__(self) -> None:
        self.events = 0

    async def send(self, batch: list[ArchivedEvent], summary: Summary) -> None:
        self.events += len(batch)
        summary.sent += len(batch)

    async def close(self) -> None:
        return None


def stream_events(count: int) -> list[bytes]:
    """``count`` events of hour 10, as the stream carries them."""
    run = uuid.uuid4().hex[:8]
    events = []
    for index in range(count):
        event = realistic_event(index, run)
        event["receivedAt"] = f"2026-11-27T10:{index * 60 // count:02d}:00.000Z"
        events.append(json.dumps(event).encode())
    return events


def fill(cfg: ArchiverConfig, events: list[bytes]) -> None:
    """The archive of ``events`` through the archiver's own sink, in 10,000-event batches."""
    sequences = {"EVENTS-0": 0, "EVENTS-1": 0}

    async def main() -> None:
        archiver = Archiver(cfg)
        await archiver.start()
        try:
            for first in range(0, len(events), 10_000):
                batch = []
                for index in range(first, min(first + 10_000, len(events))):
                    partition = f"EVENTS-{index % 5000 % 2}"  # realistic_event's user, routed
                    sequences[partition] += 1
                    delivery = Delivery(
                        data=events[index],
                        position=Position("jetstream", partition, sequences[partition]),
                        arrival=parse_time("hour", HOUR),
                    )
                    assert decode(delivery) is None
                    batch.append(delivery)
                await archiver.handle(batch)
        finally:
            await archiver.close()

    asyncio.run(main())


async def publish(server: str, events: list[bytes]) -> None:
    """``events`` onto the stream ``EVENTS``, in order."""
    connection = await nats.connect(server)
    stream = connection.jetstream(timeout=30)
    for first in range(0, len(events), 1000):
        acks = [
            await stream.publish_async("events.web.track", data, stream="EVENTS")
            for data in events[first : first + 1000]
        ]
        await asyncio.gather(*acks)
    await connection.close()


def archiver_rate(server: str, endpoint: str, client: Any, count: int, round_number: int) -> float:
    """The archiver draining the stream from a new durable consumer into a new bucket."""
    bucket = f"stream-{round_number}"
    client.create_bucket(Bucket=bucket)
    archiver = Archiver(ArchiverConfig(bucket=bucket, endpoint_url=endpoint), client=client)
    stream_url, dead_letter = f"{server}/EVENTS?subject_prefix=events", f"{server}/DEADLETTER"
    thresholds = gc.get_threshold()
    tune_gc()  # what run_consumer does in the archiver's process
    try:
        name = f"archiver-{round_number}"
        return asyncio.run(drain(stream_url, dead_letter, archiver, name, count, 10_000, 1.0))
    finally:  # the other figures with the interpreter's defaults, as the replay command runs
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def read_rate(client: Any, cfg: ArchiverConfig, *, whole: bool = False) -> tuple[int, float]:
    """Every line of every object: its head decoded (``whole``: the whole event decoded)."""
    started = time.perf_counter()
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=cfg.bucket)
        for item in page.get("Contents", [])
    ]
    lines = 0
    for key in keys:
        for _, line in archive_lines(client, cfg.bucket, key):
            if whole:
                msgspec.json.decode(line)
            lines += 1
    return lines, lines / (time.perf_counter() - started)


def replay_rate(client: Any, cfg: ArchiverConfig, workdir: Path) -> tuple[int, float]:
    selection = Selection(parse_time("--from", HOUR), parse_time("--to", "2026-11-27T11:00Z"))
    target = Counting()
    summary = Summary(target="count")
    progress = Progress(workdir / f"progress-{uuid.uuid4().hex}.json", {"benchmark": True})
    started = time.perf_counter()
    events = walk(client, cfg, selection, Reading())
    asyncio.run(replay(events, target, summary, pace=Pace(None), progress=progress))
    progress.close()
    return target.events, target.events / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="liftoff-replay-") as tmp:
        workdir = Path(tmp)
        with moto_server(workdir) as moto, nats_server(workdir / "nats") as nats_process:
            os.environ.update(AWS_TEST_ENV)
            endpoint = moto_endpoint(moto)
            client = boto3.client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket="archive")
            cfg = ArchiverConfig(bucket="archive", endpoint_url=endpoint)
            events = stream_events(options.events)
            fill(cfg, events)
            server = nats_url(nats_process)
            asyncio.run(ensure_stream(f"{server}/EVENTS", StreamSettings(retention_hours=2)))
            asyncio.run(ensure_dead_letter_stream(f"{server}/DEADLETTER", retention_hours=1))
            asyncio.run(publish(server, events))
            rates: dict[str, list[float]] = {}
            for round_number in range(1, options.rounds + 1):
                count, head = read_rate(client, cfg)
                _, whole = read_rate(client, cfg, whole=True)
                replayed, again = replay_rate(client, cfg, workdir)
                stream = archiver_rate(server, endpoint, client, options.events, round_number)
                assert replayed == count == options.events, (replayed, count)
                figures = {"read (heads)": head, "read (whole events)": whole}
                figures |= {"archiver (stream)": stream, "replay": again}
                for name, rate in figures.items():
                    rates.setdefault(name, []).append(rate)
                listed = ", ".join(f"{name} {rate:,.0f}" for name, rate in figures.items())
                print(f"round {round_number}: {listed} events/s", flush=True)
            report(options, rates)


def report(options: argparse.Namespace, rates: dict[str, list[float]]) -> None:
    """Medians, and the replay's ratio to each read rate: of the medians, and the median of the
    rounds' own ratios (steadier when the machine's load drifts between rounds)."""
    replays = rates.pop("replay")
    medians = {name: statistics.median(values) for name, values in rates.items()}
    listed = ", ".join(f"{name} {rate:,.0f}/s" for name, rate in medians.items())
    print(
        f"median over {options.rounds} rounds of {options.events:,} events: {listed}, "
        f"replay {statistics.median(replays):,.0f}/s"
    )
    for name, values in rates.items():
        by_round = statistics.median(r / v for r, v in zip(replays, values, strict=True))
        print(
            f"replay / {name}: {statistics.median(replays) / medians[name]:.2f} (medians), "
            f"{by_round:.2f} (median of the rounds' ratios)"
        )


if __name__ == "__main__":
    main()
