"""The Kubernetes target: one namespace per stack on any cluster, images through one registry."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.airflow.kubernetes import KubernetesAirflow, KubernetesAirflowArgs
from components.airflow.settings import KubernetesAirflowSettings
from components.archive import KubernetesArchiveContract
from components.archive.kubernetes import ExternalArchive, ExternalArchiveArgs
from components.config import PlatformConfig
from components.consumers import KubernetesConsumersContract, stream_consumers
from components.consumers.kubernetes import KubernetesConsumers, KubernetesConsumersArgs
from components.deployed import STORAGE_OUTPUT
from components.ingest import KubernetesIngestContract
from components.ingest.kubernetes import KubernetesCollector, KubernetesCollectorArgs
from components.kube import StackContext
from components.network import KubernetesNetworkContract, KubernetesPeer
from components.network.kubernetes import KubernetesNetwork, KubernetesNetworkArgs
from components.network.settings import KubernetesSettings
from components.platform import Assembly, PlatformParts
from components.postgres import KubernetesPostgresContract
from components.postgres.kubernetes import KubernetesPostgres, KubernetesPostgresArgs
from components.stream import KubernetesStreamContract
from components.stream.kubernetes import NatsJetStream, NatsJetStreamArgs


@dataclass
class KubernetesParts(PlatformParts[KubernetesPeer]):
    """The Kubernetes capabilities, typed with their Kubernetes contracts."""

    network: KubernetesNetworkContract
    postgres: KubernetesPostgresContract
    stream: KubernetesStreamContract
    ingest: KubernetesIngestContract
    archive: KubernetesArchiveContract | None
    consumers: KubernetesConsumersContract


@dataclass(frozen=True)
class KubernetesAssembly(Assembly):
    """What every Kubernetes capability of the stack shares besides: the target's settings and
    the stack context (stack, tags, image registry, services image, storage class)."""

    settings: KubernetesSettings
    context: StackContext


def build(parent: pulumi.Resource, name: str, config: PlatformConfig) -> KubernetesParts:
    shared = _assembly(parent, name, config)
    parts = _workloads(shared, *_stores(shared))
    if config.airflow.kubernetes is not None and config.airflow.kubernetes.enabled:
        parts.airflow = _airflow(shared, parts, config.airflow.kubernetes)
    if config.observability.enabled:
        _observe(shared, parts)
    parts.outputs["namespace"] = parts.network.namespace
    # Read back on the next update: a volume size cannot change through the StatefulSet.
    assert config.postgres.kubernetes is not None and config.stream.kubernetes is not None
    parts.outputs[STORAGE_OUTPUT] = {
        "postgres": config.postgres.kubernetes.storage_gb,
        "stream": config.stream.kubernetes.storage_gb,
    }
    archive = config.archive.kubernetes
    if archive is not None:
        parts.outputs["archive"] = {"bucket": archive.bucket_name, "endpoint": archive.endpoint}
    return parts


def _assembly(parent: pulumi.Resource, name: str, config: PlatformConfig) -> KubernetesAssembly:
    """The provider (the stack's kubeconfig and context) and the stack context."""
    settings = config.network.kubernetes
    assert settings is not None
    provider = k8s.Provider(
        f"{name}-kubernetes",
        kubeconfig=pulumi.Output.secret(settings.kubeconfig) if settings.kubeconfig else None,
        context=settings.context,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    context = StackContext(
        stack=config.stack,
        tags=config.tags,
        image_registry=settings.image_registry,
        services_image=settings.services_image,
        storage_class=settings.storage_class,
    )
    child = pulumi.ResourceOptions(parent=parent, providers={"kubernetes": provider})
    return KubernetesAssembly(name, config, parent, child, settings, context)


def _stores(
    shared: KubernetesAssembly,
) -> tuple[KubernetesNetwork, KubernetesPostgres, NatsJetStream, ExternalArchive | None]:
    """What holds the data, first: the namespace, Postgres (with its backups into the
    archive), the stream and the archive."""
    config, name, child, context = shared.config, shared.name, shared.child, shared.context
    postgres_settings = config.postgres.kubernetes
    assert postgres_settings is not None and config.stream.kubernetes is not None
    network = KubernetesNetwork(
        f"{name}-network",
        KubernetesNetworkArgs(
            settings=shared.settings,
            context=context,
            retain_namespace=config.deletion_protection or postgres_settings.deletion_protection,
        ),
        opts=child,
    )
    postgres = KubernetesPostgres(
        f"{name}-postgres",
        KubernetesPostgresArgs(settings=postgres_settings, network=network, context=context),
        opts=child,
    )
    stream = NatsJetStream(
        f"{name}-stream",
        NatsJetStreamArgs(
            settings=config.stream.kubernetes,
            network=network,
            context=context,
            chart_source=config.charts.get("nats"),
            metrics_exporter=config.observability.enabled,
            consumers=stream_consumers(
                archive=config.archive.kubernetes is not None,
                warehouse=config.warehouse.enabled,
                destinations=config.destinations,
            ),
        ),
        opts=child,
    )
    return network, postgres, stream, _archive(shared, network, postgres)


def _archive(
    shared: KubernetesAssembly, network: KubernetesNetwork, postgres: KubernetesPostgres
) -> ExternalArchive | None:
    """The customer's S3-compatible archive, and Postgres's backups into it; None without one."""
    settings = shared.config.archive.kubernetes
    if settings is None:
        pulumi.log.warn(
            "liftoff:archive is not set: Postgres has no scheduled backups on this stack "
            "(they are written to the archive).",
            shared.parent,
        )
        return None
    archive = ExternalArchive(
        f"{shared.name}-archive",
        ExternalArchiveArgs(settings=settings, network=network, context=shared.context),
        opts=shared.child,
    )
    postgres.add_backups(archive)
    return archive


def _workloads(
    shared: KubernetesAssembly,
    network: KubernetesNetwork,
    postgres: KubernetesPostgres,
    stream: NatsJetStream,
    archive: ExternalArchive | None,
) -> KubernetesParts:
    """The processes on the stores: the collector and the consumers."""
    config, name, child, context = shared.config, shared.name, shared.child, shared.context
    assert config.ingest.kubernetes is not None
    ingest = KubernetesCollector(
        f"{name}-ingest",
        KubernetesCollectorArgs(
            settings=config.ingest.kubernetes,
            sources=config.sources,
            stream=stream,
            network=network,
            context=context,
        ),
        opts=child,
    )
    consumers = KubernetesConsumers(
        f"{name}-consumers",
        KubernetesConsumersArgs(
            stream=stream,
            network=network,
            postgres=postgres,
            warehouse=config.warehouse,
            destinations=config.destinations,
            context=context,
            archive=archive,
        ),
        opts=child,
    )
    return KubernetesParts(network, postgres, stream, ingest, archive, consumers)


def _airflow(
    shared: KubernetesAssembly, parts: KubernetesParts, settings: KubernetesAirflowSettings
) -> KubernetesAirflow:
    return KubernetesAirflow(
        f"{shared.name}-airflow",
        KubernetesAirflowArgs(
            settings=settings,
            network=parts.network,
            postgres=parts.postgres,
            warehouse=parts.consumers.warehouse,
            context=shared.context,
            chart_source=shared.config.charts.get("airflow"),
            archive=parts.archive,
            warehouse_columns=shared.config.warehouse.columns or None,
            stream=parts.stream,
            suppression_key_secret=parts.ingest.suppression_key_secret_name,
            destinations=shared.config.destinations,
        ),
        opts=shared.child,
    )


def _observe(shared: KubernetesAssembly, parts: KubernetesParts) -> None:
    from components.observability.kubernetes import (
        KubernetesObservability,
        KubernetesObservabilityArgs,
    )

    settings = shared.config.observability.kubernetes
    assert settings is not None
    parts.observability = KubernetesObservability(
        f"{shared.name}-observability",
        KubernetesObservabilityArgs(
            settings=settings,
            network=parts.network,
            context=shared.context,
            ingest=parts.ingest,
            consumers=parts.consumers,
            stream=parts.stream,
            postgres=parts.postgres,
        ),
        opts=shared.child,
    )
