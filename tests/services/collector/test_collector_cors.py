"""CORS and analytics.js's routes on the collector (ASGI app, real JetStream).

Every route answers preflight and carries CORS headers on every response, errors included;
per-source allowed origins are enforced (403, nothing published); the settings document and
the library are what analytics.js needs.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from components.ingest.settings import ALLOWED_ORIGIN
from services.collector.app import CollectorApp
from services.collector.browser import AllowedOrigins, Library, valid_origin
from services.collector.ingest import ROUTES, Collector
from services.events.write_keys import WriteKeys
from services.stream.base import open_stream
from tests.servers import ServerProcess, nats_url
from tests.services.stream.under_test import (
    WRITE_KEYS,
    delete_jetstream,
    read_jetstream,
    wait_ready,
)

pytestmark = pytest.mark.servers

SHOP = "https://shop.example"
EVIL = "https://evil.example"
WEB = "Basic " + base64.b64encode(b"web-key-1:").decode()
IOS = "Basic " + base64.b64encode(b"ios-key-2:").decode()
EVENT = {"userId": "u1", "event": "Clicked"}
GET_ROUTES = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/projects/web-key-1/settings",
    "/analytics.js/v1/web-key-1/analytics.min.js",
]


@pytest.fixture
def library_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "analytics-next"
    directory.mkdir()
    (directory / "standalone.js").write_text("/* analytics.js */ console.log(1)\n")
    (directory / "standalone.js.gz").write_bytes(
        gzip.compress(b"/* analytics.js */ console.log(1)\n", mtime=0)
    )
    (directory / "auto-track.bundle.0123abcd.js").write_text("/* chunk */\n")
    return directory


def run_app(
    stream_url: str,
    scenario: Callable[[httpx.AsyncClient], Awaitable[Any]],
    *,
    origins: AllowedOrigins | None = None,
    library_dir: Path | None = None,
    public_url: str | None = None,
    base_url: str = "https://events.example",
) -> Any:
    async def main() -> Any:
        collector = Collector(
            open_stream(stream_url),
            WriteKeys(WRITE_KEYS),
            origins=origins,
            library=Library(library_dir or Path("/nonexistent")),
            public_url=public_url,
        )
        await collector.stream.start()
        try:
            await wait_ready(collector.stream)
            transport = httpx.ASGITransport(app=CollectorApp(collector))
            async with httpx.AsyncClient(transport=transport, base_url=base_url) as client:
                return await scenario(client)
        finally:
            await collector.stream.close()

    return asyncio.run(main())


def stored(shared_nats: ServerProcess, stream: str) -> list[Any]:
    return asyncio.run(read_jetstream(nats_url(shared_nats), stream))


def preflight(path: str, origin: str = SHOP, method: str = "POST") -> dict[str, Any]:
    return {
        "method": "OPTIONS",
        "url": path,
        "headers": {
            "origin": origin,
            "access-control-request-method": method,
            "access-control-request-headers": "authorization,content-type",
        },
    }


def test_preflight_and_cors_on_every_route_by_default(
    jetstream: tuple[str, str], library_dir: Path
) -> None:
    url, _ = jetstream
    paths = [*ROUTES, *GET_ROUTES, "/analytics-next/bundles/auto-track.bundle.0123abcd.js"]

    async def scenario(client: httpx.AsyncClient) -> dict[str, httpx.Response]:
        return {path: await client.request(**preflight(path)) for path in paths}

    answers = run_app(url, scenario, library_dir=library_dir)
    for path, answer in answers.items():
        assert answer.status_code == 204, path
        assert answer.headers["access-control-allow-origin"] == "*", path
        methods = answer.headers["access-control-allow-methods"]
        assert {"GET", "POST", "OPTIONS"} <= set(methods.replace(" ", "").split(",")), path
        allowed = answer.headers["access-control-allow-headers"].lower().replace(" ", "")
        # What analytics.js sends: Authorization (Basic write key), Content-Type, X-Retry-Count.
        assert {"authorization", "content-type", "x-retry-count"} <= set(allowed.split(","))


def test_cors_headers_on_client_and_server_errors(
    shared_nats: ServerProcess, jetstream: tuple[str, str]
) -> None:
    url, stream = jetstream
    headers = {"origin": SHOP, "authorization": WEB}

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        answers = [
            await client.post("/v1/t", content=b"{not json", headers=headers),  # 400
            await client.post("/v1/t", json=EVENT, headers={**headers, "authorization": "x"}),
            await client.post("/v1/t", json=EVENT, headers={"origin": SHOP}),  # 401
            await client.get("/v1/t", headers=headers),  # 405
            await client.post("/v2/nothing", headers=headers),  # 404
            await client.post("/v1/b", content=b"x" * 600_000, headers=headers),  # 413
            await client.get("/v1/projects/unknown/settings", headers=headers),  # 404
            await client.get("/analytics.js/v1/web-key-1/analytics.min.js", headers=headers),
        ]
        # The stream is gone: the collector cannot publish (503, retryable).
        await delete_jetstream(nats_url(shared_nats), stream)
        answers.append(await client.post("/v1/t", json=EVENT, headers=headers))
        return answers

    answers = run_app(url, scenario)
    statuses = [a.status_code for a in answers]
    assert statuses == [400, 401, 401, 405, 404, 413, 404, 404, 503]
    for answer in answers:
        assert answer.headers["access-control-allow-origin"] == "*", answer.request.url
        assert answer.json()["success"] is False
    assert answers[6].json()["code"] == "invalid_write_key"
    assert "not built" in answers[7].json()["message"]  # no library in this collector
    assert "retry-after" in answers[-1].headers.get("access-control-expose-headers", "").lower()


def test_allowed_origins_are_enforced_per_source(
    shared_nats: ServerProcess, jetstream: tuple[str, str]
) -> None:
    """web may be used from SHOP only; ios (unlisted) from anywhere."""
    url, stream = jetstream
    origins = AllowedOrigins({"web": [SHOP, "https://*.shop.example"]})

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        post = "/v1/track"
        return [
            await client.post(post, json=EVENT, headers={"origin": SHOP, "authorization": WEB}),
            await client.post(
                post, json=EVENT, headers={"origin": "https://m.shop.example", "authorization": WEB}
            ),
            await client.post(post, json=EVENT, headers={"origin": EVIL, "authorization": WEB}),
            # The write key in the body (text/plain, a "simple" request: no preflight).
            await client.post(
                post,
                content=json.dumps({**EVENT, "writeKey": "web-key-1"}),
                headers={"origin": EVIL, "content-type": "text/plain"},
            ),
            await client.post(post, json=EVENT, headers={"origin": EVIL, "authorization": IOS}),
            await client.post(post, json=EVENT, headers={"authorization": WEB}),  # server SDK
        ]

    shop, subdomain, refused, refused_body_key, ios, no_origin = run_app(
        url, scenario, origins=origins
    )
    answers = (shop, subdomain, refused, refused_body_key, ios, no_origin)
    assert [r.status_code for r in answers] == [200, 200, 403, 403, 200, 200]
    # An allowlist answers with the origin itself (so fetch credentials: 'include' works).
    assert shop.headers["access-control-allow-origin"] == SHOP
    assert shop.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in shop.headers["vary"]
    assert subdomain.headers["access-control-allow-origin"] == "https://m.shop.example"
    assert refused.json()["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in no_origin.headers
    # ios still allows any origin, so EVIL is named in answers (it may read the 403 reason),
    # without credentials: those are for listed origins only.
    assert ios.headers["access-control-allow-origin"] == EVIL
    assert refused.headers["access-control-allow-origin"] == EVIL
    assert "access-control-allow-credentials" not in ios.headers
    events = [m.event for m in stored(shared_nats, stream)]
    assert [e["liftoff"]["source"] for e in events] == ["web", "web", "ios", "web"]


def test_an_origin_no_source_allows_gets_no_cors_at_all(
    shared_nats: ServerProcess, jetstream: tuple[str, str], library_dir: Path
) -> None:
    url, stream = jetstream
    origins = AllowedOrigins({"web": [SHOP], "ios": ["https://app.example"]})

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.request(**preflight("/v1/t", origin=EVIL)),
            await client.request(**preflight("/v1/t", origin=SHOP)),
            await client.post("/v1/t", json=EVENT, headers={"origin": EVIL, "authorization": WEB}),
            await client.get("/v1/projects/web-key-1/settings", headers={"origin": EVIL}),
            await client.get("/v1/projects/web-key-1/settings", headers={"origin": SHOP}),
            await client.get("/v1/projects/ios-key-2/settings", headers={"origin": SHOP}),
        ]

    answers = run_app(url, scenario, origins=origins, library_dir=library_dir)
    bad_preflight, good_preflight, post, settings_evil, settings_shop, settings_other = answers
    assert [a.status_code for a in answers] == [403, 204, 403, 403, 200, 403]
    for answer in (bad_preflight, post, settings_evil):
        assert "access-control-allow-origin" not in answer.headers
    # SHOP is allowed by web, not ios: readable refusal (ios-key-2 from SHOP).
    assert settings_other.json()["code"] == "origin_not_allowed"
    assert good_preflight.headers["access-control-allow-origin"] == SHOP
    assert settings_shop.headers["access-control-allow-origin"] == SHOP
    assert stored(shared_nats, stream) == []


def test_settings_point_analytics_js_at_this_collector(
    jetstream: tuple[str, str], library_dir: Path
) -> None:
    url, _ = jetstream

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await client.get("/v1/projects/web-key-1/settings"),
            await client.head("/v1/projects/web-key-1/settings"),
        ]

    get, head = run_app(url, scenario, base_url="https://events.example:8443")
    assert get.status_code == head.status_code == 200
    assert head.content == b"" and head.headers["content-length"] == get.headers["content-length"]
    document = get.json()
    segment = document["integrations"]["Segment.io"]
    assert (segment["apiKey"], segment["apiHost"], segment["protocol"]) == (
        "web-key-1",
        "events.example:8443/v1",
        "https",
    )
    # Nothing that would make the library fetch code or send data elsewhere.
    assert list(document["integrations"]) == ["Segment.io"]
    assert document["remotePlugins"] == [] and document["enabledMiddleware"] == {}
    assert document["metrics"]["sampleRate"] == 0
    assert not document["legacyVideoPluginsEnabled"]
    assert "consentSettings" not in document
    assert get.headers["cache-control"] == "public, max-age=300"
    assert get.headers["access-control-allow-origin"] == "*"

    # The Host header is echoed into the document only when it is a host[:port].
    bad_host = run_app(
        url,
        lambda c: c.get("/v1/projects/web-key-1/settings", headers={"host": 'evil"}'}),
    )
    assert bad_host.status_code == 400 and bad_host.json()["code"] == "invalid_host"

    # Behind a proxy: the configured public URL wins over what the pod sees.
    behind = run_app(
        url,
        lambda c: c.get("/v1/projects/web-key-1/settings"),
        public_url="https://track.example.com/collect",
        base_url="http://10.0.0.7:8080",
    )
    segment = behind.json()["integrations"]["Segment.io"]
    assert (segment["apiHost"], segment["protocol"]) == ("track.example.com/collect/v1", "https")


def test_the_library_is_served_with_etag_gzip_and_long_caching(
    jetstream: tuple[str, str], library_dir: Path
) -> None:
    url, _ = jetstream
    path = "/analytics.js/v1/web-key-1/analytics.min.js"

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        plain = await client.get(path, headers={"accept-encoding": "identity"})
        zipped = await client.get(path, headers={"accept-encoding": "gzip, br"})
        again = await client.get(
            path, headers={"accept-encoding": "identity", "if-none-match": plain.headers["etag"]}
        )
        stale = await client.get(path, headers={"if-none-match": '"other"'})
        chunk = await client.get("/analytics-next/bundles/auto-track.bundle.0123abcd.js")
        missing = await client.get("/analytics-next/bundles/nope.bundle.0123abcd.js")
        traversal = await client.get("/analytics-next/bundles/..%2Fstandalone.js")
        post = await client.post(path)
        return [plain, zipped, again, stale, chunk, missing, traversal, post]

    plain, zipped, again, stale, chunk, missing, traversal, post = run_app(
        url, scenario, library_dir=library_dir
    )
    body = (library_dir / "standalone.js").read_bytes()
    assert plain.status_code == 200 and plain.content == body
    assert plain.headers["content-type"].startswith("application/javascript")
    assert plain.headers["cache-control"] == "public, max-age=3600"
    assert re.fullmatch(r'"[0-9a-f]{32}"', plain.headers["etag"])
    assert plain.headers["x-content-type-options"] == "nosniff"
    assert plain.headers["cross-origin-resource-policy"] == "cross-origin"
    assert zipped.headers["content-encoding"] == "gzip" and zipped.content == body  # decoded
    assert zipped.headers["etag"] != plain.headers["etag"]
    assert again.status_code == 304 and again.content == b""
    assert stale.status_code == 200
    assert chunk.status_code == 200 and chunk.headers["cache-control"].endswith("31536000")
    assert (missing.status_code, traversal.status_code, post.status_code) == (404, 404, 405)
    for answer in (plain, again, chunk, missing, post):
        assert answer.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "https://shop.example",
        "http://localhost:3000",
        "https://*.example.com",
        "https://a-b.c.example:8443",
        "https://shop.example/",
        "https://Shop.example",
        "https://shop.example:port",
        "ftp://shop.example",
        "https://-bad.example",
        "https://",
        "null",
        "",
    ],
)
def test_stack_config_and_collector_agree_on_what_an_origin_is(origin: str) -> None:
    assert bool(re.fullmatch(ALLOWED_ORIGIN, origin)) == valid_origin(origin)
