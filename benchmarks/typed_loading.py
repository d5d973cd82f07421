"""Typed loading: the loader (raw ``events`` + Segment's typed tables) vs a plain COPY of the same
typed rows, and the end-to-end latency from the collector's acknowledgement to the typed row.

    .venv/bin/python benchmarks/typed_loading.py [--events 40000] [--rounds 3]
        [--rate 200] [--duration 10] [--phases load,decompose,e2e] [--before REVISION]

Starts its own nats-server and PostgreSQL (durable: fsync on) on free loopback ports.

1. **load**: ``--events`` track events of 20 event names with 10 properties each (text, bigint,
   double, boolean, timestamp, an array, a nested object), and every 5000 events each name
   gains a new property (schema changes during the run), plus one identify in 50; put on a
   JetStream stream and drained by the loader (the real runner and sink, as a process of its
   own: ``typed_drain.py``; batches of 5000 / 5 s and closing when caught up: the defaults;
   for comparison by age only, and with the typed half switched off: the raw table only;
   with ``--before REVISION`` also the loader of that commit, ``services/`` taken from git)
   into a fresh database each, with the sizes of the batches it was handed; the loaders run
   in alternating order. Baseline in the same round: the typed rows of the same events
   (derived and coerced beforehand, not timed) written by one plain binary ``COPY`` per
   table in one transaction into the same tables (created beforehand, not timed) in another
   fresh database of the same server. Figure: events/s of each and the ratio loader ÷ plain
   COPY per round, and the median ratio.
2. **decompose** (``typed_phases.py``): where the loader's time goes, ``--rounds`` times, as
   medians: the sink's steps timed one by one (the sink called directly, batches of 5000),
   the runner alone (a sink that does nothing), the plain COPY baseline, and the lower bound
   of deriving the typed rows inside PostgreSQL instead (``INSERT … SELECT`` per table from
   the batch's raw rows, with constants, then with the JSON read and cast).
3. **e2e**: the collector and the loader as real processes (``python -m services ...``, the
   loader at its default settings: batch age 5 s, closing when caught up); events offered at
   ``--rate`` events/s (requests of 10) for ``--duration`` s. Latency per event = the first
   time a poller (every 20 ms) sees its row in ``web.tracks`` minus the time the collector
   acknowledged its request. Figures: p50 / p99 / max.

Everything shares the machine's cores (2 on the development machine): the figures are for
comparing changes, not capacity planning.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import httpx  # noqa: E402
import nats  # noqa: E402
import psycopg  # noqa: E402
from pipeline import NoOpSink, percentile  # noqa: E402
from typed_phases import (  # noqa: E402
    BATCH,
    COPY,
    FLOOR_INSERT,
    FLOOR_JSON,
    FLOOR_SELECT,
    RUNNER,
    Timers,
    deliveries,
    in_database_floor,
    print_steps,
)

from benchmarks.drain import drain  # noqa: E402
from services.consumers.loader.schema import migrate  # noqa: E402
from services.consumers.runner.process import tune_gc  # noqa: E402
from services.stream.base import StreamSettings  # noqa: E402
from services.stream.dead_letters import (  # noqa: E402
    ensure_dead_letter_stream,
)
from services.stream.jetstream import ensure_stream  # noqa: E402
from services.warehouse.typed import COPY_TYPES, KEYS, MISFIT, converter, derive  # noqa: E402
from services.warehouse.writer import LOCKED_TABLES, TypedWriter  # noqa: E402
from tests.servers import (  # noqa: E402
    LOOPBACK,
    collector_server,
    consumer_process,
    nats_server,
    nats_url,
    postgres_server,
)

WRITE_KEYS = json.dumps({"web": "web-key-1"})
PHASES = ("load", "decompose", "e2e")
NAMES = [f"Event {n:02d}" for n in range(20)]


def workload_event(index: int, run: str) -> dict[str, Any]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    common = {
        "messageId": f"{run}-{index}",
        "userId": f"user-{index % 1000}",
        "anonymousId": f"anon-{index % 1000}",
        "context": {"library": {"name": "analytics-python", "version": "2.3.4"}, "ip": "10.0.0.1"},
        "receivedAt": now,
        "timestamp": now,
        "sentAt": now,
        "liftoff": {"source": "web", "schema": 1},
    }
    if index % 50 == 0:
        return {**common, "type": "identify", "traits": {"email": f"u{index}@x", "plan": "pro"}}
    generation = index // 5000  # every 5000 events, every name gains a property
    properties: dict[str, Any] = {
        "order_id": f"o-{index}",
        "total": 19.99,
        "quantity": index % 7,
        "paid": index % 2 == 0,
        "placed_at": now,
        "coupon": "SPRING",
        "items": ["a", "b"],
        "shipping": {"country": "DE", "city": "Bonn"},
        "currency": "EUR",
        f"extra_{generation}": index,
    }
    return {**common, "type": "track", "event": NAMES[index % len(NAMES)], "properties": properties}


async def fill_stream(
    server_url: str,
    events: list[dict[str, Any]],
    stream: str = "EVENTS",
    subject: str = "events.web.track",
) -> None:
    nc = await nats.connect(server_url)
    js = nc.jetstream(timeout=30)
    payloads = [json.dumps(event).encode() for event in events]
    for start in range(0, len(payloads), 1000):
        acks = [
            await js.publish_async(subject, payload, stream=stream)
            for payload in payloads[start : start + 1000]
        ]
        await asyncio.gather(*acks)
    await nc.close()


def plain_copy(dsn: str, events: list[dict[str, Any]]) -> float:
    """The typed rows of ``events``, one binary COPY per table, one transaction: events/s
    (deriving, coercing and creating the tables are not timed)."""
    rows = [row for event in events for row in derive(event)]
    with psycopg.connect(dsn, autocommit=True) as connection:
        writer = TypedWriter(connection, "web")
        writer.prepare(rows)
        by_table: dict[str, list[dict[str, Any]]] = {}
        for table, row in rows:
            by_table.setdefault(table, []).append(row)
        for table in LOCKED_TABLES:  # one row per key (the loader upserts them)
            key = KEYS.get(table, "id")
            by_table[table] = list({row[key]: row for row in by_table.get(table, [])}.values())
        prepared = []
        for table, table_rows in by_table.items():
            known = writer._columns[table]
            columns = [c for c in known if c != "uuid_ts" and any(c in r for r in table_rows)]
            convert = [converter(known[c]) for c in columns]
            values = [
                [
                    None if (v := r.get(c)) is None or (f := fn(v)) is MISFIT else f
                    for c, fn in zip(columns, convert, strict=True)
                ]
                for r in table_rows
            ]
            types = [COPY_TYPES[known[c]] for c in columns]
            prepared.append((table, columns, types, values))
        started = time.perf_counter()
        with connection.transaction(), connection.cursor() as cursor:
            for table, columns, types, values in prepared:
                listed = ", ".join(f'"{c}"' for c in columns)
                with cursor.copy(
                    f'COPY web."{table}" ({listed}) FROM STDIN (FORMAT BINARY)'
                ) as copy:
                    copy.set_types(types)
                    for value in values:
                        copy.write_row(value)
        return len(events) / (time.perf_counter() - started)


def batches(sizes: list[int]) -> str:
    return ", ".join(f"{sizes.count(size)} x {size}" for size in sorted(set(sizes), reverse=True))


def drained(
    tree: Path, urls: tuple[str, str], consumer: str, events: int, dsn: str, *options: str
) -> tuple[float, list[int]]:
    """The loader of ``tree`` draining the stream as a process of its own (typed_drain.py)."""
    found = subprocess.run(
        [sys.executable, str(tree / "benchmarks" / "typed_drain.py"), *urls, consumer,
         str(events), dsn, *options],
        check=True, capture_output=True, text=True, cwd=tree,
    ).stdout  # fmt: skip
    result = json.loads(found.strip().splitlines()[-1])
    return result["rate"], result["sizes"]


def earlier_tree(revision: str, workdir: Path) -> Path:
    """``services/`` as it was at ``revision`` (git archive), with today's drain and steps
    scripts."""
    tree = workdir / "before"
    (tree / "benchmarks").mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", revision, "services"], check=True, capture_output=True, cwd=REPO_ROOT
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    for script in ("drain.py", "typed_drain.py", "typed_phases.py"):
        shutil.copy(REPO_ROOT / "benchmarks" / script, tree / "benchmarks")
    return tree


def load_rounds(
    postgres: Any,
    urls: tuple[str, str],
    events: list[dict[str, Any]],
    rounds: int,
    before: tuple[str, Path] | None,
) -> None:
    ratios: dict[str, list[float]] = {"now": [], "before": []}
    for round_ in range(1, rounds + 1):
        runs = [("now", REPO_ROOT, ())]
        if before:
            runs.append(("before", before[1], ()))
        runs.append(("age", REPO_ROOT, ("--by-age",)))
        rates: dict[str, tuple[float, list[int]]] = {}
        for name, tree, options in runs if round_ % 2 else runs[::-1]:  # order alternates
            dsn = postgres.dsn(postgres.create_database(f"typed_{name}_{round_}"))
            rates[name] = drained(tree, urls, f"{name}-{round_}", len(events), dsn, *options)
        raw, _ = drained(REPO_ROOT, urls, f"raw-{round_}", len(events), postgres.dsn(
            postgres.create_database(f"typed_raw_{round_}")), "--raw-only")  # fmt: skip
        with psycopg.connect(postgres.dsn(f"typed_now_{round_}")) as check:
            tables, typed = check.execute(
                "SELECT count(*), sum((xpath('/row/c/text()', query_to_xml("
                "format('SELECT count(*) AS c FROM web.%I', table_name), false, true, '')))[1]"
                "::text::bigint) FROM information_schema.tables WHERE table_schema = 'web'"
            ).fetchone()
        copied = plain_copy(postgres.dsn(postgres.create_database(f"typed_copy_{round_}")), events)
        (loaded, sizes), (aged, aged_sizes) = rates["now"], rates["age"]
        ratios["now"].append(loaded / copied)
        earlier = ""
        if before:
            ratios["before"].append(rates["before"][0] / copied)
            earlier = (f"; the loader at {before[0]}: {rates['before'][0]:,.0f} events/s, ratio "
                       f"{rates['before'][0] / copied:.2f}")  # fmt: skip
        print(
            f"round {round_}: loader (raw + typed, {tables} tables, {typed} typed rows) "
            f"{loaded:,.0f} events/s in batches of {batches(sizes)} (batches by age "
            f"only: {aged:,.0f} events/s, {batches(aged_sizes)}; raw table only: "
            f"{raw:,.0f}, ratio {raw / copied:.2f}); plain COPY of the same typed rows "
            f"{copied:,.0f} events/s; ratio {loaded / copied:.2f}{earlier}"
        )
    median = statistics.median(ratios["now"])
    print(f"typed loading: median ratio to plain COPY {median:.2f} ({rounds} rounds)")
    if before:
        print(f"the loader at {before[0]}: median ratio {statistics.median(ratios['before']):.2f}")


def decompose(
    postgres: Any,
    urls: tuple[str, str],
    count: int,
    rounds: int,
    workdir: Path,
    before: tuple[str, Path] | None,
) -> None:
    """Where the loader's time goes (benchmarks/typed_phases.py), on a stream of its own."""
    nats_base, dead_letter = urls
    run = uuid.uuid4().hex[:6]
    stream_url = f"{nats_base}/STEPS?subject_prefix=steps"
    asyncio.run(ensure_stream(stream_url, StreamSettings(retention_hours=1)))
    events = [workload_event(i, run) for i in range(count)]
    asyncio.run(fill_stream(nats_base, events, "STEPS", "steps.web.track"))
    (workdir / "steps.json").write_text(json.dumps(events))
    decoded = deliveries(events)
    batches = [decoded[start : start + BATCH] for start in range(0, len(decoded), BATCH)]
    measured: list[Timers] = []
    earlier: list[Timers] = []
    for round_ in range(1, rounds + 1):
        trees = [(measured, REPO_ROOT)] + ([(earlier, before[1])] if before else [])
        for found, tree in trees if round_ % 2 else trees[::-1]:  # order alternates
            dsn = postgres.dsn(
                postgres.create_database(f"steps_{len(found)}_{uuid.uuid4().hex[:6]}")
            )
            steps = subprocess.run(
                [sys.executable, str(tree / "benchmarks" / "typed_phases.py"), dsn,
                 str(workdir / "steps.json")],
                check=True, capture_output=True, text=True, cwd=tree,
            ).stdout  # fmt: skip
            found.append(Timers(json.loads(steps.strip().splitlines()[-1])))
        timers = measured[-1]
        runner = asyncio.run(drain(stream_url, dead_letter, NoOpSink(), f"noop-{round_}", count,
                                   BATCH, 5.0, stream="STEPS"))  # fmt: skip
        timers[RUNNER] = count / runner
        copied = plain_copy(postgres.dsn(postgres.create_database(f"steps_copy_{round_}")), events)
        timers[COPY] = count / copied
        floor = postgres.dsn(postgres.create_database(f"steps_floor_{round_}"))
        timers[FLOOR_SELECT], timers[FLOOR_INSERT] = in_database_floor(floor, batches)
        floor = postgres.dsn(postgres.create_database(f"steps_json_{round_}"))
        _, timers[FLOOR_JSON] = in_database_floor(floor, batches, read_json=True)
    print_steps(measured, count, (before[0], earlier) if before else None)


def end_to_end(
    workdir: Path, nats_base: str, postgres: Any, rate: int, duration: float
) -> tuple[list[float], int]:
    run = uuid.uuid4().hex[:6]
    url = f"{nats_base}/E2E{run}?subject_prefix=e2e{run}"
    asyncio.run(ensure_stream(url, StreamSettings(retention_hours=1)))
    database = postgres.create_database(f"e2e_{run}")
    with psycopg.connect(postgres.dsn(database)) as connection:
        migrate(connection)
    env = {
        **postgres.env(database),
        "LIFTOFF_STREAM_URL": url,
        "LIFTOFF_DEAD_LETTER_URL": f"{nats_base}/DEADLETTER",
        "LIFTOFF_LOG_LEVEL": "WARNING",
    }
    loader = consumer_process(workdir, "loader", env, name=f"loader-{run}")
    collector = collector_server(workdir, url, WRITE_KEYS)
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def poll() -> None:
        with psycopg.connect(postgres.dsn(database), autocommit=True) as connection:
            last = 0
            while not done.is_set() or len(seen) < len(acked):
                try:
                    rows = connection.execute(
                        "SELECT e.message_id, e.stream_sequence FROM events e"
                        " JOIN web.tracks t ON t.id = e.message_id WHERE e.stream_sequence > %s",
                        (last,),
                    ).fetchall()
                except psycopg.errors.UndefinedTable:  # before the first typed row
                    rows = []
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
        per_request = 10
        with httpx.Client(
            base_url=f"http://{LOOPBACK}:{collector.port}", auth=("web-key-1", "")
        ) as client:
            start = time.perf_counter()
            sent = 0
            while time.perf_counter() - start < duration:
                events = [workload_event(sent + i, run) for i in range(per_request)]
                for event in events:
                    event.pop("receivedAt"), event.pop("liftoff")
                    event["type"] = "track" if event["type"] == "identify" else event["type"]
                    event.setdefault("event", NAMES[0])
                response = client.post("/v1/batch", json={"batch": events})
                answered = time.time()
                if response.status_code == 200:
                    for event in events:
                        acked[event["messageId"]] = answered
                sent += per_request
                pause = start + sent / rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
        done.set()
        poller.join(timeout=40)
    latencies = [seen[m] - acked[m] for m in acked if m in seen]
    return latencies, len(acked) - len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=40000)
    parser.add_argument("--rounds", type=int, default=3, help="loader vs plain COPY rounds")
    parser.add_argument("--rate", type=int, default=200, help="offered events/s for e2e")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of e2e load")
    parser.add_argument(
        "--before", help="a git revision whose loader also runs in each load round (same run)"
    )
    parser.add_argument("--phases", default=",".join(PHASES), help="load,e2e (default: both)")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if not phases <= set(PHASES):
        parser.error(f"--phases {args.phases!r}: allowed are {', '.join(PHASES)}")
    with tempfile.TemporaryDirectory(prefix="liftoff-bench-") as tmp:
        workdir = Path(tmp)
        with (
            nats_server(workdir / "nats") as nats_proc,
            postgres_server(workdir / "pg", durable=True) as postgres,
        ):
            base = nats_url(nats_proc)
            dead_letter = f"{base}/DEADLETTER"
            asyncio.run(ensure_dead_letter_stream(dead_letter, retention_hours=1))
            tune_gc()  # as the loader process does
            before = None
            if args.before:
                before = (args.before, earlier_tree(args.before, workdir))
            if "load" in phases:
                stream_url = f"{base}/EVENTS?subject_prefix=events"
                asyncio.run(ensure_stream(stream_url, StreamSettings(retention_hours=1)))
                run = uuid.uuid4().hex[:6]
                events = [workload_event(i, run) for i in range(args.events)]
                asyncio.run(fill_stream(base, events))
                print(f"{args.events} events on the stream (20 names x 10 properties + growth)")
                load_rounds(postgres, (stream_url, dead_letter), events, args.rounds, before)
            if "decompose" in phases:
                decompose(postgres, (base, dead_letter), args.events, args.rounds, workdir, before)
            if "e2e" in phases:
                latencies, missing = end_to_end(workdir, base, postgres, args.rate, args.duration)
                print(
                    f"e2e at {args.rate} events/s (loader defaults): ack -> typed row visible "
                    f"p50 {percentile(latencies, 50) * 1000:.0f} ms, "
                    f"p99 {percentile(latencies, 99) * 1000:.0f} ms, "
                    f"max {max(latencies) * 1000:.0f} ms over {len(latencies)} events "
                    f"({missing} not seen)"
                )


if __name__ == "__main__":
    main()
