"""Stack configuration: defaults, and one clear message listing every problem."""

from __future__ import annotations

import json

import pytest

from components.config import ConfigError, load_config


def load(values: dict, stack: str = "dev"):
    raw = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in values.items()}
    return load_config(raw, project="liftoff", stack=stack)


def problems(values: dict, stack: str = "dev") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(values, stack)
    return [str(p) for p in caught.value.problems]


def test_kubernetes_defaults():
    config = load({"liftoff:target": "kubernetes"}, stack="acme")
    assert config.target == "kubernetes"
    assert config.kubernetes.namespace == "liftoff-acme"
    assert config.kubernetes.storage_class is None
    assert config.kubernetes.image_registry is None
    assert config.kubernetes.create_namespace is True
    assert config.postgres.version == "17"
    assert config.postgres.deletion_protection is True
    assert config.aws is None


def test_aws_defaults_create_a_new_vpc():
    config = load({"liftoff:target": "aws", "aws:region": "eu-west-1"})
    assert config.aws.region == "eu-west-1"
    assert not config.aws.bring_your_own_network
    assert config.aws.availability_zones == 2
    assert config.postgres.instance_class == "db.t4g.small"
    assert config.postgres.backup_retention_days == 7


def test_target_is_required():
    assert problems({}) == ["liftoff:target: got None; allowed: 'aws' or 'kubernetes' (required)"]


def test_unknown_target_names_the_value():
    (message,) = problems({"liftoff:target": "gcp"})
    assert "liftoff:target: got 'gcp'" in message


def test_unknown_top_level_key_lists_known_keys():
    (message,) = problems({"liftoff:target": "kubernetes", "liftoff:postgress": {}})
    assert message.startswith("liftoff:postgress: got '{}'; allowed: no such key")
    assert "liftoff:postgres" in message


def test_unknown_nested_key():
    (message,) = problems({"liftoff:target": "kubernetes", "liftoff:postgres": {"storage": 5}})
    assert message.startswith("liftoff:postgres.storage: got 5; allowed: no such key here")
    assert "storageGb" in message


def test_every_problem_is_reported_at_once():
    found = problems(
        {
            "liftoff:target": "aws",
            "liftoff:postgres": {
                "storageGb": 5,
                "version": "9.6",
                "deletionProtection": "maybe",
                "instanceClass": "m5.large",
            },
            "liftoff:aws": {"vpcId": "vpc-0a1b2c3d4e5f60718"},
        }
    )
    text = "\n".join(found)
    assert "aws:region: got nothing" not in text  # None is shown as None
    assert "aws:region: got None; allowed: an AWS region" in text
    assert "liftoff:postgres.storageGb: got 5; allowed: a whole number from 20 to 65536" in text
    assert "liftoff:postgres.version: got '9.6'; allowed: one of '15', '16', '17'" in text
    assert "liftoff:postgres.deletionProtection: got 'maybe'; allowed: true or false" in text
    assert "liftoff:postgres.instanceClass: got 'm5.large'" in text
    assert "liftoff:aws.privateSubnetIds: got None; allowed: vpcId and privateSubnetIds" in text
    assert len(found) == 6


def test_error_message_lists_problems_line_by_line():
    with pytest.raises(ConfigError) as caught:
        load({"liftoff:target": "kubernetes", "liftoff:postgres": {"storageGb": 0}})
    assert str(caught.value) == (
        "invalid stack configuration (1 problem(s)):\n"
        "  - liftoff:postgres.storageGb: got 0; allowed: a whole number from 1 to 65536"
    )


def test_wrong_types():
    found = problems(
        {
            "liftoff:target": "kubernetes",
            "liftoff:postgres": {"storageGb": True, "highAvailability": 1},
            "liftoff:kubernetes": {"namespace": 7},
            "liftoff:tags": ["a"],
        }
    )
    text = "\n".join(found)
    assert "liftoff:postgres.storageGb: got True; allowed: a whole number" in text
    assert "liftoff:kubernetes.namespace: got 7" in text
    assert "liftoff:tags: got ['a']; allowed: an object" in text
    # highAvailability is AWS-only, so on Kubernetes it is rejected for that reason.
    assert "liftoff:postgres.highAvailability: got 1; allowed: only with target 'aws'" in text


def test_object_key_given_as_text_is_rejected():
    (message,) = problems({"liftoff:target": "kubernetes", "liftoff:postgres": "big"})
    assert message == "liftoff:postgres: got 'big'; allowed: an object (write it as a YAML mapping)"


def test_settings_for_the_other_target_are_rejected():
    found = problems(
        {
            "liftoff:target": "kubernetes",
            "liftoff:aws": {"vpcId": "vpc-0a1b2c3d4e5f60718"},
            "liftoff:postgres": {"instanceClass": "db.t4g.small"},
        }
    )
    assert any(p.startswith("liftoff:aws: got") and "only with target 'aws'" in p for p in found)
    assert any(p.startswith("liftoff:postgres.instanceClass") for p in found)


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


def test_kubernetes_resources_are_quantities():
    found = problems(
        {
            "liftoff:target": "kubernetes",
            "liftoff:postgres": {"resources": {"requests": {"cpu": "lots"}, "limit": {}}},
        }
    )
    assert any(p.startswith("liftoff:postgres.resources.requests.cpu: got 'lots'") for p in found)
    assert any(p.startswith("liftoff:postgres.resources.limit: got {}") for p in found)


def test_kubernetes_tags_must_be_valid_labels():
    (message,) = problems(
        {"liftoff:target": "kubernetes", "liftoff:tags": {"owner": "data platform"}}
    )
    assert message.startswith(
        "liftoff:tags.owner: got 'data platform'; allowed: a Kubernetes label"
    )


def test_aws_tags_may_not_use_the_reserved_prefix():
    (message,) = problems(
        {"liftoff:target": "aws", "aws:region": "us-east-1", "liftoff:tags": {"aws:x": "y"}}
    )
    assert message.startswith("liftoff:tags.aws:x: got 'y'; allowed: an AWS tag key")


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


def test_stack_name_must_fit_in_dns_names():
    (message,) = problems({"liftoff:target": "kubernetes"}, stack="Prod_EU")
    assert message.startswith("stack name: got 'Prod_EU'")


def test_other_namespaces_are_ignored():
    config = load({"liftoff:target": "kubernetes", "kubernetes:context": "x", "other:key": "1"})
    assert config.target == "kubernetes"


def test_tags_are_sorted_for_deterministic_inputs():
    config = load({"liftoff:target": "kubernetes", "liftoff:tags": {"b": "2", "a": "1"}})
    assert list(config.tags) == ["a", "b"]


def test_destination_credentials_must_be_secrets():
    values = {
        "liftoff:target": "kubernetes",
        "liftoff:destinations": [
            {"name": "crm", "type": "webhook", "url": "https://x.example/h", "signingSecret": "s3"}
        ],
    }
    (message,) = problems(values)
    assert message.startswith("liftoff:destinations[0].signingSecret: got <secret value hidden>")
    assert "pulumi config set --secret --path 'liftoff:destinations[0].signingSecret'" in message
    assert "s3" not in message.replace("https", "")
    raw = {k: json.dumps(v) if isinstance(v, list) else v for k, v in values.items()}
    config = load_config(raw, project="liftoff", stack="dev", secret_keys=["liftoff:destinations"])
    (destination,) = config.destinations
    assert destination.secrets == {"signingSecret": "s3"}
    assert destination.settings == {"url": "https://x.example/h"}


def test_destination_type_fields_and_sources_are_checked():
    found = problems(
        {
            "liftoff:target": "aws",
            "aws:region": "eu-west-1",
            "liftoff:sources": [{"name": "web"}],
            "liftoff:destinations": [
                {"name": "a", "type": "segment"},
                {
                    "name": "b",
                    "type": "ga4",
                    "measurementId": "UA-1",
                    "apiSecret": "x",
                    "sources": ["ios"],
                },
            ],
        }
    )
    text = "\n".join(found)
    assert "liftoff:destinations[0].type: got 'segment'; allowed: one of 'amplitude', 'ga4'" in text
    assert "liftoff:destinations[1].measurementId: got 'UA-1'" in text
    assert (
        "liftoff:destinations[1].sources[0]: got 'ios'; allowed: one of liftoff:sources: web"
        in text
    )


def test_kubernetes_archive_needs_an_endpoint_and_secret_credentials():
    found = problems(
        {
            "liftoff:target": "kubernetes",
            "liftoff:archive": {"bucket": "events", "accessKeyId": "a", "secretAccessKey": "b"},
        }
    )
    text = "\n".join(found)
    assert "liftoff:archive.endpoint: got nothing; allowed: required" in text
    assert "liftoff:archive.secretAccessKey: got <secret value hidden>; allowed: a secret" in text


def test_secret_values_are_never_echoed_in_errors():
    raw = {"liftoff:target": "kubernetes", "liftoff:archive": json.dumps({"bucket": "Bad Bucket!"})}
    with pytest.raises(ConfigError) as caught:
        load_config(raw, project="liftoff", stack="dev", secret_keys=["liftoff:archive"])
    assert "Bad Bucket" not in str(caught.value)
    assert "liftoff:archive.bucket: got <secret value hidden>" in str(caught.value)


def test_aws_archive_and_warehouse_settings():
    config = load({"liftoff:target": "aws", "aws:region": "eu-west-1"})
    assert config.archive.lifecycle_days == 90 and config.archive.expire_days is None
    assert config.warehouse.database == "warehouse"
    found = problems(
        {
            "liftoff:target": "aws",
            "aws:region": "eu-west-1",
            "liftoff:archive": {"lifecycleDays": 30, "expireDays": 10, "endpoint": "https://x"},
            "liftoff:warehouse": {"database": "dwh", "batchMaxEvents": 0},
        }
    )
    text = "\n".join(found)
    assert "liftoff:archive.expireDays: got 10; allowed: more than lifecycleDays (30)" in text
    assert (
        "liftoff:archive.endpoint: got 'https://x'; allowed: only with target 'kubernetes'" in text
    )
    assert "liftoff:warehouse.batchMaxEvents: got 0" in text


def test_unknown_chart_names_every_known_chart():
    (message,) = problems(
        {"liftoff:target": "kubernetes", "liftoff:charts": {"natz": {"path": "x.tgz"}}}
    )
    assert message.startswith("liftoff:charts.natz: got {'path': 'x.tgz'}; allowed: no such key")
    assert message.endswith("known keys: airflow, nats")


def test_collect_ip_per_source_defaults_to_true():
    config = load(
        {
            "liftoff:target": "kubernetes",
            "liftoff:sources": [{"name": "web"}, {"name": "backend", "collectIp": False}],
        }
    )
    assert {s.name: s.collect_ip for s in config.sources} == {"web": True, "backend": False}


def test_collector_edge_settings_are_validated_and_named():
    found = problems(
        {
            "liftoff:target": "kubernetes",
            "liftoff:sources": [{"name": "web", "collectIp": "sometimes"}],
            "liftoff:ingest": {
                "trustedProxies": ["10.0.0.0/8", "10.0.0.0/33", "proxy.local"],
                "maxHeaderBytes": 10,
                "headerTimeoutSeconds": 0,
            },
        }
    )
    text = "\n".join(found)
    assert "liftoff:sources[0].collectIp: got 'sometimes'; allowed: true or false" in text
    assert "liftoff:ingest.trustedProxies[1]: got '10.0.0.0/33'" in text
    assert "liftoff:ingest.trustedProxies[2]: got 'proxy.local'" in text
    assert "liftoff:ingest.maxHeaderBytes: got 10" in text
    assert "liftoff:ingest.headerTimeoutSeconds: got 0" in text


def test_trusted_proxies_are_normalised_and_kubernetes_only():
    config = load(
        {
            "liftoff:target": "kubernetes",
            "liftoff:ingest": {"trustedProxies": ["10.1.2.3/8", "fd00::1", "10.0.0.0/8"]},
        }
    )
    assert config.ingest.kubernetes.trusted_proxies == ("10.0.0.0/8", "fd00::1/128")
    found = problems({"liftoff:target": "aws", "liftoff:ingest": {"trustedProxies": []}})
    assert any("liftoff:ingest.trustedProxies" in p and "kubernetes" in p for p in found)


def test_allowed_origins_per_source():
    config = load(
        {
            "liftoff:target": "kubernetes",
            "liftoff:sources": [
                {"name": "web", "allowedOrigins": ["https://b.example", "https://*.a.example"]},
                {"name": "backend"},
            ],
        }
    )
    sources = {s.name: s for s in config.sources}
    assert sources["web"].allowed_origins == ("https://*.a.example", "https://b.example")
    assert sources["web"].restricts_origins
    assert sources["backend"].allowed_origins == ("*",)
    assert not sources["backend"].restricts_origins


@pytest.mark.parametrize(
    "origin",
    [
        "https://shop.example/",  # a path: browsers never send one
        "https://Shop.example",  # browsers send the host in lower case
        "ftp://shop.example",
        "shop.example",
        "https://shop.example:port",
        "null",
        "",
    ],
)
def test_malformed_allowed_origins_are_named(origin):
    found = problems(
        {
            "liftoff:target": "kubernetes",
            "liftoff:sources": [{"name": "web", "allowedOrigins": ["https://ok.example", origin]}],
        }
    )
    assert any(
        p.startswith(f"liftoff:sources[0].allowedOrigins[1]: got {origin!r}") for p in found
    ), found


def test_allowed_origins_must_be_a_non_empty_list():
    found = problems(
        {
            "liftoff:target": "kubernetes",
            "liftoff:sources": [
                {"name": "web", "allowedOrigins": []},
                {"name": "ios", "allowedOrigins": "https://shop.example"},
            ],
        }
    )
    text = "\n".join(found)
    assert "liftoff:sources[0].allowedOrigins: got []" in text
    assert "liftoff:sources[1].allowedOrigins: got 'https://shop.example'" in text


def test_public_url_of_the_collector():
    config = load(
        {
            "liftoff:target": "kubernetes",
            "liftoff:ingest": {
                "host": "events.example.com",
                "publicUrl": "https://events.example.com",
            },
        }
    )
    assert config.ingest.kubernetes.public_url == "https://events.example.com"
    found = problems(
        {"liftoff:target": "kubernetes", "liftoff:ingest": {"publicUrl": "https://e.example/x"}}
    )
    assert any(p.startswith("liftoff:ingest.publicUrl: got 'https://e.example/x'") for p in found)
    found = problems(
        {
            "liftoff:target": "aws",
            "aws:region": "eu-west-1",
            "liftoff:ingest": {"publicUrl": "https://e.example"},
        }
    )
    assert any(p.startswith("liftoff:ingest.publicUrl:") for p in found), found


AWS = {"liftoff:target": "aws", "aws:region": "eu-west-1"}


def test_airflow_web_access_peers_default_to_none_and_are_read():
    config = load(AWS)
    assert config.airflow.web_access_cidrs == ()
    assert config.airflow.web_access_security_group_ids == ()
    assert config.aws.log_retention_days == 365
    config = load(
        {
            **AWS,
            "liftoff:airflow": {
                "webAccessCidrs": ["10.8.0.0/16", "10.8.0.0/16", "172.16.0.0/24"],
                "webAccessSecurityGroupIds": ["sg-0123456789abcdef0"],
            },
        }
    )
    assert config.airflow.web_access_cidrs == ("10.8.0.0/16", "172.16.0.0/24")
    assert config.airflow.web_access_security_group_ids == ("sg-0123456789abcdef0",)


def test_airflow_web_access_peers_are_validated():
    found = problems(
        {
            **AWS,
            "liftoff:airflow": {
                "webAccessCidrs": ["10.8.0.1/16", "0.0.0.0/0"],
                "webAccessSecurityGroupIds": ["bastion"],
            },
        }
    )
    assert any(p.startswith("liftoff:airflow.webAccessCidrs[0]: got '10.8.0.1/16'") for p in found)
    assert any(
        p.startswith("liftoff:airflow.webAccessCidrs[1]: got '0.0.0.0/0'") and "public" in p
        for p in found
    )
    assert any(
        p.startswith("liftoff:airflow.webAccessSecurityGroupIds[0]: got 'bastion'") and "sg-" in p
        for p in found
    )
    public = problems(
        {**AWS, "liftoff:airflow": {"webAccess": "public", "webAccessCidrs": ["10.8.0.0/16"]}}
    )
    assert public == [
        "liftoff:airflow.webAccessCidrs: got ['10.8.0.0/16']; allowed: only with webAccess "
        "'private' (a public web server is reached over the internet)"
    ]
    kubernetes = problems(
        {"liftoff:target": "kubernetes", "liftoff:airflow": {"webAccessCidrs": ["10.8.0.0/16"]}}
    )
    assert any("webAccessCidrs" in p and "only with target 'aws'" in p for p in kubernetes)
