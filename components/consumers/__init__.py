"""Consumers capability: independent readers of the stream, each checkpointing its place.

- archiver: microbatches every event into the archive (gzip NDJSON, Hive partitions);
- loader: loads every event into the warehouse database (deduplicated on messageId);
- broadcaster: one consumer per destination (webhook, Mixpanel, Amplitude, GA4).

AWS: one Lambda function per consumer with its own Kinesis event-source mapping (so its own
checkpoint), partial batch failures, bisect on error and an SQS on-failure destination.
Kubernetes: one Deployment per consumer with its own durable JetStream consumer. A consumer
that falls behind or fails never holds back another: they share nothing but the stream.

The runtime contract (commands, handlers, environment) is in services/; the names here are
what the infrastructure passes to it.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.consumers.settings import Destination
from services.consumers.archiver.contract import NAME as ARCHIVER
from services.consumers.broadcaster.destinations import DestinationDocument, consumer_name
from services.consumers.loader.contract import NAME as LOADER
from services.consumers.runner.contract import DEFAULT_HEALTH_PORT

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
