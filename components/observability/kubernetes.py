"""The signal contract on Kubernetes, for a cluster running the Prometheus Operator.

Declares, in the stack's namespace: a ServiceMonitor for the collector, PodMonitors for the
consumers, the NATS chart's exporter and a postgres_exporter, one PrometheusRule holding every
signal of the contract, a Grafana dashboard ConfigMap (picked up by the Grafana sidecar through
`grafana_dashboard: "1"`), and the NetworkPolicies that admit the monitoring namespace's
Prometheus pods to exactly the metrics ports (everything else stays denied).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import kube
from components.consumers import KubernetesConsumersContract
from components.ingest import KubernetesIngestContract
from components.network import Grant, KubernetesPeer
from components.observability import MetricsTarget, prometheus_rule_groups
from components.observability.dashboards import grafana_dashboard
from components.observability.settings import KubernetesObservabilitySettings
from components.postgres import KubernetesPostgresContract
from components.stream import KubernetesStreamContract

MONITORING_API = "monitoring.coreos.com/v1"
POSTGRES_EXPORTER_IMAGE = "quay.io/prometheuscommunity/postgres-exporter:v0.17.1"
POSTGRES_EXPORTER_PORT = 9187
POSTGRES_EXPORTER_UID = 65534  # `nobody`, the image's own user
SCRAPE_INTERVAL = "30s"
EXPORTER_RESOURCES = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"cpu": "200m", "memory": "128Mi"},
}


@dataclass(frozen=True)
class KubernetesObservabilityArgs(kube.CapabilityArgs):
    settings: KubernetesObservabilitySettings
    ingest: KubernetesIngestContract
    """The collector: its Service is scraped (a ServiceMonitor), its pods admit Prometheus."""
    consumers: KubernetesConsumersContract
    stream: KubernetesStreamContract
    postgres: KubernetesPostgresContract
    """Gives the exporter its own `pg_monitor` role and admits it to Postgres."""


class KubernetesObservability(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        args: KubernetesObservabilityArgs,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("liftoff:observability:KubernetesObservability", name, None, opts)
        settings = args.settings
        network = args.network
        labels = kube.labels("observability", args.context.stack, args.context.tags)
        monitor_labels = {**labels, **dict(settings.monitor_labels)}
        child = pulumi.ResourceOptions(parent=self, depends_on=[network.default_deny])

        exporter = MetricsTarget(
            "postgres-exporter",
            kube.selector("postgres-exporter", args.context.stack),
            "metrics",
            POSTGRES_EXPORTER_PORT,
        )
        # Least privilege: a login role of its own, member of pg_monitor (statistics and
        # settings only), never the admin credentials.
        self.monitoring_database = args.postgres.add_database(
            "monitoring", member_of=("pg_monitor",)
        )
        connect = args.postgres.grant_connect(
            KubernetesPeer("postgres-exporter", pod_labels=exporter.pod_selector)
        )
        self.postgres_exporter = self._postgres_exporter(name, args, exporter, child, connect)

        self._declare_monitors(name, args, exporter, monitor_labels, child)
        # Prometheus (in its own namespace, with its own labels) to exactly the metrics ports.
        self.scrape_policies = []
        targets = (args.ingest.metrics, args.consumers.metrics, args.stream.metrics, exporter)
        for target in targets:
            self.scrape_policies.append(
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-scrape-{target.name}",
                    metadata=network.metadata(f"scrape-{target.name}", labels),
                    spec=scrape_policy_spec(settings, target),
                    opts=child,
                )
            )
        self.dashboard = None
        if settings.dashboard:
            self.dashboard = k8s.core.v1.ConfigMap(
                f"{name}-dashboard",
                metadata=network.metadata(
                    "liftoff-dashboard", {**labels, "grafana_dashboard": "1"}
                ),
                data={
                    "liftoff.json": json.dumps(grafana_dashboard(network.namespace_name), indent=1)
                },
                opts=child,
            )
        self.register_outputs({})

    def _declare_monitors(
        self,
        name: str,
        args: KubernetesObservabilityArgs,
        exporter: MetricsTarget,
        monitor_labels: Mapping[str, str],
        child: pulumi.ResourceOptions,
    ) -> None:
        """What the Prometheus operator scrapes (collector Service, consumer, NATS and exporter
        pods) and the contract's alerting rules."""
        network = args.network
        settings = args.settings
        self.service_monitor = k8s.apiextensions.CustomResource(
            f"{name}-collector-monitor",
            api_version=MONITORING_API,
            kind="ServiceMonitor",
            metadata=network.metadata("liftoff-collector", monitor_labels),
            spec={
                # The collector's Service carries its pods' selector labels.
                "selector": {"matchLabels": dict(args.ingest.metrics.pod_selector)},
                "endpoints": [
                    {
                        "port": "http",
                        "path": "/metrics",
                        "interval": SCRAPE_INTERVAL,
                    }
                ],
            },
            opts=child,
        )
        self.pod_monitors = [
            k8s.apiextensions.CustomResource(
                f"{name}-{target.name}-monitor",
                api_version=MONITORING_API,
                kind="PodMonitor",
                metadata=network.metadata(f"liftoff-{target.name}", monitor_labels),
                spec={
                    "selector": {"matchLabels": dict(target.pod_selector)},
                    "podMetricsEndpoints": [
                        {
                            "port": target.port_name,
                            "path": "/metrics",
                            "interval": SCRAPE_INTERVAL,
                        }
                    ],
                },
                opts=child,
            )
            for target in (args.consumers.metrics, args.stream.metrics, exporter)
        ]
        self.rule = k8s.apiextensions.CustomResource(
            f"{name}-rules",
            api_version=MONITORING_API,
            kind="PrometheusRule",
            metadata=network.metadata("liftoff-signals", monitor_labels),
            spec={"groups": prometheus_rule_groups(settings.thresholds, stack=args.context.stack)},
            opts=child,
        )

    def _postgres_exporter(
        self,
        name: str,
        args: KubernetesObservabilityArgs,
        target: MetricsTarget,
        child: pulumi.ResourceOptions,
        connect: Grant,
    ) -> k8s.apps.v1.Deployment:
        labels = kube.labels(target.name, args.context.stack, args.context.tags)
        database = self.monitoring_database
        data_source_uri = pulumi.Output.all(
            database.connection.host, database.connection.port, database.connection.database
        ).apply(lambda v: f"{v[0]}:{v[1]}/{v[2]}?sslmode=disable")

        image = kube.image(POSTGRES_EXPORTER_IMAGE, args.context.image_registry)
        container = _exporter_container(image, target, data_source_uri)
        return k8s.apps.v1.Deployment(
            f"{name}-postgres-exporter",
            metadata=args.network.metadata(target.name, labels),
            spec={
                "replicas": 1,
                "selector": {"matchLabels": dict(target.pod_selector)},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "automountServiceAccountToken": False,
                        "securityContext": kube.pod_security_context(POSTGRES_EXPORTER_UID),
                        "containers": [container],
                        "volumes": [
                            {
                                "name": "credentials",
                                "secret": {
                                    "secretName": database.secret_name,
                                    "items": [
                                        {"key": "username", "path": "username"},
                                        {"key": "password", "path": "password"},
                                    ],
                                },
                            }
                        ],
                    },
                },
            },
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[database.ready, *connect.resources])
            ),
        )


def _exporter_container(
    image: str, target: MetricsTarget, data_source_uri: pulumi.Input[str]
) -> dict[str, Any]:
    """postgres_exporter on `target`'s port, its login read from the mounted credentials."""
    return {
        "name": "postgres-exporter",
        "image": image,
        "ports": [{"name": target.port_name, "containerPort": target.port}],
        "env": [
            {"name": "DATA_SOURCE_URI", "value": data_source_uri},
            # Credentials as files, never as environment values.
            {"name": "DATA_SOURCE_USER_FILE", "value": "/etc/postgres-exporter/username"},
            {"name": "DATA_SOURCE_PASS_FILE", "value": "/etc/postgres-exporter/password"},
        ],
        "volumeMounts": [
            {"name": "credentials", "mountPath": "/etc/postgres-exporter", "readOnly": True}
        ],
        "securityContext": kube.container_security_context(),
        "resources": EXPORTER_RESOURCES,
        "livenessProbe": {"httpGet": {"path": "/", "port": target.port_name}},
        "readinessProbe": {"httpGet": {"path": "/", "port": target.port_name}},
    }


def scrape_policy_spec(
    settings: KubernetesObservabilitySettings, target: MetricsTarget
) -> dict[str, Any]:
    """Ingress to `target`'s pods on its metrics port, from the monitoring namespace's
    Prometheus pods only (namespace AND pod labels in one peer)."""
    return {
        "podSelector": {"matchLabels": dict(target.pod_selector)},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [
                    {
                        "namespaceSelector": {
                            "matchLabels": {
                                "kubernetes.io/metadata.name": settings.monitoring_namespace
                            }
                        },
                        "podSelector": {"matchLabels": dict(settings.monitoring_pod_labels)},
                    }
                ],
                "ports": [{"protocol": "TCP", "port": target.port}],
            }
        ],
    }
