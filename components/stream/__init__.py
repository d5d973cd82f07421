"""Stream capability: the durable, ordered, replayable buffer behind the ingestion API.

AWS: a Kinesis data stream encrypted with the platform's KMS key. Kubernetes: NATS JetStream
from the official chart on PersistentVolumes, with the stream created by the platform.

Both expose a `StreamConnection` (the URL the services take in `LIFTOFF_STREAM_URL`) and the
grants `grant_write(peer)` / `grant_read(peer)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from components.network import Grant, PeerT
from services.stream.address import EVENTS_STREAM

if TYPE_CHECKING:  # the contract names Pulumi types; settings readers import it without Pulumi
    import pulumi

STREAM_NAME = EVENTS_STREAM
"""The JetStream stream the platform publishes to (``services.stream.address``)."""


@dataclass(frozen=True)
class StreamConnection:
    """How a service reaches the stream. Identical in shape on both targets."""

    url: pulumi.Output[str]
    """`kinesis://<stream-name>` or `nats://<host>:4222/EVENTS`."""
    name: pulumi.Output[str]
    """The Kinesis stream name / the JetStream stream name."""


@runtime_checkable
class Stream(Protocol[PeerT]):
    """What other capabilities use of the stream, on either target (`KinesisStream` takes an
    `AwsPeer`, `NatsJetStream` a `KubernetesPeer`)."""

    connection: StreamConnection

    def grant_write(self, peer: PeerT) -> Grant:
        """Let `peer` publish events."""
        ...

    def grant_read(self, peer: PeerT) -> Grant:
        """Let `peer` consume events."""
        ...
