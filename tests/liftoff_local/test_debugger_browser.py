"""The debugger page in Debian's Chromium (playwright-core, tests/browser/session.mjs) against
`python -m liftoff_local` started here: it loads with no console error and no request
leaving loopback, shows an analytics-python event within a second without a reload, shows a
quarantined event with its reason and field, shows hostile event JSON as text, works from
the keyboard, filters through its URL, pauses, resets, and follows local mode through a
restart without losing its place.

Screenshots (1280x800 and 375x812) are saved in .liftoff-test-artifacts/debugger/ (printed).
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from segment.analytics import Client as SegmentClient

from tests.liftoff_local import browser_session
from tests.liftoff_local.browser_session import Browser
from tests.liftoff_local.conftest import LocalRun, free_base_port, start_local
from tests.liftoff_local.test_local import get_json
from tests.servers import REPO_ROOT

pytestmark = pytest.mark.servers

ARTIFACTS = REPO_ROOT / ".liftoff-test-artifacts" / "debugger"
ROWS = "#rows .row:not(.probe)"


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the debugger: {ARTIFACTS}")
    return ARTIFACTS


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRun]:
    import shutil
    import tempfile

    missing = browser_session.missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} is missing: .ci/run installs it")
        pytest.skip(f"{missing} is missing (bash .ci/run installs it)")
    root = Path(tempfile.mkdtemp(prefix="liftoff-debugger-test-"))
    root.chmod(0o755)  # as root, PostgreSQL runs as `postgres` and must reach its data
    arguments = ["--base-port", str(free_base_port())]
    run = start_local(arguments, tmp_path_factory.mktemp("local") / "run.log", root / "data")
    run.arguments = arguments  # type: ignore[attr-defined]
    try:
        yield run.wait_ready()
    finally:
        run.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(local: LocalRun) -> Iterator[Browser]:
    with Browser() as session:
        yield session


def page_url(run: LocalRun, query: str = "") -> str:
    return run.info["debuggerUrl"] + (f"?{query}" if query else "")


def open_page(browser: Browser, run: LocalRun, query: str = "", size=(1280, 800)) -> None:
    browser.call("viewport", width=size[0], height=size[1])
    browser.call("goto", url=page_url(run, query))
    browser.wait_for('#connection[data-state="live"]')


def sdk(run: LocalRun) -> SegmentClient:
    return SegmentClient(
        run.info["writeKeys"]["web"], host=run.info["collectorUrl"], sync_mode=True
    )


def send_batch(run: LocalRun, batch: list[dict[str, Any]]) -> Any:
    key = run.info["writeKeys"]["web"]
    request = urllib.request.Request(
        run.info["collectorUrl"] + "/v1/batch",
        data=json.dumps({"batch": batch}).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode(),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def names(browser: Browser) -> list[str]:
    """The names in the list as shown, top (newest) first."""
    return browser.eval(
        f"[...document.querySelectorAll('{ROWS}')].sort((a, b) => a.offsetTop - b.offsetTop)"
        ".map(row => row.querySelector('.name').textContent)"
    )


def shown_at(
    browser: Browser, message_id: str, deadline: float = 10.0, what: str = "shownAt"
) -> float:
    """When the page rendered that event's row (seconds since the epoch); with
    what="listedAt", when it reached the page's list (scrolled out of view or not)."""
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        at = browser.eval(f"window.liftoffDebugger.{what}({json.dumps(message_id)})")
        if at is not None:
            return at / 1000
        time.sleep(0.05)
    raise AssertionError(f"{message_id} not shown within {deadline} s")


def test_the_page_loads_clean_and_events_appear_live(
    local: LocalRun, browser: Browser, artifacts: Path
) -> None:
    browser.call("report", clear=True)
    assert "debugger      " + local.info["debuggerUrl"] in local.text()
    open_page(browser, local)
    tag = uuid.uuid4().hex[:8]
    client = sdk(local)
    client.identify(f"user-{tag}", {"email": "ada@example.com", "plan": "pro"})
    client.page(f"user-{tag}", "Docs", "Pricing", {"path": "/pricing"})
    client.track(None, "Product Viewed", {"sku": "A-1"}, anonymous_id=f"anon-{tag}")
    latencies = []
    for attempt in range(3):
        message_id = f"live-{tag}-{attempt}"
        sent = time.time()
        client.track(f"user-{tag}", "Signed Up", {"plan": "pro"}, message_id=message_id)
        latencies.append(shown_at(browser, message_id) - sent)
    print(f"event sent -> row shown: {', '.join(f'{s * 1000:.0f} ms' for s in latencies)}")
    assert min(latencies) < 1.0, f"an event took more than 1 s to appear: {latencies}"
    assert sorted(latencies)[1] < 1.0, f"most events took more than 1 s to appear: {latencies}"
    assert names(browser)[:4] == ["Signed Up", "Signed Up", "Signed Up", "Product Viewed"]
    browser.wait_for("#count-accepted", text="6", timeout=10)
    time.sleep(1.2)  # a stats tick or two: the chart and the lag
    browser.call("screenshot", path=str(artifacts / "events-1280x800.png"))

    report = browser.call("report")
    errors = [m for m in report["console"] if m["type"] in ("error", "warning")]
    assert errors == [] and report["pageErrors"] == [], report
    hosts = {urlsplit(r["url"]).netloc for r in report["requests"]}
    assert hosts == {urlsplit(local.info["trackingUrl"]).netloc}, hosts
    # Every filter has a label; the page fits a laptop without sideways scrolling.
    assert browser.eval(
        "[...document.querySelectorAll('#filters input, #filters select')]"
        ".every(e => e.labels.length > 0)"
    )
    assert browser.eval("document.documentElement.scrollWidth <= window.innerWidth")


def test_a_quarantined_event_shows_its_reason_and_field(
    local: LocalRun, browser: Browser, artifacts: Path
) -> None:
    open_page(browser, local)
    tag = uuid.uuid4().hex[:8]
    answer = send_batch(
        local,
        [
            {"type": "track", "userId": "u-q", "event": f"Bad Clock {tag}",
             "timestamp": "9999-12-31T23:59:59-10:00", "properties": {"plan": "team"}},
            {"type": "track", "event": f"No User {tag}", "properties": {"step": 2}},
            {"type": "track", "userId": "u-q", "event": f"Fine {tag}"},
        ],
    )  # fmt: skip
    assert answer["quarantined"] == 2
    row = f'{ROWS}[data-kind="q"]'
    browser.wait_for(row, text=f"Bad Clock {tag}", timeout=5)
    browser.wait_for(row, text="is outside years 1-9999")
    browser.wait_for(row, text=f"No User {tag}")
    browser.wait_for(row, text="`userId` or `anonymousId` is required")
    browser.wait_for(f'{ROWS}[data-kind="e"]', text=f"Fine {tag}")
    browser.call("click", selector=f'{ROWS}[data-kind="q"]:has-text("Bad Clock {tag}") button')
    detail = f'{ROWS}[data-kind="q"] .detail'
    browser.wait_for(f"{detail} mark.hl", text='"timestamp"')
    highlighted = browser.eval(f"document.querySelector('{detail} mark.hl').textContent")
    assert highlighted == '"timestamp": "9999-12-31T23:59:59-10:00"'
    browser.wait_for(f"{detail} .meta mark", text="invalid_event")
    browser.wait_for(f"{detail} .reason-full", text="Quarantined by the collector")
    browser.wait_for("#count-quarantined", text="2", timeout=10)  # the status line's count
    browser.call("screenshot", path=str(artifacts / "quarantined-1280x800.png"))
    browser.call("media", colorScheme="dark")  # prefers-color-scheme: its own colours
    browser.call("screenshot", path=str(artifacts / "quarantined-dark-1280x800.png"))
    browser.call("media", colorScheme="light")

    open_page(browser, local, size=(375, 812))  # a phone: the filters fold away
    browser.wait_for(row, text=f"Bad Clock {tag}")
    assert browser.eval("document.documentElement.scrollWidth <= 375"), "sideways scrolling"
    assert browser.eval("!document.getElementById('filter-box').open")
    browser.call("screenshot", path=str(artifacts / "events-375x812.png"))
    browser.call("click", selector=f'{ROWS}[data-kind="q"]:has-text("Bad Clock {tag}") button')
    browser.wait_for(f"{detail} mark.hl", text='"timestamp"')
    browser.call("screenshot", path=str(artifacts / "quarantined-375x812.png"))


def test_event_json_is_shown_as_text_and_never_run(local: LocalRun, browser: Browser) -> None:
    open_page(browser, local)
    browser.call("report", clear=True)
    hostile = "<img src=x onerror=\"window.__pwned='name'\">"
    script = "<script>window.__pwned='property'</script>"
    client = sdk(local)
    big = 12345678901234567890  # more than a JavaScript number holds exactly
    client.track(
        "<b>u</b>", hostile, {"note": script, hostile: 1, "big": big}, message_id="m-hostile"
    )
    shown_at(browser, "m-hostile")
    assert names(browser)[0] == hostile, "the name, exactly as sent"
    browser.call("click", selector=f"{ROWS}:has-text('onerror') button")
    browser.wait_for(f"{ROWS} .json", text=script)
    assert f'"big": {big}' in browser.eval(f"document.querySelector('{ROWS} .json').textContent")
    assert browser.eval("window.__pwned === undefined")
    assert browser.eval("document.querySelectorAll('#rows img, #rows script, #rows b').length") == 0
    report = browser.call("report")
    assert not [m for m in report["console"] if m["type"] == "error"], report["console"]
    assert {urlsplit(r["url"]).path for r in report["requests"]} <= {"/debugger/live"}


def test_the_list_works_from_the_keyboard(local: LocalRun, browser: Browser) -> None:
    open_page(browser, local)
    browser.wait_for(ROWS)
    browser.call("focus", selector="#clear")
    browser.call("press", key="Tab")  # into the list: its current row (the newest)
    top = browser.eval(
        "document.activeElement.closest('.row') && document.activeElement.closest('.row')"
        ".getAttribute('aria-posinset')"
    )
    assert top == "1"
    assert browser.eval("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    browser.call("press", key="Enter")
    assert browser.eval("document.activeElement.getAttribute('aria-expanded')") == "true"
    browser.call("press", key="ArrowDown")
    assert (
        browser.eval("document.activeElement.closest('.row').getAttribute('aria-posinset')") == "2"
    )
    browser.call("press", key=" ")
    assert browser.eval("document.activeElement.getAttribute('aria-expanded')") == "true"
    browser.call("press", key="Tab")  # into the opened row: its buttons and the JSON
    assert browser.eval("document.activeElement.textContent") == "Copy JSON"
    browser.call("press", key="Escape")
    assert browser.eval("document.activeElement.getAttribute('aria-expanded')") == "false"
    browser.call("press", key="Home")
    assert (
        browser.eval("document.activeElement.closest('.row').getAttribute('aria-posinset')") == "1"
    )


def test_a_long_list_keeps_few_rows_in_the_page_and_the_reader_s_place(
    local: LocalRun, browser: Browser
) -> None:
    tag = uuid.uuid4().hex[:8]
    for start in range(0, 2000, 500):
        batch = [
            {
                "type": "track",
                "userId": f"long-{tag}",
                "event": f"Step {i}",
                "messageId": f"{tag}-{i}",
            }
            for i in range(start, start + 500)
        ]
        send_batch(local, batch)
    open_page(browser, local, f"user=long-{tag}")
    browser.wait_for("#summary", text="2,000 matching events")
    rendered = browser.eval(f"document.querySelectorAll('{ROWS}').length")
    assert rendered < 80, f"{rendered} rows in the page for 2,000 events"
    browser.call("focus", selector=f"{ROWS} button")
    browser.call("press", key="End")
    assert browser.eval("document.activeElement.textContent").find("Step 0") >= 0
    assert browser.eval("document.activeElement.closest('.row').getAttribute('aria-posinset')") == (
        "2000"
    )
    browser.call("press", key="Home")
    # Reading further down: new events arrive on top and what is on screen stays put.
    browser.eval("document.getElementById('list').scrollTop = 600")
    time.sleep(0.2)
    at_top = (
        "(() => { const list = document.getElementById('list').getBoundingClientRect();"
        " return document.elementFromPoint(list.left + 300, list.top + 5)"
        ".closest('.row').querySelector('.name').textContent })()"
    )
    before = browser.eval(at_top)
    client = sdk(local)
    for index in range(3):
        client.track(f"long-{tag}", f"Later {index}", message_id=f"{tag}-later-{index}")
    for index in range(3):
        shown_at(browser, f"{tag}-later-{index}", what="listedAt")
    time.sleep(0.3)  # redrawn
    assert browser.eval(at_top) == before, "the list moved under the reader"
    browser.eval("document.getElementById('list').scrollTop = 0")
    time.sleep(0.2)
    assert names(browser)[:3] == ["Later 2", "Later 1", "Later 0"]


def test_filters_narrow_the_list_and_come_back_from_the_url(
    local: LocalRun, browser: Browser
) -> None:
    tag = uuid.uuid4().hex[:8]
    client = sdk(local)
    for index in range(3):
        client.track(f"filter-{tag}", f"Searched {tag}", {"query": f"q{index}"})
    client.track(f"other-{tag}", f"Searched {tag}", {"query": "needle"})
    client.page(f"filter-{tag}", None, f"Results {tag}")
    open_page(browser, local)
    browser.wait_for(ROWS, text=f"Results {tag}")
    browser.call("fill", selector="#filters input[name=event]", value=f"Searched {tag}")
    browser.wait_for("#summary", text="4 matching events")
    assert set(names(browser)) == {f"Searched {tag}"}
    browser.call("fill", selector="#filters input[name=user]", value=f"filter-{tag}")
    browser.wait_for("#summary", text="3 matching events")
    url = browser.eval("location.href")
    assert f"event=Searched+{tag}" in url and f"user=filter-{tag}" in url

    browser.call("reload")  # the URL is the filter: a teammate opening it sees the same
    browser.wait_for("#summary", text="3 matching events")
    assert browser.eval("document.querySelector('#filters input[name=user]').value") == (
        f"filter-{tag}"
    )
    client.track(f"filter-{tag}", f"Searched {tag}", {"query": "live"})
    client.track(f"filter-{tag}", f"Elsewhere {tag}")
    browser.wait_for("#summary", text="4 matching events")
    assert set(names(browser)) == {f"Searched {tag}"}

    open_page(browser, local, f"text=NEEDLE&type=track&event=Searched+{tag}")
    browser.wait_for("#summary", text="1 matching event,")
    open_page(browser, local, "show=quarantined")
    browser.wait_for(ROWS)
    assert browser.eval(
        f"[...document.querySelectorAll('{ROWS}')].every(r => r.dataset.kind == 'q')"
    )
    browser.call("click", selector="#clear")
    browser.wait_for(f'{ROWS}[data-kind="e"]')
    assert browser.eval("location.search") == ""


def test_pause_holds_new_events_until_resumed(local: LocalRun, browser: Browser) -> None:
    open_page(browser, local)
    browser.call("click", selector="#pause")
    browser.wait_for('#connection[data-state="paused"]')
    sdk(local).track("u-pause", "While Paused", message_id="m-paused")
    # Held, not shown: the button counts it (a straggler of an earlier test may be counted too,
    # so the count is not asserted exactly).
    shown_at(browser, "m-paused", deadline=20, what="listedAt")
    assert browser.eval("document.getElementById('pause').textContent").startswith("Resume (")
    assert browser.eval("window.liftoffDebugger.shownAt('m-paused')") is None
    assert "While Paused" not in names(browser)
    browser.call("click", selector="#pause")
    shown_at(browser, "m-paused", deadline=2)
    assert names(browser)[0] == "While Paused"


def test_reset_from_the_page(local: LocalRun, browser: Browser) -> None:
    open_page(browser, local)
    browser.wait_for(ROWS)
    browser.call("click", selector="#reset")
    browser.wait_for("#notice", text="was reset")
    browser.wait_for("#empty", text="No events yet")
    assert browser.eval("window.liftoffDebugger.rows()") == 0
    assert get_json(f"{local.info['trackingUrl']}/events")[1]["count"] == 0
    sdk(local).track("u-after", "After Reset", message_id="m-after-reset")
    shown_at(browser, "m-after-reset")
    assert names(browser) == ["After Reset"]


def restart(run: LocalRun, log: str, *extra: str) -> None:
    """Start liftoff local again on the same data and ports (`run` follows the new process)."""
    output = run.output.with_name(log)
    again = start_local([*run.arguments, *extra], output, run.data_dir)  # type: ignore[attr-defined]
    run.process, run.output = again.process, output
    run.wait_ready()


def test_a_restart_of_local_mode_reconnects_the_page_in_place(
    local: LocalRun, browser: Browser, artifacts: Path
) -> None:
    open_page(browser, local)
    sdk(local).track("u-restart", "Before Restart", message_id="m-before-restart")
    shown_at(browser, "m-before-restart")
    before = names(browser)
    assert local.stop() == 0
    browser.wait_for("#connection[data-state=reconnecting], #connection[data-state=offline]")
    restart(local, "restart.log")
    browser.wait_for('#connection[data-state="live"]', timeout=30)
    sdk(local).track("u-restart", "After Restart", message_id="m-after-restart")
    shown_at(browser, "m-after-restart")
    assert names(browser) == ["After Restart", *before], "nothing lost, nothing twice"
    assert browser.eval("document.getElementById('notice').hidden"), "no reload"
    browser.call("screenshot", path=str(artifacts / "after-restart-1280x800.png"))

    # --fresh: a new stream, whose sequences start again; the page starts again with it, even
    # when the new stream is already past the page's place.
    assert local.stop() == 0
    restart(local, "fresh.log", "--fresh")
    client = sdk(local)
    for index in range(len(before) + 3):
        client.track("u-fresh", f"Fresh {index}", message_id=f"m-fresh-{index}")
    browser.wait_for("#notice", text="new stream", timeout=30)
    shown_at(browser, f"m-fresh-{len(before) + 2}")
    assert names(browser) == [f"Fresh {i}" for i in reversed(range(len(before) + 3))]
