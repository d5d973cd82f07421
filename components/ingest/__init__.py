"""Ingest capability: the Segment-compatible HTTP collector in front of the stream.

AWS: API Gateway (HTTP API) → the collector as a Lambda function → Kinesis. Kubernetes: the
collector Deployment behind a Service (and optionally an Ingress), autoscaled, → NATS.

Both realizations take the same write keys (one per source, `write_keys.py`) and expose the
same `IngestEndpoint` (the `Ingest` contract); each target's contract adds where the
collector's metrics are (`AwsIngestContract`, `KubernetesIngestContract`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from components.ingest.settings import Source
from services.collector.contract import Sources

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
SUPPRESSION_KEY = "key"
"""Kubernetes: the key of the suppression Secret (`suppression_key_secret_name`) holding the
key the list's entries are hashed with."""


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


@dataclass(frozen=True)
class AwsPrivacyStores:
    """What a regulation acts on that the collector owns, on AWS."""

    suppression_url: pulumi.Output[str]
    """`s3://<bucket>/<key>`: the suppression list's one object."""
    suppression_object_arn: pulumi.Output[str]
    suppression_key_secret_arn: pulumi.Output[str]
    """The secret holding the key the list's entries are hashed with."""
    quarantine_url: pulumi.Output[str]
    """`sqs://<queue>`: the collector's quarantine (KMS-encrypted with the platform key)."""
    quarantine_queue_arn: pulumi.Output[str]


@runtime_checkable
class AwsIngestContract(Ingest, Protocol):
    """The collector on AWS (`LambdaCollector`): where its metrics are, and the stores of
    its that a regulation acts on."""

    privacy: AwsPrivacyStores

    api_metrics: CloudWatchMetrics
    """`AWS/ApiGateway` by `ApiId` and `Stage`: requests, errors, latency."""
    function_metrics: CloudWatchMetrics
    """`AWS/Lambda` by `FunctionName`: the collector function's errors and throttles."""
    quarantine_metrics: CloudWatchMetrics
    """`AWS/SQS` by `QueueName`: the quarantine queue's depth (invalid events kept)."""


@runtime_checkable
class KubernetesIngestContract(Ingest, Protocol):
    """The collector on Kubernetes (`KubernetesCollector`): where its metrics are."""

    metrics: MetricsTarget
    """The collector pods' `/metrics` (their Service carries the same selector labels)."""
    suppression_key_secret_name: str
    """The Secret (key `SUPPRESSION_KEY`) the collector and `python -m services regulation`
    read the suppression list's key from."""


def collector_sources(sources: tuple[Source, ...], **fields: Any) -> Sources[Any]:
    """What both targets (and liftoff local) tell the collector about its sources: the origins
    of the sources that restrict them (none: every origin allowed) and the sources whose
    events keep no IP address; ``fields``: the rest of
    :class:`services.collector.contract.Sources` (where the write keys are, the public URL)."""
    restricted = {s.name: tuple(s.allowed_origins) for s in sources if s.restricts_origins}
    no_ip = tuple(s.name for s in sources if not s.collect_ip)
    return Sources(allowed_origins=restricted or None, no_ip_sources=no_ip or None, **fields)
