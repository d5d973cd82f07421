"""Deleting one user from the archive: time and bytes rewritten.

    .venv/bin/python benchmarks/user_deletion.py [--gigabytes 1.0] [--object-mb 8]
        [--holding 3]

Starts its own moto server (S3) on a free loopback port and fills a bucket with about
``--gigabytes`` of gzip NDJSON objects as the archiver writes them (compact JSON lines of
analytics.js-shaped ``track`` events, ~1 KB each, gzip level 6 with a zero mtime), each about
``--object-mb`` compressed. One user's events are in ``--holding`` of the objects; the others
never mention them. Then the archive target of ``python -m services regulation delete`` runs
(:func:`services.regulations.deletion.delete_from_archive`, the same code) and the script prints:
objects and compressed bytes read, objects and bytes rewritten, lines removed, wall time, the
read rate (compressed MB/s), and a check that every object not holding the user is
byte-identical afterwards.

To keep the set-up short, objects without the user share a handful of distinct bodies (each
object is still listed, fetched and scanned on its own, as in a real archive).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import boto3  # noqa: E402

from services.consumers.archiver.sink import encode_object  # noqa: E402
from services.regulations.deletion import delete_from_archive  # noqa: E402
from tests.servers import AWS_TEST_ENV, moto_endpoint, moto_server  # noqa: E402

USER = "user-to-delete-7f3a"
DISTINCT_BODIES = 4


def event_line(user: str, n: int) -> bytes:
    event = {
        "type": "track",
        "event": "Product Viewed",
        "messageId": f"{user}-{n:09d}",
        "userId": user,
        "anonymousId": f"anon-{user}",
        "timestamp": "2026-12-01T10:00:00.000Z",
        "receivedAt": "2026-12-01T10:00:00.120Z",
        "properties": {"product_id": f"p{n % 977}", "price": n % 200 + 0.99, "currency": "EUR"},
        "context": {
            "page": {"path": "/products/p", "url": "https://shop.example.com/products/p"},
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0",
            "library": {"name": "analytics.js", "version": "next-1.70.0"},
            "ip": f"203.0.113.{n % 250}",
            "campaign": {"source": "newsletter", "medium": "email", "name": "winter"},
        },
        # Per-event unique values, as real traffic has: the gzip ratio stays realistic (~4-6x).
        "sessionId": hashlib.sha1(str(n).encode()).hexdigest(),
        "traits": {"token": hashlib.md5(str(n).encode()).hexdigest()},
        "liftoff": {"source": "web", "schema": 1,
                    "position": {"partition": "EVENTS", "sequence": str(n)}},
    }  # fmt: skip
    return json.dumps(event, separators=(",", ":")).encode()


def object_body(seed: int, target_bytes: int, with_user: bool) -> bytes:
    """Lines of many users (and, if asked, some of USER) until the gzip is about target_bytes."""
    lines: list[bytes] = []
    n = seed * 10_000_000
    sample = len(encode_object([event_line(f"u{i}", n + i) for i in range(2000)])) / 2000
    for i in range(int(target_bytes / sample)):
        user = USER if with_user and i % 500 == 0 else f"u{(n + i) % 100_003}"
        lines.append(event_line(user, n + i))
    return encode_object(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--object-mb", type=float, default=8.0)
    parser.add_argument("--holding", type=int, default=3)
    arguments = parser.parse_args()
    os.environ.update(AWS_TEST_ENV)
    with tempfile.TemporaryDirectory() as work, moto_server(Path(work)) as moto:
        s3 = boto3.client("s3", endpoint_url=moto_endpoint(moto))
        s3.create_bucket(Bucket="archive")
        target = int(arguments.object_mb * 1024 * 1024)
        count = max(arguments.holding + 1, int(arguments.gigabytes * 1024**3 / target))
        print(f"generating {count} objects of ~{arguments.object_mb} MB …", flush=True)
        others = [object_body(i, target, False) for i in range(DISTINCT_BODIES)]
        holding = {i * count // arguments.holding for i in range(arguments.holding)}
        digests = {}
        total = 0
        for index in range(count):
            body = (
                object_body(1000 + index, target, True)
                if index in holding
                else others[index % DISTINCT_BODIES]
            )
            hour = f"year=2026/month=12/day=01/hour={index % 24:02d}"
            key = f"source=web/{hour}/EVENTS-{index:020d}.json.gz"
            s3.put_object(Bucket="archive", Key=key, Body=body)
            digests[key] = (index in holding, hashlib.sha256(body).hexdigest())
            total += len(body)
        print(
            f"archive: {count} objects, {total / 1024**2:.0f} MB gzip; user in {len(holding)}",
            flush=True,
        )

        started = time.perf_counter()
        result = delete_from_archive(s3, "archive", "", [USER], [])
        elapsed = time.perf_counter() - started

        untouched = changed = 0
        for key, (held, digest) in digests.items():
            now = s3.get_object(Bucket="archive", Key=key)["Body"].read()
            same = hashlib.sha256(now).hexdigest() == digest
            if held:
                changed += not same and USER.encode() not in gzip.decompress(now)
            else:
                untouched += same
    print(f"objects read        {result.objects_read}")
    print(f"objects rewritten   {result.objects_rewritten} (holding the user: {len(holding)})")
    print(
        f"bytes rewritten     {result.bytes_rewritten / 1024**2:.1f} MB of {total / 1024**2:.0f} MB"
    )
    print(f"lines removed       {result.lines_removed}")
    print(f"time                {elapsed:.1f} s ({total / 1024**2 / elapsed:.0f} MB/s gzip read)")
    print(f"others identical    {untouched}/{count - len(holding)}")
    print(f"holders cleaned     {changed}/{len(holding)}")
    return 0 if untouched == count - len(holding) and changed == len(holding) else 1


if __name__ == "__main__":
    sys.exit(main())
