"""Ingestion on Kubernetes: the collector Deployment, Service, autoscaler and optional Ingress."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components import kube
from components.ingest import (
    PUBLIC_PATH_PREFIXES,
    SUPPRESSION_KEY,
    IngestEndpoint,
    collector_sources,
)
from components.ingest.settings import KubernetesIngest, Source
from components.ingest.write_keys import generate_write_keys, write_keys_document
from components.network import KubernetesPeer
from components.observability import MetricsTarget
from components.stream import KubernetesStreamContract
from services.collector import contract as collector
from services.stream.contract import StreamAccess
from services.suppression.contract import SuppressionAccess, suppression_url_of

COMPONENT = "collector"
PORT = 8080
WRITE_KEYS_DIR = "/etc/liftoff/write-keys"
WRITE_KEYS_FILE = "write-keys.json"
SUPPRESSION_DIR = "/etc/liftoff/suppression"
SUPPRESSION_KEY_FILE = SUPPRESSION_KEY
SUPPRESSION_SECRET = "collector-suppression-key"
"""The key the suppression list's entries are hashed with; ``python -m services regulation``
reads it too (README: "Privacy: suppression and deletion")."""


@dataclass(frozen=True)
class KubernetesCollectorArgs(kube.CapabilityArgs):
    settings: KubernetesIngest
    sources: tuple[Source, ...]
    stream: KubernetesStreamContract


class KubernetesCollector(pulumi.ComponentResource):
    """The collector pods (restricted, probed, autoscaled on CPU) and how clients reach them.

    Without `host` the collector is an in-cluster Service; with it, an Ingress routes `/v1`,
    `/analytics.js` and `/analytics-next` to it (TLS with `tlsSecret`). The write keys are
    mounted from a Secret as a file.
    """

    def __init__(
        self,
        name: str,
        args: KubernetesCollectorArgs,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("liftoff:ingest:KubernetesCollector", name, None, opts)
        network = args.network
        self._network = network
        settings = args.settings
        child = pulumi.ResourceOptions(parent=self, depends_on=[network.default_deny])
        labels = kube.labels(COMPONENT, args.context.stack, args.context.tags)
        selector = kube.selector(COMPONENT, args.context.stack)

        keys = generate_write_keys(name, args.sources, self)
        self.write_keys_secret = k8s.core.v1.Secret(
            f"{name}-write-keys",
            metadata=network.metadata("collector-write-keys", labels),
            type="Opaque",
            string_data={WRITE_KEYS_FILE: write_keys_document(keys)},
            opts=child,
        )
        self.suppression_key_secret = _suppression_key(
            name, network.metadata(SUPPRESSION_SECRET, labels), child
        )
        self.suppression_key_secret_name = SUPPRESSION_SECRET
        publish = args.stream.grant_write(KubernetesPeer(COMPONENT, pod_labels=selector))

        public_url = _public_url(settings)
        container = _container(args, _environment(args, public_url))
        # The pods start once their keys and their way to the stream exist, and roll out only
        # after the stream setup Job succeeded: a pod whose streams are missing (a partition
        # count the Job has not created) never becomes ready, and `pulumi up` would wait on it.
        ready = [
            self.write_keys_secret,
            self.suppression_key_secret,
            *publish.resources,
            *args.stream.ready,
        ]
        self.deployment = self._declare_deployment(
            name, args, _pod_spec(container, selector), labels, selector, child, ready
        )
        self.service = self._declare_service(name, settings, labels, selector, child)
        url = pulumi.Output.concat("http://", network.dns_name(COMPONENT))
        if settings.host:
            self._ingress(name, settings, labels, child)
        if public_url:
            url = pulumi.Output.from_input(public_url)
        self.endpoint = IngestEndpoint(
            collector_url=url, write_keys=pulumi.Output.secret(pulumi.Output.all(**keys))
        )
        self.metrics = MetricsTarget(COMPONENT, selector, "http", PORT)
        self.register_outputs({"collectorUrl": url})

    def _declare_deployment(
        self,
        name: str,
        args: KubernetesCollectorArgs,
        pod_spec: dict[str, Any],
        labels: Mapping[str, str],
        selector: Mapping[str, str],
        child: pulumi.ResourceOptions,
        ready: list[pulumi.Resource],
    ) -> k8s.apps.v1.Deployment:
        # Pods restart when the set of sources changes (the keys themselves never rotate
        # silently: a key changes only when its source is replaced).
        sources_digest = hashlib.sha256(
            ",".join(s.name for s in args.sources).encode()
        ).hexdigest()[:16]
        return k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=self._network.metadata(COMPONENT, labels),
            spec={
                "replicas": args.settings.replicas,
                "selector": {"matchLabels": selector},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {
                        "labels": labels,
                        "annotations": {"liftoff.io/sources": sources_digest},
                    },
                    "spec": pod_spec,
                },
            },
            # The autoscaler owns the replica count once the Deployment exists.
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(ignore_changes=["spec.replicas"], depends_on=ready),
            ),
        )

    def _declare_service(
        self,
        name: str,
        settings: KubernetesIngest,
        labels: Mapping[str, str],
        selector: Mapping[str, str],
        child: pulumi.ResourceOptions,
    ) -> k8s.core.v1.Service:
        """The Service and who may reach it; its autoscaler and disruption budget."""
        metadata = self._network.metadata(COMPONENT, labels)
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=metadata,
            spec={
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
            opts=child,
        )
        # Clients (an ingress controller, or SDKs inside the cluster) may reach the collector.
        k8s.networking.v1.NetworkPolicy(
            f"{name}-clients",
            metadata=self._network.metadata("collector-clients", labels),
            spec={
                "podSelector": {"matchLabels": selector},
                "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"protocol": "TCP", "port": PORT}]}],
            },
            opts=child,
        )
        self._declare_scaling(name, settings, metadata, selector, child)
        return service

    def _declare_scaling(
        self,
        name: str,
        settings: KubernetesIngest,
        metadata: dict[str, Any],
        selector: Mapping[str, str],
        child: pulumi.ResourceOptions,
    ) -> None:
        """Scaled out on CPU between the configured bounds; drained one pod at a time."""
        cpu = {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
        deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "name": COMPONENT}
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-autoscaler",
            metadata=metadata,
            spec={
                "scaleTargetRef": deployment,
                "minReplicas": settings.min_replicas,
                "maxReplicas": settings.max_replicas,
                "metrics": [{"type": "Resource", "resource": cpu}],
            },
            opts=child,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=metadata,
            spec={"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            opts=child,
        )

    def _ingress(
        self,
        name: str,
        settings: KubernetesIngest,
        labels: Mapping[str, str],
        child: pulumi.ResourceOptions,
    ) -> None:
        spec: dict[str, Any] = {
            "rules": [
                {
                    "host": settings.host,
                    "http": {
                        "paths": [
                            {
                                "path": prefix,
                                "pathType": "Prefix",
                                "backend": {
                                    "service": {"name": COMPONENT, "port": {"name": "http"}}
                                },
                            }
                            for prefix in PUBLIC_PATH_PREFIXES
                        ]
                    },
                }
            ]
        }
        if settings.ingress_class:
            spec["ingressClassName"] = settings.ingress_class
        if settings.tls_secret:
            spec["tls"] = [{"hosts": [settings.host], "secretName": settings.tls_secret}]
        k8s.networking.v1.Ingress(
            f"{name}-ingress",
            metadata=self._network.metadata(COMPONENT, labels),
            spec=spec,
            opts=child,
        )


def _public_url(settings: KubernetesIngest) -> str | None:
    """The URL SDKs use: configured, or derived from the Ingress host and TLS."""
    if settings.public_url is None and settings.host:
        return f"{'https' if settings.tls_secret else 'http'}://{settings.host}"
    return settings.public_url


def _environment(
    args: KubernetesCollectorArgs, public_url: str | None
) -> Mapping[str, pulumi.Input[str]]:
    settings = args.settings
    return collector.PROCESS.environment(
        collector.CollectorSettings(
            stream=StreamAccess(url=args.stream.connection.url),
            # Behind the Ingress the pod sees plain HTTP: analytics.js's settings must name the
            # public scheme and host.
            sources=collector_sources(
                args.sources,
                write_keys_file=f"{WRITE_KEYS_DIR}/{WRITE_KEYS_FILE}",
                public_url=public_url or None,
            ),
            port=PORT,
            log_level="INFO",
            trusted_proxies=tuple(settings.trusted_proxies) or None,
            http=collector.HttpLimitSettings(
                max_header_bytes=settings.max_header_bytes,
                header_timeout_seconds=settings.header_timeout_seconds,
                body_timeout_seconds=settings.body_timeout_seconds,
                max_connections=settings.max_connections,
            ),
            # The list is a KV bucket on the stream's own servers: no new peer to allow.
            suppression=SuppressionAccess(
                url=pulumi.Output.from_input(args.stream.connection.url).apply(suppression_url_of),
                key_file=f"{SUPPRESSION_DIR}/{SUPPRESSION_KEY_FILE}",
            ),
        )
    )


def _container(
    args: KubernetesCollectorArgs, environment: Mapping[str, pulumi.Input[str]]
) -> dict[str, Any]:
    return {
        "name": COMPONENT,
        "image": kube.image(args.context.services_image, args.context.image_registry),
        "imagePullPolicy": "IfNotPresent",
        "args": [COMPONENT],
        "env": kube.env(environment),
        "ports": [{"name": "http", "containerPort": PORT}],
        "resources": args.settings.resources.to_kubernetes(),
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 30,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
        },
        # Ready only while the stream answers: no pod takes events it cannot publish.
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
        },
        "volumeMounts": [
            {"name": "write-keys", "mountPath": WRITE_KEYS_DIR, "readOnly": True},
            {"name": "suppression-key", "mountPath": SUPPRESSION_DIR, "readOnly": True},
        ],
    }


def _pod_spec(container: dict[str, Any], selector: Mapping[str, str]) -> dict[str, Any]:
    pod_spec = kube.services_pod_spec(
        [container],
        volumes=[
            kube.secret_volume("write-keys", "collector-write-keys"),
            kube.secret_volume("suppression-key", SUPPRESSION_SECRET),
        ],
    )
    pod_spec["terminationGracePeriodSeconds"] = 30
    pod_spec["topologySpreadConstraints"] = [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector},
        }
    ]
    return pod_spec


def _suppression_key(name: str, metadata: Any, child: pulumi.ResourceOptions) -> k8s.core.v1.Secret:
    """The key the suppression list's entries are hashed with, as a Secret the pods mount.
    Created once and never rotated: a new key would orphan every suppression entry."""
    key = random.RandomPassword(
        f"{name}-suppression-key",
        length=48,
        special=False,
        opts=pulumi.ResourceOptions(parent=child.parent),
    )
    return k8s.core.v1.Secret(
        f"{name}-suppression-key",
        metadata=metadata,
        type="Opaque",
        string_data={SUPPRESSION_KEY_FILE: key.result},
        opts=child,
    )
