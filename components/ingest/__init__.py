"""Ingest capability: the Segment-compatible HTTP collector in front of the stream.

AWS: API Gateway (HTTP API) → the collector as a Lambda function → Kinesis. Kubernetes: the
collector Deployment behind a Service (and optionally an Ingress), autoscaled, → NATS.

Both realizations take the same write keys (one per source, `write_keys.py`) and expose the
same `IngestEndpoint` (the `Ingest` contract); each target's contract adds where the
collector's metrics are (`AwsIngestContract`, `KubernetesIngestContract`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from components.ingest.settings import Source
from services import env as runtime_env

if TYPE_CHECKING:  # the contract names Pulumi types; settings readers import it without Pulumi
    import pulumi

    from components.observability import CloudWatchMetrics, MetricsTarget

# The API paths of the Segment HTTP Tracking API the collector serves.
TRACKING_PATHS = ("batch", "import", "track", "identify", "page", "screen", "group", "alias")
# analytics.js's short aliases of them (first letter of the event type; "b" is the batch).
SHORT_TRACKING_PATHS = ("b", "t", "i", "p", "s", "g", "a")
# What browsers load besides: analytics.js's settings, the library and its lazy chunks.
BROWSER_ROUTES = {
    "settings": "/v1/projects/{writeKey}/settings",
    "library": "/analytics.js/v1/{writeKey}/analytics.min.js",
    "bundles": "/analytics-next/bundles/{file}",
}
# Path prefixes the collector answers on: what an Ingress routes to it.
PUBLIC_PATH_PREFIXES = ("/v1", "/analytics.js", "/analytics-next")


@dataclass(frozen=True)
class IngestEndpoint:
    collector_url: pulumi.Output[str]
    """Where SDKs send events (their `host`/`dataPlaneUrl`)."""
    write_keys: pulumi.Output[dict[str, str]]
    """Source name → write key. Always a Pulumi secret."""


@runtime_checkable
class Ingest(Protocol):
    """What the platform uses of the collector, on either target."""

    endpoint: IngestEndpoint


@runtime_checkable
class AwsIngestContract(Ingest, Protocol):
    """The collector on AWS (`LambdaCollector`): where its metrics are."""

    api_metrics: CloudWatchMetrics
    """`AWS/ApiGateway` by `ApiId` and `Stage`: requests, errors, latency."""
    function_metrics: CloudWatchMetrics
    """`AWS/Lambda` by `FunctionName`: the collector function's errors and throttles."""


@runtime_checkable
class KubernetesIngestContract(Ingest, Protocol):
    """The collector on Kubernetes (`KubernetesCollector`): where its metrics are."""

    metrics: MetricsTarget
    """The collector pods' `/metrics` (their Service carries the same selector labels)."""


def allowed_origins_document(sources: tuple[Source, ...]) -> str | None:
    """`LIFTOFF_ALLOWED_ORIGINS` (source → origins) for the sources that restrict them;
    None when none does (every origin allowed)."""
    restricted = {s.name: list(s.allowed_origins) for s in sources if s.restricts_origins}
    if not restricted:
        return None
    return json.dumps(restricted, sort_keys=True, separators=(",", ":"))


def collector_runtime_env(sources: tuple[Source, ...]) -> dict[str, str]:
    """What both targets tell the collector about its sources besides the write keys."""
    no_ip = ",".join(s.name for s in sources if not s.collect_ip)
    return {runtime_env.NO_IP_SOURCES: no_ip} if no_ip else {}
