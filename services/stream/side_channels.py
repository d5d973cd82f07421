"""Connections shared by the places an event is set aside: dead letters and the quarantine.

Both write to a JetStream stream (``nats://host:port[,host:port]/<STREAM>``) or an SQS queue
(``sqs://<queue-name>``). What differs is the message; how the connection is held is the same,
and lives here once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit


class BackgroundJetStream:
    """A NATS connection opened in the background: the process starts even if NATS is not up
    yet, and a write made before it is connected fails at once (the caller's retry signal)."""

    def __init__(self, url: str, timeout: float, purpose: str, log: logging.Logger) -> None:
        from services.stream.address import JetStreamAddress

        parts = urlsplit(url)
        # The address parser insists on a stream path; the caller fixes the subjects.
        address = JetStreamAddress.parse(f"nats://{parts.netloc}{parts.path}")
        self.servers = address.servers
        self.stream = address.stream
        self.timeout = timeout
        self._purpose = purpose
        self._log = log
        self._nc: Any = None
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import nats

        from services.stream.jetstream import stream_credentials

        async def quiet(error: Exception) -> None:
            self._log.debug(f"{self._purpose} NATS error", extra={"fields": {"error": repr(error)}})

        async def connect() -> None:
            self._nc = await nats.connect(
                servers=self.servers,
                **stream_credentials(),
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                error_cb=quiet,
            )

        self._connecting = asyncio.create_task(connect(), name=f"{self._purpose}-connect")

    def jetstream(self) -> Any | None:
        """The JetStream context, or None while not connected."""
        if self._nc is None or not self._nc.is_connected:
            return None
        return self._nc.jetstream(timeout=self.timeout)

    async def close(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()


class SqsQueue:
    """An SQS queue named by ``sqs://<queue-name>`` (boto3; honours ``AWS_ENDPOINT_URL``)."""

    def __init__(self, url: str, client: Any = None, read_timeout: float = 10) -> None:
        parts = urlsplit(url)
        self.queue_name = (parts.netloc + parts.path).strip("/")
        if not self.queue_name:
            raise ValueError(f"expected sqs://<queue-name>, got {url!r}")
        self._client = client
        self._read_timeout = read_timeout
        self._queue_url: str | None = None

    async def start(self) -> None:
        if self._client is None:
            import boto3
            import botocore.config

            self._client = boto3.client(
                "sqs",
                config=botocore.config.Config(
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=3,
                    read_timeout=self._read_timeout,
                ),
            )

    def queue_url(self) -> str:
        if self._queue_url is None:
            self._queue_url = self._client.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        return self._queue_url

    async def close(self) -> None:
        pass
