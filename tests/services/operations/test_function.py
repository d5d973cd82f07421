"""A regulation on AWS: the ops function (`services.aws_lambda.reconcile_handler`) given a
`regulation` payload, with the environment the stack gives it — the suppression list as one S3
object with its key in Secrets Manager, the collector's quarantine and the consumers'
dead-letter queues on SQS (moto), the archive on S3, the warehouse on PostgreSQL."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest

from services import aws_lambda
from services.consumers.archiver.sink import decode_object, encode_object
from services.contract import ConfigError
from services.suppression.lists import ObjectStore
from tests.services.regulations.test_deletion import KEY, fill_warehouse, line

pytestmark = pytest.mark.servers


def queue_with(sqs: Any, bodies: list[dict[str, Any]]) -> str:
    name = f"dlq-{uuid.uuid4().hex[:8]}"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    for body in bodies:  # what a consumer parks: the event and why
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"event": body, "reason": "r"}))
    return name


def bodies_in(sqs: Any, name: str) -> list[Any]:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    return sorted(json.loads(m["Body"])["event"]["messageId"] for m in got.get("Messages", []))


def test_a_regulation_through_the_ops_function(
    warehouse: dict[str, str],
    bucket: tuple[Any, str],
    aws_env: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3, archive = bucket
    key = "archive/source=web/year=2026/month=12/day=01/hour=10/P-00000000000000000000.json.gz"
    lines = [line("u1", "a1", 1), line("u3", "a3", 2)]
    s3.put_object(Bucket=archive, Key=key, Body=encode_object(lines))
    lists = f"supp-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=lists)
    secret = boto3.client("secretsmanager").create_secret(
        Name=f"suppression-{uuid.uuid4().hex[:8]}", SecretString=KEY
    )
    sqs = boto3.client("sqs")
    theirs, other = {"messageId": "m-u1", "userId": "u1"}, {"messageId": "m-u3", "userId": "u3"}
    loader = queue_with(sqs, [theirs, other])
    archiver = queue_with(sqs, [{"messageId": "m-a1", "anonymousId": "a1"}])
    quarantine = queue_with(sqs, [other])
    connection = fill_warehouse(warehouse)
    for name, value in {
        **warehouse,
        "LIFTOFF_ARCHIVE_BUCKET": archive,
        "LIFTOFF_ARCHIVE_PREFIX": "archive",
        "LIFTOFF_SUPPRESSION_URL": f"s3://{lists}/suppressed.json",
        "LIFTOFF_SUPPRESSION_KEY_SECRET_ARN": secret["ARN"],
        "LIFTOFF_QUARANTINE_URL": f"sqs://{quarantine}",
        "LIFTOFF_REGULATION_DEAD_LETTER_URLS": f"sqs://{loader},sqs://{archiver}",
    }.items():
        monkeypatch.setenv(name, value)

    ids = {"userIds": ["u1"], "anonymousIds": ["a1"], "requestId": None}
    suppressed = aws_lambda.reconcile_handler({"regulation": {"action": "suppress", **ids}})
    assert suppressed["targets"]["suppression"]["status"] == "done"
    assert len(ObjectStore(f"s3://{lists}/suppressed.json")._read()) == 2  # keyed hashes

    deleted = aws_lambda.reconcile_handler({"regulation": {"action": "delete", **ids}})
    statuses = {target: found["status"] for target, found in deleted["targets"].items()}
    assert statuses == dict.fromkeys(["archive", "dead-letters", "quarantine", "warehouse"], "done")
    assert deleted["targets"]["dead-letters"]["detail"] == {"messages_deleted": 2}
    assert bodies_in(sqs, loader) == ["m-u3"] and bodies_in(sqs, archiver) == []
    assert bodies_in(sqs, quarantine) == ["m-u3"]
    body = s3.get_object(Bucket=archive, Key=key)["Body"].read()
    assert decode_object(body) == lines[1:]
    assert connection.execute("SELECT count(*) FROM events WHERE user_id = 'u1'").fetchone() == (0,)

    # The same function without the collector's stores runs no regulation, and says so.
    monkeypatch.delenv("LIFTOFF_SUPPRESSION_URL")
    monkeypatch.delenv("LIFTOFF_SUPPRESSION_KEY_SECRET_ARN")
    with pytest.raises(ConfigError, match="given no suppression list"):
        aws_lambda.reconcile_handler({"regulation": {"action": "status"}})
