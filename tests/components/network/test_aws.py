"""AWS network: a private-only VPC, or the customer's own, plus Cloud Map discovery."""

from __future__ import annotations

import ipaddress
import json

from components.network.aws import subnet_cidrs
from tests.conftest import stack_run


def test_new_vpc_has_private_subnets_in_distinct_zones():
    run = stack_run("aws")
    vpc = run.one("aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == "10.40.0.0/16"
    assert vpc.inputs["enableDnsHostnames"] and vpc.inputs["enableDnsSupport"]
    subnets = run.of_type("aws:ec2/subnet:Subnet")
    assert len(subnets) == 2
    assert len({s.inputs["availabilityZone"] for s in subnets}) == 2
    assert all(s.inputs["mapPublicIpOnLaunch"] is False for s in subnets)


def test_new_vpc_has_nothing_public():
    types = {r.type for r in stack_run("aws").resources}
    assert "aws:ec2/internetGateway:InternetGateway" not in types
    assert "aws:ec2/natGateway:NatGateway" not in types
    assert "aws:ec2/eip:Eip" not in types


def test_default_security_group_is_stripped_and_flow_logs_on():
    run = stack_run("aws")
    default_sg = run.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert default_sg.inputs.get("ingress", []) == [] and default_sg.inputs.get("egress", []) == []
    flow_log = run.one("aws:ec2/flowLog:FlowLog")
    assert flow_log.inputs["trafficType"] == "ALL"


def test_bring_your_own_network_creates_no_network_resources():
    run = stack_run("aws-byo-network")
    types = {r.type for r in run.resources}
    assert not {
        t for t in types if t.startswith("aws:ec2/") and t != "aws:ec2/securityGroup:SecurityGroup"
    }
    namespace = run.one("aws:servicediscovery/privateDnsNamespace:PrivateDnsNamespace")
    assert namespace.inputs["vpc"] == "vpc-0a1b2c3d4e5f60718"
    assert namespace.inputs["name"] == "liftoff-aws-byo-network.internal"
    subnet_group = run.one("aws:rds/subnetGroup:SubnetGroup")
    assert subnet_group.inputs["subnetIds"] == [
        "subnet-0a1b2c3d4e5f60719",
        "subnet-0a1b2c3d4e5f6071a",
    ]


def test_every_taggable_resource_gets_the_stack_tags_through_the_provider():
    provider = stack_run("aws").one("pulumi:providers:aws")
    # Providers receive nested settings JSON-encoded.
    tags = json.loads(provider.inputs["defaultTags"])
    assert tags["tags"]["environment"] == "production"
    assert tags["tags"]["liftoff:stack"] == "aws"
    assert provider.inputs["region"] == "eu-west-1"


def test_subnet_cidrs_do_not_overlap_and_fit_in_the_vpc():
    cidrs = subnet_cidrs("10.40.0.0/16", 6)
    networks = [ipaddress.IPv4Network(c) for c in cidrs]
    assert len(set(cidrs)) == 6
    assert all(n.subnet_of(ipaddress.IPv4Network("10.40.0.0/16")) for n in networks)
    assert not any(a.overlaps(b) for i, a in enumerate(networks) for b in networks[i + 1 :])
    assert subnet_cidrs("10.40.0.0/16", 2) == ["10.40.0.0/19", "10.40.32.0/19"]
