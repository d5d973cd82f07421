"""Kinesis Data Streams adapter: ``kinesis://<stream-name>?region=...&max_attempts=6``.

boto3 is blocking, so calls run on a small thread pool. Records go out in PutRecords calls of at
most 500 records and 5 MiB, one chunk after another (so one user's events keep their order as far
as Kinesis allows). Records that come back failed (``FailedRecordCount > 0``) are retried alone,
with exponential backoff and jitter, up to ``max_attempts`` calls per chunk; then the publish fails.
A retried record may land after later records of the same user: ordering across a partial
failure is best effort, consumers order by ``timestamp``.

Endpoint and credentials come from boto3's usual chain (``AWS_ENDPOINT_URL``, ``AWS_REGION`` ...).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from services.events.model import StreamRecord
from services.stream.address import KinesisAddress
from services.stream.base import StreamUnavailable

log = logging.getLogger("liftoff.stream.kinesis")

MAX_RECORDS_PER_CALL = 500
MAX_BYTES_PER_CALL = 5 * 1024 * 1024


def chunk_records(records: Sequence[StreamRecord]) -> Iterator[list[StreamRecord]]:
    """Split into PutRecords-sized chunks: ≤500 records and ≤5 MiB of data + partition keys."""
    chunk: list[StreamRecord] = []
    size = 0
    for record in records:
        record_size = len(record.data) + len(record.partition_key.encode())
        full = len(chunk) == MAX_RECORDS_PER_CALL or size + record_size > MAX_BYTES_PER_CALL
        if chunk and full:
            yield chunk
            chunk, size = [], 0
        chunk.append(record)
        size += record_size
    if chunk:
        yield chunk


class KinesisStream:
    def __init__(self, address: KinesisAddress, client: Any | None = None) -> None:
        self.address = address
        self.client = client or boto3.client(
            "kinesis",
            region_name=address.region,
            config=botocore.config.Config(
                retries={"mode": "standard", "max_attempts": 3},
                max_pool_connections=16,
                connect_timeout=3,
                read_timeout=10,
            ),
        )
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="kinesis")

    @classmethod
    def from_url(cls, url: str) -> KinesisStream:
        return cls(KinesisAddress.parse(url))

    async def start(self) -> None:
        """Nothing to connect: boto3 opens HTTP connections on demand."""

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        method = getattr(self.client, operation)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, lambda: method(**params))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise StreamUnavailable(f"Kinesis {operation} failed: {error}") from error

    async def publish(self, records: Sequence[StreamRecord]) -> None:
        for chunk in chunk_records(records):
            await self._put_chunk(chunk)

    async def _put_chunk(self, chunk: list[StreamRecord]) -> None:
        pending = chunk
        for attempt in range(self.address.max_attempts):
            if attempt:
                ceiling = self.address.base_backoff_seconds * (2 ** (attempt - 1))
                await asyncio.sleep(random.uniform(ceiling / 2, ceiling))
            response = await self._call(
                "put_records",
                StreamName=self.address.stream_name,
                Records=[
                    {"Data": record.data, "PartitionKey": record.partition_key}
                    for record in pending
                ],
            )
            if not response.get("FailedRecordCount"):
                return
            results = response["Records"]
            pending = [
                record
                for record, result in zip(pending, results, strict=True)
                if result.get("ErrorCode")
            ]
            log.warning(
                "Kinesis partial failure",
                extra={
                    "fields": {
                        "failed": len(pending),
                        "attempt": attempt + 1,
                        "error_code": next(r["ErrorCode"] for r in results if r.get("ErrorCode")),
                    }
                },
            )
        raise StreamUnavailable(
            f"{len(pending)} records still failing after {self.address.max_attempts} attempts"
        )

    async def check_ready(self) -> None:
        summary = await self._call("describe_stream_summary", StreamName=self.address.stream_name)
        status = summary["StreamDescriptionSummary"]["StreamStatus"]
        if status not in ("ACTIVE", "UPDATING"):
            raise StreamUnavailable(f"stream status is {status}")

    async def close(self) -> None:
        self._pool.shutdown(wait=False)
