"""The stream on Kubernetes: NATS JetStream from the official chart, on PersistentVolumes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import kube
from components.charts import ChartSource, deep_merge, load_chart_pin
from components.deployed import check_storage_size, deployed_storage_gb, own_stack
from components.network import Grant, KubernetesPeer
from components.observability import MetricsTarget
from components.stream import STREAM_NAME, StreamConnection
from components.stream.partitions import deployed_partitions, keep_note, partitions_to_declare
from components.stream.settings import KubernetesStream
from services.stream.address import jetstream_url
from services.stream.contract import (
    ENSURE_STREAM,
    EXIT_REFUSED,
    EnsureStreamSettings,
    StreamAccess,
)

RELEASE = "nats"
NATS_EXPORTER_PORT = 7777  # the chart's promExporter port (container port `prom-metrics`)
CLIENT_PORT = 4222
ROUTE_PORT = 6222
# UID for the NATS server and reloader: any non-root UID works, the server writes only to its
# volume (group-owned through fsGroup) and the shared pid directory.
NATS_UID = 1000
# Labels the chart puts on the NATS pods (its selector labels for release `nats`).
NATS_POD_SELECTOR = {
    "app.kubernetes.io/name": "nats",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "nats",
}
# Share of each server's JetStream volume the EVENTS streams may fill together (split evenly
# over the partitions; with R3 every server holds a replica of each). Below FILE_STORE_SHARE:
# the rest is for the DEADLETTER stream, consumer state and raft logs. A full stream refuses
# new events (discard new): the collector answers 503 and clients retry; acknowledged events
# are never dropped to make room.
EVENTS_SHARE_OF_STORAGE = 0.75
# The DEADLETTER stream's byte bound (quarantined and parked events), out of the same volume;
# at it the oldest are dropped (discard old), so neither the collector's quarantine nor a
# consumer parking an event is ever refused for room. 0.75 + 0.10 leaves 5 % of the file store
# (FILE_STORE_SHARE) to consumer state and raft logs.
DEAD_LETTER_SHARE_OF_STORAGE = 0.10
# Sidecars get requests equal to limits too (Guaranteed QoS for the whole pod, as the chart's
# production guidance asks of the server).
RELOADER_RESOURCES = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "50m", "memory": "64Mi"},
}
# The Go runtime's soft memory limit as a share of the container's memory limit (the chart's
# guidance: ~80%), so the server collects garbage before the kernel OOM-kills it.
GOMEMLIMIT_SHARE = 0.8
# JetStream's file store limit as a share of the PVC: the filesystem, its metadata and the
# store's own index files need headroom, and a full volume stops the server outright.
FILE_STORE_SHARE = 0.9
_BINARY_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL_UNITS = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def memory_bytes(quantity: str) -> int:
    """Bytes of a Kubernetes memory quantity (`2Gi`, `512Mi`, `1G`, `1073741824`)."""
    for units in (_BINARY_UNITS, _DECIMAL_UNITS):
        for suffix, factor in units.items():
            if quantity.endswith(suffix):
                return int(float(quantity[: -len(suffix)]) * factor)
    return int(float(quantity))


def gomemlimit(memory_limit: str) -> str:
    """GOMEMLIMIT for a container memory limit, in the Go runtime's units (MiB)."""
    return f"{int(memory_bytes(memory_limit) * GOMEMLIMIT_SHARE) // 2**20}MiB"


def max_file_store(storage_gb: int) -> str:
    """JetStream `max_file_store` for a PVC of `storage_gb` GiB (NATS size units)."""
    return f"{int(storage_gb * 1024 * FILE_STORE_SHARE)}Mi"


@dataclass(frozen=True)
class NatsJetStreamArgs(kube.CapabilityArgs):
    settings: KubernetesStream
    chart_source: ChartSource | None = None
    """Default: the pinned upstream repository (`charts/nats.yaml`)."""
    metrics_exporter: bool = False
    """Default: false. The chart's Prometheus exporter sidecar (liftoff:observability)."""
    consumers: tuple[str, ...] = ()
    """The durable consumers the stack runs (`components.consumers.stream_consumers`): the
    setup Job creates the missing ones and deletes liftoff's others, e.g. a removed
    destination's. Default: none named, none created or deleted."""


def events_max_bytes(settings: KubernetesStream) -> int:
    """``max_bytes`` of each partition's EVENTS stream: EVENTS_SHARE_OF_STORAGE of the volume,
    split evenly over the partitions."""
    return int(settings.storage_gb * 2**30 * EVENTS_SHARE_OF_STORAGE) // settings.partitions


def required_storage_gb(
    events_per_second: float, mean_event_bytes: int, retention_hours: int
) -> int:
    """The smallest `storageGb` whose EVENTS share holds `retention_hours` of events at
    `events_per_second` (the README's sizing formula; every server holds a full copy)."""
    retained = events_per_second * mean_event_bytes * retention_hours * 3600
    return math.ceil(retained / 2**30 / EVENTS_SHARE_OF_STORAGE)


def dead_letter_max_bytes(settings: KubernetesStream) -> int:
    """``max_bytes`` of the DEADLETTER stream: DEAD_LETTER_SHARE_OF_STORAGE of the volume."""
    return int(settings.storage_gb * 2**30 * DEAD_LETTER_SHARE_OF_STORAGE)


def _checked_partitions(
    deployed: int | None, settings: KubernetesStream, parent: pulumi.Resource
) -> int:
    note = keep_note(deployed, settings)
    if note is not None:
        pulumi.log.warn(note, parent)
    return partitions_to_declare(deployed, settings)


def _setup_job_spec(
    args: NatsJetStreamArgs, partitions: int, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The spec of the Job running `ensure-stream` with the stream's settings."""
    settings = dataclasses.replace(args.settings, partitions=partitions)
    host = args.network.service_host(RELEASE)
    stream_env = ENSURE_STREAM.environment(
        EnsureStreamSettings(
            stream=StreamAccess(
                url=jetstream_url(f"{host}:{CLIENT_PORT}", STREAM_NAME, partitions)
            ),
            retention_hours=settings.retention_hours,
            replicas=settings.replicas,
            duplicate_window_seconds=settings.duplicate_window_minutes * 60,
            max_bytes=events_max_bytes(settings),
            dead_letter_max_bytes=dead_letter_max_bytes(settings),
            consumers=args.consumers or None,
        )
    )
    container = {
        "name": "ensure-stream",
        "image": kube.image(args.context.services_image, args.context.image_registry),
        "imagePullPolicy": "IfNotPresent",
        "args": ["ensure-stream"],
        "env": kube.env(stream_env),
    }
    spec = kube.setup_job_spec(labels, container)
    # A refusal (another partition count than the live streams have) fails the Job at once:
    # retrying cannot help, and the rollouts waiting on the Job would wait its whole deadline.
    # podFailurePolicy needs pods that are not restarted in place.
    spec["template"]["spec"]["restartPolicy"] = "Never"
    spec["podFailurePolicy"] = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": "ensure-stream",
                    "operator": "In",
                    "values": [EXIT_REFUSED],
                },
            }
        ]
    }
    return spec


def _jetstream_config(args: NatsJetStreamArgs) -> dict[str, Any]:
    """JetStream on a file store (a PVC per server), fsynced per write when durability asks."""
    settings = args.settings
    file_store: dict[str, Any] = {
        "enabled": True,
        "dir": "/data",
        "pvc": {"enabled": True, "size": f"{settings.storage_gb}Gi"},
        # Without it the chart sets max_file_store to the whole PVC size.
        "maxSize": max_file_store(settings.storage_gb),
    }
    if args.context.storage_class:
        file_store["pvc"]["storageClassName"] = args.context.storage_class
    jetstream: dict[str, Any] = {"enabled": True, "fileStore": file_store}
    if settings.durability == "always":
        # Acknowledge a write only after it is fsynced (the default syncs every 2 minutes, and
        # Jepsen's 2025 analysis lost acknowledged writes with it on power failure).
        jetstream["merge"] = {"sync_interval": "always"}
    return jetstream


def nats_values(args: NatsJetStreamArgs) -> dict[str, Any]:
    """Values for the official NATS chart, built from the stack's settings."""
    pin = load_chart_pin("nats")
    settings = args.settings
    registry = args.context.image_registry
    values = {
        "global": {"labels": dict(sorted(args.context.tags.items()))},
        "config": {
            "cluster": {"enabled": settings.replicas > 1, "replicas": settings.replicas},
            "jetstream": _jetstream_config(args),
        },
        "container": {
            "image": {"fullImageName": kube.image(pin.images["nats"], registry)},
            "env": {"GOMEMLIMIT": gomemlimit(settings.resources.limits_memory)},
            **_restricted_container(settings.resources.to_kubernetes()),
        },
        "reloader": {
            "image": {"fullImageName": kube.image(pin.images["reloader"], registry)},
            **_restricted_container(RELOADER_RESOURCES),
        },
        "podTemplate": _restricted_pod(),
        # Off in charts/nats.yaml; restricted all the same should someone turn it on.
        "natsBox": {
            "container": _restricted_container(RELOADER_RESOURCES),
            "podTemplate": _restricted_pod(),
        },
        # JetStream data outlives the StatefulSet, like Postgres's.
        "statefulSet": {
            "merge": {
                "spec": {
                    "persistentVolumeClaimRetentionPolicy": {
                        "whenDeleted": "Retain",
                        "whenScaled": "Retain",
                    }
                }
            }
        },
    }
    if args.metrics_exporter:
        values["promExporter"] = {
            "enabled": True,
            "port": NATS_EXPORTER_PORT,
            "image": {"fullImageName": kube.image(pin.images["promExporter"], registry)},
            **_restricted_container(RELOADER_RESOURCES),
        }
    return deep_merge(pin.values, values)


def _restricted_container(resources: dict[str, Any]) -> dict[str, Any]:
    """What the chart merges into a container: the restricted profile, these resources."""
    return {"merge": {"securityContext": kube.container_security_context(), "resources": resources}}


def _restricted_pod() -> dict[str, Any]:
    """What the chart merges into a pod: no API token, the restricted profile as NATS_UID."""
    return {
        "merge": {
            "spec": {
                "automountServiceAccountToken": False,
                "securityContext": kube.pod_security_context(NATS_UID),
            }
        }
    }


class NatsJetStream(pulumi.ComponentResource):
    """NATS with JetStream (file storage on PVCs, cluster of `replicas`) and the EVENTS stream.

    The stream's subjects, retention, replicas and duplicate window, and the DEADLETTER
    stream's byte bound, are applied by a Job that runs `python -m services ensure-stream`
    from the services image: idempotent, so it is declared again (under a new name) whenever
    those settings change.
    """

    def __init__(
        self, name: str, args: NatsJetStreamArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:stream:NatsJetStream", name, None, opts)
        network = args.network
        settings = args.settings
        self._name = name
        self._network = network
        self.labels = kube.labels("nats", args.context.stack, args.context.tags)
        pin = load_chart_pin("nats")
        self.values = nats_values(args)
        # What the stack's previous update deployed: its volume size and partition count.
        deployed = own_stack(name, self)

        def checked(deployed: int | None) -> dict[str, Any]:
            # The size is in the chart's volumeClaimTemplates: refused before the chart (and
            # the max_file_store and max_bytes computed from it) changes.
            resized_from = settings.storage_resized_from
            check_storage_size("stream", deployed, settings.storage_gb, resized_from)
            return self.values

        self.chart = k8s.helm.v4.Chart(
            f"{name}-chart",
            name=RELEASE,
            namespace=network.namespace_name,
            values=deployed_storage_gb(deployed, "stream").apply(checked),
            **pin.source_args(args.chart_source),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[network.default_deny]),
        )
        if settings.replicas > 1:
            # Cluster routes between the NATS servers.
            network.allow(
                f"{name}-routes",
                source=NATS_POD_SELECTOR,
                destination=NATS_POD_SELECTOR,
                port=ROUTE_PORT,
                labels=self.labels,
                parent=self,
            )
        host = network.service_host(RELEASE)
        self.servers_url = f"nats://{host}:{CLIENT_PORT}"
        # The count this stack's streams have (a new stack: the configured one); a change is
        # refused here, failing the preview, instead of the setup Job failing at `up`.
        partitions = deployed_partitions(deployed).apply(
            lambda deployed: _checked_partitions(deployed, settings, self)
        )
        # Every client (collector, consumers, setup Job) reads the partition count from it.
        url = partitions.apply(
            lambda count: jetstream_url(f"{host}:{CLIENT_PORT}", STREAM_NAME, count)
        )
        self.connection = StreamConnection(url=url, name=pulumi.Output.from_input(STREAM_NAME))
        self.setup_job = self._stream_setup_job(name, args, partitions)
        self.ready: tuple[pulumi.Resource, ...] = (self.setup_job,)
        self.metrics = MetricsTarget("nats", NATS_POD_SELECTOR, "prom-metrics", NATS_EXPORTER_PORT)
        self.register_outputs({"url": url, "setupJob": self.setup_job.metadata.name})

    def _stream_setup_job(
        self, name: str, args: NatsJetStreamArgs, partitions: pulumi.Output[int]
    ) -> k8s.batch.v1.Job:
        component = "stream-setup"
        selector = kube.selector(component, args.context.stack)
        publish = self.grant_write(KubernetesPeer(component, pod_labels=selector))
        labels = kube.labels(component, args.context.stack, args.context.tags)
        spec = partitions.apply(lambda count: _setup_job_spec(args, count, labels))
        # Jobs are immutable: any change of the spec (stream settings, consumers, image,
        # resources) is a new Job, under a name derived from the spec, which runs again.
        digest = spec.apply(
            lambda value: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
        )
        metadata = self._network.metadata("nats-stream-setup", labels)
        metadata["name"] = digest.apply(lambda value: f"nats-stream-setup-{value[:8]}")
        return k8s.batch.v1.Job(
            f"{name}-setup",
            metadata=metadata,
            spec=spec,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.chart, *publish.resources]),
        )

    def _allow_clients(
        self, peer: KubernetesPeer, role: str
    ) -> tuple[k8s.networking.v1.NetworkPolicy, ...]:
        if not peer.pod_labels:
            raise ValueError(f"{role}({peer.name!r}) on Kubernetes needs the peer's pod labels")
        return self._network.allow(
            f"{self._name}-{role.removeprefix('grant_')}-{peer.name}",
            source=peer.pod_labels,
            destination=NATS_POD_SELECTOR,
            port=CLIENT_PORT,
            labels=self.labels,
            parent=self,
        )

    def grant_write(self, peer: KubernetesPeer) -> Grant:
        """Admit `peer`'s pods to publish (network access to the NATS client port)."""
        return Grant(peer.name, self._allow_clients(peer, "grant_write"))

    def grant_read(self, peer: KubernetesPeer) -> Grant:
        """Admit `peer`'s pods to consume (network access to the NATS client port)."""
        return Grant(peer.name, self._allow_clients(peer, "grant_read"))
