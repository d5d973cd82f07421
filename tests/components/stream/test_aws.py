"""The stream on AWS: Kinesis, KMS-encrypted, with grants scoped to the stream and its key."""

from __future__ import annotations

import json

from components.stream.aws import WRITE_ACTIONS
from tests.conftest import stack_run
from tests.harness import run_program

STREAM = "aws:kinesis/stream:Stream"


def test_on_demand_stream_is_encrypted_with_the_platform_key():
    run = stack_run("aws")
    stream = run.one(STREAM)
    assert stream.inputs["encryptionType"] == "KMS"
    assert stream.inputs["kmsKeyId"] == run.one("aws:kms/key:Key").inputs["arn"]
    assert stream.inputs["streamModeDetails"] == {"streamMode": "ON_DEMAND"}
    assert "shardCount" not in stream.inputs
    assert stream.inputs["retentionPeriod"] == 168
    assert stream.protect is True


def test_provisioned_stream_has_the_configured_shards():
    stream = stack_run("aws-byo-network").one(STREAM).inputs
    assert stream["streamModeDetails"] == {"streamMode": "PROVISIONED"}
    assert stream["shardCount"] == 4
    assert stream["retentionPeriod"] == 48


def test_protection_follows_the_stack_switch():
    run = run_program("stacks/aws.yaml", overrides={"liftoff:deletionProtection": False})
    assert run.one(STREAM).protect is False


def test_collector_may_only_put_records_to_this_stream():
    run = stack_run("aws")
    grant = run.one("aws:iam/rolePolicy:RolePolicy", "liftoff-stream-write-collector")
    statements = json.loads(grant.inputs["policy"])["Statement"]
    stream_arn = run.one(STREAM).inputs["arn"]
    key_arn = run.one("aws:kms/key:Key").inputs["arn"]
    assert statements == [
        {"Effect": "Allow", "Action": WRITE_ACTIONS, "Resource": stream_arn},
        {"Effect": "Allow", "Action": ["kms:GenerateDataKey"], "Resource": key_arn},
    ]
    role = run.one("aws:iam/role:Role", "liftoff-ingest-role")
    assert grant.inputs["role"] == role.inputs["name"]
