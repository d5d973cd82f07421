"""`liftoff:archive`: the bucket on AWS, the S3-compatible endpoint on Kubernetes."""

from __future__ import annotations

import json

from components.archive.settings import ArchiveSettings
from components.config import load_config
from tests.components.configs import AWS, load, problems


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


def test_aws_archive_settings():
    archive = load(AWS).archive
    assert archive.kubernetes is None
    assert archive.aws.lifecycle_days == 90 and archive.aws.expire_days is None
    assert archive.aws.batch_max_events == 10000
    found = problems(
        {
            **AWS,
            "liftoff:archive": {"lifecycleDays": 30, "expireDays": 10, "endpoint": "https://x"},
        }
    )
    text = "\n".join(found)
    assert "liftoff:archive.expireDays: got 10; allowed: more than lifecycleDays (30)" in text
    assert (
        "liftoff:archive.endpoint: got 'https://x'; allowed: only with target 'kubernetes'" in text
    )


def test_kubernetes_archive_is_optional_and_read_from_the_endpoint_keys():
    assert load({"liftoff:target": "kubernetes"}).archive == ArchiveSettings()
    values = {
        "liftoff:target": "kubernetes",
        "liftoff:archive": {
            "endpoint": "https://minio.corp:9000/",
            "bucket": "events",
            "accessKeyId": "a",
            "secretAccessKey": "b",
            "batchMaxEvents": 500,
        },
    }
    raw = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in values.items()}
    config = load_config(raw, project="liftoff", stack="dev", secret_keys=["liftoff:archive"])
    assert config.archive.aws is None
    archive = config.archive.kubernetes
    assert (archive.endpoint, archive.bucket_name, archive.region) == (
        "https://minio.corp:9000",
        "events",
        "us-east-1",
    )
    assert archive.batch_max_events == 500 and archive.batch_max_seconds == 60
