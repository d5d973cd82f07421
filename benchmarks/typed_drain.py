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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from benchmarks.drain import drain
from services.consumers.loader.sink import Loader, LoaderConfig
from services.consumers.runner.process import tune_gc

MAX_EVENTS, MAX_SECONDS = 5000, 5.0
"""The loader's default batch bounds."""


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
