"""The archiver and loader Lambda handlers on real Kinesis batches (moto), SQS dead letters."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest

from services import aws_lambda
from tests.servers import free_port
from tests.services.consumers.archiver.test_archiver import archive, lines
from tests.services.consumers.conftest import event

pytestmark = pytest.mark.servers


def esm_event(client: Any, stream: str) -> dict[str, Any]:
    """Every record on the stream, shaped as a Kinesis event-source-mapping invocation."""
    records = []
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for record in client.get_records(ShardIterator=iterator, Limit=1000)["Records"]:
            records.append(
                {
                    "eventSource": "aws:kinesis",
                    "eventID": f"{shard['ShardId']}:{record['SequenceNumber']}",
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": record["PartitionKey"],
                        "sequenceNumber": record["SequenceNumber"],
                        "data": base64.b64encode(record["Data"]).decode(),
                        "approximateArrivalTimestamp": record[
                            "ApproximateArrivalTimestamp"
                        ].timestamp(),
                    },
                }
            )
    return {"Records": records}


def put(client: Any, stream: str, items: list[dict[str, Any] | bytes]) -> None:
    client.put_records(
        StreamName=stream,
        Records=[
            {
                "Data": item if isinstance(item, bytes) else json.dumps(item).encode(),
                "PartitionKey": f"k{index % 4}",
            }
            for index, item in enumerate(items)
        ],
    )


@pytest.fixture
def queue(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    client = boto3.client("sqs")
    name = f"dead-{uuid.uuid4().hex[:8]}"
    url = client.create_queue(QueueName=name)["QueueUrl"]
    monkeypatch.setenv("LIFTOFF_DEAD_LETTER_URL", f"sqs://{name}")
    return client, url


@pytest.fixture
def fresh_handlers() -> Iterator[None]:
    yield
    aws_lambda.archiver_consumer.reset_for_tests()
    aws_lambda.loader_consumer.reset_for_tests()


def parked(client: Any, url: str) -> list[dict[str, Any]]:
    messages = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


def test_archiver_handler_archives_parks_bad_records_and_replays_idempotently(
    kinesis: tuple[Any, str],
    bucket: tuple[Any, str],
    queue: tuple[Any, str],
    monkeypatch: pytest.MonkeyPatch,
    fresh_handlers: None,
) -> None:
    client, stream = kinesis
    s3, name = bucket
    monkeypatch.setenv("LIFTOFF_ARCHIVE_BUCKET", name)
    put(client, stream, [event(i) for i in range(12)] + [b"not json"])
    invocation = esm_event(client, stream)

    assert aws_lambda.archiver_handler(invocation) == {"batchItemFailures": []}
    first = archive(s3, name)
    assert aws_lambda.archiver_handler(invocation) == {"batchItemFailures": []}  # a retry
    assert archive(s3, name) == first  # same objects, same bytes

    archived = [line for body in first.values() for line in lines(body)]
    assert sorted(line["messageId"] for line in archived) == sorted(f"m-{i}" for i in range(12))
    assert all(key.split("/")[-1].startswith("shardId-") for key in first)
    shards = {line["liftoff"]["position"]["partition"] for line in archived}
    assert shards <= {s["ShardId"] for s in client.list_shards(StreamName=stream)["Shards"]}

    bodies = parked(*queue)
    # Parked on each of the two invocations: SQS dead letters are at-least-once; the position
    # identifies repeats (on JetStream, Nats-Msg-Id deduplicates them).
    assert len(bodies) == 2
    assert bodies[0]["position"] == bodies[1]["position"]
    assert bodies[0]["event"] == "not json"
    assert bodies[0]["consumer"] == "archiver"
    assert "not valid JSON" in bodies[0]["reason"]
    assert set(bodies[0]["position"]) == {"partition", "sequence"}


def test_archiver_handler_reports_every_record_failed_while_s3_is_down(
    kinesis: tuple[Any, str],
    bucket: tuple[Any, str],
    queue: tuple[Any, str],
    monkeypatch: pytest.MonkeyPatch,
    fresh_handlers: None,
) -> None:
    client, stream = kinesis
    _, name = bucket
    monkeypatch.setenv("LIFTOFF_ARCHIVE_BUCKET", name)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")  # nothing there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    put(client, stream, [event(i) for i in range(5)])
    invocation = esm_event(client, stream)
    result = aws_lambda.archiver_handler(invocation)
    assert sorted(f["itemIdentifier"] for f in result["batchItemFailures"]) == sorted(
        r["kinesis"]["sequenceNumber"] for r in invocation["Records"]
    )


def test_loader_handler_loads_once_and_parks_bad_rows(
    kinesis: tuple[Any, str],
    warehouse: dict[str, str],
    queue: tuple[Any, str],
    monkeypatch: pytest.MonkeyPatch,
    fresh_handlers: None,
) -> None:
    client, stream = kinesis
    for variable, value in warehouse.items():
        monkeypatch.setenv(variable, value)
    put(client, stream, [event(i) for i in range(8)] + [event(99, timestamp="soon")])
    invocation = esm_event(client, stream)
    assert aws_lambda.loader_handler(invocation) == {"batchItemFailures": []}
    assert aws_lambda.loader_handler(invocation) == {"batchItemFailures": []}
    with psycopg.connect(
        **{
            "host": warehouse["PGHOST"],
            "port": warehouse["PGPORT"],
            "user": "postgres",
            "dbname": warehouse["PGDATABASE"],
        }
    ) as connection:
        rows = connection.execute("SELECT message_id, stream_partition FROM events").fetchall()
    assert sorted(m for m, _ in rows) == sorted(f"m-{i}" for i in range(8))
    assert all(partition.startswith("shardId-") for _, partition in rows)
    bodies = parked(*queue)
    assert {body["event"]["messageId"] for body in bodies} == {"m-99"}  # once per invocation
    assert "timestamp" in bodies[0]["reason"]
