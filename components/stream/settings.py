"""`liftoff:stream`: the stream's settings on each target, and how they are read from the stack."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from components.validation import (
    ComputeResources,
    ConfigReader,
    StackReading,
    read_resources,
    reject_other_target,
)
from services.stream.address import MAX_PARTITIONS as MAX_PARTITIONS
from services.stream.address import MIN_PARTITIONS, PRODUCTION_REPLICAS, default_partitions
from services.stream.address import PRODUCTION_PARTITIONS as PRODUCTION_PARTITIONS


@dataclass(frozen=True)
class AwsStream:
    """`liftoff:stream` on AWS: the Kinesis data stream."""

    retention_hours: int = 168
    """Default: 168 (7 days). 24..8760."""
    mode: str = "on-demand"
    """Default: `on-demand`. `on-demand` or `provisioned`."""
    shards: int = 2
    """Default: 2. Only with mode `provisioned` (1..500)."""


@dataclass(frozen=True)
class KubernetesStream:
    """`liftoff:stream` on Kubernetes: NATS JetStream."""

    retention_hours: int = 168
    """Default: 168 (7 days). 1..8760."""
    replicas: int = PRODUCTION_REPLICAS
    """Default: 3. NATS servers and stream replicas (1, 3 or 5)."""
    storage_gb: int = 10
    """Default: 10. JetStream file storage per server (PVC size)."""
    durability: str = "always"
    """`always` (fsync before every acknowledgement) or `periodic` (the NATS default, fsync
    every 2 minutes). Default: `always` with 3 or more replicas, `periodic` below."""
    duplicate_window_minutes: int = 2
    """Default: 2. How long JetStream remembers messageIds to drop repeats."""
    resources: ComputeResources = field(
        default_factory=lambda: ComputeResources("1", "2Gi", "1", "2Gi")
    )
    """Default: 1 CPU / 2Gi, requests equal to limits. Each NATS server (GOMEMLIMIT is set
    to 80% of the memory limit)."""
    storage_resized_from: int | None = None
    """Default: none. The `storageGb` this stack had before, set once its volumes were grown
    and the NATS StatefulSet removed by the documented procedure (README, 'Resizing a
    volume')."""
    partitions: int = default_partitions(PRODUCTION_REPLICAS)
    """JetStream streams the events are spread over by user (1..64; each partition is its
    own stream with its own fsync, so durable throughput grows with it). Default:
    `PRODUCTION_PARTITIONS` with 3 or more replicas, 1 below (dev):
    `services.stream.address.default_partitions`, the same for the reader. Fixed once the
    stream exists: on a stack that has one, an unset `partitions` keeps the deployed count and
    another count is refused (`components.stream.partitions`; see the README)."""
    partitions_chosen: bool = False
    """Whether the stack sets `partitions` (otherwise `partitions` is the default for a new
    stream, and a stack that has one keeps its count)."""
    repartition_from: int | None = None
    """`repartitionFrom`: the partition count the stream had, set for the one update that
    follows the repartitioning procedure (old streams drained and deleted). Default: none."""


@dataclass(frozen=True)
class StreamSettings:
    """`liftoff:stream` — the durable event stream: the chosen target's settings. A key of
    the other target is refused by construction (`reject_other_target`)."""

    aws: AwsStream | None = None
    """Set on AWS (Kinesis)."""
    kubernetes: KubernetesStream | None = None
    """Set on Kubernetes (NATS JetStream)."""


def read_stream(stack: StackReading) -> StreamSettings:
    reader = stack.reader("stream")
    if stack.target == "aws":
        settings = StreamSettings(aws=_read_aws_stream(reader))
    elif stack.target == "kubernetes":
        settings = StreamSettings(kubernetes=_read_kubernetes_stream(reader))
    else:
        # No valid target (reported elsewhere): only the shared key is checked.
        _read_retention(reader, KubernetesStream.retention_hours, minimum=1)
        settings = StreamSettings()
    reader.finish()
    return settings


def _read_retention(reader: ConfigReader, default: int, *, minimum: int) -> int:
    return reader.integer("retentionHours", default, minimum=minimum, maximum=8760)


def _read_aws_stream(reader: ConfigReader) -> AwsStream:
    defaults = AwsStream()
    retention = _read_retention(reader, defaults.retention_hours, minimum=24)
    mode = reader.string("mode", defaults.mode, choices=("on-demand", "provisioned"))
    mode = mode or defaults.mode
    shards = defaults.shards
    if mode == "provisioned":
        shards = reader.integer("shards", defaults.shards, minimum=1, maximum=500)
    else:
        reader.reject("shards", "only with mode 'provisioned' (on-demand scales by itself)")
    reject_other_target(reader, KubernetesStream, AwsStream, "kubernetes")
    return AwsStream(retention_hours=retention, mode=mode, shards=shards)


def _read_kubernetes_stream(reader: ConfigReader) -> KubernetesStream:
    defaults = KubernetesStream()
    retention = _read_retention(reader, defaults.retention_hours, minimum=1)
    replicas = reader.integer("replicas", defaults.replicas, minimum=1, maximum=5)
    if replicas not in (1, 3, 5):
        reader.problem("replicas", replicas, "1, 3 or 5 (JetStream needs an odd quorum)")
        replicas = defaults.replicas
    storage = reader.integer("storageGb", defaults.storage_gb, minimum=1, maximum=65536)
    resized_from = reader.optional_integer("storageResizedFrom", minimum=1, maximum=65536)
    durability = reader.string(
        "durability",
        "always" if replicas >= 3 else "periodic",
        choices=("always", "periodic"),
    ) or ("always" if replicas >= 3 else "periodic")
    window = reader.integer(
        "duplicateWindowMinutes", defaults.duplicate_window_minutes, minimum=1, maximum=60
    )
    partitions = reader.integer(
        "partitions",
        default_partitions(replicas),
        minimum=MIN_PARTITIONS,
        maximum=MAX_PARTITIONS,
    )
    repartition_from = _read_repartition_from(reader, partitions)
    resources = _read_nats_resources(reader, defaults.resources)
    reject_other_target(reader, AwsStream, KubernetesStream, "aws")
    return KubernetesStream(
        retention_hours=retention,
        replicas=replicas,
        storage_gb=storage,
        storage_resized_from=resized_from,
        durability=durability,
        duplicate_window_minutes=window,
        resources=resources,
        partitions=partitions,
        partitions_chosen=reader.has("partitions"),
        repartition_from=repartition_from,
    )


def _read_repartition_from(reader: ConfigReader, partitions: int) -> int | None:
    """`repartitionFrom`: only beside a `partitions` it differs from."""
    if not reader.has("repartitionFrom"):
        return None
    value = reader.integer("repartitionFrom", 0, minimum=MIN_PARTITIONS, maximum=MAX_PARTITIONS)
    if not value:
        return None
    if not reader.has("partitions") or value == partitions:
        reader.problem(
            "repartitionFrom",
            value,
            "the stream's previous partition count, beside a different `partitions` (set both "
            "for the one update after the procedure in README 'Changing stream.partitions')",
        )
        return None
    return value


def _read_nats_resources(reader: ConfigReader, defaults: ComputeResources) -> ComputeResources:
    resources = read_resources(reader.object("resources"), defaults)
    raw_resources = reader.raw("resources")
    if isinstance(raw_resources, dict) and "requests" not in raw_resources:
        # Limits alone mean the same requests (a Guaranteed pod, as Kubernetes does too).
        resources = dataclasses.replace(
            resources,
            requests_cpu=resources.limits_cpu,
            requests_memory=resources.limits_memory,
        )
    # The NATS chart's production guidance: a Guaranteed pod, so the server is neither
    # throttled below what it was promised nor evicted first under node memory pressure.
    if (resources.requests_cpu, resources.requests_memory) != (
        resources.limits_cpu,
        resources.limits_memory,
    ):
        reader.problem(
            "resources",
            resources.to_kubernetes(),
            "requests equal to limits (cpu and memory) for the NATS servers",
        )
    return resources
