"""Network capability: where the platform's workloads live and how they find each other.

AWS: a VPC with private subnets (new or brought by the customer) and a Cloud Map private DNS
namespace. Kubernetes: a namespace with default-deny NetworkPolicies; Service DNS.

Both realizations answer `dns_name(service)`: the stable discovery name of a service, the
service-discovery contract every other capability builds on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

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


class Network(Protocol):
    def dns_name(self, service: str) -> pulumi.Output[str]:
        """The stable, fully qualified discovery name for `service`."""
        ...
