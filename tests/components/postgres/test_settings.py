"""`liftoff:postgres`: settings per target, and the checks of each key."""

from __future__ import annotations

import pytest

from components.config import load_config
from components.postgres.settings import AwsPostgresSettings, KubernetesPostgresSettings
from components.validation import ConfigError
from tests.components.configs import AWS, load, problems


def test_each_target_reads_its_own_settings():
    aws = load(AWS).postgres
    assert aws.kubernetes is None and isinstance(aws.aws, AwsPostgresSettings)
    assert (aws.aws.instance_class, aws.aws.backup_retention_days) == ("db.t4g.small", 7)
    assert aws.version == "17"
    kubernetes = load({"liftoff:target": "kubernetes"}).postgres
    assert kubernetes.aws is None and isinstance(kubernetes.kubernetes, KubernetesPostgresSettings)
    assert kubernetes.kubernetes.backup_schedule == "17 3 * * *"
    assert kubernetes.kubernetes.image_tag.startswith("17.")


def test_a_key_of_the_other_target_is_refused_with_its_reason():
    assert problems({**AWS, "liftoff:postgres": {"backupSchedule": "1 2 * * *"}}) == [
        "liftoff:postgres.backupSchedule: got '1 2 * * *'; allowed: only with target "
        "'kubernetes' (RDS schedules its own)"
    ]
    assert problems(
        {"liftoff:target": "kubernetes", "liftoff:postgres": {"instanceClass": "x"}}
    ) == [
        "liftoff:postgres.instanceClass: got 'x'; allowed: only with target 'aws' (Kubernetes "
        "uses resources)"
    ]


def test_unknown_nested_key():
    (message,) = problems({"liftoff:target": "kubernetes", "liftoff:postgres": {"storage": 5}})
    assert message.startswith("liftoff:postgres.storage: got 5; allowed: no such key here")
    assert "storageGb" in message


def test_kubernetes_resources_are_quantities():
    found = problems(
        {
            "liftoff:target": "kubernetes",
            "liftoff:postgres": {"resources": {"requests": {"cpu": "lots"}, "limit": {}}},
        }
    )
    assert any(p.startswith("liftoff:postgres.resources.requests.cpu: got 'lots'") for p in found)
    assert any(p.startswith("liftoff:postgres.resources.limit: got {}") for p in found)


def test_major_upgrade_from_is_checked():

    with pytest.raises(ConfigError, match=r"liftoff:postgres\.majorUpgradeFrom: got '17'"):
        load_config(
            {
                "liftoff:target": "kubernetes",
                "liftoff:postgres": '{"version": "17", "majorUpgradeFrom": "17"}',
            },
            project="liftoff",
            stack="dev",
        )
