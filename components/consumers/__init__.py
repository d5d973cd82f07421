"""Consumers capability: independent readers of the stream, each checkpointing its place.

- archiver: microbatches every event into the archive (gzip NDJSON, Hive partitions);
- loader: loads every event into the warehouse database (deduplicated on messageId);
- broadcaster: one consumer per destination (webhook, Mixpanel, Amplitude, GA4).

AWS: one Lambda function per consumer with its own Kinesis event-source mapping (so its own
checkpoint), partial batch failures, bisect on error and an SQS on-failure destination.
Kubernetes: one Deployment per consumer with its own durable JetStream consumer. A consumer
that falls behind or fails never holds back another: they share nothing but the stream.

The runtime contract (commands, handlers, environment) is in services/; the names here are
what the infrastructure passes to it. What other capabilities use of the consumers is the
`Consumers` contract (the warehouse database) and, per target, where their metrics are: each
Lambda function and its on-failure queue on AWS (`AwsConsumersContract`, also naming the
reconcile function Airflow invokes), the consumer pods' `/metrics` on Kubernetes
(`KubernetesConsumersContract`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from components.consumers.settings import Destination
from components.observability import CloudWatchMetrics
from services.consumers.archiver.contract import NAME as ARCHIVER
from services.consumers.broadcaster.destinations import DestinationDocument, consumer_name
from services.consumers.loader.contract import NAME as LOADER
from services.consumers.runner.contract import DEFAULT_HEALTH_PORT

if TYPE_CHECKING:  # the contract names Pulumi types; settings readers import it without Pulumi
    import pulumi

    from components.observability import MetricsTarget
    from components.postgres import ClientDatabase

HEALTH_PORT = DEFAULT_HEALTH_PORT


def broadcaster_name(destination: Destination) -> str:
    """Consumer (and durable JetStream consumer) name of one destination's broadcaster."""
    return consumer_name(destination.name)


def destination_document(destination: Destination) -> DestinationDocument:
    """`LIFTOFF_DESTINATION`: everything about a destination except its secrets."""
    return DestinationDocument(
        name=destination.name,
        type=destination.type,
        settings=dict(sorted(destination.settings.items())),
        sources=tuple(destination.sources),
        events=tuple(destination.events),
        filters=destination.filters,
    )


@dataclass(frozen=True)
class ConsumerRuntime:
    """What every consumer is told, on both targets."""

    name: str
    """Durable consumer name: `archiver`, `loader`, `broadcaster-<destination>`."""
    command: str
    """`python -m services <command>` on Kubernetes."""
    handler: str
    """The Lambda handler on AWS."""


ARCHIVER_RUNTIME = ConsumerRuntime(ARCHIVER, "archiver", "services.aws_lambda.archiver_handler")
LOADER_RUNTIME = ConsumerRuntime(LOADER, "loader", "services.aws_lambda.loader_handler")
# Not a stream consumer: the warehouse repair the reconciliation DAG runs for one hour.
RECONCILE_RUNTIME = ConsumerRuntime(
    "reconcile", "reconcile", "services.aws_lambda.reconcile_handler"
)


def broadcaster_runtime(destination: Destination) -> ConsumerRuntime:
    return ConsumerRuntime(
        broadcaster_name(destination), "broadcaster", "services.aws_lambda.broadcaster_handler"
    )


def stream_consumers(
    *, archive: bool, warehouse: bool, destinations: tuple[Destination, ...]
) -> tuple[str, ...]:
    """The durable consumers a Kubernetes stack runs (archiver with an archive, loader with a
    warehouse, one per destination): the set the stream setup Job keeps, deleting liftoff's
    others (`LIFTOFF_STREAM_CONSUMERS`)."""
    names = [*([ARCHIVER] if archive else []), *([LOADER] if warehouse else [])]
    # Sorted: reordering liftoff:destinations changes nothing (the Job is not run again).
    return tuple(sorted([*names, *(broadcaster_name(d) for d in destinations)]))


@dataclass(frozen=True)
class ConsumerFunction:
    """One consumer's Lambda function on AWS as other capabilities name it: observability
    alarms on its metrics, Airflow invokes the reconciler."""

    name: str
    """Its role: `archiver`, `loader`, `broadcaster-<destination>`, `reconcile`."""
    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    queue_name: pulumi.Output[str]
    """Its on-failure (dead-letter) queue."""
    broadcaster: bool = False
    log_group_name: pulumi.Output[str] | None = None
    """Its CloudWatch Logs group (metric filters read what it logs)."""
    ready: tuple[pulumi.Resource, ...] = ()
    """What must exist before it is invoked: the access the capabilities granted it."""

    @property
    def metrics(self) -> CloudWatchMetrics:
        """`AWS/Lambda` by `FunctionName`: errors, throttles, iterator age."""
        return CloudWatchMetrics("AWS/Lambda", {"FunctionName": self.function_name})

    @property
    def dead_letter_metrics(self) -> CloudWatchMetrics:
        """`AWS/SQS` by `QueueName`: the on-failure queue's depth."""
        return CloudWatchMetrics("AWS/SQS", {"QueueName": self.queue_name})


@runtime_checkable
class Consumers(Protocol):
    """What the platform and Airflow use of the consumers, on either target."""

    warehouse: ClientDatabase | None
    """The warehouse database the loader writes; None without a warehouse."""


@runtime_checkable
class AwsConsumersContract(Consumers, Protocol):
    """The consumers on AWS (`AwsConsumers`)."""

    functions: tuple[ConsumerFunction, ...]
    """The stream consumers: archiver, loader, then the broadcasters by destination name."""
    reconcile: ConsumerFunction | None
    """The ops function the DAGs invoke (repairing the warehouse from the archive, rebuilding
    typed tables); None without a warehouse."""
    regulation: ConsumerFunction | None
    """The same function when it also runs regulation requests (given the collector's
    stores); None otherwise."""


@runtime_checkable
class KubernetesConsumersContract(Consumers, Protocol):
    """The consumers on Kubernetes (`KubernetesConsumers`)."""

    metrics: MetricsTarget
    """Every consumer pod's health port, which serves `/metrics` too."""
