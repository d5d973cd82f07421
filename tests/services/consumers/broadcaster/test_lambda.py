"""``services.aws_lambda.broadcaster_handler`` on Kinesis batches: secrets from Secrets Manager and
dead letters to SQS, both on moto; partial batch failures for what is not finished in time."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from services import aws_lambda
from tests.services.consumers.broadcaster.conftest import SECRETS
from tests.services.consumers.broadcaster.receiver import EventFactory, Received, Receiver

pytestmark = pytest.mark.servers


class Context:
    """The part of the Lambda context object the handler reads."""

    def __init__(self, remaining_ms: int) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture(autouse=True)
def cold_start() -> Iterator[None]:
    aws_lambda.broadcaster_consumer.reset_for_tests()
    yield
    aws_lambda.broadcaster_consumer.reset_for_tests()


@pytest.fixture
def queue(aws_env: str) -> tuple[Any, str]:
    sqs = boto3.client("sqs")
    name = f"broadcaster-dlq-{uuid.uuid4().hex[:8]}"
    return sqs, sqs.create_queue(QueueName=name)["QueueUrl"]


@pytest.fixture
def lambda_env(
    queue: tuple[Any, str], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, str]:
    sqs, queue_url = queue
    secret = boto3.client("secretsmanager").create_secret(
        Name=f"liftoff-destination-{uuid.uuid4().hex[:8]}",
        SecretString=json.dumps({"signingSecret": SECRETS["webhook"]}),
    )
    destination = {"name": "hook", "type": "webhook", "settings": {"url": f"{receiver.url}/hook"}}
    for name, value in {
        "LIFTOFF_DESTINATION": json.dumps(destination),
        "LIFTOFF_DESTINATION_SECRET_ARN": secret["ARN"],
        "LIFTOFF_DEAD_LETTER_URL": f"sqs://{queue_url.rsplit('/', 1)[1]}",
        "LIFTOFF_CONSUMER_NAME": "broadcaster-hook",
        "LIFTOFF_BROADCAST_MAX_ATTEMPTS": "3",
        "LIFTOFF_BROADCAST_BACKOFF_BASE_SECONDS": "0.01",
        "LIFTOFF_BROADCAST_BACKOFF_MAX_SECONDS": "0.05",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LIFTOFF_DESTINATION_SECRETS_FILE", raising=False)
    return sqs, queue_url


def kinesis_event(payloads: list[bytes], first_sequence: int = 1000) -> dict[str, Any]:
    records = []
    for offset, data in enumerate(payloads):
        sequence = str(first_sequence + offset)
        records.append(
            {
                "eventSource": "aws:kinesis",
                "eventID": f"shardId-000000000000:{sequence}",
                "kinesis": {
                    "data": base64.b64encode(data).decode(),
                    "sequenceNumber": sequence,
                    "partitionKey": "user-1",
                    "approximateArrivalTimestamp": 1795810743.512,
                },
            }
        )
    return {"Records": records}


def dead_letters(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        messages = answer.get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def ids(request: Received) -> list[str]:
    return [e["messageId"] for e in request.json["batch"]]


def failures(answer: dict[str, Any]) -> list[str]:
    return [item["itemIdentifier"] for item in answer["batchItemFailures"]]


def test_partial_batch_failures_and_sqs_dead_letters(
    lambda_env: tuple[Any, str], receiver: Receiver
) -> None:
    sqs, queue_url = lambda_env
    events = EventFactory()
    ok = [events.data() for _ in range(3)]
    poison = events.data(messageId="poison")
    slow = [events.data(messageId=f"slow-{i}") for i in range(2)]
    receiver.answer(400, path="/hook", body=b"bad event", when=lambda r: "poison" in ids(r))
    slow_rule = receiver.answer(
        503,
        path="/hook",
        headers={"Retry-After": "60"},
        when=lambda r: any(i.startswith("slow") for i in ids(r)),
    )
    payloads = [ok[0], poison, slow[0], b"{broken", ok[1], slow[1], ok[2]]

    answer = aws_lambda.broadcaster_handler(kinesis_event(payloads), Context(10_000))

    # Retry-After 60 s does not fit in the invocation: the records of the requests that got it
    # are reported failed; every record is exactly one of delivered, parked or reported failed.
    failed = set(failures(answer))
    assert {"1002", "1005"} <= failed
    delivered = {i for r in receiver.delivered("/hook") for i in ids(r)}
    parked = sorted(dead_letters(sqs, queue_url), key=lambda d: d["position"]["sequence"])
    assert [(d["position"]["sequence"], d["consumer"]) for d in parked] == [
        ("1001", "broadcaster-hook"),
        ("1003", "broadcaster-hook"),
    ]
    for offset, data in enumerate(payloads):
        sequence = str(1000 + offset)
        message_id = json.loads(data)["messageId"] if data != b"{broken" else None
        outcomes = [message_id in delivered, sequence in {"1001", "1003"}, sequence in failed]
        assert outcomes.count(True) == 1, (sequence, outcomes)
    assert delivered  # the healthy records that did not share a request with slow ones
    assert parked[0]["reason"] == "HTTP 400: bad event"
    assert parked[0]["event"]["messageId"] == "poison"
    assert parked[1]["reason"].startswith("breaks the stream contract")

    # Kinesis retries from the first failed record; the destination has recovered.
    receiver.remove(slow_rule)
    retried = aws_lambda.broadcaster_handler(kinesis_event(payloads[2:], 1002), Context(10_000))
    assert failures(retried) == []
    delivered = {i for r in receiver.delivered("/hook") for i in ids(r)}
    assert delivered == {json.loads(m)["messageId"] for m in [*ok, *slow]}
    assert len(dead_letters(sqs, queue_url)) == 1  # the broken record, parked again (replay)


def test_a_record_redelivered_max_attempts_times_is_parked(
    lambda_env: tuple[Any, str], receiver: Receiver
) -> None:
    sqs, queue_url = lambda_env
    receiver.answer(503, path="/hook", headers={"Retry-After": "60"})
    event = kinesis_event([EventFactory().data(messageId="stuck")])
    answers = [aws_lambda.broadcaster_handler(event, Context(5_000)) for _ in range(3)]
    # Deferred at the deadline twice; the third delivery (= LIFTOFF_BROADCAST_MAX_ATTEMPTS)
    # gets one last attempt and is then parked with the reason.
    assert [failures(a) for a in answers] == [["1000"], ["1000"], []]
    (parked,) = dead_letters(sqs, queue_url)
    assert parked["reason"] == "gave up after 1 attempts: HTTP 503"
    assert parked["attempts"] == 3


def test_filtered_records_are_acknowledged_and_never_dead_lettered(
    lambda_env: tuple[Any, str], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The function applies the destination's filters and ``integrations`` as the process does."""
    sqs, queue_url = lambda_env
    destination = {
        "name": "hook",
        "type": "webhook",
        "settings": {"url": f"{receiver.url}/hook"},
        "filters": {"drop": [{"type": ["page"]}], "blockFields": ["context.ip"]},
    }
    monkeypatch.setenv("LIFTOFF_DESTINATION", json.dumps(destination))
    events = EventFactory()
    payloads = [
        events.data(messageId="kept"),
        events.data("page", messageId="a-page"),
        events.data(messageId="not-for-hook", integrations={"All": True, "Webhooks": False}),
    ]
    answer = aws_lambda.broadcaster_handler(kinesis_event(payloads), Context(10_000))
    assert failures(answer) == []
    (request,) = receiver.delivered("/hook")
    assert ids(request) == ["kept"] and "ip" not in request.json["batch"][0]["context"]
    assert dead_letters(sqs, queue_url) == []
