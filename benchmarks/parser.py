"""Parser cost of hostile bodies next to an ordinary one: no input may cost far more CPU than a
valid request of the same size.

    .venv/bin/python benchmarks/parser.py [--rounds 15]

The parser is what the collector runs on every body before publishing: gzip decoding, the
envelope, and each event's validation and enrichment (``decode_content`` → ``parse_body`` →
``validate_events``); no HTTP, no stream. Each body is parsed ``--rounds`` times, interleaved
with the others (the machine is shared and noisy); the median is printed in milliseconds per
request and as a ratio to the ordinary 500 KB batch measured in the same run. Seconds to run.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.collector.ingest import MAX_GZIP_MEMBERS, decode_content
from services.events.limits import MAX_BATCH_EVENTS, MAX_JSON_DEPTH, MAX_REQUEST_BYTES, InvalidInput
from services.events.records import validate_events
from services.events.segment import parse_body

NOW = datetime.now(UTC)


def ordinary_event(i: int) -> dict[str, object]:
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user-{i}",
        "messageId": f"ajs-next-{i:032x}",
        "timestamp": "2026-11-30T10:00:00.123Z",
        "properties": {"total": 12.5, "items": [{"sku": "a", "qty": 1}], "currency": "EUR"},
        "context": {"library": {"name": "analytics.js"}, "page": {"url": "https://x.example/"}},
    }


def fill(make: Callable[[int], bytes]) -> bytes:
    """A batch of events from `make`, as many as fit in the request limit (at most 2500)."""
    events: list[bytes] = []
    size = len(b'{"batch":[]}')
    while len(events) < MAX_BATCH_EVENTS:
        event = make(len(events))
        if size + len(event) + 1 > MAX_REQUEST_BYTES:
            break
        events.append(event)
        size += len(event) + 1
    return b'{"batch":[' + b",".join(events) + b"]}"


def bodies() -> dict[str, tuple[bytes, str]]:
    deep = b'{"type":"track","event":"e","userId":"u","p":%s}' % (
        b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    )
    too_deep = b'{"type":"track","event":"e","userId":"u","p":%s}' % (
        b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    )
    wide = b'{"type":"track","event":"e","userId":"u","p":[%s]}' % b",".join([b"[]"] * 10_000)
    text = b'{"batch":[]}' + b" " * (MAX_GZIP_MEMBERS - 12)
    return {
        "ordinary 500 KB batch": (fill(lambda i: json.dumps(ordinary_event(i)).encode()), ""),
        "2500 invalid events (quarantined)": (
            fill(lambda i: b'{"type":"track","userId":"u","writeKey":"k","messageId":"m%d"}' % i),
            "",
        ),
        "events nested 64 levels (the limit)": (fill(lambda i: deep), ""),
        "events nested 65 levels (quarantined)": (fill(lambda i: too_deep), ""),
        "events of 10k empty arrays": (fill(lambda i: wide), ""),
        "nesting past the decoder (400)": (
            b'{"batch":[{"p":' + b"[" * 200_000 + b"]" * 200_000 + b"}]}",
            "",
        ),
        f"{MAX_GZIP_MEMBERS} one-byte gzip members": (
            b"".join(gzip.compress(text[i : i + 1], mtime=0) for i in range(len(text))),
            "gzip",
        ),
        "gzip bomb (413)": (gzip.compress(b" " * 50_000_000, mtime=0), "gzip"),
    }


def parse(body: bytes, encoding: str) -> str:
    try:
        parsed = parse_body(decode_content(body, encoding), None)
        result = validate_events(parsed, None, "web", NOW, client_ip="192.0.2.1")
    except InvalidInput as error:
        return str(error.status)
    return f"200, {len(result.records)} accepted, {len(result.rejected)} quarantined"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    cases = bodies()
    timings: dict[str, list[float]] = {name: [] for name in cases}
    outcomes = {name: parse(body, encoding) for name, (body, encoding) in cases.items()}
    for _ in range(args.rounds):
        for name, (body, encoding) in cases.items():
            start = time.perf_counter()
            parse(body, encoding)
            timings[name].append(time.perf_counter() - start)
    baseline = statistics.median(timings["ordinary 500 KB batch"])
    print(f"{'body':40} {'bytes':>9} {'ms':>8} {'ratio':>6}  outcome")
    for name, (body, _) in cases.items():
        median = statistics.median(timings[name])
        print(
            f"{name:40} {len(body):>9} {median * 1000:>8.2f} {median / baseline:>6.2f}  "
            f"{outcomes[name]}"
        )


if __name__ == "__main__":
    main()
