"""What the debugger page costs, and how soon it shows an event, with 100,000 events.

    .venv/bin/python benchmarks/debugger.py [--events 100000] [--probes 20] [--base-port N]
        [--no-page]

Starts ``python -m liftoff_local`` (dev stack, a fresh data directory) and the debugger page
in Debian's Chromium (tests/browser/session.mjs), then:

1. **quiet**: ``--probes`` single events sent with analytics-python (sync), one every 0.2 s:
   time from before the call to the page rendering that event's row (the page's own clock
   and ours are the machine's); median, p90, max;
2. **flood**: ``--events`` events of about 1 KB (analytics.js-like: context, properties) in
   batches of 250 from two threads while the page is open, with a probe event every 0.25 s
   (the same figure, under load);
3. with all of them in the stream (and the tracking views full): the page's JS heap after a
   garbage collection (CDP ``HeapProfiler.collectGarbage`` + ``Performance.getMetrics``) and
   its DOM nodes, the rows it keeps and what it let go; then the same for a page opened now
   (the backlog) and how long its first 5,000 rows took; the supervisor's RSS (the tracking
   API and its views live in that process) before the events and after.

``--no-page``: the same flood with no page open, for the supervisor's RSS without the debugger.

Figures only (DESIGN.md §4.5): nothing here passes or fails. The machine is shared.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from segment.analytics import Client as SegmentClient

from tests.liftoff_local.browser_session import Browser, missing
from tests.liftoff_local.conftest import free_base_port, start_local

BATCH = 250


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def event(index: int, run: str) -> dict:
    return {
        "type": "track",
        "event": ["Product Viewed", "Product Added", "Checkout Started", "Order Completed"][
            index % 4
        ],
        "userId": f"user-{index % 5000}",
        "anonymousId": str(uuid.UUID(int=index)),
        "messageId": f"{run}-{index}",
        "properties": {
            "product_id": f"sku-{index % 977}",
            "price": round(9.99 + index % 50, 2),
            "currency": "EUR",
            "quantity": 1 + index % 3,
            "category": "Games",
        },
        "context": {
            "library": {"name": "analytics.js", "version": "next-1.84.3"},
            "page": {
                "path": "/products/game",
                "url": "https://shop.example.com/products/game?utm_source=news",
                "title": "A game — Shop",
                "referrer": "https://news.example.com/",
            },
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "
            "Gecko) Chrome/156.0.0.0 Safari/537.36",
            "locale": "en-GB",
            "campaign": {"source": "news", "medium": "email", "name": "spring"},
        },
    }


def post_batch(collector: str, key: str, batch: list[dict]) -> None:
    request = urllib.request.Request(
        f"{collector}/v1/batch",
        data=json.dumps({"batch": batch}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
        },
    )
    for attempt in range(5):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
                return
        except OSError:
            if attempt == 4:
                raise
            time.sleep(0.5)


def shown_at(
    browser: Browser, message_id: str, deadline: float = 10.0, what: str = "shownAt"
) -> float | None:
    """When the page rendered the event's row (`shownAt`) or put it in its list (`listedAt`)."""
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        at = browser.eval(f"window.liftoffDebugger.{what}({json.dumps(message_id)})")
        if at is not None:
            return at / 1000
        time.sleep(0.02)
    return None


def figures(name: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    if not ms:
        return f"{name}: no probe shown"
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return (
        f"{name}: median {statistics.median(ms):.0f} ms, p90 {p90:.0f} ms, max {ms[-1]:.0f} ms "
        f"({len(ms)} events)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--base-port", type=int, default=0)
    parser.add_argument("--verbose", action="store_true", help="each probe during the flood")
    parser.add_argument("--no-page", action="store_true", help="the flood alone: RSS baseline")
    options = parser.parse_args()
    if missing():
        raise SystemExit(f"{missing()} is missing (bash .ci/run installs it)")

    root = Path(tempfile.mkdtemp(prefix="liftoff-debugger-bench-"))
    root.chmod(0o755)
    base = options.base_port or free_base_port()
    run = start_local(["--base-port", str(base)], root / "run.log", root / "data")
    browser = None
    try:
        run.wait_ready()
        info = run.info
        key, collector = info["writeKeys"]["web"], info["collectorUrl"]
        client = SegmentClient(key, host=collector, sync_mode=True)
        supervisor_rss_before = rss_mib(run.process.pid)
        if options.no_page:
            began = time.monotonic()
            for start in range(0, options.events, BATCH):
                count = min(BATCH, options.events - start)
                post_batch(collector, key, [event(i, "np") for i in range(start, start + count)])
            seconds = time.monotonic() - began
            time.sleep(3)
            urllib.request.urlopen(info["trackingUrl"] + "/", timeout=30).read()  # caught up
            print(
                f"no page: {options.events} events in {seconds:.1f} s; supervisor RSS "
                f"{supervisor_rss_before:.0f} MiB before, {rss_mib(run.process.pid):.0f} MiB after",
                flush=True,
            )
            return
        browser = Browser(timeout=120)
        browser.call("goto", url=info["debuggerUrl"])
        browser.wait_for('#connection[data-state="live"]')
        tag = uuid.uuid4().hex[:6]

        quiet = []
        for index in range(options.probes):
            message_id = f"quiet-{tag}-{index}"
            sent = time.time()
            client.track("probe", "Probe", {"i": index}, message_id=message_id)
            at = shown_at(browser, message_id)
            if at is not None:
                quiet.append(at - sent)
            time.sleep(0.2)
        print(figures("event -> row shown, quiet", quiet), flush=True)

        batches = [
            [event(i, tag) for i in range(start, min(start + BATCH, options.events))]
            for start in range(0, options.events, BATCH)
        ]
        queue = list(reversed(batches))
        lock = threading.Lock()

        def sender() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    batch = queue.pop()
                post_batch(collector, key, batch)

        finished: list[float] = []

        def sender_timed() -> None:
            sender()
            finished.append(time.monotonic())

        began = time.monotonic()
        threads = [threading.Thread(target=sender_timed) for _ in range(2)]
        for thread in threads:
            thread.start()
        loaded = []
        index = 0
        while any(thread.is_alive() for thread in threads):
            message_id = f"flood-{tag}-{index}"
            sent = time.time()
            client.track("probe", "Probe", {"i": index}, message_id=message_id)
            accepted = time.time() - sent
            # Rows fly past faster than frames: "in the page's list" is the figure here.
            at = shown_at(browser, message_id, what="listedAt")
            if at is not None:
                loaded.append(at - sent)
            if options.verbose:
                shown = f"{(at - sent) * 1000:.0f} ms" if at else "never"
                print(f"  probe {index}: 200 after {accepted * 1000:.0f} ms, shown {shown}")
            index += 1
            time.sleep(0.25)
        for thread in threads:
            thread.join()
        seconds = max(finished) - began
        print(
            f"flood: {options.events} events in {seconds:.1f} s "
            f"({options.events / seconds:.0f} events/s through the collector)",
            flush=True,
        )
        print(figures("event -> in the page's list, during the flood", loaded), flush=True)

        time.sleep(3)  # the page renders what is still on its way
        heap = browser.call("heap")
        kept = browser.eval("window.liftoffDebugger.rows()")
        let_go = browser.eval("window.liftoffDebugger.letGo()")
        print(
            f"page open through the flood: JS heap {heap['jsHeapUsed'] / 2**20:.1f} MiB used "
            f"({heap['jsHeapTotal'] / 2**20:.1f} MiB total), {heap['nodes']:.0f} DOM nodes, "
            f"{kept} rows kept, {let_go} let go",
            flush=True,
        )
        opened = time.monotonic()
        browser.call("reload")
        browser.wait_for('#connection[data-state="live"]')
        while browser.eval("window.liftoffDebugger.rows()") < min(5000, options.events):
            time.sleep(0.05)
        backlog_seconds = time.monotonic() - opened
        heap = browser.call("heap")
        print(
            f"page opened with {options.events} events in the stream: its 5,000 rows in "
            f"{backlog_seconds:.2f} s; JS heap {heap['jsHeapUsed'] / 2**20:.1f} MiB used, "
            f"{heap['nodes']:.0f} DOM nodes",
            flush=True,
        )
        summary = json.loads(urllib.request.urlopen(info["trackingUrl"] + "/", timeout=30).read())
        views = summary["views"]["events"]
        print(
            f"supervisor (tracking API + views) RSS: {supervisor_rss_before:.0f} MiB before, "
            f"{rss_mib(run.process.pid):.0f} MiB with {options.events} events in the stream "
            f"(events view: {views['held']} held, {views['bytes'] / 2**20:.1f} MiB counted, "
            f"{views['dropped']} let go)",
            flush=True,
        )
    finally:
        if browser is not None:
            browser.close()
        run.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
