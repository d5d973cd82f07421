"""`liftoff:kubernetes` and `liftoff:aws`: where each target deploys, read from the stack.

The two keys are the target's own: `NetworkSettings` holds the chosen one
(`PlatformConfig.network`), and the other target's key is refused whole."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from components.validation import (
    DNS_LABEL,
    DNS_LABEL_DESCRIBE,
    K8S_LABEL_KEY,
    K8S_LABEL_VALUE,
    ConfigReader,
    Problem,
    StackReading,
    cidr,
    port_list,
)

DEFAULT_SERVICES_IMAGE = "ghcr.io/liftoff-data/liftoff-services:0.1.0"


@dataclass(frozen=True)
class KubernetesSettings:
    """`liftoff:kubernetes` — where and how the Kubernetes target deploys."""

    namespace: str
    """Default: `liftoff-<stack>`."""
    create_namespace: bool = True
    """Default: true. Set false when a cluster admin pre-creates the namespace."""
    storage_class: str | None = None
    """Default: the cluster's default StorageClass."""
    image_registry: str | None = None
    """Default: none (images from their public registries). A mirror prefix such as
    `registry.corp.example/mirror`, applied to every image the platform runs."""
    kubeconfig: str | None = None
    """Default: the ambient kubeconfig (KUBECONFIG or ~/.kube/config). A path or the content."""
    context: str | None = None
    """Default: the kubeconfig's current context."""
    cluster_domain: str = "cluster.local"
    """Default: `cluster.local`. Used to build fully qualified Service DNS names."""
    dns_namespace: str = "kube-system"
    """Default: `kube-system`. Namespace of the cluster DNS pods every pod may reach on port 53."""
    dns_pod_labels: dict[str, str] = field(default_factory=dict)
    """`dns.podLabels`. Default: none (every pod of `dnsNamespace`). Narrows the DNS peers to
    the DNS pods, e.g. `{k8s-app: kube-dns}`."""
    dns_cidrs: tuple[str, ...] = ()
    """`dns.cidrs`. Default: none. Address ranges of DNS servers outside any pod, e.g.
    NodeLocal DNSCache's `169.254.20.10/32`."""
    dns_ports: tuple[int, ...] = (53,)
    """`dns.ports`. Default: [53]. UDP and TCP; OpenShift's DNS pods listen on 5353."""
    services_image: str = DEFAULT_SERVICES_IMAGE
    """Default: the released liftoff services image. Build `services/Dockerfile` and push it
    to your registry to run your own; the registry override applies to it as well."""


@dataclass(frozen=True)
class AwsSettings:
    """`liftoff:aws` — the AWS network. Region comes from `aws:region`."""

    region: str
    vpc_id: str | None = None
    """Default: a new VPC is created. Set together with `privateSubnetIds`."""
    private_subnet_ids: tuple[str, ...] = ()
    """Default: new private subnets, one per availability zone."""
    vpc_cidr: str = "10.40.0.0/16"
    """Default: `10.40.0.0/16`. Only for a new VPC."""
    availability_zones: int = 2
    """Default: 2. How many AZs a new VPC spans (2..6)."""
    log_retention_days: int = 365
    """Default: 365. Retention of every CloudWatch log group the platform writes to (Lambda,
    API access, VPC flow logs, MWAA, RDS exports); one of CloudWatch's fixed values."""

    @property
    def bring_your_own_network(self) -> bool:
        return self.vpc_id is not None


@dataclass(frozen=True)
class NetworkSettings:
    """`liftoff:aws` / `liftoff:kubernetes` — where the platform runs: the chosen target's
    settings (the other target's key is refused)."""

    aws: AwsSettings | None = None
    """Set on AWS."""
    kubernetes: KubernetesSettings | None = None
    """Set on Kubernetes."""


def read_network(stack: StackReading) -> NetworkSettings:
    # Both objects are checked before either is read: a malformed one is reported first.
    kubernetes_reader, aws_reader = stack.reader("kubernetes"), stack.reader("aws")
    if stack.target == "kubernetes":
        kubernetes = _read_kubernetes(kubernetes_reader, stack.stack)
        stack.only_with("aws", "aws")
        return NetworkSettings(kubernetes=kubernetes)
    if stack.target == "aws":
        aws = _read_aws(aws_reader, stack.values.get("aws:region"), stack.problems)
        stack.only_with("kubernetes", "kubernetes")
        return NetworkSettings(aws=aws)
    return NetworkSettings()


def _read_kubernetes(reader: ConfigReader, stack: str) -> KubernetesSettings:
    namespace = reader.string(
        "namespace",
        f"liftoff-{stack}",
        pattern=DNS_LABEL,
        describe=DNS_LABEL_DESCRIBE,
        max_length=63,
    )
    # Each default is written once, on its field.
    defaults = KubernetesSettings(namespace=f"liftoff-{stack}")
    settings = KubernetesSettings(
        namespace=namespace or defaults.namespace,
        create_namespace=reader.boolean("createNamespace", defaults.create_namespace),
        storage_class=reader.string(
            "storageClass",
            pattern=rf"{DNS_LABEL}(\.{DNS_LABEL})*",
            describe="a StorageClass name (lowercase DNS subdomain)",
            max_length=253,
        ),
        image_registry=reader.string(
            "imageRegistry",
            pattern=r"[a-zA-Z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*",
            describe="a registry host with an optional path, e.g. registry.corp.example/mirror "
            "(no scheme, no trailing '/')",
        ),
        kubeconfig=reader.string("kubeconfig", describe="a kubeconfig path or its content"),
        context=reader.string("context", describe="a kubeconfig context name"),
        cluster_domain=reader.string(
            "clusterDomain",
            defaults.cluster_domain,
            pattern=rf"{DNS_LABEL}(\.{DNS_LABEL})*",
            describe="a DNS domain such as cluster.local",
        )
        or defaults.cluster_domain,
        dns_namespace=reader.string(
            "dnsNamespace", defaults.dns_namespace, pattern=DNS_LABEL, describe=DNS_LABEL_DESCRIBE
        )
        or defaults.dns_namespace,
        services_image=reader.string(
            "servicesImage",
            defaults.services_image,
            pattern=r"[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}",
            describe="a fully qualified image with a pinned tag, e.g. "
            "registry.example/liftoff-services:0.1.0 (not :latest)",
        )
        or defaults.services_image,
    )
    if settings.services_image.endswith(":latest"):
        reader.problem("servicesImage", settings.services_image, "a pinned tag, not :latest")
    dns_namespace, pod_labels, cidrs, ports = _read_dns(reader, defaults)
    reader.finish()
    return dataclasses.replace(
        settings,
        dns_namespace=dns_namespace or settings.dns_namespace,
        dns_pod_labels=dict(sorted(pod_labels.items())),
        dns_cidrs=tuple(sorted(set(cidrs))),
        dns_ports=ports,
    )


def _read_dns(
    reader: ConfigReader, defaults: KubernetesSettings
) -> tuple[str | None, dict[str, str], list[str], tuple[int, ...]]:
    """`dns`: where the cluster's DNS answers (namespace, pod labels, addresses, ports)."""
    dns = reader.object("dns")
    dns_namespace = dns.string("namespace", pattern=DNS_LABEL, describe=DNS_LABEL_DESCRIBE)
    if dns_namespace and reader.has("dnsNamespace"):
        dns.problem("namespace", dns_namespace, "either dns.namespace or dnsNamespace, not both")
    pod_labels = dns.string_map("podLabels", _check_label)
    cidrs = []
    for index, entry in enumerate(dns.raw("cidrs") or ()):
        checked = cidr(f"{dns.key('cidrs')}[{index}]", entry, reader.problems, private=False)
        if checked:
            cidrs.append(checked)
    if dns.has("cidrs") and not isinstance(dns.raw("cidrs"), list):
        dns.problem("cidrs", dns.raw("cidrs"), "a list of CIDRs such as 169.254.20.10/32")
        cidrs = []
    ports = port_list(dns.key("ports"), dns.raw("ports"), reader.problems, defaults.dns_ports)
    dns.finish()
    return dns_namespace, pod_labels, cidrs, ports


def _check_label(name: str, value: str) -> str | None:
    if not re.fullmatch(K8S_LABEL_KEY, name) or not re.fullmatch(K8S_LABEL_VALUE, value):
        return "a Kubernetes label (key and value)"
    return None


def _read_aws(reader: ConfigReader, region: Any, problems: list[Problem]) -> AwsSettings:
    if not isinstance(region, str) or not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", region):
        problems.append(
            Problem(
                "aws:region", region, "an AWS region such as eu-west-1 (required for target aws)"
            )
        )
        region = ""
    vpc_id, subnets = _read_own_vpc(reader)
    vpc_cidr = reader.string("vpcCidr", "10.40.0.0/16", describe="an IPv4 CIDR from /16 to /24")
    if vpc_cidr is not None and not _is_vpc_cidr(vpc_cidr):
        reader.problem("vpcCidr", vpc_cidr, "an IPv4 CIDR from /16 to /24, e.g. 10.40.0.0/16")
        vpc_cidr = "10.40.0.0/16"
    if vpc_id is not None:
        reader.reject("vpcCidr", "only when liftoff creates the VPC (leave out with vpcId)")
        reader.reject(
            "availabilityZones", "only when liftoff creates the VPC (leave out with vpcId)"
        )
    zones = reader.integer("availabilityZones", 2, minimum=2, maximum=6)
    retention = reader.integer("logRetentionDays", 365, minimum=1, maximum=3653)
    if retention not in LOG_RETENTION_DAYS:
        reader.problem(
            "logRetentionDays",
            retention,
            "one of CloudWatch Logs' retention periods: "
            + ", ".join(str(d) for d in LOG_RETENTION_DAYS),
        )
        retention = 365
    reader.finish()
    return AwsSettings(
        region=region,
        vpc_id=vpc_id,
        private_subnet_ids=tuple(subnets or ()),
        vpc_cidr=vpc_cidr or "10.40.0.0/16",
        availability_zones=zones,
        log_retention_days=retention,
    )


def _read_own_vpc(reader: ConfigReader) -> tuple[str | None, tuple[str, ...] | None]:
    """`vpcId` and `privateSubnetIds`: the customer's own network, both or neither."""
    problems = reader.problems
    vpc_id = reader.string("vpcId", pattern=r"vpc-[0-9a-f]{8,17}", describe="a VPC id (vpc-...)")
    subnets = reader.string_list(
        "privateSubnetIds",
        item_pattern=r"subnet-[0-9a-f]{8,17}",
        describe="a subnet id (subnet-...)",
    )
    if (vpc_id is None) != (subnets is None) and not any(
        p.key.startswith(reader.key("vpcId")) or p.key.startswith(reader.key("privateSubnetIds"))
        for p in problems
    ):
        which = "privateSubnetIds" if vpc_id else "vpcId"
        reader.problem(
            which,
            None,
            "vpcId and privateSubnetIds must be set together (bring your own network) or both "
            "left out (a new VPC is created)",
        )
    if subnets is not None and vpc_id is not None and len(subnets) < 2:
        reader.problem(
            "privateSubnetIds",
            list(subnets),
            "at least 2 private subnets in different availability zones",
        )
    if subnets is not None and len(set(subnets)) != len(subnets):
        reader.problem("privateSubnetIds", list(subnets), "distinct subnet ids")
    return vpc_id, subnets


# The only values CloudWatch Logs accepts (PutRetentionPolicy); "never expire" is not offered.
LOG_RETENTION_DAYS = (
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557,
    2922, 3288, 3653,
)  # fmt: skip


def _is_vpc_cidr(value: str) -> bool:
    try:
        network = ipaddress.IPv4Network(value, strict=True)
    except ValueError:
        return False
    return 16 <= network.prefixlen <= 24
