"""Stack configuration, platform-wide: the target, tags, deletion protection and charts, one
clear message listing every problem of every key, and each capability's settings given for
the chosen target only (`<capability>.aws` / `.kubernetes`). Each capability's own keys are
tested beside it: tests/components/<capability>/test_settings.py."""

from __future__ import annotations

import json

import pytest

from components.config import load_config
from components.validation import ConfigError
from tests.components.configs import AWS, load, problems

CAPABILITIES = ("network", "postgres", "stream", "ingest", "airflow", "observability")


@pytest.mark.parametrize("target", ["aws", "kubernetes"])
def test_each_capability_has_the_chosen_targets_settings_only(target):
    config = load({**AWS, "liftoff:target": target}, stack="acme")
    assert config.target == target
    other = "kubernetes" if target == "aws" else "aws"
    for capability in CAPABILITIES:
        settings = getattr(config, capability)
        assert getattr(settings, target) is not None, capability
        assert getattr(settings, other) is None, capability
    assert (config.archive.aws is not None) == (target == "aws")  # optional on Kubernetes
    assert config.archive.kubernetes is None


def test_deletion_protection_is_on_by_default_and_postgres_follows_it():
    config = load({"liftoff:target": "kubernetes"})
    assert config.deletion_protection is True
    assert config.postgres.kubernetes.deletion_protection is True
    config = load({"liftoff:target": "kubernetes", "liftoff:deletionProtection": False})
    assert config.postgres.kubernetes.deletion_protection is False


def test_target_is_required():
    assert problems({}) == ["liftoff:target: got None; allowed: 'aws' or 'kubernetes' (required)"]


def test_unknown_target_names_the_value():
    (message,) = problems({"liftoff:target": "gcp"})
    assert "liftoff:target: got 'gcp'" in message


def test_unknown_top_level_key_lists_known_keys():
    (message,) = problems({"liftoff:target": "kubernetes", "liftoff:postgress": {}})
    assert message.startswith("liftoff:postgress: got '{}'; allowed: no such key")
    assert "liftoff:postgres" in message


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


def test_stack_name_must_fit_in_dns_names():
    (message,) = problems({"liftoff:target": "kubernetes"}, stack="Prod_EU")
    assert message.startswith("stack name: got 'Prod_EU'")


def test_other_namespaces_are_ignored():
    config = load({"liftoff:target": "kubernetes", "kubernetes:context": "x", "other:key": "1"})
    assert config.target == "kubernetes"


def test_tags_are_sorted_for_deterministic_inputs():
    config = load({"liftoff:target": "kubernetes", "liftoff:tags": {"b": "2", "a": "1"}})
    assert list(config.tags) == ["a", "b"]


def test_secret_values_are_never_echoed_in_errors():
    raw = {"liftoff:target": "kubernetes", "liftoff:archive": json.dumps({"bucket": "Bad Bucket!"})}
    with pytest.raises(ConfigError) as caught:
        load_config(raw, project="liftoff", stack="dev", secret_keys=["liftoff:archive"])
    assert "Bad Bucket" not in str(caught.value)
    assert "liftoff:archive.bucket: got <secret value hidden>" in str(caught.value)


def test_unknown_chart_names_every_known_chart():
    (message,) = problems(
        {"liftoff:target": "kubernetes", "liftoff:charts": {"natz": {"path": "x.tgz"}}}
    )
    assert message.startswith("liftoff:charts.natz: got {'path': 'x.tgz'}; allowed: no such key")
    assert message.endswith("known keys: airflow, nats")
