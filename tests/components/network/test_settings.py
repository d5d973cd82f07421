"""`liftoff:aws` and `liftoff:kubernetes`: defaults, the network of each target, its checks."""

from __future__ import annotations

import pytest

from components.config import load_config
from components.validation import ConfigError
from tests.components.configs import AWS, load, problems


def test_kubernetes_defaults():
    config = load({"liftoff:target": "kubernetes"}, stack="acme")
    assert config.network.kubernetes.namespace == "liftoff-acme"
    assert config.network.kubernetes.storage_class is None
    assert config.network.kubernetes.image_registry is None
    assert config.network.kubernetes.create_namespace is True
    assert config.network.aws is None


def test_aws_defaults_create_a_new_vpc():
    config = load(AWS)
    assert config.network.aws.region == "eu-west-1"
    assert not config.network.aws.bring_your_own_network
    assert config.network.aws.availability_zones == 2
    assert config.network.aws.log_retention_days == 365
    assert config.network.kubernetes is None


def test_bring_your_own_network_needs_two_distinct_subnets():
    found = problems(
        {
            "liftoff:target": "aws",
            "aws:region": "us-east-1",
            "liftoff:aws": {
                "vpcId": "vpc-0a1b2c3d4e5f60718",
                "privateSubnetIds": ["subnet-0a1b2c3d4e5f60719"],
                "vpcCidr": "10.0.0.0/16",
            },
        }
    )
    assert any("at least 2 private subnets" in p for p in found)
    assert any(
        p.startswith("liftoff:aws.vpcCidr") and "only when liftoff creates" in p for p in found
    )


def test_malformed_ids_are_named_by_index():
    (message,) = problems(
        {
            "liftoff:target": "aws",
            "aws:region": "us-east-1",
            "liftoff:aws": {
                "vpcId": "vpc-0a1b2c3d4e5f60718",
                "privateSubnetIds": ["subnet-0a1b2c3d4e5f60719", "sn-2"],
            },
        }
    )
    assert message.startswith("liftoff:aws.privateSubnetIds[1]: got 'sn-2'")


def test_vpc_cidr_and_zone_count_ranges():
    found = problems(
        {
            "liftoff:target": "aws",
            "aws:region": "us-east-1",
            "liftoff:aws": {"vpcCidr": "10.0.0.0/8", "availabilityZones": 1},
        }
    )
    assert any(p.startswith("liftoff:aws.vpcCidr: got '10.0.0.0/8'") for p in found)
    assert any(
        p.startswith("liftoff:aws.availabilityZones: got 1; allowed: a whole number from 2 to 6")
        for p in found
    )


def test_namespace_must_be_a_dns_label():
    (message,) = problems(
        {"liftoff:target": "kubernetes", "liftoff:kubernetes": {"namespace": "Data_Platform"}}
    )
    assert message.startswith("liftoff:kubernetes.namespace: got 'Data_Platform'")


def test_image_registry_without_scheme():
    (message,) = problems(
        {
            "liftoff:target": "kubernetes",
            "liftoff:kubernetes": {"imageRegistry": "https://registry.corp/"},
        }
    )
    assert message.startswith("liftoff:kubernetes.imageRegistry: got 'https://registry.corp/'")


def test_dns_settings_are_checked():

    with pytest.raises(ConfigError) as error:
        load_config(
            {
                "liftoff:target": "kubernetes",
                "liftoff:kubernetes": '{"dnsNamespace": "a", "dns": {"namespace": "b", '
                '"cidrs": ["169.254.20.10"], "ports": [0], "podLabels": {"k": "bad value"}}}',
            },
            project="liftoff",
            stack="dev",
        )
    message = str(error.value)
    assert "liftoff:kubernetes.dns.namespace: got 'b'" in message
    assert "liftoff:kubernetes.dns.ports: got [0]" in message
    assert "liftoff:kubernetes.dns.podLabels" in message
    assert "liftoff:kubernetes.dns.cidrs[0]: got '169.254.20.10'" not in message  # a /32 host
