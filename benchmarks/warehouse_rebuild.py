"""Rebuild of a source's typed tables from the raw table: time and peak memory.

    .venv/bin/python benchmarks/warehouse_rebuild.py [--events 1000000] [--names 20]
        [--properties 10]

Starts its own PostgreSQL (durable: fsync on) on a free loopback port, fills the raw
``events`` table with ``--events`` events of one source through COPY (tracks of ``--names``
event names with ``--properties`` properties each, numbers, text, booleans and timestamps,
plus an identify and a page every 20 events, analytics.js-shaped context), then runs the real
process, ``python -m services warehouse-rebuild --source bench`` (with a declared type, so the
rebuild is the one that repairs a column), and prints its wall time, events/s and peak
resident memory (``ru_maxrss`` of the process, from ``wait4``), and the rows it wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import msgspec  # noqa: E402
import psycopg  # noqa: E402

from services.consumers.loader.schema import migrate  # noqa: E402
from tests.servers import postgres_server  # noqa: E402

SOURCE = "bench"
AT = "2026-11-27T20:19:03.512Z"
CONTEXT = {
    "library": {"name": "analytics.js", "version": "5.2.0"},
    "page": {"path": "/pricing", "url": "https://example.com/pricing", "title": "Pricing"},
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
    "campaign": {"source": "newsletter", "medium": "email", "name": "winter"},
    "ip": "203.0.113.7",
}
_encoder = msgspec.json.Encoder()


def event(number: int, names: int, properties: int) -> dict[str, Any]:
    common = {
        "messageId": f"m-{number:09d}",
        "anonymousId": f"a-{number % 50_000}",
        "userId": f"u-{number % 20_000}",
        "timestamp": AT,
        "receivedAt": AT,
        "sentAt": AT,
        "context": CONTEXT,
        "liftoff": {"source": SOURCE},
    }
    if number % 20 == 0:
        return {**common, "type": "identify", "traits": {"plan": "pro", "seats": number % 9}}
    if number % 20 == 1:
        return {**common, "type": "page", "name": "Pricing", "properties": {"path": "/pricing"}}
    name = number % names
    values: dict[str, Any] = {}
    for index in range(properties):
        kind = index % 4
        values[f"prop_{index}"] = (
            number * index if kind == 0
            else f"value {number % 97}" if kind == 1
            else number % 2 == 0 if kind == 2
            else AT
        )  # fmt: skip
    return {**common, "type": "track", "event": f"Event Number {name}", "properties": values}


def fill(connection: psycopg.Connection, count: int, names: int, properties: int) -> float:
    started = time.monotonic()
    with (
        connection.cursor() as cursor,
        cursor.copy(
            "COPY events (message_id, type, source, event, timestamp, received_at, raw,"
            " stream_partition, stream_sequence) FROM STDIN"
        ) as copy,
    ):
        for number in range(count):
            item = event(number, names, properties)
            copy.write_row(
                (
                    item["messageId"], item["type"], SOURCE, item.get("event"), AT, AT,
                    _encoder.encode(item).decode(), "p", number,
                )
            )  # fmt: skip
    connection.execute("ANALYZE events")
    return time.monotonic() - started


def run_rebuild(env: dict[str, str], columns: dict[str, Any]) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB, the summary line) of the real process."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "services", "warehouse-rebuild", "--source", SOURCE],
        cwd=REPO_ROOT,
        env={**os.environ, **env, "LIFTOFF_WAREHOUSE_COLUMNS": json.dumps(columns)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.monotonic() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"warehouse-rebuild failed (exit {process.returncode})")
    return seconds, usage.ru_maxrss, output.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--names", type=int, default=20)
    parser.add_argument("--properties", type=int, default=10)
    options = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="liftoff-rebuild-bench-") as workdir,
        postgres_server(Path(workdir) / "pg", durable=True) as postgres,
    ):
        env = postgres.env(postgres.create_database("warehouse"))
        params = {"host": env["PGHOST"], "port": env["PGPORT"], "user": env["PGUSER"]}
        with psycopg.connect(**params, dbname=env["PGDATABASE"], autocommit=True) as db:
            migrate(db)
            filled = fill(db, options.events, options.names, options.properties)
        print(f"raw table: {options.events:,} events written in {filled:.1f} s")
        columns = {SOURCE: {"event_number_0": {"prop_0": "double precision"}}}
        seconds, peak_kib, line = run_rebuild(env, columns)
        summary = json.loads(line)
    print(
        f"rebuild: {summary['events']:,} events in {seconds:.1f} s "
        f"({summary['events'] / seconds:,.0f} events/s), peak RSS {peak_kib / 1024:.0f} MiB"
    )
    rows = summary["rows"]
    print(f"rows: {sum(rows.values()):,} in {len(rows)} tables; discards {summary['discards']}")


if __name__ == "__main__":
    main()
