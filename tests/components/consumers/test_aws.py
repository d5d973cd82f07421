"""Consumers on AWS: Lambda functions on their own Kinesis event-source mappings."""

from __future__ import annotations

import json

from components.consumers.aws import physical_name
from tests.conftest import stack_run

MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
FUNCTION = "aws:lambda/function:Function"


def test_each_consumer_has_its_own_checkpointed_mapping():
    run = stack_run("aws")
    mappings = {r.name: r.inputs for r in run.of_type(MAPPING)}
    assert set(mappings) == {
        "liftoff-consumers-archiver-mapping",
        "liftoff-consumers-loader-mapping",
        "liftoff-consumers-broadcaster-crm-mapping",
        "liftoff-consumers-broadcaster-mixpanel-mapping",
        "liftoff-consumers-broadcaster-amplitude-mapping",
        "liftoff-consumers-broadcaster-ga4-mapping",
    }
    stream_arn = run.one("aws:kinesis/stream:Stream").inputs["arn"]
    for mapping in mappings.values():
        assert mapping["eventSourceArn"] == stream_arn
        assert mapping["functionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["bisectBatchOnFunctionError"] is True
        assert mapping["maximumRetryAttempts"] == 10
        assert mapping["maximumRecordAgeInSeconds"] == 168 * 3600  # the stream's retention
        assert mapping["startingPosition"] == "TRIM_HORIZON"
        assert mapping["destinationConfig"]["onFailure"]["destinationArn"].startswith("arn:aws:sqs")
    archiver = mappings["liftoff-consumers-archiver-mapping"]
    assert (archiver["batchSize"], archiver["maximumBatchingWindowInSeconds"]) == (10000, 60)


def test_dead_letter_queues_are_encrypted():
    # Every queue of the stack (consumers' dead letters: SSE-SQS; collector quarantine: KMS).
    for queue in stack_run("aws").of_type("aws:sqs/queue:Queue"):
        assert queue.inputs.get("sqsManagedSseEnabled") is True or queue.inputs["kmsMasterKeyId"]


def test_loader_runs_in_the_vpc_with_its_own_database_credentials():
    run = stack_run("aws")
    loader = run.one(FUNCTION, "liftoff-consumers-loader-function").inputs
    assert loader["handler"] == "services.aws_lambda.loader_handler"
    assert loader["vpcConfig"]["subnetIds"]
    variables = loader["environment"]["variables"]
    assert variables["PGHOST"] == "postgres.liftoff-aws.internal"
    assert variables["PGDATABASE"] == "warehouse" and variables["PGSSLMODE"] == "require"
    warehouse_secret = run.one(
        "aws:secretsmanager/secret:Secret", "liftoff-postgres-warehouse-credentials"
    )
    assert variables["LIFTOFF_WAREHOUSE_SECRET_ARN"] == warehouse_secret.inputs["arn"]
    assert "PGPASSWORD" not in variables
    read = run.one("aws:iam/rolePolicy:RolePolicy", "liftoff-postgres-warehouse-credentials-loader")
    assert (
        json.loads(read.inputs["policy"])["Statement"][0]["Resource"]
        == (warehouse_secret.inputs["arn"])
    )
    assert run.outputs["warehouse"]["database"] == "warehouse"


def test_broadcasters_get_their_destination_and_only_its_secret():
    run = stack_run("aws")
    function = run.one(FUNCTION, "liftoff-consumers-broadcaster-mixpanel-function").inputs
    variables = function["environment"]["variables"]
    destination = json.loads(variables["LIFTOFF_DESTINATION"])
    assert destination == {
        "name": "mixpanel",
        "type": "mixpanel",
        "settings": {"region": "eu"},
        "sources": ["ios", "web"],
        "events": [],
    }
    assert "placeholder" not in json.dumps(variables)
    secret = run.one(
        "aws:secretsmanager/secretVersion:SecretVersion",
        "liftoff-consumers-broadcaster-mixpanel-secrets-value",
    )
    assert "secretString" in secret.secret_paths
    assert variables["LIFTOFF_CONSUMER_NAME"] == "broadcaster-mixpanel"
    assert variables["LIFTOFF_DEAD_LETTER_URL"].startswith("sqs://")


def test_physical_names_fit_lambda_limits():
    long = physical_name("liftoff-a-thirty-character-stack", "broadcaster-" + "x" * 60)
    assert len(long) == 64
    assert long == physical_name("liftoff-a-thirty-character-stack", "broadcaster-" + "x" * 60)
    assert physical_name("liftoff-dev", "loader") == "liftoff-dev-loader"


def test_functions_in_the_vpc_wait_for_their_network_permission():
    run = stack_run("aws")
    for prefix in (
        "liftoff-consumers-loader",
        "liftoff-consumers-reconcile",
        "liftoff-postgres-setup",
    ):
        function = run.one(FUNCTION, f"{prefix}-function")
        attachment = run.one(
            "aws:iam/rolePolicyAttachment:RolePolicyAttachment", f"{prefix}-vpc-access"
        )
        assert attachment.urn in function.dependencies
        assert attachment.inputs["policyArn"].endswith("AWSLambdaVPCAccessExecutionRole")
    archiver = run.one(FUNCTION, "liftoff-consumers-archiver-function")
    assert "vpcConfig" not in archiver.inputs
