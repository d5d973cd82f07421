"""Catch-up memory: peak RSS of the archiver and the loader draining a backlog, by partitions.

    .venv/bin/python benchmarks/consumer_backlog.py [--events 200000] [--partitions 1,8]
        [--consumers archiver,loader] [--code DIR]

Starts its own nats-server, PostgreSQL and moto (S3) on free loopback ports. For each
partition count, a fresh JetStream stream (``?partitions=N``) is filled with ``--events``
realistic Segment events (an analytics.js-shaped ``track`` with page, user agent, campaign and
library context: about 1.2 KB each, routed by user as the collector routes them, through its
own adapter). Then each consumer runs as the real process (``python -m services archiver`` /
``loader``, the processes the Kubernetes target runs, with the production batch bounds:
archiver 10,000 events / 60 s, loader 5,000 / 5 s) and drains the whole backlog from a new
durable consumer. Figures: the process's peak resident memory (``VmHWM`` in
``/proc/<pid>/status``, read when every partition's durable is drained), against the 512 MiB
limit the Kubernetes target declares for every consumer, and the drain throughput (events/s
from the process's start until 95 % are acknowledged; the time to all is printed too: each
partition's last, partial batch waits out its age, 60 s for the archiver).

``--code DIR`` runs the consumer processes from another checkout (e.g. a ``git worktree`` of
main) with this environment, to measure before and after a change in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import boto3  # noqa: E402
import nats  # noqa: E402

from services.events.model import StreamRecord  # noqa: E402
from services.stream.base import StreamSettings  # noqa: E402
from services.stream.dead_letters import ensure_dead_letter_stream  # noqa: E402
from services.stream.jetstream import JetStreamAddress, JetStreamStream, ensure_stream  # noqa: E402
from tests.servers import (  # noqa: E402
    AWS_TEST_ENV,
    LOOPBACK,
    ServerProcess,
    free_port,
    http_ok,
    moto_endpoint,
    moto_server,
    nats_server,
    nats_url,
    postgres_server,
)

LIMIT_MIB = 512  # components/consumers/kubernetes.py DEFAULT_RESOURCES: every consumer
USER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15"
)


def realistic_event(index: int, run: str) -> dict[str, Any]:
    """A ``track`` event as analytics.js sends it, after the collector (liftoff block)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    user = f"user-{index % 5000}"
    return {
        "type": "track",
        "event": "Product Added",
        "userId": user,
        "anonymousId": f"{uuid.UUID(int=index * 7919):}",
        "messageId": f"{run}-{index}",
        "properties": {
            "product_id": f"sku-{index % 977}",
            "name": "Trail running shoe, waterproof",
            "category": "Footwear",
            "price": 129.95,
            "quantity": 1 + index % 3,
            "currency": "EUR",
            "cart_id": f"cart-{index // 4}",
        },
        "context": {
            "library": {"name": "analytics.js", "version": "next-1.84.3"},
            "page": {
                "path": "/products/trail-runner-wp",
                "referrer": "https://www.google.com/",
                "search": "?utm_source=newsletter&utm_medium=email&utm_campaign=spring",
                "title": "Trail Runner WP | Example Outdoor Store",
                "url": "https://shop.example.com/products/trail-runner-wp?utm_source=newsletter",
            },
            "userAgent": USER_AGENT,
            "locale": "de-DE",
            "timezone": "Europe/Berlin",
            "screen": {"width": 1512, "height": 982, "density": 2},
            "campaign": {"source": "newsletter", "medium": "email", "name": "spring"},
            "ip": "203.0.113.42",
        },
        "receivedAt": now,
        "timestamp": now,
        "sentAt": now,
        "originalTimestamp": now,
        "liftoff": {"source": "web", "schema": 1},
    }


async def fill(url: str, count: int, run: str) -> int:
    """Publish ``count`` events through the collector's adapter; returns the bytes sent."""
    stream = JetStreamStream.from_url(url)
    await stream.start()
    sent = 0
    try:
        for _ in range(100):
            try:
                await stream.check_ready()
                break
            except Exception:
                await asyncio.sleep(0.1)
        for start in range(0, count, 1000):
            records = []
            for index in range(start, min(count, start + 1000)):
                document = realistic_event(index, run)
                data = json.dumps(document).encode()
                sent += len(data)
                records.append(
                    StreamRecord(document["messageId"], "web", "track", document["userId"], data)
                )
            await stream.publish(records)
    finally:
        await stream.close()
    return sent


async def pending(url: str, consumer: str) -> int:
    """Unacknowledged events of ``consumer`` over every partition (-1: not bound yet)."""
    address = JetStreamAddress.parse(url)
    nc = await nats.connect(address.servers)
    try:
        js = nc.jetstream(timeout=5)
        total = 0
        for part in address.partition_addresses():
            try:
                info = await js.consumer_info(part.stream, consumer)
            except Exception:
                return -1
            total += (info.num_pending or 0) + (info.num_ack_pending or 0)
        return total
    finally:
        await nc.close()


def vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def drain(
    code: Path, workdir: Path, command: str, url: str, env: dict[str, str], events: int
) -> tuple[float, float, float]:
    """Run ``command`` until its new durable has nothing pending: (peak RSS MiB, seconds to
    95 % acknowledged, seconds to all: the last partial batches wait out their age)."""
    health = free_port()
    consumer = f"{command}-{uuid.uuid4().hex[:6]}"
    process = ServerProcess(
        name=consumer,
        argv=[sys.executable, "-m", "services", command],
        port=health,
        log_path=workdir / f"{consumer}.log",
        is_ready=lambda: http_ok(f"http://{LOOPBACK}:{health}/readyz"),
        env={
            **os.environ,
            **env,
            "LIFTOFF_STREAM_URL": url,
            "LIFTOFF_CONSUMER_NAME": consumer,
            "LIFTOFF_HEALTH_PORT": str(health),
            "LIFTOFF_HEALTH_HOST": LOOPBACK,
            "LIFTOFF_LOG_LEVEL": "WARNING",
        },
        cwd=code,
    )
    started = time.monotonic()
    most = 0.0
    with process.start(deadline=60):
        while (left := asyncio.run(pending(url, consumer))) != 0:
            if not process.running:
                raise RuntimeError(f"{command} exited:\n{process.log_tail()}")
            if not most and 0 <= left <= events // 20:
                most = time.monotonic() - started
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        assert process.pid is not None
        peak = vm_hwm_mib(process.pid)
    return peak, most or elapsed, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", default="1,8")
    parser.add_argument("--consumers", default="archiver,loader")
    parser.add_argument("--code", type=Path, default=REPO_ROOT)
    args = parser.parse_args()
    counts = [int(p) for p in args.partitions.split(",")]
    consumers = args.consumers.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="liftoff-backlog-"))
    print(f"code: {args.code}; {args.events} events per stream; limit {LIMIT_MIB} MiB")
    with (
        nats_server(workdir / "nats") as nats_proc,
        moto_server(workdir / "moto") as moto,
        postgres_server(workdir / "postgres") as postgres,
    ):
        server = nats_url(nats_proc)
        asyncio.run(ensure_dead_letter_stream(f"{server}/DEADLETTER", retention_hours=1))
        os.environ.update(AWS_TEST_ENV)
        s3 = boto3.client("s3", endpoint_url=moto_endpoint(moto))
        for partitions in counts:
            suffix = uuid.uuid4().hex[:6]
            url = f"{server}/B{suffix}?subject_prefix=b{suffix}&partitions={partitions}"
            asyncio.run(ensure_stream(url, StreamSettings(retention_hours=2)))
            started = time.monotonic()
            sent = asyncio.run(fill(url, args.events, suffix))
            print(
                f"partitions={partitions}: filled {args.events} events "
                f"({sent / args.events:.0f} B each, {sent / 2**20:.0f} MiB) "
                f"in {time.monotonic() - started:.1f}s"
            )
            for command in consumers:
                env = {"LIFTOFF_DEAD_LETTER_URL": f"{server}/DEADLETTER"}
                if command == "archiver":
                    bucket = f"backlog-{uuid.uuid4().hex[:8]}"
                    s3.create_bucket(Bucket=bucket)
                    env |= {
                        "AWS_ENDPOINT_URL": moto_endpoint(moto),
                        "LIFTOFF_ARCHIVE_BUCKET": bucket,
                        "LIFTOFF_ARCHIVE_BATCH_MAX_EVENTS": "10000",
                        "LIFTOFF_ARCHIVE_BATCH_MAX_SECONDS": "60",
                    }
                else:
                    database = postgres.create_database(f"b_{uuid.uuid4().hex[:8]}")
                    env |= {
                        **postgres.env(database),
                        "LIFTOFF_LOADER_BATCH_MAX_EVENTS": "5000",
                        "LIFTOFF_LOADER_BATCH_MAX_SECONDS": "5",
                    }
                peak, most, seconds = drain(args.code, workdir, command, url, env, args.events)
                print(
                    f"  {command:9} partitions={partitions}: peak RSS {peak:6.1f} MiB "
                    f"({peak / LIMIT_MIB:.0%} of {LIMIT_MIB} MiB); 95 % in {most:5.1f}s "
                    f"= {args.events * 0.95 / most:,.0f} events/s; all in {seconds:5.1f}s",
                    flush=True,
                )


if __name__ == "__main__":
    main()
