"""Ingestion on AWS: HTTP API → collector Lambda (deterministic package) → Kinesis."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from services.collector.browser import BUNDLE_PATH, LIBRARY_PATH, SETTINGS_PATH
from services.collector.ingest import ROUTES
from tests.conftest import stack_run

FUNCTION = "aws:lambda/function:Function"


def test_function_runs_the_packaged_collector():
    function = stack_run("aws").one(FUNCTION, "liftoff-ingest-function").inputs
    assert function["handler"] == "services.aws_lambda.collector_handler"
    assert function["runtime"] == "python3.12" and function["architectures"] == ["arm64"]
    assert function["memorySize"] == 1024
    archive = Path(function["code"]["file"])
    digest = base64.b64encode(hashlib.sha256(archive.read_bytes()).digest()).decode()
    assert function["sourceCodeHash"] == digest
    assert function["name"] == "liftoff-aws-collector"


def test_write_keys_are_never_in_the_function_environment():
    run = stack_run("aws")
    variables = run.one(FUNCTION, "liftoff-ingest-function").inputs["environment"]["variables"]
    assert set(variables) == {
        "LIFTOFF_STREAM_URL",
        "LIFTOFF_WRITE_KEYS_SECRET_ARN",
        "LIFTOFF_LOG_LEVEL",
        "LIFTOFF_DEAD_LETTER_URL",
        "LIFTOFF_IP_COLLECTION_OFF",
        "LIFTOFF_ALLOWED_ORIGINS",
        "LIFTOFF_SUPPRESSION_URL",
        "LIFTOFF_SUPPRESSION_KEY_SECRET_ARN",  # the suppression key is a secret too, never here
    }
    # Only the source that restricts origins is listed (the others allow any).
    assert json.loads(variables["LIFTOFF_ALLOWED_ORIGINS"]) == {
        "web": ["https://*.example.com", "https://www.example.com"]
    }
    assert (
        variables["LIFTOFF_STREAM_URL"]
        == "kinesis://" + run.one("aws:kinesis/stream:Stream").inputs["name"]
    )
    assert run.outputs["writeKeys"].keys() == {"web", "ios", "backend"}
    assert "writeKeys" in run.secret_outputs


def test_role_reaches_only_its_logs_secret_and_key():
    run = stack_run("aws")
    policy = json.loads(
        run.one("aws:iam/rolePolicy:RolePolicy", "liftoff-ingest-role-policy").inputs["policy"]
    )
    secret_arn = run.one("aws:secretsmanager/secret:Secret", "liftoff-ingest-write-keys").inputs[
        "arn"
    ]
    resources = [s["Resource"] for s in policy["Statement"]]
    assert secret_arn in resources
    for statement in policy["Statement"]:
        assert all("*" not in action for action in statement["Action"])
        resource = statement["Resource"]
        for arn in resource if isinstance(resource, list) else [resource]:
            assert arn.startswith("arn:aws:") and arn != "*"


def test_the_function_reads_one_suppression_object_and_its_key():
    """The list lives in a bucket of its own (the archive's lifecycle may expire objects); the
    role may read that one object, and the key's secret, nothing else of either."""
    run = stack_run("aws")
    variables = run.one(FUNCTION, "liftoff-ingest-function").inputs["environment"]["variables"]
    bucket = run.one("aws:s3/bucket:Bucket", "liftoff-ingest-suppression-bucket")
    assert bucket.protect  # which users must stay suppressed is state
    name = bucket.inputs["bucket"]
    assert variables["LIFTOFF_SUPPRESSION_URL"] == f"s3://{name}/suppressed.json"
    secret = run.one("aws:secretsmanager/secret:Secret", "liftoff-ingest-suppression-key")
    assert variables["LIFTOFF_SUPPRESSION_KEY_SECRET_ARN"] == secret.inputs["arn"]
    read = json.loads(
        run.one("aws:iam/rolePolicy:RolePolicy", "liftoff-ingest-suppression-policy").inputs[
            "policy"
        ]
    )
    assert read["Statement"] == [
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": f"arn:aws:s3:::{name}/suppressed.json",
        },
        {  # that key only: a read before the first suppression gets NoSuchKey, not AccessDenied
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": f"arn:aws:s3:::{name}",
            "Condition": {"StringEquals": {"s3:prefix": "suppressed.json"}},
        },
    ]


def test_http_api_routes_every_collector_path_to_the_function():
    """Every path the collector answers (tracking API, short aliases, analytics.js settings,
    library and chunks), with every method: CORS and errors come from the collector."""
    run = stack_run("aws")
    api = run.one("aws:apigatewayv2/api:Api").inputs
    assert "corsConfiguration" not in api  # edge CORS would override the collector's
    routes = run.of_type("aws:apigatewayv2/route:Route")
    keys = {r.inputs["routeKey"] for r in routes}
    assert all(key.startswith("ANY /") for key in keys)
    paths = {key.removeprefix("ANY ") for key in keys}
    assert set(ROUTES) <= paths
    # API Gateway's {parameter} segments stand for what the collector's patterns match.
    concrete = {p.replace("{writeKey}", "k1").replace("{file}", "a.bundle.0f.js") for p in paths}
    for pattern in (SETTINGS_PATH, LIBRARY_PATH, BUNDLE_PATH):
        assert any(pattern.match(path) for path in concrete), pattern.pattern
    run.one("aws:apigatewayv2/integration:Integration")  # the only one: every route targets it
    assert {r.inputs["target"] for r in routes} == {"integrations/liftoff-ingest-integration-id"}
    arns = sorted(p.inputs["sourceArn"] for p in run.of_type("aws:lambda/permission:Permission"))
    assert [arn.rpartition("/*/*")[2] for arn in arns] == [
        "/analytics-next/*",
        "/analytics.js/*",
        "/v1/*",
    ]


def test_http_api_has_throttling_and_access_logs():
    run = stack_run("aws")
    api = run.one("aws:apigatewayv2/api:Api").inputs
    assert api["protocolType"] == "HTTP"
    stage = run.one("aws:apigatewayv2/stage:Stage").inputs
    assert stage["defaultRouteSettings"]["throttlingRateLimit"] == 5000
    assert stage["defaultRouteSettings"]["throttlingBurstLimit"] == 10000
    assert json.loads(stage["accessLogSettings"]["format"])["status"] == "$context.status"
    integration = run.one("aws:apigatewayv2/integration:Integration").inputs
    assert integration["payloadFormatVersion"] == "2.0"
    assert run.outputs["collectorUrl"] == api["apiEndpoint"]


def test_quarantine_queue_is_encrypted_and_only_the_collector_may_send_to_it():
    run = stack_run("aws")
    queue = run.one("aws:sqs/queue:Queue", "liftoff-ingest-quarantine").inputs
    key_arn = run.one("aws:kms/key:Key").inputs["arn"]
    assert queue["kmsMasterKeyId"] == key_arn
    assert queue["messageRetentionSeconds"] == 14 * 24 * 3600
    variables = run.one(FUNCTION, "liftoff-ingest-function").inputs["environment"]["variables"]
    assert variables["LIFTOFF_DEAD_LETTER_URL"] == "sqs://" + queue["name"]
    assert variables["LIFTOFF_IP_COLLECTION_OFF"] == "backend"
    policy = json.loads(
        run.one("aws:iam/rolePolicy:RolePolicy", "liftoff-ingest-quarantine-policy").inputs[
            "policy"
        ]
    )
    assert policy["Statement"] == [
        {
            "Effect": "Allow",
            "Action": ["sqs:SendMessage", "sqs:GetQueueUrl"],
            "Resource": queue["arn"],
        },
        {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Decrypt"], "Resource": key_arn},
    ]
