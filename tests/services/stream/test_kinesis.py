"""The Kinesis adapter and the collector on Kinesis, against moto in server mode.

moto never fails individual records of a PutRecords call, so partial failures are produced with
botocore event hooks on the adapter's own client (:class:`PartialFailures`): the chosen records
are removed from the request *before* it is sent — so the server really does not store them —
and the parsed response gets, at their positions, the failure entries Kinesis returns for
throttled records (``ErrorCode`` + ``ErrorMessage``, no ``SequenceNumber``) with the matching
``FailedRecordCount``. (When every record of a call is to fail, the call is answered without
reaching the server, since PutRecords cannot carry zero records.) The adapter thus sees exactly
a real partial failure and the server holds exactly what one leaves, so reading the stream back
shows whether the retries resent precisely the failed records.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from botocore.awsrequest import AWSResponse

from services.collector.app import CollectorApp
from services.collector.ingest import Collector
from services.events.model import StreamRecord
from services.events.records import build_records
from services.events.segment import parse_body
from services.events.write_keys import WriteKeys
from services.stream.base import EventStream, StreamUnavailable, open_stream
from services.stream.kinesis import KinesisStream
from tests.services.stream.under_test import WRITE_KEYS, read_kinesis

pytestmark = pytest.mark.servers


def records_for(count: int, padding: int = 0) -> list[StreamRecord]:
    events = [
        {
            "type": "track",
            "event": "E",
            "userId": f"user-{i % 7}",
            "messageId": f"m{i}",
            "properties": {"pad": "x" * padding},
        }
        for i in range(count)
    ]
    records = []
    for start in range(0, count, 10):  # in request-sized batches (500 KiB per request)
        parsed = parse_body(json.dumps({"batch": events[start : start + 10]}).encode(), None)
        records.extend(build_records(parsed, None, "web", datetime.now(UTC)))
    return records


class PartialFailures:
    """Fail chosen records (by messageId) of PutRecords calls, ``times`` calls each."""

    def __init__(self, client: Any, times_by_message_id: dict[str, int]) -> None:
        self.remaining = dict(times_by_message_id)
        self.calls: list[int] = []  # records per PutRecords call, as the adapter sent them
        client.meta.events.register("before-parameter-build.kinesis.PutRecords", self.drop)
        client.meta.events.register("before-call.kinesis.PutRecords", self.skip_empty_call)
        client.meta.events.register("after-call.kinesis.PutRecords", self.report)

    def drop(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        self.calls.append(len(params["Records"]))
        failed_positions = []
        kept = []
        for position, record in enumerate(params["Records"]):
            message_id = json.loads(record["Data"])["messageId"]
            if self.remaining.get(message_id, 0) > 0:
                self.remaining[message_id] -= 1
                failed_positions.append(position)
            else:
                kept.append(record)
        context["failed_positions"] = failed_positions
        if kept:
            params["Records"] = kept
        else:
            context["send_nothing"] = True  # PutRecords cannot carry zero records

    def skip_empty_call(
        self, context: dict[str, Any], **_: Any
    ) -> tuple[AWSResponse, dict[str, Any]] | None:
        # Every record fails: answer without contacting the server, which then stores nothing.
        if not context.get("send_nothing"):
            return None
        return AWSResponse("", 200, {}, None), {"FailedRecordCount": 0, "Records": []}

    def report(self, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        failed_positions = context.get("failed_positions") or []
        if not failed_positions or "Records" not in parsed:
            return
        results = list(parsed["Records"])
        for position in failed_positions:
            results.insert(
                position,
                {
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": "Rate exceeded for shard shardId-000000000000",
                },
            )
        parsed["Records"] = results
        parsed["FailedRecordCount"] = parsed.get("FailedRecordCount", 0) + len(failed_positions)


def fast_retry_url(stream_name: str, max_attempts: int = 4) -> str:
    return f"kinesis://{stream_name}?max_attempts={max_attempts}&base_backoff=0.002"


def publish(stream: KinesisStream, records: list[StreamRecord]) -> None:
    async def run() -> None:
        try:
            await stream.publish(records)
        finally:
            await stream.close()

    asyncio.run(run())


def test_records_land_in_order_per_partition_key_in_chunks_of_500(
    kinesis: tuple[Any, str],
) -> None:
    client, name = kinesis
    stream = KinesisStream.from_url(fast_retry_url(name))
    calls = PartialFailures(stream.client, {}).calls
    publish(stream, records_for(1200))
    assert calls == [500, 500, 200]

    stored = read_kinesis(client, name)
    assert len(stored) == 1200
    for user in range(7):
        ids = [event["messageId"] for key, event in stored if key == f"user-{user}"]
        assert ids == [f"m{i}" for i in range(1200) if i % 7 == user]  # per-user order kept


def test_chunks_stay_under_5_mib(kinesis: tuple[Any, str]) -> None:
    # A request is at most 500 KiB, so only other callers (replays) can reach this limit.
    client, name = kinesis
    stream = KinesisStream.from_url(fast_retry_url(name))
    calls = PartialFailures(stream.client, {}).calls
    publish(stream, records_for(240, padding=30_000))  # ~7.3 MB in all
    assert len(calls) == 2 and sum(calls) == 240
    assert len(read_kinesis(client, name)) == 240


def test_partial_failures_are_retried_for_only_the_failed_records(
    kinesis: tuple[Any, str],
) -> None:
    client, name = kinesis
    stream = KinesisStream.from_url(fast_retry_url(name))
    failures = PartialFailures(stream.client, {"m3": 1, "m7": 1, "m5": 2})
    publish(stream, records_for(10))
    assert failures.calls == [10, 3, 1]
    stored_ids = sorted(event["messageId"] for _, event in read_kinesis(client, name))
    assert stored_ids == sorted(f"m{i}" for i in range(10))  # each exactly once


def test_records_failing_every_attempt_fail_the_publish(kinesis: tuple[Any, str]) -> None:
    client, name = kinesis
    stream = KinesisStream.from_url(fast_retry_url(name, max_attempts=3))
    failures = PartialFailures(stream.client, {"m1": 99})
    with pytest.raises(StreamUnavailable, match="after 3 attempts"):
        publish(stream, records_for(4))
    assert failures.calls == [4, 1, 1]
    assert "m1" not in {event["messageId"] for _, event in read_kinesis(client, name)}


def collector_post(stream: EventStream, body: dict[str, Any]) -> httpx.Response:
    async def run() -> httpx.Response:
        app = CollectorApp(Collector(stream, WriteKeys(WRITE_KEYS)))
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
                return await client.post("/v1/batch", json=body, auth=("ios-key-2", ""))
        finally:
            await stream.close()

    return asyncio.run(run())


def test_collector_on_kinesis_answers_200_after_every_record_is_stored(
    kinesis: tuple[Any, str],
) -> None:
    client, name = kinesis
    stream = KinesisStream.from_url(fast_retry_url(name))
    PartialFailures(stream.client, {"m2": 1})
    events = [{"type": "identify", "anonymousId": f"a{i}", "messageId": f"m{i}"} for i in range(5)]
    response = collector_post(stream, {"batch": events})
    assert response.status_code == 200
    stored = read_kinesis(client, name)
    assert sorted(key for key, _ in stored) == [f"a{i}" for i in range(5)]
    assert {event["liftoff"]["source"] for _, event in stored} == {"ios"}


def test_collector_on_kinesis_answers_503_when_records_keep_failing(
    kinesis: tuple[Any, str],
) -> None:
    _, name = kinesis
    stream = KinesisStream.from_url(fast_retry_url(name, max_attempts=2))
    PartialFailures(stream.client, {"m0": 99})
    response = collector_post(
        stream, {"batch": [{"type": "identify", "userId": "u", "messageId": "m0"}]}
    )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


def test_missing_stream_is_unavailable_not_a_client_error(aws_env: str) -> None:
    stream = open_stream("kinesis://no-such-stream?max_attempts=1")
    response = collector_post(stream, {"batch": [{"type": "identify", "userId": "u"}]})
    assert response.status_code == 503


def test_readiness(kinesis: tuple[Any, str]) -> None:
    _, name = kinesis

    async def check(url: str) -> str:
        stream = open_stream(url)
        try:
            await stream.check_ready()
            return "ready"
        except StreamUnavailable as error:
            return str(error)
        finally:
            await stream.close()

    assert asyncio.run(check(f"kinesis://{name}")) == "ready"
    assert "ResourceNotFoundException" in asyncio.run(check("kinesis://missing-stream"))


def test_stream_url_parsing() -> None:
    from services.stream.base import InvalidStreamUrl
    from services.stream.kinesis import KinesisAddress

    address = KinesisAddress.parse("kinesis://events-prod?region=eu-west-1&max_attempts=3")
    assert (address.stream_name, address.region, address.max_attempts) == (
        "events-prod",
        "eu-west-1",
        3,
    )
    for bad in ("kinesis://", "kinesis://a?shards=2", "kinesis://a?max_attempts=0"):
        with pytest.raises(InvalidStreamUrl):
            KinesisAddress.parse(bad)
