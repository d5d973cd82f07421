"""The Kubernetes target: one namespace per stack on any cluster, images through one registry."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from components.airflow.kubernetes import KubernetesAirflow, KubernetesAirflowArgs
from components.archive.kubernetes import ExternalArchive, ExternalArchiveArgs
from components.config import PlatformConfig
from components.consumers.kubernetes import KubernetesConsumers, KubernetesConsumersArgs
from components.ingest.kubernetes import KubernetesCollector, KubernetesCollectorArgs
from components.kube import StackContext
from components.network.kubernetes import KubernetesNetwork, KubernetesNetworkArgs
from components.platform import Assembly, PlatformParts
from components.postgres.kubernetes import KubernetesPostgres, KubernetesPostgresArgs
from components.stream.kubernetes import NatsJetStream, NatsJetStreamArgs


def build(parent: pulumi.Resource, name: str, config: PlatformConfig) -> PlatformParts:
    settings = config.kubernetes
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
    if config.airflow.enabled:
        parts.airflow = KubernetesAirflow(
            f"{name}-airflow",
            KubernetesAirflowArgs(
                settings=config.airflow,
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
    if config.archive is not None:
        parts.outputs["archive"] = {
            "bucket": config.archive.bucket_name,
            "endpoint": config.archive.endpoint,
        }
    return parts


def _context(config: PlatformConfig) -> StackContext:
    settings = config.kubernetes
    assert settings is not None
    return StackContext(
        stack=config.stack,
        tags=config.tags,
        image_registry=settings.image_registry,
        services_image=settings.services_image,
        storage_class=settings.storage_class,
    )


def _data_path(shared: Assembly) -> PlatformParts:
    """Network, Postgres (with its backups), stream, collector, archive and consumers."""
    config, name, child = shared.config, shared.name, shared.child
    settings = config.kubernetes
    assert settings is not None
    context = _context(config)
    assert config.ingest.kubernetes is not None
    network = KubernetesNetwork(
        f"{name}-network",
        KubernetesNetworkArgs(
            settings=settings,
            context=context,
            retain_namespace=config.deletion_protection or config.postgres.deletion_protection,
        ),
        opts=child,
    )
    postgres = KubernetesPostgres(
        f"{name}-postgres",
        KubernetesPostgresArgs(
            settings=config.postgres,
            network=network,
            context=context,
        ),
        opts=child,
    )
    stream = NatsJetStream(
        f"{name}-stream",
        NatsJetStreamArgs(
            settings=config.stream,
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
    return PlatformParts(network, postgres, stream, ingest, archive, consumers)


def _archive(
    shared: Assembly, network: KubernetesNetwork, postgres: KubernetesPostgres
) -> ExternalArchive | None:
    """The customer's S3-compatible archive, and Postgres's backups into it; None without one."""
    config = shared.config
    context = _context(config)
    if config.archive is None:
        pulumi.log.warn(
            "liftoff:archive is not set: Postgres has no scheduled backups on this stack "
            "(they are written to the archive).",
            shared.parent,
        )
        return None
    archive = ExternalArchive(
        f"{shared.name}-archive",
        ExternalArchiveArgs(settings=config.archive, network=network, context=context),
        opts=shared.child,
    )
    postgres.add_backups(archive)
    return archive


def _observe(shared: Assembly, parts: PlatformParts) -> None:
    from components import kube
    from components.consumers.kubernetes import CONSUMER_LABEL, HEALTH_PORT
    from components.ingest.kubernetes import COMPONENT, PORT
    from components.observability.kubernetes import (
        KubernetesObservability,
        KubernetesObservabilityArgs,
        MetricsTarget,
    )
    from components.stream.kubernetes import NATS_EXPORTER_PORT, NATS_POD_SELECTOR

    config = shared.config
    settings = config.kubernetes
    assert settings is not None
    context = _context(config)
    # Every consumer pod, and only they, names its probe port `health`.
    consumers = {"app.kubernetes.io/instance": config.stack, CONSUMER_LABEL: "true"}
    parts.observability = KubernetesObservability(
        f"{shared.name}-observability",
        KubernetesObservabilityArgs(
            settings=config.observability,
            network=parts.network,
            context=context,
            collector_service_labels=kube.selector(COMPONENT, config.stack),
            collector=MetricsTarget(
                "collector", kube.selector(COMPONENT, config.stack), "http", PORT
            ),
            consumers=MetricsTarget("consumers", consumers, "health", HEALTH_PORT),
            nats=MetricsTarget("nats", NATS_POD_SELECTOR, "prom-metrics", NATS_EXPORTER_PORT),
            postgres=parts.postgres,
        ),
        opts=shared.child,
    )
