"""Stream capability: the durable, ordered, replayable buffer behind the ingestion API.

AWS: a Kinesis data stream encrypted with the platform's KMS key. Kubernetes: NATS JetStream
from the official chart on PersistentVolumes, with the stream created by the platform.

Both expose a `StreamConnection` (the URL the services take in `LIFTOFF_STREAM_URL`) and the
grants `grant_write(peer)` / `grant_read(peer)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

# The JetStream stream the platform publishes to (services/streams).
STREAM_NAME = "EVENTS"


@dataclass(frozen=True)
class StreamConnection:
    """How a service reaches the stream. Identical in shape on both targets."""

    url: pulumi.Output[str]
    """`kinesis://<stream-name>` or `nats://<host>:4222/EVENTS`."""
    name: pulumi.Output[str]
    """The Kinesis stream name / the JetStream stream name."""
