"""What browsers need besides the tracking API: CORS, analytics.js's settings, the library.

- **CORS** (:class:`AllowedOrigins`): every response of every route carries it; preflight is
  answered on every route. Default ``*``. With per-source lists (``LIFTOFF_ALLOWED_ORIGINS``),
  a response names the request's ``Origin`` when any source allows it (with
  ``Access-Control-Allow-Credentials`` for listed origins, so ``credentials: 'include'``
  works), and the
  collector refuses with 403 a request whose write key belongs to a source that does not allow
  its origin. A preflight carries no write key, so it is judged against the union of sources.
  Requests without ``Origin`` (server SDKs) are not browsers and are not restricted.
- **Settings** (``GET /v1/projects/<writeKey>/settings``): the document analytics.js loads
  first; it points the ``Segment.io`` integration at this collector and enables nothing that
  would load third-party code (no device-mode destinations, remote plugins, middleware,
  consent or remote metrics).
- **The library** (``GET /analytics.js/v1/<writeKey>/analytics.min.js`` and the chunks under
  ``/analytics-next/bundles/``): analytics-next's standalone build as taken from its npm
  tarball at build time (:mod:`services.collector.analytics_js_build`), with an ETag and long
  caching.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from services.events.write_keys import json_object

log = logging.getLogger("liftoff.browser")

# What analytics.js sends (Authorization: Basic, Content-Type: text/plain, X-Retry-Count on
# retries) and what other SDKs add. Listed by name: "*" would not cover Authorization.
ALLOWED_HEADERS = "Authorization, Content-Type, Content-Encoding, X-Retry-Count"
ALLOWED_METHODS = "GET, HEAD, POST, OPTIONS"
EXPOSED_HEADERS = "Retry-After, ETag"
PREFLIGHT_MAX_AGE = "86400"
SETTINGS_MAX_AGE = 300
LIBRARY_MAX_AGE = 3600
# Chunk names carry a content hash: they never change under one name.
BUNDLE_MAX_AGE = 31536000
# In the image and the Lambda package: services/static/analytics-next (beside the package code).
DEFAULT_LIBRARY_DIR = Path(__file__).resolve().parent.parent / "static" / "analytics-next"

SETTINGS_PATH = re.compile(r"^/v1/projects/([^/]+)/settings$")
LIBRARY_PATH = re.compile(r"^/analytics\.js/v1/([^/]+)/analytics\.min\.js$")
BUNDLE_PATH = re.compile(r"^/analytics-next/bundles/([A-Za-z0-9_-]+\.bundle\.[0-9a-f]+\.js)$")
_ORIGIN = re.compile(r"^https?://(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$")


def valid_origin(origin: str) -> bool:
    """``*``, or ``scheme://host[:port]`` (http/https, no path); ``https://*.example.com``
    allows every subdomain of example.com."""
    return origin == "*" or bool(_ORIGIN.match(origin))


def _matches(pattern: str, origin: str) -> bool:
    if pattern == "*" or pattern == origin:
        return True
    if "://*." not in pattern:
        return False
    scheme, _, suffix = pattern.partition("://*")
    return origin.startswith(scheme + "://") and origin.endswith(suffix)


class AllowedOrigins:
    """Which browser origins may send events, per source. Sources not listed allow ``*``."""

    def __init__(
        self,
        by_source: Mapping[str, object] | None = None,
        sources: list[str] | None = None,
    ) -> None:
        """``sources``: every source with a write key (default: those of ``by_source``)."""
        self._by_source: dict[str, tuple[str, ...]] = {}
        for source, origins in (by_source or {}).items():
            if not isinstance(origins, list) or not origins:
                raise ValueError(f"source {source!r}: expected a non-empty list of origins")
            for origin in origins:
                if not isinstance(origin, str) or not valid_origin(origin):
                    raise ValueError(
                        f"source {source!r}: origin {origin!r} is not '*' nor "
                        "scheme://host[:port] (http or https, lower-case, no path)"
                    )
            self._by_source[source] = tuple(origins)
        everyone = sources if sources is not None else list(self._by_source)
        patterns = [self._by_source.get(source, ("*",)) for source in everyone] or [("*",)]
        # Open: every source takes any origin, so "*" is the whole answer.
        self._open = all("*" in p for p in patterns)
        self._union = tuple(sorted({o for p in patterns for o in p}))

    def with_sources(self, sources: list[str]) -> AllowedOrigins:
        """The same lists, knowing every source (unlisted ones allow any origin)."""
        return AllowedOrigins({s: list(o) for s, o in self._by_source.items()}, sources)

    @classmethod
    def from_json(cls, text: str) -> AllowedOrigins:
        if not text.strip():
            return cls()
        return cls(json_object(text, "source name to a list of origins"))

    @property
    def sources(self) -> list[str]:
        return sorted(self._by_source)

    def allows(self, source: str, origin: str | None) -> bool:
        """May a browser on ``origin`` send with this source's write key? No Origin: yes."""
        if origin is None:
            return True
        patterns = self._by_source.get(source)
        return patterns is None or any(_matches(p, origin) for p in patterns)

    def _any_allows(self, origin: str) -> bool:
        return any(_matches(p, origin) for p in self._union)

    def _listed(self, origin: str) -> bool:
        return any(p != "*" and _matches(p, origin) for p in self._union)

    def headers(self, origin: str | None) -> list[tuple[str, str]]:
        """CORS headers of every response (preflights add :meth:`preflight_headers`)."""
        exposed = ("access-control-expose-headers", EXPOSED_HEADERS)
        if self._open:
            return [("access-control-allow-origin", "*"), exposed]
        # The answer depends on Origin: shared caches must key on it.
        if origin is None or not self._any_allows(origin):
            return [("vary", "Origin")]
        headers = [("access-control-allow-origin", origin), exposed, ("vary", "Origin")]
        if self._listed(origin):
            # Only origins named in a list may send credentials (fetch credentials: 'include').
            headers.append(("access-control-allow-credentials", "true"))
        return headers

    def preflight_allowed(self, origin: str | None) -> bool:
        return origin is None or self._any_allows(origin)

    def preflight_headers(self) -> list[tuple[str, str]]:
        """What a preflight answer adds to :meth:`headers`."""
        return [
            ("access-control-allow-methods", ALLOWED_METHODS),
            ("access-control-allow-headers", ALLOWED_HEADERS),
            ("access-control-max-age", PREFLIGHT_MAX_AGE),
        ]


def settings_document(write_key: str, api_host: str, protocol: str) -> dict[str, object]:
    """The settings analytics.js reads on load (``CDNSettings`` in analytics-next).

    Only the ``Segment.io`` integration (more would make the library fetch device-mode code
    from Segment's CDN); empty middleware, routing rules and remote plugins; remote metrics
    off (they would go to api.segment.io); no consent settings; no edge function.
    """
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


# host[:port] as RFC 3986 allows it (names, IPv4, bracketed IPv6): what a settings document
# may echo back from the Host header.
_HOST = re.compile(r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?$")


def valid_host(host: str | None) -> bool:
    return host is not None and len(host) <= 255 and bool(_HOST.match(host))


def public_base(public_url: str | None, host: str | None, scheme: str) -> tuple[str, str]:
    """(host[:port][/prefix], protocol) browsers reach the collector at: the configured public
    URL behind a proxy, else the request's own Host and scheme."""
    if public_url:
        parts = urlsplit(public_url)
        return parts.netloc + parts.path.rstrip("/"), parts.scheme
    return (host or "localhost"), scheme


def validate_public_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError("must be http(s)://host[:port][/path], e.g. https://events.example.com")
    return value.rstrip("/")


@dataclass(frozen=True, slots=True)
class BrowserRoute:
    """A path browsers load: analytics.js's settings (``write_key``) or a file of the library."""

    write_key: str | None = None
    file: str = ""


def browser_route(path: str) -> BrowserRoute | None:
    """The browser route ``path`` names; None when it names none."""
    if settings := SETTINGS_PATH.match(path):
        return BrowserRoute(write_key=settings.group(1))
    if LIBRARY_PATH.match(path):
        return BrowserRoute(file="standalone.js")
    if bundle := BUNDLE_PATH.match(path):
        return BrowserRoute(file=bundle.group(1))
    return None


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    gzipped: bytes | None
    etag: str
    content_type: str
    max_age: int


class Library:
    """analytics-next's standalone build and chunks, read once from ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: dict[str, StaticFile] = {}
        self.version: str | None = None
        if not (directory / "standalone.js").is_file():
            log.warning(
                "analytics.js is not built: /analytics.js/ answers 404",
                extra={"fields": {"directory": str(directory)}},
            )
            return
        for path in sorted(directory.glob("*.js")):
            body = path.read_bytes()
            gzipped = None
            gz_path = path.with_name(path.name + ".gz")
            if gz_path.is_file():
                candidate = gz_path.read_bytes()
                # Serve the published .gz only if it is exactly this file compressed.
                if gzip.decompress(candidate) == body:
                    gzipped = candidate
            max_age = LIBRARY_MAX_AGE if path.name == "standalone.js" else BUNDLE_MAX_AGE
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            self.files[path.name] = StaticFile(
                body, gzipped, etag, "application/javascript; charset=utf-8", max_age
            )
        package = directory / "package.json"
        if package.is_file():
            self.version = json.loads(package.read_text()).get("version")

    @property
    def available(self) -> bool:
        return "standalone.js" in self.files

    def get(self, name: str) -> StaticFile | None:
        return self.files.get(name)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = [c.strip().removeprefix("W/") for c in if_none_match.split(",")]
    return "*" in candidates or etag in candidates


def accepts_gzip(accept_encoding: str | None) -> bool:
    if not accept_encoding:
        return False
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False
