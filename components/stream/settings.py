"""`liftoff:stream`: the stream's settings on both targets, and how they are read from the stack."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from components.validation import ComputeResources, ConfigReader, Target, read_resources


@dataclass(frozen=True)
class StreamSettings:
    """`liftoff:stream` — the durable event stream (Kinesis / NATS JetStream)."""

    retention_hours: int = 168
    """Default: 168 (7 days). AWS 24..8760; Kubernetes 1..8760."""
    mode: str = "on-demand"
    """Default: `on-demand`. AWS only: `on-demand` or `provisioned`."""
    shards: int = 2
    """Default: 2. AWS only, with mode `provisioned` (1..500)."""
    replicas: int = 3
    """Default: 3. Kubernetes only: NATS servers and stream replicas (1, 3 or 5)."""
    storage_gb: int = 10
    """Default: 10. Kubernetes only: JetStream file storage per server (PVC size)."""
    durability: str = "always"
    """Kubernetes only: `always` (fsync before every acknowledgement) or `periodic`
    (the NATS default, fsync every 2 minutes). Default: `always` with 3 or more replicas,
    `periodic` below."""
    duplicate_window_minutes: int = 2
    """Default: 2. Kubernetes only: how long JetStream remembers messageIds to drop repeats."""
    resources: ComputeResources = field(
        default_factory=lambda: ComputeResources("1", "2Gi", "1", "2Gi")
    )
    """Default: 1 CPU / 2Gi, requests equal to limits. Kubernetes only: each NATS server
    (GOMEMLIMIT is set to 80% of the memory limit)."""
    partitions: int = 1
    """Kubernetes only: JetStream streams the events are spread over by user (1..64; each
    partition is its own stream with its own fsync, so durable throughput grows with it).
    Default: `PRODUCTION_PARTITIONS` with 3 or more replicas, 1 below (dev). Fixed once the
    stream exists (ensure-stream refuses a change; see the README)."""


PRODUCTION_PARTITIONS = 8
"""The partition count where the collector's durable throughput stops growing on a 2-core
node (benchmarks/collector.py's partition curve; README, "Benchmarks")."""


MAX_PARTITIONS = 64


def read_stream(reader: ConfigReader, target: Target | None) -> StreamSettings:
    defaults = StreamSettings()
    minimum_hours = 24 if target == "aws" else 1
    retention = reader.integer(
        "retentionHours", defaults.retention_hours, minimum=minimum_hours, maximum=8760
    )
    mode, shards = defaults.mode, defaults.shards
    replicas, storage, durability, window = (
        defaults.replicas,
        defaults.storage_gb,
        defaults.durability,
        defaults.duplicate_window_minutes,
    )
    partitions = defaults.partitions
    resources = defaults.resources
    kubernetes_only = (
        "replicas",
        "storageGb",
        "durability",
        "duplicateWindowMinutes",
        "resources",
        "partitions",
    )
    aws_only = ("mode", "shards")
    if target == "aws":
        mode = reader.string("mode", defaults.mode, choices=("on-demand", "provisioned"))
        mode = mode or defaults.mode
        if mode == "provisioned":
            shards = reader.integer("shards", defaults.shards, minimum=1, maximum=500)
        else:
            reader.reject("shards", "only with mode 'provisioned' (on-demand scales by itself)")
        for name in kubernetes_only:
            reader.reject(name, "only with target 'kubernetes'")
    elif target == "kubernetes":
        replicas = reader.integer("replicas", defaults.replicas, minimum=1, maximum=5)
        if replicas not in (1, 3, 5):
            reader.problem("replicas", replicas, "1, 3 or 5 (JetStream needs an odd quorum)")
            replicas = defaults.replicas
        storage = reader.integer("storageGb", defaults.storage_gb, minimum=1, maximum=65536)
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
            PRODUCTION_PARTITIONS if replicas >= 3 else 1,
            minimum=1,
            maximum=MAX_PARTITIONS,
        )
        resources = read_resources(reader.object("resources"), defaults.resources)
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
        for name in aws_only:
            reader.reject(name, "only with target 'aws'")
    reader.finish()
    return StreamSettings(
        retention_hours=retention,
        mode=mode,
        shards=shards,
        replicas=replicas,
        storage_gb=storage,
        durability=durability,
        duplicate_window_minutes=window,
        resources=resources,
        partitions=partitions,
    )
