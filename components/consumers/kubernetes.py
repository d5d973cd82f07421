"""Consumers on Kubernetes: one Deployment per consumer, each its own durable JetStream consumer.

Why one Deployment per consumer (and per broadcast destination) rather than one process with
many consumers: a destination that is slow, failing or crashing can only exhaust its own
pod's CPU, memory and restarts; each gets its own NetworkPolicy (the broadcaster to the
internet, the loader to Postgres, the archiver to the object store) and its own resources.
The cost is one small pod per consumer, which is cheap next to that isolation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import kube
from components.archive import Archive
from components.consumers import (
    ARCHIVER_RUNTIME,
    HEALTH_PORT,
    LOADER_RUNTIME,
    ConsumerRuntime,
    broadcaster_runtime,
    destination_document,
)
from components.consumers.settings import Destination, PrivateNetwork, WarehouseSettings
from components.network import Grant, KubernetesNetworkContract, KubernetesPeer
from components.observability import MetricsTarget
from components.postgres import ClientDatabase, PostgresService
from components.stream import KubernetesStreamContract
from components.stream.kubernetes import memory_bytes
from services.consumers.archiver import contract as archiver
from services.consumers.broadcaster import contract as broadcaster
from services.consumers.loader import contract as loader_contract
from services.consumers.runner import contract as runner
from services.postgres.contract import PostgresAccess
from services.stream.address import dead_letter_url_of
from services.stream.contract import StreamAccess

DEFAULT_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "128Mi"},
    "limits": {"cpu": "1", "memory": "512Mi"},
}

CONSUMER_LABEL = "liftoff.dev/consumer"
# The share of a consumer's memory limit the stream messages it holds may take, over all its
# partitions (LIFTOFF_CONSUMER_BUFFER_BYTES, services/consumers/runner/budget.py); the rest is
# the interpreter, the sink's work on one batch and headroom. benchmarks/consumer_backlog.py,
# 200,000 events of 1.2 KB on 8 partitions: archiver 310 MiB peak, loader 186 MiB, in 512 MiB.
BUFFER_SHARE_OF_MEMORY = 0.25


def buffer_bytes(resources: Mapping[str, Any]) -> int:
    """The byte budget of a consumer process with these resources (its memory limit)."""
    return int(memory_bytes(resources["limits"]["memory"]) * BUFFER_SHARE_OF_MEMORY)


@dataclass(frozen=True)
class StreamConsumerArgs(kube.CapabilityArgs):
    runtime: ConsumerRuntime
    stream: KubernetesStreamContract
    environment: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """The whole environment, built by the consumer's contract (`services/consumers/*`)."""
    secret_files: Sequence[tuple[str, str, str]] = ()
    """(volume name, Secret name, mount directory): credentials reach the process only as
    read-only files, never through the environment."""
    resources: Mapping[str, Any] = field(default_factory=lambda: DEFAULT_RESOURCES)
    depends_on: Sequence[pulumi.Resource] = ()
    """Resources that must exist first (e.g. the job creating the consumer's database)."""
    granted: Sequence[pulumi.Resource] = ()
    """The access other capabilities granted its `consumer_peer`: its pods wait for it."""


def consumer_peer(runtime: ConsumerRuntime, stack: str) -> KubernetesPeer:
    """The consumer's pods, as other capabilities' grants name them."""
    return KubernetesPeer(runtime.name, pod_labels=kube.selector(runtime.name, stack))


class StreamConsumer(pulumi.ComponentResource):
    """One consumer Deployment: a single replica (its durable consumer is its checkpoint, and
    a single writer keeps archive windows simple), `Recreate` so two versions never run at
    once, probes on the health port, restricted security context, a PDB, and network access
    to NATS for reading and dead-lettering. Capabilities grant the rest through `peer`.
    """

    def __init__(
        self, name: str, args: StreamConsumerArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:consumers:StreamConsumer", name, None, opts)
        network = args.network
        component = args.runtime.name
        labels = kube.labels(component, args.context.stack, args.context.tags)
        selector = kube.selector(component, args.context.stack)
        self.peer = consumer_peer(args.runtime, args.context.stack)
        read = args.stream.grant_read(self.peer)
        child = pulumi.ResourceOptions(
            parent=self, depends_on=[network.default_deny, *args.stream.ready, *args.depends_on]
        )
        # The pods start once the stream exists and they may read it, with the rest of their
        # access.
        access = pulumi.ResourceOptions(depends_on=[*read.resources, *args.granted])
        pod_spec = _consumer_pod_spec(args)
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=network.metadata(component, labels),
            spec={
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "strategy": {"type": "Recreate"},
                # CONSUMER_LABEL: one selector for every consumer (the metrics PodMonitor).
                "template": {
                    "metadata": {"labels": {**labels, CONSUMER_LABEL: "true"}},
                    "spec": pod_spec,
                },
            },
            opts=pulumi.ResourceOptions.merge(child, access),
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=network.metadata(component, labels),
            # Consumers resume from their checkpoint, so a drain may move them.
            spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            opts=child,
        )
        self.register_outputs({"deployment": self.deployment.metadata.name})


def consumer_runtime(
    runtime: ConsumerRuntime, stream: KubernetesStreamContract
) -> runner.ConsumerRuntime[pulumi.Input[str]]:
    """What every consumer process is told (its contract's runtime group): the stream, its
    durable consumer, the dead letters on the stream's servers, its health port."""
    url = stream.connection.url
    return runner.ConsumerRuntime(
        stream=StreamAccess(url=url),
        consumer_name=runtime.name,
        dead_letter_url=url.apply(dead_letter_url_of),
        health_port=HEALTH_PORT,
        log_level="INFO",
        buffer_bytes=buffer_bytes(DEFAULT_RESOURCES),
    )


def _consumer_pod_spec(args: StreamConsumerArgs) -> dict[str, Any]:
    """One restricted container of the services image, probed on its health port, with the
    Secrets it reads mounted as files."""
    component = args.runtime.name
    env = kube.env(args.environment)
    container = {
        "name": component,
        "image": kube.image(args.context.services_image, args.context.image_registry),
        "imagePullPolicy": "IfNotPresent",
        "args": [args.runtime.command],
        "env": env,
        "ports": [{"name": "health", "containerPort": HEALTH_PORT}],
        "resources": dict(args.resources),
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "health"},
            "periodSeconds": 15,
            "timeoutSeconds": 3,
            "failureThreshold": 4,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "health"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
        },
        "volumeMounts": [
            {"name": volume, "mountPath": directory, "readOnly": True}
            for volume, _, directory in args.secret_files
        ],
    }
    pod_spec = kube.services_pod_spec(
        [container],
        volumes=[kube.secret_volume(volume, secret) for volume, secret, _ in args.secret_files],
    )
    # Room to finish (or abandon, unacknowledged) the in-flight batch on SIGTERM.
    pod_spec["terminationGracePeriodSeconds"] = 60
    return pod_spec


PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]


def allow_private_egress(
    name: str,
    network: KubernetesNetworkContract,
    peer: KubernetesPeer,
    networks: tuple[PrivateNetwork, ...],
    labels: Mapping[str, str],
    parent: pulumi.Resource,
) -> Grant:
    """Egress to the private ranges (and only their ports) a destination lists: an internal
    webhook inside the customer's network. One rule per range, so ports do not cross over."""
    rules = [
        {
            "to": [{"ipBlock": {"cidr": private.cidr}}],
            "ports": [{"protocol": "TCP", "port": port} for port in private.ports],
        }
        for private in networks
    ]
    return _allow_egress(name, network, peer, "private", rules, labels, parent)


def allow_internet_egress(
    name: str,
    network: KubernetesNetworkContract,
    peer: KubernetesPeer,
    labels: Mapping[str, str],
    parent: pulumi.Resource,
) -> Grant:
    """HTTPS out of the cluster for `peer` (third-party APIs; NetworkPolicy cannot name hosts).

    Private ranges are excluded so the grant does not open the way to the internal network.
    """
    https = {
        "to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}],
        "ports": [{"protocol": "TCP", "port": 443}],
    }
    return _allow_egress(name, network, peer, "internet", [https], labels, parent)


def _allow_egress(
    name: str,
    network: KubernetesNetworkContract,
    peer: KubernetesPeer,
    suffix: str,
    rules: list[dict[str, Any]],
    labels: Mapping[str, str],
    parent: pulumi.Resource,
) -> Grant:
    """One egress NetworkPolicy of `peer`'s pods (`<peer>-<suffix>`), a child of `parent`."""
    policy = k8s.networking.v1.NetworkPolicy(
        name,
        metadata=network.metadata(f"{peer.name}-{suffix}", labels),
        spec={
            "podSelector": {"matchLabels": dict(peer.pod_labels)},
            "policyTypes": ["Egress"],
            "egress": rules,
        },
        opts=pulumi.ResourceOptions(parent=parent),
    )
    return Grant(peer.name, (policy,))


SECRETS_DIR = "/etc/liftoff/destination"
POSTGRES_CREDENTIALS_DIR = "/etc/liftoff/postgres"
SECRETS_FILE = "destination-secrets.json"


def destination_secret_name(destination: Destination) -> str:
    """The Secret holding a destination's secrets (its broadcaster's; the replay pods' too)."""
    return f"{broadcaster_runtime(destination).name}-secrets"


@dataclass(frozen=True)
class KubernetesConsumersArgs(kube.CapabilityArgs):
    stream: KubernetesStreamContract
    postgres: PostgresService[KubernetesPeer]
    warehouse: WarehouseSettings
    destinations: tuple[Destination, ...]
    archive: Archive[KubernetesPeer] | None = None
    """Default: no archiver (no S3-compatible endpoint configured)."""


class KubernetesConsumers(pulumi.ComponentResource):
    """The archiver, the warehouse loader and one broadcaster per destination, each a
    `StreamConsumer` with only the network paths and Secrets it needs."""

    def __init__(
        self, name: str, args: KubernetesConsumersArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("liftoff:consumers:KubernetesConsumers", name, None, opts)
        self.warehouse: ClientDatabase | None = None
        """The warehouse database the loader writes; None without a warehouse."""
        child = pulumi.ResourceOptions(parent=self)
        self._args = args
        self.archiver: StreamConsumer | None = None
        if args.archive is not None:
            settings = args.archive.settings
            archive = args.archive.client(
                consumer_peer(ARCHIVER_RUNTIME, args.context.stack), write=True
            )
            self.archiver = self._consumer(
                f"{name}-archiver",
                ARCHIVER_RUNTIME,
                environment=archiver.PROCESS.environment(
                    archiver.ArchiverSettings(
                        runtime=consumer_runtime(ARCHIVER_RUNTIME, args.stream),
                        archiving=archiver.Archiving(archive=archive.access),
                        batch_max_events=settings.batch_max_events,
                        batch_max_seconds=settings.batch_max_seconds,
                    )
                ),
                secret_files=[archive.secret_file("archive-credentials")],
                granted=archive.ready,
                opts=child,
            )
        else:
            pulumi.log.warn(
                "liftoff:archive is not set: no archiver runs, and the warehouse reconciliation "
                "has nothing to repair from. Configure an S3-compatible endpoint to enable it.",
                self,
            )

        self.loader: StreamConsumer | None = None
        if args.warehouse.enabled:
            self.loader = self._declare_loader(name, child)
        self.broadcasters: dict[str, StreamConsumer] = {
            destination.name: self._declare_broadcaster(name, destination, child)
            for destination in args.destinations
        }
        # CONSUMER_LABEL: one selector for every consumer pod, and only they name their probe
        # port `health`.
        self.metrics = MetricsTarget(
            "consumers",
            {"app.kubernetes.io/instance": args.context.stack, CONSUMER_LABEL: "true"},
            "health",
            HEALTH_PORT,
        )
        self.register_outputs({})

    def _declare_loader(self, name: str, child: pulumi.ResourceOptions) -> StreamConsumer:
        """The warehouse loader, with a database and login role of its own."""
        args = self._args
        database = args.postgres.add_database(args.warehouse.database)
        self.warehouse = database
        connection = database.connection
        assert database.secret_name is not None
        connect = args.postgres.grant_connect(consumer_peer(LOADER_RUNTIME, args.context.stack))
        return self._consumer(
            f"{name}-loader",
            LOADER_RUNTIME,
            environment=loader_contract.PROCESS.environment(
                loader_contract.LoaderSettings(
                    runtime=consumer_runtime(LOADER_RUNTIME, args.stream),
                    warehouse=PostgresAccess(
                        host=connection.dns_name,
                        port=connection.port.apply(str),
                        database=connection.database,
                        user=connection.username,
                        password_file=f"{POSTGRES_CREDENTIALS_DIR}/password",
                        # In-cluster traffic, limited by NetworkPolicies; the server has no TLS.
                        sslmode="prefer",
                    ),
                    batch_max_events=args.warehouse.batch_max_events,
                    batch_max_seconds=args.warehouse.batch_max_seconds,
                    columns=args.warehouse.columns or None,
                )
            ),
            secret_files=[("postgres-credentials", database.secret_name, POSTGRES_CREDENTIALS_DIR)],
            depends_on=[database.ready],
            granted=connect.resources,
            opts=child,
        )

    def _declare_broadcaster(
        self, name: str, destination: Destination, child: pulumi.ResourceOptions
    ) -> StreamConsumer:
        """One destination's broadcaster: its secrets in a Secret, HTTPS out (and the private
        ranges the destination lists)."""
        args = self._args
        runtime = broadcaster_runtime(destination)
        secret_name = destination_secret_name(destination)
        labels = kube.labels(runtime.name, args.context.stack, args.context.tags)
        k8s.core.v1.Secret(
            f"{name}-{runtime.name}-secrets",
            metadata=args.network.metadata(secret_name, labels),
            type="Opaque",
            string_data={
                SECRETS_FILE: pulumi.Output.secret(json.dumps(destination.secrets, sort_keys=True))
            },
            opts=child,
        )
        # HTTPS out (and the private ranges it lists) before its pods start.
        peer = consumer_peer(runtime, args.context.stack)
        egress = [
            allow_internet_egress(
                f"{name}-{runtime.name}-internet", args.network, peer, labels, self
            )
        ]
        if destination.private_networks:
            egress.append(
                allow_private_egress(
                    f"{name}-{runtime.name}-private",
                    args.network,
                    peer,
                    destination.private_networks,
                    labels,
                    self,
                )
            )
        consumer = self._consumer(
            f"{name}-{runtime.name}",
            runtime,
            environment=broadcaster.PROCESS.environment(
                broadcaster.BroadcasterSettings(
                    runtime=consumer_runtime(runtime, args.stream),
                    broadcast=broadcaster.Broadcast(
                        destination=destination_document(destination),
                        secrets_file=f"{SECRETS_DIR}/{SECRETS_FILE}",
                    ),
                )
            ),
            secret_files=[("destination-secrets", secret_name, SECRETS_DIR)],
            granted=[resource for grant in egress for resource in grant.resources],
            opts=child,
        )
        return consumer

    def _consumer(
        self,
        name: str,
        runtime: ConsumerRuntime,
        *,
        environment: Mapping[str, pulumi.Input[str]],
        opts: pulumi.ResourceOptions,
        secret_files: Sequence[tuple[str, str, str]] = (),
        depends_on: Sequence[pulumi.Resource] = (),
        granted: Sequence[pulumi.Resource] = (),
    ) -> StreamConsumer:
        args = self._args
        return StreamConsumer(
            name,
            StreamConsumerArgs(
                runtime=runtime,
                stream=args.stream,
                network=args.network,
                context=args.context,
                environment=environment,
                secret_files=secret_files,
                depends_on=depends_on,
                granted=granted,
            ),
            opts=opts,
        )
