"""Drain a JetStream stream with the loader of the tree this file is in, as a process of its own
(``benchmarks/typed_loading.py`` runs it once from the working tree and once from a copy of an
earlier commit's ``services/``: ``--before``, so both loaders are measured the same way in the
same run).

    python benchmarks/typed_drain.py STREAM_URL DEAD_LETTER_URL CONSUMER EVENTS DSN
        [--by-age] [--raw-only]

Prints one JSON line: events/s and the sizes of the batches the loader was handed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import nats

from services.consumers.loader.sink import Loader, LoaderConfig
from services.consumers.runner.jetstream import JetStreamRunner
from services.consumers.runner.process import tune_gc
from services.consumers.runner.settings import RunnerSettings
from services.stream.dead_letters import JetStreamDeadLetter

MAX_EVENTS, MAX_SECONDS = 5000, 5.0
"""The loader's default batch bounds."""


async def drain(
    stream_url: str,
    dead_letter: str,
    sink: Any,
    name: str,
    events: int,
    max_events: int,
    max_seconds: float,
    close_when_caught_up: bool = False,
    stream: str = "EVENTS",
) -> float:
    """Run the runner until the durable consumer acknowledged everything; events/s."""
    settings = RunnerSettings(
        name, max_events, max_seconds, health_port=None, close_when_caught_up=close_when_caught_up
    )
    runner = JetStreamRunner(stream_url, sink, JetStreamDeadLetter(dead_letter), settings)
    stop = asyncio.Event()
    nc = await nats.connect(stream_url.rpartition("/")[0])
    js = nc.jetstream()
    started = time.perf_counter()
    task = asyncio.create_task(runner.run(stop))
    while True:
        await asyncio.sleep(0.05)
        try:
            info = await js.consumer_info(stream, name)
        except Exception:
            continue
        if info.ack_floor.stream_seq >= events:
            elapsed = time.perf_counter() - started
            break
    stop.set()
    await task
    await nc.close()
    return events / elapsed


class CountingLoader(Loader):
    """The loader, keeping the size of every batch it is handed."""

    sizes: list[int]

    async def handle(self, batch: Any) -> Any:
        self.sizes.append(len(batch))
        return await super().handle(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("stream_url", "dead_letter", "consumer", "events", "dsn"):
        parser.add_argument(name)
    parser.add_argument("--by-age", action="store_true", help="batches close by age only")
    parser.add_argument("--raw-only", action="store_true", help="the typed half switched off")
    args = parser.parse_args()
    loader = CountingLoader(LoaderConfig(dict(p.split("=", 1) for p in args.dsn.split())))
    loader.sizes = []
    if args.raw_only:
        loader._typed.derive = lambda rows: {}  # type: ignore[method-assign]
    tune_gc()  # as the loader process does
    rate = asyncio.run(
        drain(args.stream_url, args.dead_letter, loader, args.consumer, int(args.events),
              MAX_EVENTS, MAX_SECONDS, close_when_caught_up=not args.by_age)
    )  # fmt: skip
    print(json.dumps({"rate": rate, "sizes": loader.sizes}))


if __name__ == "__main__":
    main()
