"""Airflow on AWS: MWAA in the stack's private subnets, DAGs from a private bucket."""

from __future__ import annotations

import json

from components.airflow import dag_files
from tests.conftest import stack_run

ENVIRONMENT = "aws:mwaa/environment:Environment"


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
    assert len(objects) == len(dag_files())
    for item in objects:
        assert item.inputs["key"].startswith("dags/")
        assert len(item.inputs["sourceHash"]) == 64


def test_execution_role_is_scoped_and_may_invoke_only_the_reconciler():
    run = stack_run("aws")
    policy = json.loads(
        run.one("aws:iam/rolePolicy:RolePolicy", "liftoff-airflow-role-policy").inputs["policy"]
    )
    actions = [a for s in policy["Statement"] for a in s["Action"]]
    assert not any("*" in action for action in actions)
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
    } <= services


def test_stack_without_airflow_declares_none():
    run = stack_run("aws-byo-network")
    assert run.of_type(ENVIRONMENT) == []
    assert "airflowUrl" not in run.outputs
