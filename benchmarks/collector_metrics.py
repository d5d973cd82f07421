"""What the collector's metrics cost per request: prometheus_client against no metrics at all.

    .venv/bin/python benchmarks/collector_metrics.py [--requests 20000] [--rounds 7]

The collector's own request path (`Collector.ingest`: content checks, write key, JSON parsing,
validation and enrichment of a batch, the counters and the latency histogram) runs in-process
on a stream that acknowledges at once, so nothing but the collector's CPU is measured. Each
round times the same requests with the real metrics (`services.observability.Counters`) and
with a no-op stand-in, alternately, and the medians are compared: the overhead as microseconds
of process CPU time per request (wall time on a shared machine mostly measures the neighbours)
and as a share of the request's CPU time. (`benchmarks/collector.py` measures the whole server
with a broker; on a shared 2-core machine its run-to-run noise is larger than this overhead.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.collector.ingest import Collector, IngestRequest
from services.events.write_keys import WriteKeys
from services.observability import Counters


class AcknowledgingStream:
    async def publish(self, records: object) -> None:
        return None


class NoMetrics(Counters):
    def add(self, name: str, amount: float = 1, **labels: str) -> None:
        return None

    def observe(self, name: str, value: float, **labels: str) -> None:
        return None


def requests(count: int, batch: int) -> list[IngestRequest]:
    body = [
        {
            "batch": [
                {
                    "type": "track",
                    "event": "Viewed",
                    "userId": f"user-{i}",
                    "messageId": f"m-{i}-{n}",
                    "properties": {"page": "/home", "n": n},
                }
                for n in range(batch)
            ],
            "writeKey": "bench-key",
        }
        for i in range(count)
    ]
    return [
        IngestRequest(
            route="/v1/batch", body=json.dumps(b).encode(), content_type="application/json"
        )
        for b in body
    ]


async def time_per_request(collector: Collector, batch: list[IngestRequest]) -> float:
    # CPU time of this process: on a shared machine, wall time mostly measures the neighbours.
    started = time.process_time()
    for request in batch:
        response = await collector.ingest(request)
        assert response.status == 200, response.body
    return (time.process_time() - started) / len(batch)


async def main(args: argparse.Namespace) -> None:
    keys = WriteKeys.from_json(json.dumps({"web": "bench-key"}))
    with_metrics = Collector(AcknowledgingStream(), keys, Counters())  # type: ignore[arg-type]
    without = Collector(AcknowledgingStream(), keys, NoMetrics())  # type: ignore[arg-type]
    for events in (1, 10):
        batch = requests(args.requests, events)
        await time_per_request(with_metrics, batch[:1000])  # warm-up
        await time_per_request(without, batch[:1000])
        measured: dict[str, list[float]] = {"metrics": [], "none": []}
        for _ in range(args.rounds):
            measured["none"].append(await time_per_request(without, batch))
            measured["metrics"].append(await time_per_request(with_metrics, batch))
        plain = statistics.median(measured["none"]) * 1e6
        metered = statistics.median(measured["metrics"]) * 1e6
        print(
            f"batch {events:>3}: {plain:7.1f} us/request without metrics, {metered:7.1f} with "
            f"prometheus_client: +{metered - plain:.1f} us ({(metered / plain - 1) * 100:+.1f} %)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    asyncio.run(main(parser.parse_args()))
