"""Ingest capability: the Segment-compatible HTTP collector in front of the stream.

AWS: API Gateway (HTTP API) → the collector as a Lambda function → Kinesis. Kubernetes: the
collector Deployment behind a Service (and optionally an Ingress), autoscaled, → NATS.

Both realizations take the same write keys (one per source, generated here) and expose the
same `IngestEndpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random

from components.config import Source

# The API paths of the Segment HTTP Tracking API the collector serves.
TRACKING_PATHS = ("batch", "track", "identify", "page", "screen", "group", "alias")


@dataclass(frozen=True)
class IngestEndpoint:
    collector_url: pulumi.Output[str]
    """Where SDKs send events (their `host`/`dataPlaneUrl`)."""
    write_keys: pulumi.Output[dict[str, str]]
    """Source name → write key. Always a Pulumi secret."""


def generate_write_keys(
    name: str, sources: tuple[Source, ...], parent: pulumi.Resource
) -> dict[str, pulumi.Output[str]]:
    """One random write key per source, kept in state as secrets."""
    keys: dict[str, pulumi.Output[str]] = {}
    for source in sources:
        password = random.RandomPassword(
            f"{name}-write-key-{source.name}",
            length=32,
            special=False,
            opts=pulumi.ResourceOptions(parent=parent),
        )
        keys[source.name] = pulumi.Output.secret(password.result)
    return keys


def write_keys_document(keys: dict[str, pulumi.Output[str]]) -> pulumi.Output[str]:
    """The JSON the collector reads (`LIFTOFF_WRITE_KEYS*`): source name → write key."""
    return pulumi.Output.secret(pulumi.Output.json_dumps(dict(sorted(keys.items()))))


def collector_runtime_env(sources: tuple[Source, ...]) -> dict[str, str]:
    """What both targets tell the collector about its sources besides the write keys."""
    no_ip = ",".join(s.name for s in sources if not s.collect_ip)
    return {"LIFTOFF_IP_COLLECTION_OFF": no_ip} if no_ip else {}
