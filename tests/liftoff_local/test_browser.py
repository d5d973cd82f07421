"""A web team's end-to-end test against `python -m liftoff_local`: analytics.js (the npm
package, its settings from the local collector) in Debian's Chromium sends `Signed Up` with
`plan`, and the tracking API and the typed warehouse table show it. Node packages and
Chromium come from `.ci/run`."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.liftoff_local.conftest import LocalRun, free_base_port, start_local
from tests.liftoff_local.test_local import eventually, get_json, post, warehouse
from tests.services.collector.test_browser_clients import (  # noqa: F401 - fixtures
    drive,
    node,
    npm_bundle,
    page_server,
)

pytestmark = pytest.mark.servers
TIMESTAMP = "timestamp with time zone"


def test_a_click_in_the_browser_shows_up_in_the_tracking_api(
    tmp_path: Path,
    data_root: Path,
    local_runs: list[LocalRun],
    node: str,  # noqa: F811
    npm_bundle: Path,  # noqa: F811
    page_server: tuple[Path, str],  # noqa: F811
) -> None:
    run = start_local(
        ["--base-port", str(free_base_port())], tmp_path / "run.log", data_root / "data"
    )
    local_runs.append(run)
    run.wait_ready()
    info = run.info
    tracking = info["trackingUrl"]
    post(f"{tracking}/reset")
    root, origin = page_server
    (root / "bundle.js").write_bytes(npm_bundle.read_bytes())
    settings = {"writeKey": info["writeKeys"]["web"], "cdnURL": info["collectorUrl"]}
    (root / "pricing.html").write_text(
        "<!doctype html><html><head><script src='/bundle.js'></script></head><body>"
        "<button id='pro'>Start Pro</button><script>"
        f"const analytics = AnalyticsBrowser.load({json.dumps(settings)});"
        "document.getElementById('pro').onclick ="
        " () => analytics.track('Signed Up', {plan: 'pro'});"
        "document.getElementById('pro').click();"
        "</script></body></html>"
    )
    report = drive(node, "browse", f"{origin}/pricing.html", json.dumps({"expectedEvents": 1}))
    assert report["delivered"] == 1, report
    hosts = {urlsplit(r["url"]).netloc for r in report["requests"]}
    assert hosts <= {urlsplit(origin).netloc, urlsplit(info["collectorUrl"]).netloc}, hosts

    status, found = get_json(f"{tracking}/events?event=Signed%20Up&source=web")
    assert status == 200
    (event,) = [e["event"] for e in found["events"]]
    assert event["properties"] == {"plan": "pro"}
    assert event["context"]["library"]["name"] == "analytics.js"

    # And in the warehouse's typed tables (Segment's schema), as the loader wrote it.
    def typed() -> list[tuple]:
        try:
            return warehouse(
                run,
                "SELECT plan, event, event_text, context_library_name, context_page_path,"
                " pg_typeof(timestamp)::text FROM web.signed_up",
            )
        except psycopg.errors.UndefinedTable:
            return []

    assert eventually(typed, what="the typed row") == [
        (
            "pro",
            "signed_up",
            "Signed Up",
            "analytics.js",
            "/pricing.html",
            "timestamp with time zone",
        )
    ]
    assert run.stop() == 0


def test_segments_snippet_with_tls(
    tmp_path: Path,
    data_root: Path,
    local_runs: list[LocalRun],
    node: str,  # noqa: F811
    page_server: tuple[Path, str],  # noqa: F811
) -> None:
    """`--tls`: the standard snippet, host changed to the local collector, loads analytics.js
    and its settings from it (the snippet accepts only https:// there)."""
    run = start_local(
        ["--base-port", str(free_base_port()), "--tls"], tmp_path / "run.log", data_root / "data"
    )
    local_runs.append(run)
    run.wait_ready()
    info = run.info
    assert info["collectorUrl"].startswith("https://127.0.0.1:")
    host = urlsplit(info["collectorUrl"]).netloc
    key = info["writeKeys"]["web"]
    snippet = drive(node, "snippet", host, key, json.dumps({"load": True, "page": False}))
    root, origin = page_server
    (root / "index.html").write_text(
        f"<!doctype html><html><head><script>{snippet['snippet']}</script></head><body>"
        "<script>analytics.track('Signed Up', {plan: 'team'})</script></body></html>"
    )
    report = drive(node, "browse", f"{origin}/index.html", json.dumps({"expectedEvents": 1}))
    assert report["delivered"] == 1, report
    hosts = {urlsplit(r["url"]).netloc for r in report["requests"]}
    assert hosts <= {urlsplit(origin).netloc, host}, hosts
    assert any("/analytics.js/v1/" in r["url"] for r in report["requests"])
    found = get_json(f"{info['trackingUrl']}/events?event=Signed%20Up")[1]
    assert [e["event"]["properties"]["plan"] for e in found["events"]] == ["team"]
    assert run.stop() == 0
