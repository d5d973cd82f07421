"""Collector throughput: events/s acknowledged, request latency, ratio to raw JetStream publishing.

    .venv/bin/python benchmarks/collector.py [--duration 6] [--connections 32] [--workers 1,2]
                                             [--partitions 1,2,4,8,16] [--nats-server PATH]
                                             [--profile DIR]

Starts its own nats-server (``tests/servers.py``'s binary, >= 2.12.3; free loopback port,
temporary store) and the collector as a real HTTP server (``python -m services collector``),
then drives it from a separate process with ``wrk`` (Debian package ``wrk``): a C load generator
whose own CPU use is small next to a Python one's, which matters on a 2-core machine where the
load generator, the collector and nats-server share the cores. A Lua script gives every event a
unique messageId (no JetStream dedupe shortcut) and one of 10,000 userIds (so partitioning has
users to spread).

1. Both durability modes (default lazy fsync, then ``jetstream { sync_interval: always }``): the
   raw baseline — JetStream publishing of the same enriched events from one Python process with
   no HTTP and no validation (nats-py on uvloop, publish_async for a whole batch then await every
   PubAck, the collector's pattern, as many batches in flight as wrk has connections) — and the
   collector, for batches of 10 and 100 events with ``--workers`` collector processes.
2. With ``sync_interval: always``, the partition curve: for each count in ``--partitions``, a raw
   publisher spreading the same load over that many streams (routed by the collector's hash),
   then the collector (1 worker, batch 10) on the same partitioned stream; ``--rounds`` rounds
   over all counts, medians of events/s and p50/p99, and medians of the ratios taken within a
   round (to the raw publisher over the same streams, and to the collector on one stream).
3. The atomic batch publish mode (``allow_atomic``: one PubAck per batch of 10) on one stream,
   raw, against per-message publishing measured just before.

Each measured run lasts ``--duration`` seconds after a 1 s warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from statistics import median

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import nats  # noqa: E402
import uvloop  # noqa: E402

from services.events.model import StreamRecord  # noqa: E402
from services.events.records import build_records  # noqa: E402
from services.events.segment import parse_body  # noqa: E402
from services.stream.base import StreamSettings  # noqa: E402
from services.stream.jetstream import JetStreamAddress, ensure_stream, partition_of  # noqa: E402
from tests.servers import (  # noqa: E402
    NATS_SERVER,
    ServerProcess,
    collector_server,
    nats_server,
    nats_url,
)

WRITE_KEY = "bench-key"
STREAM = "BENCH"

WRK_SCRIPT = r"""
local thread_counter = 0
function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
end

local batch = tonumber(os.getenv("BENCH_BATCH"))
function init(args)
  math.randomseed(os.time() + thread_id)
end
local run_id = os.getenv("BENCH_RUN")
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")

function request()
  counter = counter + 1
  local parts = {}
  for i = 1, batch do
    parts[i] = string.format(
      '{"type":"track","event":"Product Viewed","userId":"user-%d",' ..
      '"messageId":"%s-%d-%d-%d","timestamp":"2026-01-01T00:00:00.000Z",' ..
      '"properties":{"sku":"SKU-%d","price":19.99,"currency":"USD"},' ..
      '"context":{"library":{"name":"bench","version":"1.0"},"locale":"en-US"}}',
      math.random(0, 9999), run_id, thread_id, counter, i, i)
  end
  local body = '{"batch":[' .. table.concat(parts, ",") ..
    '],"sentAt":"2026-01-01T00:00:01.000Z"}'
  return wrk.format(nil, "/v1/batch", nil, body)
end

function done(summary, latency, requests)
  io.write("BENCH_RESULT " .. string.format(
    '{"requests":%d,"duration_us":%d,"status_errors":%d,"timeouts":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.timeout,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass
class LoadResult:
    events_per_second: float
    p50_ms: float
    p99_ms: float
    failed_requests: int


def sample_records(count: int) -> list[StreamRecord]:
    """The enriched events the collector would publish for wrk's requests (for the baseline)."""
    events = [
        {
            "type": "track",
            "event": "Product Viewed",
            "userId": f"user-{i}",
            "messageId": f"baseline-{i}",
            "timestamp": "2026-01-01T00:00:00.000Z",
            "properties": {"sku": f"SKU-{i}", "price": 19.99, "currency": "USD"},
            "context": {"library": {"name": "bench", "version": "1.0"}, "locale": "en-US"},
        }
        for i in range(count)
    ]
    body = json.dumps({"batch": events, "sentAt": "2026-01-01T00:00:01.000Z"}).encode()
    return build_records(parse_body(body, None), None, "bench", datetime.now(UTC))


async def raw_jetstream_rate(
    server_url: str,
    batch: int,
    in_flight: int,
    seconds: float,
    partitions: int = 1,
    stream: str = STREAM,
    prefix: str = "bench",
    atomic: bool = False,
) -> float:
    """Events/s acknowledged when one Python process publishes ``batch`` events concurrently,
    awaits every PubAck, and keeps ``in_flight`` such batches going. With ``partitions`` > 1
    each event goes to its user's partition stream (the collector's routing). ``atomic``: each
    batch is one atomic batch (``Nats-Batch-*`` headers, one PubAck for the batch)."""
    nc = await nats.connect(server_url)
    js = nc.jetstream(timeout=10)
    address = JetStreamAddress.parse(
        f"{server_url}/{stream}?subject_prefix={prefix}&partitions={partitions}"
    )
    targets = [
        (part.stream, f"{part.subject_prefix}.bench.track")
        for part in address.partition_addresses()
    ]
    records = [
        (targets[partition_of(record.partition_key + str(n), partitions)], record.data)
        for n in range(50)
        for record in sample_records(batch)
    ]
    acknowledged = 0
    sequence = 0
    run = uuid.uuid4().hex[:8]
    stop_at = time.monotonic() + seconds

    async def publisher(worker: int) -> None:
        nonlocal acknowledged, sequence
        while time.monotonic() < stop_at:
            sequence += 1
            prefix = f"raw-{run}-{worker}-{sequence}"  # unique: no dedupe shortcut
            chosen = records[(sequence % 50) * batch : (sequence % 50 + 1) * batch]
            if atomic:
                (_, subject), _ = chosen[0]
                for i, (_, body) in enumerate(chosen[:-1]):
                    await nc.publish(
                        subject,
                        body,
                        headers={
                            "Nats-Batch-Id": prefix,
                            "Nats-Batch-Sequence": str(i + 1),
                            "Nats-Msg-Id": f"{prefix}-{i}",
                        },
                    )
                ack = await nc.request(
                    subject,
                    chosen[-1][1],
                    timeout=10,
                    headers={
                        "Nats-Batch-Id": prefix,
                        "Nats-Batch-Sequence": str(len(chosen)),
                        "Nats-Batch-Commit": "1",
                        "Nats-Msg-Id": f"{prefix}-{len(chosen) - 1}",
                    },
                )
                if b"error" in ack.data:
                    raise RuntimeError(ack.data.decode())
                acknowledged += len(chosen)
                continue
            acks = [
                await js.publish_async(
                    subject, body, stream=target_stream, headers={"Nats-Msg-Id": f"{prefix}-{i}"}
                )
                for i, ((target_stream, subject), body) in enumerate(chosen)
            ]
            for ack in acks:
                await ack  # raises if the stream refused it
            acknowledged += len(chosen)

    started = time.monotonic()
    await asyncio.gather(*(publisher(w) for w in range(in_flight)))
    elapsed = time.monotonic() - started
    await nc.close()
    return acknowledged / elapsed


def run_wrk(
    url: str, script: Path, batch: int, seconds: float, connections: int, run_id: str
) -> LoadResult:
    env = {
        "BENCH_BATCH": str(batch),
        "BENCH_RUN": run_id,
        "BENCH_AUTH": "Basic " + __import__("base64").b64encode(f"{WRITE_KEY}:".encode()).decode(),
        "PATH": "/usr/bin:/bin",
    }
    command = [
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    run = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"wrk failed: {run.stderr or run.stdout}")
    output = run.stdout
    line = next(x for x in output.splitlines() if x.startswith("BENCH_RESULT "))
    result = json.loads(line.removeprefix("BENCH_RESULT "))
    failed = result["status_errors"] + result["timeouts"]
    ok_requests = result["requests"] - result["status_errors"]
    return LoadResult(
        events_per_second=ok_requests * batch / (result["duration_us"] / 1e6),
        p50_ms=result["p50_us"] / 1000,
        p99_ms=result["p99_us"] / 1000,
        failed_requests=failed,
    )


def start_broker(workdir: Path, sync_always: bool, binary: str) -> ServerProcess:
    server = nats_server(workdir, sync_always=sync_always, binary=binary).start()
    ensure(f"{nats_url(server)}/{STREAM}?subject_prefix=bench&publish_timeout=10")
    return server


def ensure(url: str, **extra: bool) -> None:
    settings = StreamSettings(retention_hours=1, duplicate_window_seconds=60)
    asyncio.run(ensure_stream(url, settings))
    if extra:  # allow_atomic: not part of what ensure-stream provisions

        async def update() -> None:
            nc = await nats.connect(url.partition("/" + STREAM)[0])
            js = nc.jetstream()
            config = (await js.stream_info(STREAM)).config
            await js.update_stream(replace(config, **extra))
            await nc.close()

        asyncio.run(update())


def version_of(binary: str) -> str:
    return subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()


HEADER = (
    f"  {'workers':>7} {'batch':>5} {'events/s':>9} {'req/s':>7} {'p50 ms':>7} "
    f"{'p99 ms':>7} {'failed':>6} {'vs raw':>6}"
)


def row(workers: int, batch: int, result: LoadResult, raw: float) -> str:
    return (
        f"  {workers:>7} {batch:>5} {result.events_per_second:>9.0f} "
        f"{result.events_per_second / batch:>7.0f} {result.p50_ms:>7.1f} "
        f"{result.p99_ms:>7.1f} {result.failed_requests:>6} "
        f"{result.events_per_second / raw:>6.2f}"
    )


def benchmark(args: argparse.Namespace, workdir: Path, sync_always: bool) -> dict[str, float]:
    """Durability mode section; returns the collector's 1-worker batch-10 events/s."""
    label = "sync_interval: always" if sync_always else "default durability (lazy fsync)"
    print(f"\n== {label}")
    server = start_broker(
        workdir / ("sync" if sync_always else "default"), sync_always, args.nats_server
    )
    figures: dict[str, float] = {}
    try:
        print(
            f"  {version_of(args.nats_server)}; {args.duration:g} s per run, "
            f"wrk -t2 -c{args.connections}"
        )
        stream_url = f"{nats_url(server)}/{STREAM}?subject_prefix=bench&publish_timeout=10"
        script = workdir / "wrk.lua"
        script.write_text(WRK_SCRIPT)
        baselines = {
            batch: uvloop.run(
                raw_jetstream_rate(nats_url(server), batch, args.connections, args.duration)
            )
            for batch in (10, 100)
        }
        for batch, rate in baselines.items():
            print(
                f"  raw JetStream publish, one Python process, batch {batch:>3}: {rate:8.0f} ev/s"
            )
        figures["raw"] = baselines[10]
        print(HEADER)
        for workers in args.workers:
            collector = collector_server(
                workdir,
                stream_url,
                json.dumps({"bench": WRITE_KEY}),
                workers=workers,
                extra_env={"LIFTOFF_LOG_LEVEL": "WARNING"},
            )
            with collector:
                url = f"http://127.0.0.1:{collector.port}"
                profiler = None
                for batch in (10, 100):
                    run_wrk(url, script, batch, 1, args.connections, f"warm{workers}{batch}")
                    if args.profile and workers == 1 and batch == 100:
                        profiler = start_profiler(collector, args.profile, args.duration)
                    result = run_wrk(
                        url, script, batch, args.duration, args.connections, f"w{workers}b{batch}"
                    )
                    if profiler is not None:
                        profiler.wait()
                        profiler = None
                    if workers == 1 and batch == 10:
                        figures["collector"] = result.events_per_second
                    print(row(workers, batch, result, baselines[batch]))
    finally:
        server.stop()
    return figures


def partition_curve(args: argparse.Namespace, workdir: Path) -> None:
    """Rounds over the partition counts (raw publisher, then the collector, per count); the
    table shows per-count medians over the rounds, and ratios taken within each round (the
    disk's fsync latency moves with the machine's other load), then their medians."""
    print(
        f"\n== partitions, sync_interval: always, batch 10, collector 1 worker; {args.rounds} "
        f"rounds of {args.duration:g} s per measure, medians (raw = one Python process "
        "publishing the same load over the same streams)"
    )
    server = nats_server(workdir / "curve", sync_always=True, binary=args.nats_server).start()
    script = workdir / "wrk.lua"
    script.write_text(WRK_SCRIPT)
    raw: dict[int, list[float]] = {count: [] for count in args.partitions}
    results: dict[int, list[LoadResult]] = {count: [] for count in args.partitions}
    collectors = {}
    try:
        for count in args.partitions:
            url = (
                f"{nats_url(server)}/P{count}?subject_prefix=p{count}"
                f"&publish_timeout=10&partitions={count}"
            )
            asyncio.run(
                ensure_stream(url, StreamSettings(retention_hours=1, duplicate_window_seconds=60))
            )
            collectors[count] = collector_server(
                workdir,
                url,
                json.dumps({"bench": WRITE_KEY}),
                extra_env={"LIFTOFF_LOG_LEVEL": "WARNING"},
            ).start()
        for round_ in range(args.rounds):
            for count in args.partitions:
                raw[count].append(
                    uvloop.run(
                        raw_jetstream_rate(
                            nats_url(server),
                            10,
                            args.connections,
                            args.duration,
                            count,
                            f"P{count}",
                            f"p{count}",
                        )
                    )
                )
                base = f"http://127.0.0.1:{collectors[count].port}"
                run_wrk(base, script, 10, 1, args.connections, f"pw{count}r{round_}")
                results[count].append(
                    run_wrk(base, script, 10, args.duration, args.connections, f"p{count}r{round_}")
                )
    finally:
        for collector in collectors.values():
            collector.stop()
        server.stop()
    single = args.partitions[0]
    print(
        f"  {'partitions':>10} {'raw ev/s':>9} {'collector ev/s':>14} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'failed':>6} {'vs raw':>6} {f'vs {single} stream(s)':>14}"
    )
    for count in args.partitions:
        ours = results[count]
        rates = [r.events_per_second for r in ours]
        versus_raw = [rate / base for rate, base in zip(rates, raw[count], strict=True)]
        versus_single = [
            rate / first.events_per_second
            for rate, first in zip(rates, results[single], strict=True)
        ]
        print(
            f"  {count:>10} {median(raw[count]):>9.0f} {median(rates):>14.0f} "
            f"{median([r.p50_ms for r in ours]):>7.1f} {median([r.p99_ms for r in ours]):>7.1f} "
            f"{sum(r.failed_requests for r in ours):>6} {median(versus_raw):>6.2f} "
            f"{median(versus_single):>14.2f}"
        )


def batch_modes(args: argparse.Namespace, workdir: Path) -> None:
    print("\n== batch publish modes, sync_interval: always, one stream, batch 10, raw publisher")
    server = nats_server(workdir / "modes", sync_always=True, binary=args.nats_server).start()
    try:
        ensure(f"{nats_url(server)}/{STREAM}?subject_prefix=bench", allow_atomic=True)
        plain = uvloop.run(
            raw_jetstream_rate(nats_url(server), 10, args.connections, args.duration)
        )
        atomic = uvloop.run(
            raw_jetstream_rate(nats_url(server), 10, args.connections, args.duration, atomic=True)
        )
        print(f"  per-message publish_async: {plain:8.0f} ev/s")
        print(f"  atomic batch (allow_atomic): {atomic:8.0f} ev/s ({atomic / plain:.2f}x)")
    finally:
        server.stop()


def start_profiler(
    collector: ServerProcess, directory: str, seconds: float
) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = Path(directory).resolve() / "collector-profile.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"  (py-spy recording the collector to {out})")
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(collector.pid),
            "--duration",
            str(int(seconds)),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measured run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2])
    parser.add_argument(
        "--partitions", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8, 16]
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the partition curve")
    parser.add_argument("--nats-server", default=NATS_SERVER)
    parser.add_argument("--profile", metavar="DIR", help="py-spy the 1-worker, batch-100 run")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    with tempfile.TemporaryDirectory(prefix="liftoff-bench-") as tmp:
        benchmark(args, Path(tmp), sync_always=False)
        benchmark(args, Path(tmp), sync_always=True)
        partition_curve(args, Path(tmp))
        batch_modes(args, Path(tmp))


if __name__ == "__main__":
    main()
