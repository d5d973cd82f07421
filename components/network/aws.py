"""AWS network: a private-only VPC (or the customer's own) plus Cloud Map service discovery."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components import aws_iam
from components.aws_logs import LogSettings, log_group
from components.network.settings import AwsSettings

# AWS APIs that functions inside the VPC call: credentials (Secrets Manager) and the
# dead-letter queues (SQS). Kinesis is polled by Lambda's event-source mappings, outside; S3
# goes through the gateway endpoint; Lambda's own logs leave through the Lambda service.
# tests/components/network/test_endpoint_audit.py derives these from the services' code.
INTERFACE_ENDPOINTS = ("secretsmanager", "sqs")
# What MWAA needs in a VPC without internet access (AWS's list for private networking), plus
# `lambda`: the reconciliation DAG invokes the reconcile function from the workers.
MWAA_ENDPOINTS = (
    "airflow.api", "airflow.env", "airflow.ops", "ecr.api", "ecr.dkr", "kms", "lambda", "logs",
    "monitoring", "sqs",
)  # fmt: skip


@dataclass(frozen=True)
class AwsNetworkArgs:
    settings: AwsSettings
    discovery_domain: str
    """Private DNS domain of the Cloud Map namespace, e.g. `liftoff-prod.internal`."""
    interface_endpoints: tuple[str, ...] = INTERFACE_ENDPOINTS
    """Default: Secrets Manager and SQS. Interface endpoints of a new VPC (none for yours)."""
    logs: LogSettings | None = None
    """Default: 365-day retention, AWS-managed encryption (the flow-log group)."""


def subnet_cidrs(vpc_cidr: str, count: int) -> list[str]:
    """Carve `count` equal private subnets out of the VPC range, leaving room for up to 8.

    Deterministic: the same range and count always give the same subnets.
    """
    network = ipaddress.IPv4Network(vpc_cidr)
    new_prefix = min(network.prefixlen + 3, 28)
    return [str(subnet) for subnet in list(network.subnets(new_prefix=new_prefix))[:count]]


class AwsNetwork(pulumi.ComponentResource):
    """The VPC the platform runs in, and its private DNS namespace.

    A new VPC has private subnets only: no internet gateway, no NAT, nothing public. AWS APIs
    are reached through VPC endpoints (S3 gateway endpoint here; other capabilities add the
    interface endpoints they need). With `vpcId`/`privateSubnetIds` the customer's network is
    used as it is and only the discovery namespace is created in it.
    """

    vpc_id: pulumi.Output[str]
    private_subnet_ids: pulumi.Output[list[str]]
    discovery_namespace: aws.servicediscovery.PrivateDnsNamespace

    def __init__(self, name: str, args: AwsNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("liftoff:network:AwsNetwork", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        settings = args.settings
        self.discovery_domain = args.discovery_domain
        self._logs = args.logs or LogSettings(retention_days=365, kms_key_arn=None)
        self.endpoints: dict[str, aws.ec2.VpcEndpoint] = {}
        """The VPC endpoints by service (`sqs`, `s3`, ...); none in the customer's own VPC."""

        if settings.bring_your_own_network:
            self.vpc: aws.ec2.Vpc | None = None
            assert settings.vpc_id is not None
            self.vpc_id = pulumi.Output.from_input(settings.vpc_id)
            self.private_subnet_ids = pulumi.Output.from_input(list(settings.private_subnet_ids))
        else:
            self._create_vpc(name, settings, args.interface_endpoints, child)

        self.discovery_namespace = aws.servicediscovery.PrivateDnsNamespace(
            f"{name}-discovery",
            name=args.discovery_domain,
            vpc=self.vpc_id,
            description="liftoff service discovery: stable names for the platform's services",
            opts=child,
        )
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "privateSubnetIds": self.private_subnet_ids,
                "discoveryNamespaceId": self.discovery_namespace.id,
            }
        )

    def _create_vpc(
        self,
        name: str,
        settings: AwsSettings,
        interface_endpoints: tuple[str, ...],
        child: pulumi.ResourceOptions,
    ) -> None:
        self.vpc = vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=settings.vpc_cidr,
            # Both are required for Cloud Map private DNS and interface VPC endpoints.
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"{name}-vpc"},
            opts=child,
        )
        self.vpc_id = vpc.id
        # The default security group admits all traffic between its members; strip it so that
        # only the platform's explicit groups are ever used.
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg", vpc_id=vpc.id, ingress=[], egress=[], opts=child
        )
        route_table = self._declare_private_subnets(name, settings, child)
        self._declare_endpoints(name, settings, interface_endpoints, route_table, child)
        self._flow_logs(name, child)

    def _declare_private_subnets(
        self, name: str, settings: AwsSettings, child: pulumi.ResourceOptions
    ) -> aws.ec2.RouteTable:
        """One private subnet per zone, on one route table (no NAT: nothing routes out)."""
        zones = aws.get_availability_zones_output(
            state="available", opts=pulumi.InvokeOutputOptions(parent=self)
        )
        route_table = aws.ec2.RouteTable(
            f"{name}-private-routes",
            vpc_id=self.vpc_id,
            tags={"Name": f"{name}-private"},
            opts=child,
        )
        subnets = []
        for index, cidr in enumerate(subnet_cidrs(settings.vpc_cidr, settings.availability_zones)):
            subnet = aws.ec2.Subnet(
                f"{name}-private-{index}",
                vpc_id=self.vpc_id,
                cidr_block=cidr,
                availability_zone=zones.names.apply(lambda names, i=index: _zone(names, i)),
                map_public_ip_on_launch=False,
                tags={"Name": f"{name}-private-{index}", "liftoff/tier": "private"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{index}-routes",
                subnet_id=subnet.id,
                route_table_id=route_table.id,
                opts=child,
            )
            subnets.append(subnet)
        self.private_subnets = subnets
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in subnets]).apply(list)
        return route_table

    def _declare_endpoints(
        self,
        name: str,
        settings: AwsSettings,
        interface_endpoints: tuple[str, ...],
        route_table: aws.ec2.RouteTable,
        child: pulumi.ResourceOptions,
    ) -> None:
        subnets = self.private_subnets
        # Functions inside the VPC (database setup, warehouse loader) call a few AWS APIs;
        # with no NAT, interface endpoints are the way out.
        self.endpoint_security_group = aws.ec2.SecurityGroup(
            f"{name}-endpoints-sg",
            vpc_id=self.vpc_id,
            description="liftoff VPC interface endpoints: HTTPS from inside the VPC",
            ingress=[
                {
                    "protocol": "tcp",
                    "from_port": 443,
                    "to_port": 443,
                    "cidr_blocks": [settings.vpc_cidr],
                    "description": "HTTPS from the VPC",
                }
            ],
            opts=child,
        )
        for service in dict.fromkeys(interface_endpoints):
            self.endpoints[service] = aws.ec2.VpcEndpoint(
                f"{name}-{service.replace('.', '-')}-endpoint",
                vpc_id=self.vpc_id,
                service_name=f"com.amazonaws.{settings.region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[s.id for s in subnets],
                security_group_ids=[self.endpoint_security_group.id],
                opts=child,
            )
        self.endpoints["s3"] = aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint",
            vpc_id=self.vpc_id,
            service_name=f"com.amazonaws.{settings.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[route_table.id],
            opts=child,
        )

    def _flow_logs(self, name: str, child: pulumi.ResourceOptions) -> None:
        # Auto-named, as before retention was configurable: naming it now would replace it.
        group = log_group(f"{name}-flow-logs", log_group_name=None, logs=self._logs, parent=self)
        role = aws.iam.Role(
            f"{name}-flow-logs-role",
            assume_role_policy=aws_iam.assume_role_policy("vpc-flow-logs.amazonaws.com"),
            opts=child,
        )
        actions = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
        aws.iam.RolePolicy(
            f"{name}-flow-logs-policy",
            role=role.id,
            policy=group.arn.apply(
                lambda arn: aws_iam.document(
                    [{"Effect": "Allow", "Action": actions, "Resource": [arn, f"{arn}:*"]}]
                )
            ),
            opts=child,
        )
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=self.vpc_id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            opts=child,
        )

    def endpoints_for(self, services: tuple[str, ...]) -> list[pulumi.Resource]:
        """The endpoints a process calling `services` must wait for (none in your own VPC,
        where reaching AWS APIs is the customer's network's job)."""
        return [self.endpoints[s] for s in services if s in self.endpoints]

    def dns_name(self, service: str) -> pulumi.Output[str]:
        return pulumi.Output.from_input(f"{service}.{self.discovery_domain}")

    def register_cname(
        self, name: str, service: str, target: pulumi.Input[str], parent: pulumi.Resource
    ) -> pulumi.Output[str]:
        """Publish `<service>.<domain>` as a CNAME to `target` (an AWS endpoint hostname).

        The Cloud Map records are children of `parent`, the capability that owns the name.
        """
        child = pulumi.ResourceOptions(parent=parent)
        discovery_service = aws.servicediscovery.Service(
            f"{name}-discovery",
            name=service,
            dns_config={
                "namespace_id": self.discovery_namespace.id,
                # CNAME records require the weighted routing policy.
                "routing_policy": "WEIGHTED",
                "dns_records": [{"ttl": 30, "type": "CNAME"}],
            },
            opts=child,
        )
        aws.servicediscovery.Instance(
            f"{name}-discovery-target",
            instance_id=service,
            service_id=discovery_service.id,
            attributes={"AWS_INSTANCE_CNAME": target},
            opts=child,
        )
        return self.dns_name(service)


def _zone(names: list[str], index: int) -> str:
    if index >= len(names):
        raise ValueError(
            f"liftoff:aws.availabilityZones asks for {index + 1} zones but the region has only "
            f"{len(names)} available: {', '.join(names)}"
        )
    return names[index]
