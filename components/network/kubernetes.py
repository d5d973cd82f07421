"""Kubernetes network: the stack's namespace, locked down by default-deny NetworkPolicies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import kube
from components.network.settings import KubernetesSettings


@dataclass(frozen=True)
class KubernetesNetworkArgs:
    context: kube.StackContext
    """What every Kubernetes capability of the stack shares (stack, tags, images, storage)."""
    settings: KubernetesSettings
    retain_namespace: bool = True
    """Default: true. Keep the namespace (and so its volumes) when the stack is destroyed."""


def dns_egress(settings: KubernetesSettings) -> dict[str, Any]:
    """The egress rule to the cluster's DNS: pods of the DNS namespace (optionally narrowed by
    labels) and any DNS addresses outside pods (NodeLocal DNSCache), on the DNS ports."""
    peer: dict[str, Any] = {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": settings.dns_namespace}
        }
    }
    if settings.dns_pod_labels:
        peer["podSelector"] = {"matchLabels": dict(settings.dns_pod_labels)}
    peers = [peer, *({"ipBlock": {"cidr": cidr}} for cidr in settings.dns_cidrs)]
    ports = [
        {"protocol": protocol, "port": port}
        for port in settings.dns_ports
        for protocol in ("UDP", "TCP")
    ]
    return {"to": peers, "ports": ports}


class KubernetesNetwork(pulumi.ComponentResource):
    """The stack's namespace with Pod Security "restricted" enforced and all traffic denied
    except what NetworkPolicies of the platform's capabilities admit. DNS to the cluster's DNS
    pods is the one thing every pod may reach.
    """

    namespace: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: KubernetesNetworkArgs,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("liftoff:network:KubernetesNetwork", name, None, opts)
        settings = args.settings
        self.settings = settings
        self.namespace_name = settings.namespace
        metadata_labels = kube.labels("network", args.context.stack, args.context.tags)

        self.namespace_resource: k8s.core.v1.Namespace | None = None
        depends: list[pulumi.Resource] = []
        if settings.create_namespace:
            self.namespace_resource = k8s.core.v1.Namespace(
                f"{name}-namespace",
                metadata={
                    "name": settings.namespace,
                    "labels": {
                        **metadata_labels,
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest",
                        "pod-security.kubernetes.io/warn": "restricted",
                        "pod-security.kubernetes.io/audit": "restricted",
                    },
                },
                # Deleting a namespace deletes its PersistentVolumeClaims, and with them the data.
                opts=pulumi.ResourceOptions(parent=self, retain_on_delete=args.retain_namespace),
            )
            self.namespace = self.namespace_resource.metadata.name
            depends.append(self.namespace_resource)
        else:
            self.namespace = pulumi.Output.from_input(settings.namespace)

        self.child_opts = pulumi.ResourceOptions(parent=self, depends_on=depends)
        self.default_deny = k8s.networking.v1.NetworkPolicy(
            f"{name}-default-deny",
            metadata=self.metadata("default-deny", metadata_labels),
            spec={"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            opts=self.child_opts,
        )
        self.allow_dns = k8s.networking.v1.NetworkPolicy(
            f"{name}-allow-dns",
            metadata=self.metadata("allow-dns", metadata_labels),
            spec={"podSelector": {}, "policyTypes": ["Egress"], "egress": [dns_egress(settings)]},
            opts=self.child_opts,
        )
        self.register_outputs({"namespace": self.namespace})

    def metadata(self, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
        """Metadata for an object in the stack's namespace."""
        return {"name": name, "namespace": self.namespace_name, "labels": dict(labels)}

    def service_host(self, service: str) -> str:
        """`<service>.<namespace>.svc.<cluster domain>`, known when the program runs (for
        values that must be plain strings: chart values, scripts)."""
        return kube.service_dns_name(service, self.namespace_name, self.settings.cluster_domain)

    def dns_name(self, service: str) -> pulumi.Output[str]:
        return pulumi.Output.from_input(self.service_host(service))

    def allow(
        self,
        name: str,
        *,
        source: Mapping[str, str],
        destination: Mapping[str, str],
        port: int,
        labels: Mapping[str, str],
        parent: pulumi.Resource,
    ) -> tuple[k8s.networking.v1.NetworkPolicy, k8s.networking.v1.NetworkPolicy]:
        """Admit pods matching `source` to pods matching `destination` on `port` (TCP).

        Declares both halves the default-deny needs: egress from the source, ingress to the
        destination. Both are children of `parent`, the capability granting the access.
        """
        opts = pulumi.ResourceOptions(parent=parent, depends_on=[self.default_deny])
        ingress = k8s.networking.v1.NetworkPolicy(
            f"{name}-ingress",
            metadata=self.metadata(f"{name}-ingress", labels),
            spec={
                "podSelector": {"matchLabels": dict(destination)},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [{"podSelector": {"matchLabels": dict(source)}}],
                        "ports": [{"protocol": "TCP", "port": port}],
                    }
                ],
            },
            opts=opts,
        )
        egress = k8s.networking.v1.NetworkPolicy(
            f"{name}-egress",
            metadata=self.metadata(f"{name}-egress", labels),
            spec={
                "podSelector": {"matchLabels": dict(source)},
                "policyTypes": ["Egress"],
                "egress": [
                    {
                        "to": [{"podSelector": {"matchLabels": dict(destination)}}],
                        "ports": [{"protocol": "TCP", "port": port}],
                    }
                ],
            },
            opts=opts,
        )
        return ingress, egress
