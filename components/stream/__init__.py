"""Stream capability: the durable, ordered, replayable buffer behind the ingestion API.

AWS: a Kinesis data stream encrypted with the platform's KMS key. Kubernetes: NATS JetStream
from the official chart on PersistentVolumes, with the stream created by the platform.

Both expose a `StreamConnection` (the URL the services take in `LIFTOFF_STREAM_URL`) and the
grants `grant_write(peer)` / `grant_read(peer)`. Each target's contract adds what its clients
need besides: on AWS the stream's ARN and retention, enhanced fan-out, and its CloudWatch
metrics (`AwsStreamContract`); on Kubernetes what a client waits for before it starts and the
NATS servers' metrics (`KubernetesStreamContract`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from components.network import AwsPeer, Grant, KubernetesPeer, PeerT
from services.stream.address import EVENTS_STREAM

if TYPE_CHECKING:  # the contract names Pulumi types; settings readers import it without Pulumi
    import pulumi

    from components.observability import CloudWatchMetrics, MetricsTarget

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


@dataclass(frozen=True)
class FanOutConsumer:
    """An enhanced fan-out consumer of the AWS stream: what its reader's mapping reads from,
    and the grant letting the reader subscribe through it."""

    arn: pulumi.Output[str]
    grant: Grant


@runtime_checkable
class AwsStreamContract(Stream[AwsPeer], Protocol):
    """What the AWS capabilities use of the stream (`KinesisStream`)."""

    arn: pulumi.Output[str]
    retention_hours: int
    """How long records stay readable: a consumer never gives one up for its age before."""
    metrics: CloudWatchMetrics
    """`AWS/Kinesis` by `StreamName`."""

    def add_fan_out_consumer(self, peer: AwsPeer) -> FanOutConsumer:
        """An enhanced fan-out consumer named after `peer`, which may subscribe through it."""
        ...


@runtime_checkable
class KubernetesStreamContract(Stream[KubernetesPeer], Protocol):
    """What the Kubernetes capabilities use of the stream (`NatsJetStream`)."""

    ready: tuple[pulumi.Resource, ...]
    """What a client waits for before it starts: the Job that creates the streams."""
    metrics: MetricsTarget
    """The NATS servers' exporter (the chart's `promExporter`)."""
    servers_url: str
    """`nats://<host>:<port>`: the servers' client address, known before anything is deployed
    (the stream's own URL waits for its partition count): what names the stores beside the
    stream, the dead letters and the suppression list (`services.stream.address`)."""
