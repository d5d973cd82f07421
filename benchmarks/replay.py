"""Replay throughput against the archive's read rate, in the same run.

    .venv/bin/python benchmarks/replay.py [--events 100000] [--rounds 3]

Starts moto (S3) on a free loopback port and writes ``--events`` realistic ~1.2 KB ``track``
events (benchmarks/consumer_backlog.py's) of one hour, two partitions routed by user, through
the archiver's own sink (10,000-event windows: the production default). Then, alternating, for
``--rounds`` rounds:

- **read (heads)**: the archive's read rate — every object of the hour streamed and gunzipped
  line by line with the head of each line decoded (``services.consumers.reconcile.repair
  .archive_lines``, what the reconciliation reads with);
- **read (whole events)**: the same, each line decoded whole (what any reader of the events
  pays);
- **replay**: ``services.consumers.replay`` walking the same hour (objects merged per partition
  by sequence, each line turned back into the stream event and checked against the contract)
  into a target that only counts — the target is not the bottleneck — in its 500-event batches
  with a progress file written after each.

Prints events/s of each round, the medians and the ratios (the issue's target: ≥ 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
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

from benchmarks.consumer_backlog import realistic_event  # noqa: E402
from services.consumers.archiver.sink import Archiver, ArchiverConfig  # noqa: E402
from services.consumers.reconcile.repair import archive_lines  # noqa: E402
from services.consumers.replay.command import Pace, Summary, replay  # noqa: E402
from services.consumers.replay.lines import ArchivedEvent  # noqa: E402
from services.consumers.replay.progress import Progress  # noqa: E402
from services.consumers.replay.window import Reading, Selection, parse_time, walk  # noqa: E402
from services.consumers.runner.model import Delivery, Position, decode  # noqa: E402
from tests.servers import AWS_TEST_ENV, moto_endpoint, moto_server  # noqa: E402

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


def fill(cfg: ArchiverConfig, count: int) -> None:
    """``count`` events of hour 10 through the archiver's own sink, in 10,000-event batches."""
    run = uuid.uuid4().hex[:8]
    sequences = {"EVENTS-0": 0, "EVENTS-1": 0}

    async def main() -> None:
        archiver = Archiver(cfg)
        await archiver.start()
        try:
            for first in range(0, count, 10_000):
                batch = []
                for index in range(first, min(first + 10_000, count)):
                    event = realistic_event(index, run)
                    event["receivedAt"] = f"2026-11-27T10:{index * 60 // count:02d}:00.000Z"
                    partition = f"EVENTS-{index % 5000 % 2}"
                    sequences[partition] += 1
                    delivery = Delivery(
                        data=json.dumps(event).encode(),
                        position=Position("jetstream", partition, sequences[partition]),
                        arrival=parse_time("hour", HOUR),
                    )
                    assert decode(delivery) is None
                    batch.append(delivery)
                await archiver.handle(batch)
        finally:
            await archiver.close()

    asyncio.run(main())


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
        with moto_server(workdir) as moto:
            os.environ.update(AWS_TEST_ENV)
            endpoint = moto_endpoint(moto)
            client = boto3.client("s3", endpoint_url=endpoint)
            client.create_bucket(Bucket="archive")
            cfg = ArchiverConfig(bucket="archive", endpoint_url=endpoint)
            fill(cfg, options.events)
            heads, wholes, replays = [], [], []
            for round_number in range(1, options.rounds + 1):
                count, head = read_rate(client, cfg)
                _, whole = read_rate(client, cfg, whole=True)
                replayed, replay_per_second = replay_rate(client, cfg, workdir)
                assert replayed == count == options.events, (replayed, count)
                heads.append(head)
                wholes.append(whole)
                replays.append(replay_per_second)
                print(
                    f"round {round_number}: read (heads) {head:,.0f} events/s, read (whole "
                    f"events) {whole:,.0f} events/s, replay {replay_per_second:,.0f} events/s"
                )
            head, whole, again = (statistics.median(x) for x in (heads, wholes, replays))
            print(
                f"median over {options.rounds} rounds of {options.events:,} events: "
                f"read (heads) {head:,.0f}/s, read (whole events) {whole:,.0f}/s, "
                f"replay {again:,.0f}/s; replay/read(heads) {again / head:.2f}, "
                f"replay/read(whole events) {again / whole:.2f}"
            )


if __name__ == "__main__":
    main()
