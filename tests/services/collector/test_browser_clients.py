"""Real clients against `python -m services collector` (HTTPS on loopback) and real JetStream.

- analytics.js in Debian's Chromium, driven by playwright-core (tests/browser/drive.mjs):
  Segment's standard snippet with only its host changed (the library and its settings come
  from the collector), and the npm package bundled for the page
  (``AnalyticsBrowser.load({writeKey, cdnURL})``); standard and batching delivery. The page
  is served from another origin than the collector, so CORS is real.
- analytics-node (npm) and RudderStack's Python SDK sending the same calls.

Every call is read back from the stream exactly once, with its fields. Node packages and
Chromium are installed by `.ci/run`; outside CI, a machine without them skips these tests.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import os
import shutil
import ssl
import subprocess
import threading
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import LOOPBACK, REPO_ROOT, ServerProcess, collector_server, free_port, nats_url
from tests.services.stream.under_test import WRITE_KEYS_JSON, read_jetstream

pytestmark = pytest.mark.servers

BROWSER_DIR = REPO_ROOT / "tests" / "browser"
NODE_MODULES = BROWSER_DIR / "node_modules"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LIBRARY_DIR = NODE_MODULES / "@segment" / "analytics-next" / "dist" / "umd"
WRITE_KEY = "web-key-1"


def _require(condition: bool, what: str) -> None:
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing: .ci/run installs it")
    pytest.skip(f"{what} is missing (bash .ci/run installs it)")


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    _require(found is not None, "node")
    _require((NODE_MODULES / "playwright-core").is_dir(), "tests/browser/node_modules")
    return found  # type: ignore[return-value]


def drive(node: str, *args: str, timeout: float = 90) -> dict[str, Any]:
    result = subprocess.run(
        [node, str(BROWSER_DIR / "drive.mjs"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=BROWSER_DIR,
    )
    assert result.returncode == 0, f"drive.mjs {args[0]} failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: the standard snippet loads over https only."""
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _https_ok(url: str) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=1, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def https_collector(
    workdir: Path, stream_url: str, certificate: tuple[Path, Path], **extra_env: str
) -> ServerProcess:
    cert, key = certificate
    server = collector_server(
        workdir,
        stream_url,
        WRITE_KEYS_JSON,
        extra_env={
            "LIFTOFF_TLS_CERT_FILE": str(cert),
            "LIFTOFF_TLS_KEY_FILE": str(key),
            "LIFTOFF_ANALYTICS_JS_DIR": str(LIBRARY_DIR),
            **extra_env,
        },
    )
    server.is_ready = lambda: _https_ok(f"https://{LOOPBACK}:{server.port}/healthz")
    return server


@pytest.fixture
def page_server(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """(directory, origin) of a static web server: the customer's site, another origin."""
    root = tmp_path / "site"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer((LOOPBACK, free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


# The calls every client makes; `run` makes this test's events recognisable.
CALLS_JS = """
function liftoffCalls(analytics, run) {
  analytics.identify('user-' + run, { email: 'a@example.com', run: run })
  analytics.track('Order Completed', { run: run, total: 9.99 })
  analytics.page('Docs', 'Install', { run: run })
  analytics.group('acme-' + run, { name: 'Acme', run: run })
  analytics.alias('user-' + run, 'anon-' + run)
}
"""


def snippet_page(node: str, collector: str, run: str, load: dict[str, Any] | bool) -> str:
    host = collector.removeprefix("https://")
    snippet = drive(node, "snippet", host, WRITE_KEY, json.dumps({"load": load}))["snippet"]
    return (
        "<!doctype html><html><head><title>shop</title>"
        f"<script>{snippet}</script></head><body>"
        f"<script>{CALLS_JS}\nliftoffCalls(window.analytics, {json.dumps(run)})</script>"
        "</body></html>"
    )


def npm_page(collector: str, run: str, options: dict[str, Any]) -> str:
    settings = {"writeKey": WRITE_KEY, "cdnURL": collector}
    return (
        "<!doctype html><html><head><title>shop</title>"
        '<script src="/bundle.js"></script></head><body><script>'
        f"{CALLS_JS}\n"
        f"const analytics = AnalyticsBrowser.load({json.dumps(settings)}, {json.dumps(options)})\n"
        f"liftoffCalls(analytics, {json.dumps(run)})\n"
        "</script></body></html>"
    )


@pytest.fixture(scope="module")
def npm_bundle(node: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = tmp_path_factory.mktemp("bundle") / "bundle.js"
    drive(node, "bundle", str(bundle))
    return bundle


BATCHING = {
    "integrations": {
        "Segment.io": {
            "deliveryStrategy": {"strategy": "batching", "config": {"size": 3, "timeout": 1000}}
        }
    }
}


def check_events(events: list[dict[str, Any]], run: str, library: str) -> None:
    """The five calls (plus the snippet's own page view) as the clients sent them."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event)
    (identify,) = by_type["identify"]
    assert identify["userId"] == f"user-{run}"
    # RudderStack's SDKs send identify traits in context.traits only.
    traits = identify.get("traits") or identify["context"]["traits"]
    assert traits["email"] == "a@example.com"
    (track,) = by_type["track"]
    assert (track["event"], track["properties"]["total"]) == ("Order Completed", 9.99)
    page = next(p for p in by_type["page"] if p.get("name") == "Install")
    assert (page["category"], page["properties"]["run"]) == ("Docs", run)
    (group,) = by_type["group"]
    assert (group["groupId"], group["traits"]["name"]) == (f"acme-{run}", "Acme")
    (alias,) = by_type["alias"]
    assert (alias["userId"], alias["previousId"]) == (f"user-{run}", f"anon-{run}")
    for event in events:
        assert event["context"]["library"]["name"] == library
        assert event["liftoff"]["source"] == "web"
        assert event["messageId"] and event["receivedAt"]
    message_ids = Counter(event["messageId"] for event in events)
    assert max(message_ids.values()) == 1, message_ids


def stored_events(shared_nats: ServerProcess, stream: str) -> list[dict[str, Any]]:
    return [m.event for m in asyncio.run(read_jetstream(nats_url(shared_nats), stream))]


@pytest.mark.parametrize(
    ("setup", "delivery", "origins"),
    [
        ("snippet", "standard", "any"),
        ("snippet", "batching", "any"),
        ("npm", "standard", "any"),
        ("npm", "batching", "any"),
        # The web source restricted to the page's origin (allowedOrigins).
        ("npm", "standard", "listed"),
    ],
)
def test_analytics_js_in_chromium_delivers_every_event_once(
    setup: str,
    delivery: str,
    origins: str,
    node: str,
    npm_bundle: Path,
    certificate: tuple[Path, Path],
    page_server: tuple[Path, str],
    shared_nats: ServerProcess,
    jetstream: tuple[str, str],
    tmp_path: Path,
) -> None:
    _require(Path(CHROMIUM).exists(), CHROMIUM)
    url, stream = jetstream
    site, page_origin = page_server
    run = uuid.uuid4().hex[:12]
    options = BATCHING if delivery == "batching" else {}
    listed = {"LIFTOFF_ALLOWED_ORIGINS": json.dumps({"web": [page_origin], "ios": [page_origin]})}
    extra_env = listed if origins == "listed" else {}
    with https_collector(tmp_path, url, certificate, **extra_env) as server:
        collector = f"https://{LOOPBACK}:{server.port}"
        if setup == "snippet":
            html = snippet_page(node, collector, run, options or True)
        else:
            shutil.copy(npm_bundle, site / "bundle.js")
            html = npm_page(collector, run, options)
        (site / "index.html").write_text(html)
        expected = 6 if setup == "snippet" else 5  # the snippet also sends a page view
        report = drive(
            node, "browse", f"{page_origin}/index.html", json.dumps({"expectedEvents": expected})
        )

    assert report["pageErrors"] == [], report
    assert report["delivered"] == expected, report
    # Nothing left the machine: no Segment CDN, API, metrics or device-mode code.
    hosts = {r["url"].split("/")[2] for r in report["requests"]}
    assert hosts <= {page_origin.removeprefix("http://"), f"{LOOPBACK}:{server.port}"}, hosts
    posts = [r for r in report["requests"] if r["method"] == "POST"]
    paths = {r["url"].removeprefix(collector) for r in posts}
    if delivery == "batching":
        assert paths == {"/v1/b"}
    else:
        assert paths == {"/v1/i", "/v1/t", "/v1/p", "/v1/g", "/v1/a"}
    assert all(r["status"] == 200 for r in report["requests"]), report["requests"]
    assert all(r["headers"]["origin"] == page_origin for r in posts)
    allow_origin = "*" if origins == "any" else page_origin
    assert all(r["responseHeaders"]["access-control-allow-origin"] == allow_origin for r in posts)
    settings_requests = [r for r in report["requests"] if "/settings" in r["url"]]
    assert [r["url"] for r in settings_requests] == [
        f"{collector}/v1/projects/{WRITE_KEY}/settings"
    ]
    if setup == "snippet":
        assert f"{collector}/analytics.js/v1/{WRITE_KEY}/analytics.min.js" in {
            r["url"] for r in report["requests"]
        }

    events = stored_events(shared_nats, stream)
    assert len(events) == expected, events
    check_events(events, run, "analytics.js")


def test_refused_origin_delivers_nothing(
    node: str,
    npm_bundle: Path,
    certificate: tuple[Path, Path],
    page_server: tuple[Path, str],
    shared_nats: ServerProcess,
    jetstream: tuple[str, str],
    tmp_path: Path,
) -> None:
    """A source restricted to another site: the browser's requests are refused and blocked."""
    _require(Path(CHROMIUM).exists(), CHROMIUM)
    url, stream = jetstream
    site, page_origin = page_server
    allowed = json.dumps({"web": ["https://shop.example"]})
    with https_collector(tmp_path, url, certificate, LIFTOFF_ALLOWED_ORIGINS=allowed) as server:
        collector = f"https://{LOOPBACK}:{server.port}"
        shutil.copy(npm_bundle, site / "bundle.js")
        (site / "index.html").write_text(npm_page(collector, "refused", {}))
        report = drive(
            node,
            "browse",
            f"{page_origin}/index.html",
            json.dumps({"expectedEvents": 1, "timeoutMs": 4000, "quietMs": 500}),
        )
    assert report["delivered"] == 0
    settings = [r for r in report["requests"] if "/settings" in r["url"]]
    # Another source (ios) takes any origin, so the page may read why: 403 origin_not_allowed.
    assert settings and all(r["status"] == 403 for r in settings)
    assert any("origin_not_allowed" in line for line in report["console"]), report["console"]
    assert not [r for r in report["requests"] if r["method"] == "POST"]
    assert stored_events(shared_nats, stream) == []


def test_analytics_node_sdk_end_to_end(
    node: str, shared_nats: ServerProcess, jetstream: tuple[str, str], tmp_path: Path
) -> None:
    url, stream = jetstream
    run = uuid.uuid4().hex[:12]
    with collector_server(tmp_path, url, WRITE_KEYS_JSON) as server:
        result = drive(node, "node-sdk", f"http://{LOOPBACK}:{server.port}", WRITE_KEY, run)
    assert result["errors"] == []
    events = stored_events(shared_nats, stream)
    assert sorted(e["type"] for e in events) == sorted(
        ["identify", "track", "page", "screen", "group", "alias"]
    )
    check_events(events, run, "@segment/analytics-node")


def test_rudderstack_python_sdk_end_to_end(
    shared_nats: ServerProcess, jetstream: tuple[str, str], tmp_path: Path
) -> None:
    from rudderstack.analytics import Client as RudderClient

    url, stream = jetstream
    run = uuid.uuid4().hex[:12]
    errors: list[Exception] = []
    with collector_server(tmp_path, url, WRITE_KEYS_JSON) as server:
        client = RudderClient(
            WRITE_KEY,
            host=f"http://{LOOPBACK}:{server.port}",
            on_error=lambda error, _batch: errors.append(error),
            max_retries=1,
            gzip=True,
        )
        user = f"user-{run}"
        client.identify(user, {"email": "a@example.com", "run": run})
        client.track(user, "Order Completed", {"run": run, "total": 9.99})
        client.page(user, "Docs", "Install", {"run": run})
        client.group(user, f"acme-{run}", {"name": "Acme", "run": run})
        client.alias(f"anon-{run}", user)
        client.flush()
        client.join()
    assert errors == []
    events = stored_events(shared_nats, stream)
    assert len(events) == 5, events
    check_events(events, run, "analytics-python")
