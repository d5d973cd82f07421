"""Network capability: where the platform's workloads live and how they find each other.

AWS: a VPC with private subnets (new or brought by the customer) and a Cloud Map private DNS
namespace. Kubernetes: a namespace with default-deny NetworkPolicies; Service DNS.

Both realizations answer `dns_name(service)`: the stable discovery name of a service, the
service-discovery contract every other capability builds on. What the other capabilities of a
target use besides is that target's contract: `AwsNetworkContract` (the VPC, its private
subnets, the VPC endpoints a process waits for, Cloud Map names), `KubernetesNetworkContract`
(the namespace, object metadata in it, the default deny and the NetworkPolicy pairs of grants).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:  # the contract names Pulumi types; settings readers import it without Pulumi
    import pulumi


@dataclass(frozen=True)
class Peer:
    """A workload asking another capability for access (the argument of grants); each target
    names it its own way (`AwsPeer`, `KubernetesPeer`)."""

    name: str


@dataclass(frozen=True)
class AwsPeer(Peer):
    """On AWS: the workload's security group (network access) and/or IAM role (API access)."""

    security_group_id: pulumi.Input[str] | None = None
    iam_role_name: pulumi.Input[str] | None = None


@dataclass(frozen=True)
class KubernetesPeer(Peer):
    """On Kubernetes: a selector of the workload's pods (NetworkPolicies select on it)."""

    pod_labels: Mapping[str, str] = field(default_factory=dict)


PeerT = TypeVar("PeerT", bound=Peer, contravariant=True)
"""The peer type a capability's grants take: `AwsPeer` or `KubernetesPeer`, by target. The
capability protocols (`Stream[KubernetesPeer]`, ...) are generic in it."""


@dataclass(frozen=True)
class Grant:
    """What one grant declared, the same type on both targets: the IAM policy or security-group
    rule on AWS, the NetworkPolicies on Kubernetes. Put `resources` in `depends_on` where the
    peer must not start before its access exists (Lambda checks a mapping's permissions)."""

    peer: str
    resources: tuple[pulumi.Resource, ...] = ()


@runtime_checkable
class Network(Protocol):
    def dns_name(self, service: str) -> pulumi.Output[str]:
        """The stable, fully qualified discovery name for `service`."""
        ...


@runtime_checkable
class AwsNetworkContract(Network, Protocol):
    """What the AWS capabilities use of the network (`AwsNetwork`)."""

    vpc_id: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]

    def endpoints_for(self, services: tuple[str, ...]) -> list[pulumi.Resource]:
        """The VPC endpoints a process calling `services` must wait for (none in the
        customer's own VPC)."""
        ...

    def register_cname(
        self, name: str, service: str, target: pulumi.Input[str], parent: pulumi.Resource
    ) -> pulumi.Output[str]:
        """Publish `dns_name(service)` as a CNAME to `target`; the records are children of
        `parent`, the capability that owns the name."""
        ...


@runtime_checkable
class KubernetesNetworkContract(Network, Protocol):
    """What the Kubernetes capabilities use of the network (`KubernetesNetwork`)."""

    namespace: pulumi.Output[str]
    namespace_name: str
    """The namespace's name, known when the program runs."""
    default_deny: pulumi.Resource
    """The namespace's default-deny NetworkPolicy: workloads are declared after it."""

    def metadata(self, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
        """Metadata for an object in the stack's namespace."""
        ...

    def service_host(self, service: str) -> str:
        """`dns_name(service)` as a plain string (chart values, scripts)."""
        ...

    def allow(
        self,
        name: str,
        *,
        source: Mapping[str, str],
        destination: Mapping[str, str],
        port: int,
        labels: Mapping[str, str],
        parent: pulumi.Resource,
    ) -> tuple[pulumi.Resource, ...]:
        """Admit pods matching `source` to pods matching `destination` on `port` (TCP): the
        egress and ingress NetworkPolicies, children of `parent`."""
        ...
