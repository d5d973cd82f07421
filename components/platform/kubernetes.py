"""The Kubernetes target: one namespace per stack on any cluster, images through one registry."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.airflow.kubernetes import KubernetesAirflow, KubernetesAirflowArgs
from components.archive import KubernetesArchiveContract
from components.archive.kubernetes import ExternalArchive, ExternalArchiveArgs
from components.config import PlatformConfig
from components.consumers import KubernetesConsumersContract
from components.consumers.kubernetes import KubernetesConsumers, KubernetesConsumersArgs
from components.ingest import KubernetesIngestContract
from components.ingest.kubernetes import KubernetesCollector, KubernetesCollectorArgs
from components.kube import StackContext
from components.network import KubernetesNetworkContract, KubernetesPeer
from components.network.kubernetes import KubernetesNetwork, KubernetesNetworkArgs
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


def build(parent: pulumi.Resource, name: str, config: PlatformConfig) -> KubernetesParts:
    settings = config.network.kubernetes
    assert settings is not None
    provider = k8s.Provider(
        f"{name}-kubernetes",
        kubeconfig=pulumi.Output.secret(settings.kubeconfig) if settings.kubeconfig else None,
        context=settings.context,
        opts=pulumi.ResourceOptions(parent=parent),
    )
    shared = Assembly(
        name,
        config,
        parent,
        pulumi.ResourceOptions(parent=parent, providers={"kubernetes": provider}),
    )
    context = _context(config)
    parts = _data_path(shared)
    if config.airflow.kubernetes is not None and config.airflow.kubernetes.enabled:
        parts.airflow = KubernetesAirflow(
            f"{name}-airflow",
            KubernetesAirflowArgs(
                settings=config.airflow.kubernetes,
                network=parts.network,
                postgres=parts.postgres,
                warehouse=parts.consumers.warehouse,
                context=context,
                chart_source=config.charts.get("airflow"),
                archive=parts.archive,
            ),
            opts=shared.child,
        )
    if config.observability.enabled:
        _observe(shared, parts)
    parts.outputs["namespace"] = parts.network.namespace
    archive = config.archive.kubernetes
    if archive is not None:
        parts.outputs["archive"] = {"bucket": archive.bucket_name, "endpoint": archive.endpoint}
    return parts


def _context(config: PlatformConfig) -> StackContext:
    settings = config.network.kubernetes
    assert settings is not None
    return StackContext(
        stack=config.stack,
        tags=config.tags,
        image_registry=settings.image_registry,
        services_image=settings.services_image,
        storage_class=settings.storage_class,
    )


def _data_path(shared: Assembly) -> KubernetesParts:
    """Network, Postgres (with its backups), stream, collector, archive and consumers."""
    config, name, child = shared.config, shared.name, shared.child
    settings = config.network.kubernetes
    assert settings is not None
    context = _context(config)
    assert config.ingest.kubernetes is not None
    assert config.stream.kubernetes is not None
    postgres_settings = config.postgres.kubernetes
    assert postgres_settings is not None
    network = KubernetesNetwork(
        f"{name}-network",
        KubernetesNetworkArgs(
            settings=settings,
            context=context,
            retain_namespace=config.deletion_protection or postgres_settings.deletion_protection,
        ),
        opts=child,
    )
    postgres = KubernetesPostgres(
        f"{name}-postgres",
        KubernetesPostgresArgs(
            settings=postgres_settings,
            network=network,
            context=context,
        ),
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
        ),
        opts=child,
    )
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
    archive = _archive(shared, network, postgres)
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


def _archive(
    shared: Assembly, network: KubernetesNetworkContract, postgres: KubernetesPostgresContract
) -> KubernetesArchiveContract | None:
    """The customer's S3-compatible archive, and Postgres's backups into it; None without one."""
    config = shared.config
    context = _context(config)
    if config.archive.kubernetes is None:
        pulumi.log.warn(
            "liftoff:archive is not set: Postgres has no scheduled backups on this stack "
            "(they are written to the archive).",
            shared.parent,
        )
        return None
    archive = ExternalArchive(
        f"{shared.name}-archive",
        ExternalArchiveArgs(settings=config.archive.kubernetes, network=network, context=context),
        opts=shared.child,
    )
    postgres.add_backups(archive)
    return archive


def _observe(shared: Assembly, parts: KubernetesParts) -> None:
    from components.observability.kubernetes import (
        KubernetesObservability,
        KubernetesObservabilityArgs,
    )

    config = shared.config
    assert config.observability.kubernetes is not None
    parts.observability = KubernetesObservability(
        f"{shared.name}-observability",
        KubernetesObservabilityArgs(
            settings=config.observability.kubernetes,
            network=parts.network,
            context=_context(config),
            ingest=parts.ingest,
            consumers=parts.consumers,
            stream=parts.stream,
            postgres=parts.postgres,
        ),
        opts=shared.child,
    )
