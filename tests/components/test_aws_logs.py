"""Every log group on AWS: the stack's retention and the platform key, declared before the
service that writes to it (a service creating its own group sets no retention)."""

from __future__ import annotations

import json

import pytest

from components.validation import ConfigError
from tests.harness import run_program

LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"


def test_every_log_group_has_the_retention_and_the_platform_key(aws_stack):
    key = aws_stack.one("aws:kms/key:Key").inputs["arn"]
    groups = aws_stack.of_type(LOG_GROUP)
    assert groups
    for group in groups:
        assert group.inputs["retentionInDays"] == 365, group.name  # the default
        assert group.inputs["kmsKeyId"] == key, group.name


def test_every_log_producing_service_writes_to_a_declared_group(aws_stack):
    run = aws_stack
    by_name = {g.inputs.get("name"): g for g in run.of_type(LOG_GROUP)}
    by_arn = {g.inputs["arn"]: g for g in run.of_type(LOG_GROUP)}
    for function in run.of_type("aws:lambda/function:Function"):
        group = by_name[function.inputs["loggingConfig"]["logGroup"]]
        assert group.urn in function.dependencies
    for stage in run.of_type("aws:apigatewayv2/stage:Stage"):
        assert stage.inputs["accessLogSettings"]["destinationArn"] in by_arn
    for flow_log in run.of_type("aws:ec2/flowLog:FlowLog"):
        assert flow_log.inputs["logDestination"] in by_arn
    for instance in run.of_type("aws:rds/instance:Instance"):
        for kind in instance.inputs["enabledCloudwatchLogsExports"]:
            assert f"/aws/rds/instance/{instance.inputs['identifier']}/{kind}" in by_name
    for environment in run.of_type("aws:mwaa/environment:Environment"):
        assert sum(1 for name in by_name if name and name.startswith("airflow-")) == len(
            environment.inputs["loggingConfiguration"]
        )


def test_the_platform_key_admits_cloudwatch_logs_of_its_region_and_account(aws_stack):
    """CloudWatch Logs refuses a key whose policy does not admit `logs.<region>`; the
    account's own statement keeps the key administrable through IAM."""
    region = aws_stack.config["aws:region"]
    policy = json.loads(aws_stack.one("aws:kms/key:Key").inputs["policy"])
    by_sid = {s["Sid"]: s for s in policy["Statement"]}
    account = by_sid["AccountAdministersThroughIam"]
    assert account["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    logs = by_sid["CloudWatchLogsOfThisAccount"]
    assert logs["Principal"] == {"Service": f"logs.{region}.amazonaws.com"}
    assert {"kms:Encrypt*", "kms:Decrypt*", "kms:GenerateDataKey*"} <= set(logs["Action"])
    assert logs["Condition"] == {
        "ArnLike": {
            "kms:EncryptionContext:aws:logs:arn": (
                f"arn:aws:logs:{region}:123456789012:log-group:*"
            )
        }
    }


def test_retention_is_configurable_with_cloudwatch_values_only():
    aws = {"vpcCidr": "10.40.0.0/16", "availabilityZones": 2, "logRetentionDays": 90}
    run = run_program("stacks/aws.yaml", overrides={"liftoff:aws": aws})
    assert {g.inputs["retentionInDays"] for g in run.of_type(LOG_GROUP)} == {90}
    with pytest.raises(ConfigError) as error:
        run_program("stacks/aws.yaml", overrides={"liftoff:aws": {**aws, "logRetentionDays": 100}})
    message = str(error.value)
    assert "liftoff:aws.logRetentionDays: got 100" in message
    assert "90, 120" in message
