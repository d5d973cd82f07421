"""Consumers on AWS: Lambda functions on their own Kinesis event-source mappings."""

from __future__ import annotations

import json

import pytest

from components.consumers.aws import SHARED_THROUGHPUT_CONSUMERS, physical_name
from components.consumers.aws_ops import DEAD_LETTER_SCAN
from components.validation import ConfigError
from tests.conftest import stack_run
from tests.harness import run_program

MAPPING = "aws:lambda/eventSourceMapping:EventSourceMapping"
FUNCTION = "aws:lambda/function:Function"
STREAM_CONSUMER = "aws:kinesis/streamConsumer:StreamConsumer"


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
    fan_out = {c.inputs["arn"] for c in run.of_type(STREAM_CONSUMER)}
    for mapping in mappings.values():
        assert mapping["eventSourceArn"] == stream_arn or mapping["eventSourceArn"] in fan_out
        assert mapping["functionResponseTypes"] == ["ReportBatchItemFailures"]
        assert mapping["bisectBatchOnFunctionError"] is True
        assert mapping["maximumRetryAttempts"] == 10
        assert mapping["maximumRecordAgeInSeconds"] == 168 * 3600  # the stream's retention
        assert mapping["destinationConfig"]["onFailure"]["destinationArn"].startswith("arn:aws:sqs")
    archiver = mappings["liftoff-consumers-archiver-mapping"]
    assert (archiver["batchSize"], archiver["maximumBatchingWindowInSeconds"]) == (10000, 60)


def test_only_new_broadcaster_mappings_start_at_the_end_of_the_stream():
    """The archive and the warehouse read everything the stream holds; a destination reads
    from its creation on (a new one must not get 7 days replayed: GA4 does not deduplicate).
    startingPosition is create-only (ForceNew: a delete-then-create that restarts the mapping's
    position), so no existing mapping is ever changed by it."""
    run = stack_run("aws")
    for mapping in run.of_type(MAPPING):
        role = mapping.name.removeprefix("liftoff-consumers-").removesuffix("-mapping")
        expected = "LATEST" if role.startswith("broadcaster-") else "TRIM_HORIZON"
        assert mapping.inputs["startingPosition"] == expected, role
        assert "startingPosition" in mapping.ignore_changes, role


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


def _role_policies(run, function):
    role = next(
        r for r in run.of_type("aws:iam/role:Role") if r.inputs["arn"] == function.inputs["role"]
    )
    names = {role.inputs["name"], f"{role.name}-id"}
    return [p for p in run.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] in names]


def _allows(policy, action: str, resource: str) -> bool:
    for statement in json.loads(policy.inputs["policy"])["Statement"]:
        resources = statement.get("Resource")
        resources = [resources] if isinstance(resources, str) else resources or []
        if action in statement["Action"] and resource in resources:
            return True
    return False


def test_every_mapping_waits_for_the_policies_lambda_checks_at_create_time(aws_stack):
    """Lambda refuses to create a mapping whose function's role cannot read the source
    (stream, or subscribe through its fan-out consumer) or send to its on-failure queue."""
    run = aws_stack
    functions = {f.inputs["arn"]: f for f in run.of_type(FUNCTION)}
    queues = {q.inputs["arn"] for q in run.of_type("aws:sqs/queue:Queue")}
    stream_arn = run.one("aws:kinesis/stream:Stream").inputs["arn"]
    fan_out = {c.inputs["arn"] for c in run.of_type(STREAM_CONSUMER)}
    mappings = run.of_type(MAPPING)
    assert mappings
    for mapping in mappings:
        function = functions[mapping.inputs["functionName"]]
        policies = _role_policies(run, function)
        source = mapping.inputs["eventSourceArn"]
        queue = mapping.inputs["destinationConfig"]["onFailure"]["destinationArn"]
        assert queue in queues
        needed = [("sqs:SendMessage", queue), ("kinesis:GetRecords", stream_arn)]
        if source in fan_out:
            needed += [
                ("kinesis:SubscribeToShard", source),
                ("kinesis:DescribeStreamConsumer", source),
            ]
        for action, resource in needed:
            granting = [p for p in policies if _allows(p, action, resource)]
            assert granting, f"{function.name}: no policy allows {action} on {resource}"
            assert any(p.urn in mapping.dependencies for p in granting), (
                f"{mapping.name} does not wait for the policy allowing {action}"
            )


def test_in_vpc_mappings_wait_for_the_endpoints_their_function_calls():
    run = stack_run("aws")
    endpoints = {e.urn for e in run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    loader = run.one(MAPPING, "liftoff-consumers-loader-mapping")
    assert {
        e.urn
        for e in run.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
        if e.inputs["serviceName"].rsplit(".", 1)[-1] in ("secretsmanager", "sqs")
    } <= set(loader.dependencies) & endpoints


def test_only_archiver_and_loader_share_the_shards_read_throughput(aws_stack):
    """Kinesis gives a shard 5 reads/s and 2 MB/s shared by every polling consumer, and takes
    1 MB/s of writes: two pollers keep up; every broadcaster reads through its own enhanced
    fan-out consumer, registered on the stream, subscribing with scoped permissions."""
    run = aws_stack
    stream_arn = run.one("aws:kinesis/stream:Stream").inputs["arn"]
    consumers = {c.inputs["arn"]: c for c in run.of_type(STREAM_CONSUMER)}
    shared = []
    for mapping in run.of_type(MAPPING):
        role = mapping.name.removeprefix("liftoff-consumers-").removesuffix("-mapping")
        source = mapping.inputs["eventSourceArn"]
        if source == stream_arn:
            shared.append(role)
        else:
            consumer = consumers[source]
            assert consumer.inputs["streamArn"] == stream_arn
            assert consumer.inputs["name"] == role
            assert role.startswith("broadcaster-")
    assert len(shared) <= len(SHARED_THROUGHPUT_CONSUMERS)
    assert set(shared) <= set(SHARED_THROUGHPUT_CONSUMERS)
    assert "archiver" in shared
    # Fan-out actions are granted on the consumer only, never on the whole stream.
    for policy in run.of_type("aws:iam/rolePolicy:RolePolicy"):
        for statement in json.loads(policy.inputs["policy"])["Statement"]:
            if {"kinesis:SubscribeToShard", "kinesis:DescribeStreamConsumer"} & set(
                statement["Action"]
            ):
                assert statement["Resource"] in consumers, policy.name


def test_more_destinations_than_kinesis_fan_out_consumers_are_refused():
    many = [
        {"name": f"d{i}", "type": "webhook", "url": f"https://d{i}.example.com/hook"}
        for i in range(21)
    ]
    with pytest.raises(ConfigError) as error:
        run_program("stacks/aws-byo-network.yaml", overrides={"liftoff:destinations": many})
    assert "liftoff:destinations" in str(error.value)
    assert "at most 20 on AWS" in str(error.value)


def test_the_ops_function_runs_regulations_with_exactly_what_they_need():
    """Its environment names the collector's stores and every consumer's queue; its role may
    rewrite the one list object and the archive, read the list's key, scan those queues —
    each statement on named resources."""
    run = stack_run("aws")
    function = run.one(FUNCTION, "liftoff-consumers-reconcile-function").inputs
    variables = function["environment"]["variables"]
    supp = run.one("aws:s3/bucket:Bucket", "liftoff-ingest-suppression-bucket").inputs
    assert variables["LIFTOFF_SUPPRESSION_URL"] == f"s3://{supp['bucket']}/suppressed.json"
    key = run.one("aws:secretsmanager/secret:Secret", "liftoff-ingest-suppression-key").inputs
    assert variables["LIFTOFF_SUPPRESSION_KEY_SECRET_ARN"] == key["arn"]
    assert "LIFTOFF_SUPPRESSION_KEY" not in variables
    quarantine = run.one("aws:sqs/queue:Queue", "liftoff-ingest-quarantine").inputs
    assert variables["LIFTOFF_QUARANTINE_URL"] == f"sqs://{quarantine['name']}"
    consumers = [q for q in run.of_type("aws:sqs/queue:Queue") if "-dead-letter" in q.name]
    scanned = {q.inputs["name"] for q in consumers if "reconcile" not in q.name}
    urls = variables["LIFTOFF_REGULATION_DEAD_LETTER_URLS"].split(",")
    assert {url.removeprefix("sqs://") for url in urls} == scanned and len(scanned) >= 3

    policy = run.one(
        "aws:iam/rolePolicy:RolePolicy", "liftoff-consumers-reconcile-regulation-policy"
    )
    statements = json.loads(policy.inputs["policy"])["Statement"]
    by_action = {tuple(s["Action"]): s for s in statements}
    assert by_action[("s3:GetObject", "s3:PutObject")]["Resource"] == (
        f"{supp['arn']}/suppressed.json"
    )
    listing = by_action[("s3:ListBucket",)]
    assert listing["Resource"] == supp["arn"]
    assert listing["Condition"] == {"StringEquals": {"s3:prefix": "suppressed.json"}}
    queues = by_action[tuple(DEAD_LETTER_SCAN)]["Resource"]
    arns = {q.inputs["arn"] for q in consumers if "reconcile" not in q.name}
    assert set(queues) == arns | {quarantine["arn"]}
    assert "sqs:SendMessage" not in json.dumps(statements)
    for statement in statements:
        assert "*" not in json.dumps(statement["Resource"]), statement
    # The archive: rewritten (a delete), as the archiver may; the MWAA role invokes the function.
    run.one("aws:iam/rolePolicy:RolePolicy", "liftoff-archive-write-reconcile")


def test_the_ops_function_may_keep_replay_progress_in_the_archive(aws_stack):
    """A `replay` payload reads the archive and writes its progress under
    `liftoff/replay-progress/` (encrypted with the platform key): the role's archive grants
    cover both (the write one is there for regulations), and no new grant is needed."""
    run = aws_stack
    function = run.one(FUNCTION, "liftoff-consumers-reconcile-function")
    archive = run.one("aws:s3/bucket:Bucket", "liftoff-archive-bucket").inputs["arn"]
    key = run.one("aws:kms/key:Key").inputs["arn"]
    policies = _role_policies(run, function)
    for action, resource in (
        ("s3:GetObject", f"{archive}/*"),
        ("s3:PutObject", f"{archive}/*"),  # liftoff/replay-progress/<hash>.json among them
        ("s3:ListBucket", archive),  # a first run: NoSuchKey, not AccessDenied
        ("kms:GenerateDataKey", key),
        ("kms:Decrypt", key),
    ):
        assert any(_allows(p, action, resource) for p in policies), (run.stack, action)
