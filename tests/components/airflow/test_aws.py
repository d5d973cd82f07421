"""Airflow on AWS: MWAA in the stack's private subnets, DAGs from a private bucket."""

from __future__ import annotations

import json

from components.airflow import dag_files
from components.airflow.aws import LOG_PARTS
from components.network.aws import MWAA_ENDPOINTS
from tests.conftest import AWS_STACKS, stack_run
from tests.harness import ACCOUNT_ID, ROOT, run_program

ENVIRONMENT = "aws:mwaa/environment:Environment"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"


def test_environment_is_private_in_two_private_subnets():
    run = stack_run("aws")
    environment = run.one(ENVIRONMENT).inputs
    assert environment["airflowVersion"] == "3.0.6"
    assert environment["environmentClass"] == "mw1.medium"
    assert (environment["minWorkers"], environment["maxWorkers"]) == (2, 10)
    assert environment["webserverAccessMode"] == "PRIVATE_ONLY"
    network = environment["networkConfiguration"]
    assert len(network["subnetIds"]) == 2
    assert all(subnet.startswith("subnet-") for subnet in network["subnetIds"])
    (group,) = network["securityGroupIds"]
    assert group == "liftoff-airflow-sg-id"
    assert all(part["enabled"] for part in environment["loggingConfiguration"].values())
    assert environment["airflowConfigurationOptions"]["liftoff.target"] == "aws"
    assert run.outputs["airflowUrl"].startswith("https://")


def test_dag_bucket_is_versioned_and_filled_deterministically():
    run = stack_run("aws")
    run.one("aws:s3/bucketVersioning:BucketVersioning", "liftoff-airflow-dags-versioning")
    run.one(
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "liftoff-airflow-dags-public-access-block",
    )
    objects = run.of_type("aws:s3/bucketObjectv2:BucketObjectv2")
    # Every DAG file, the module they share and the ignore file that keeps it out of parsing.
    keys = {item.inputs["key"] for item in objects}
    assert keys == {f"dags/{path.name}" for path in dag_files()} | {"dags/.airflowignore"}
    assert "dags/liftoff_operations.py" in keys
    for item in objects:
        assert len(item.inputs["sourceHash"]) == 64


def _role_policy(run):
    return json.loads(
        run.one("aws:iam/rolePolicy:RolePolicy", "liftoff-airflow-role-policy").inputs["policy"]
    )


def _statement(policy, action):
    (found,) = [s for s in policy["Statement"] if action in s["Action"]]
    return found


def test_execution_role_follows_aws_policy_for_an_aws_owned_key():
    """Statement by statement against AWS's execution-role policy (AWS-owned key):
    docs.aws.amazon.com/mwaa/latest/userguide/mwaa-create-role.html."""
    run = stack_run("aws")
    environment = run.one(ENVIRONMENT).inputs
    # The choice: no customer key on the environment, so MWAA's queues use AWS-owned keys.
    assert "kmsKey" not in environment
    policy = _role_policy(run)
    account, region, name = ACCOUNT_ID, "eu-west-1", environment["name"]

    assert _statement(policy, "airflow:PublishMetrics")["Resource"] == (
        f"arn:aws:airflow:{region}:{account}:environment/{name}"
    )
    bucket = run.one("aws:s3/bucket:Bucket", "liftoff-airflow-dags-bucket").inputs["arn"]
    s3 = _statement(policy, "s3:GetObject")
    assert s3["Resource"] == [bucket, f"{bucket}/*"]
    assert {"s3:GetObject", "s3:ListBucket", "s3:GetBucketPublicAccessBlock"} <= set(s3["Action"])
    logs = _statement(policy, "logs:PutLogEvents")
    group = f"arn:aws:logs:{region}:{account}:log-group:airflow-{name}-*"
    assert logs["Resource"] == [group, f"{group}:*"]
    assert set(logs["Action"]) == {
        "logs:CreateLogStream", "logs:CreateLogGroup", "logs:PutLogEvents", "logs:GetLogEvents",
        "logs:GetLogRecord", "logs:GetLogGroupFields", "logs:GetQueryResults",
    }  # fmt: skip
    # Not resource-scoped actions: granted on "*" as AWS documents (a named ARN denies them).
    assert _statement(policy, "logs:DescribeLogGroups") == {
        "Effect": "Allow",
        "Action": ["logs:DescribeLogGroups"],
        "Resource": "*",
    }
    assert _statement(policy, "s3:GetAccountPublicAccessBlock") == {
        "Effect": "Allow",
        "Action": ["s3:GetAccountPublicAccessBlock"],
        "Resource": "*",
    }
    assert _statement(policy, "cloudwatch:PutMetricData")["Resource"] == "*"
    sqs = _statement(policy, "sqs:ReceiveMessage")
    assert sqs["Resource"] == f"arn:aws:sqs:{region}:*:airflow-celery-*"
    assert {"sqs:SendMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= set(
        sqs["Action"]
    )
    # The Celery queues' keys are outside this account: KMS through SQS only.
    (queue_keys,) = [s for s in policy["Statement"] if "NotResource" in s]
    assert queue_keys["NotResource"] == f"arn:aws:kms:*:{account}:key/*"
    assert queue_keys["Condition"] == {
        "StringLike": {"kms:ViaService": [f"sqs.{region}.amazonaws.com"]}
    }
    assert {"kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt", "kms:DescribeKey"} == set(
        queue_keys["Action"]
    )
    # The DAG bucket's objects are encrypted with the platform key: decrypt through S3 only.
    key = run.one("aws:kms/key:Key").inputs["arn"]
    (platform_key,) = [s for s in policy["Statement"] if s.get("Resource") == key]
    assert platform_key["Condition"] == {
        "StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}
    }
    # Everything else is scoped: the only "*" resources are the three AWS documents as such.
    unscoped = {a for s in policy["Statement"] if s.get("Resource") == "*" for a in s["Action"]}
    assert unscoped == {
        "logs:DescribeLogGroups",
        "s3:GetAccountPublicAccessBlock",
        "cloudwatch:PutMetricData",
    }
    actions = [a for s in policy["Statement"] for a in s["Action"]]
    assert not any("*" in action for action in actions)


def test_execution_role_may_invoke_only_the_reconciler():
    run = stack_run("aws")
    policy = _role_policy(run)
    reconciler = run.one("aws:lambda/function:Function", "liftoff-consumers-reconcile-function")
    invoke = [s for s in policy["Statement"] if s["Action"] == ["lambda:InvokeFunction"]]
    assert invoke == [
        {
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": reconciler.inputs["arn"],
        }
    ]
    options = run.one(ENVIRONMENT).inputs["airflowConfigurationOptions"]
    assert options["liftoff.reconcile_function"] == reconciler.inputs["name"]


def _airflow_runs():
    """Every shipped AWS stack with Airflow on (stacks that turn it off: turned on)."""
    runs = []
    for name in AWS_STACKS:
        run = stack_run(name)
        if not run.of_type(ENVIRONMENT):
            run = run_program(
                ROOT / "stacks" / f"{name}.yaml", overrides={"liftoff:airflow": {"enabled": True}}
            )
        runs.append(run)
    return runs


def test_every_environment_waits_for_its_role_policy_log_groups_and_endpoints():
    for run in _airflow_runs():
        for environment in run.of_type(ENVIRONMENT):
            policy = run.one("aws:iam/rolePolicy:RolePolicy", "liftoff-airflow-role-policy")
            role = run.one("aws:iam/role:Role", "liftoff-airflow-role")
            assert environment.inputs["executionRoleArn"] == role.inputs["arn"]
            assert policy.urn in environment.dependencies
            endpoints = {
                e.inputs["serviceName"].split(".", 3)[-1]: e
                for e in run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
            }
            # In a VPC liftoff created: every endpoint MWAA calls through exists first.
            if endpoints:
                for service in (*MWAA_ENDPOINTS, "s3"):
                    assert endpoints[service].urn in environment.dependencies, service
            # MWAA requires its source bucket versioned and closed to the public.
            (bucket,) = [
                b
                for b in run.of_type("aws:s3/bucket:Bucket")
                if b.inputs["arn"] == environment.inputs["sourceBucketArn"]
            ]
            for kind in (
                "aws:s3/bucketVersioning:BucketVersioning",
                "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
            ):
                (setting,) = [
                    r for r in run.of_type(kind) if r.inputs["bucket"] == f"{bucket.name}-id"
                ]
                assert setting.urn in environment.dependencies, kind
            groups = [
                g for g in run.of_type(LOG_GROUP) if g.inputs.get("name", "").startswith("airflow-")
            ]
            assert {g.urn for g in groups} <= set(environment.dependencies)


def test_mwaa_log_groups_are_created_first_with_retention_and_the_platform_key():
    """MWAA writes into `airflow-<environment>-<part>` and uses a group that already exists,
    so creating them first is how they get a retention and the platform key."""
    for run in _airflow_runs():
        environment = run.one(ENVIRONMENT).inputs
        key = run.one("aws:kms/key:Key").inputs["arn"]
        groups = {g.inputs.get("name"): g.inputs for g in run.of_type(LOG_GROUP)}
        enabled = [p for p, c in environment["loggingConfiguration"].items() if c["enabled"]]
        assert len(enabled) == 5
        for part in enabled:
            suffix = LOG_PARTS[_snake(part)]
            group = groups[f"airflow-{environment['name']}-{suffix}"]
            assert group["retentionInDays"] >= 90
            assert group["kmsKeyId"] == key


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def test_private_web_server_admits_only_the_configured_vpn_and_bastion():
    def web_rules(run):
        group = run.one("aws:ec2/securityGroup:SecurityGroup", "liftoff-airflow-sg")
        return [r for r in group.inputs["ingress"] if not r.get("self")]

    assert web_rules(stack_run("aws")) == []  # none by default
    airflow = {
        "environmentClass": "mw1.medium",
        "webAccess": "private",
        "webAccessCidrs": ["10.8.0.0/16", "192.168.10.0/24"],
        "webAccessSecurityGroupIds": ["sg-0123456789abcdef0"],
    }
    rules = web_rules(run_program("stacks/aws.yaml", overrides={"liftoff:airflow": airflow}))
    assert all((r["protocol"], r["fromPort"], r["toPort"]) == ("tcp", 443, 443) for r in rules)
    assert sorted(c for r in rules for c in r.get("cidrBlocks", [])) == [
        "10.8.0.0/16",
        "192.168.10.0/24",
    ]
    assert [g for r in rules for g in r.get("securityGroups", [])] == ["sg-0123456789abcdef0"]


def test_private_vpc_gets_the_endpoints_mwaa_needs():
    run = stack_run("aws")
    services = {
        r.inputs["serviceName"].split(".", 3)[-1]
        for r in run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
    }
    assert {
        "airflow.api",
        "airflow.env",
        "airflow.ops",
        "logs",
        "monitoring",
        "ecr.dkr",
        "s3",
        "sqs",
        "secretsmanager",
        "lambda",
        "kms",
        "ecr.api",
    } <= services


def test_stack_without_airflow_declares_none():
    run = stack_run("aws-byo-network")
    assert run.of_type(ENVIRONMENT) == []
    assert "airflowUrl" not in run.outputs
