"""The suppression list: keyed hashes of the ids whose events the collector drops.

An entry is ``HMAC-SHA256(key, "userId:<id>")`` or ``... "anonymousId:<id>"`` in hex (the key is
``LIFTOFF_SUPPRESSION_KEY``, one per stack), so the list never holds a raw id and an entry
cannot be turned back into one without the key. Two stores, one interface
(:class:`SuppressionStore`):

- :class:`KeyValueStore` — a JetStream key-value bucket, one key per entry (``put``/``delete``
  are idempotent). Kubernetes and local mode.
- :class:`ObjectStore` — one S3 object ``{"entries": [...]}`` (sorted). AWS: the Lambda reads
  only this object; the regulation command rewrites it under its Postgres lock.

Readers hold a :class:`SuppressedIds`: the set as last read, refreshed every
``LIFTOFF_SUPPRESSION_REFRESH_SECONDS`` (in the background in a long-running process; on the
next request after it went stale in a Lambda function, which is frozen between invocations).
When a refresh fails the last set read stays in force and the failure is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import msgspec

from services.contract import or_default
from services.suppression.contract import (
    DEFAULT_REFRESH_SECONDS,
    SuppressionAccess,
    check_suppression,
    suppression_key,
)

log = logging.getLogger("liftoff.suppression")

KINDS = ("userId", "anonymousId")


class _Encoded(Protocol):
    @property
    def data(self) -> bytes: ...


R = TypeVar("R", bound=_Encoded)
KV_HISTORY = 1
READ_TIMEOUT_SECONDS = 10.0


def entry(key: str, kind: str, identifier: Any) -> str:
    """The list entry of one id (``kind``: ``userId`` or ``anonymousId``). Numbers are hashed
    as their JSON text, as the warehouse stores them (``123``)."""
    text = identifier if isinstance(identifier, str) else json.dumps(identifier)
    message = f"{kind}:{text}".encode()
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def entries(key: str, user_ids: Iterable[str], anonymous_ids: Iterable[str]) -> list[str]:
    return sorted(
        {entry(key, "userId", u) for u in user_ids}
        | {entry(key, "anonymousId", a) for a in anonymous_ids}
    )


class _Ids(msgspec.Struct):
    userId: Any = None
    anonymousId: Any = None


_ids_decoder = msgspec.json.Decoder(_Ids)


def event_entries(key: str, data: bytes) -> tuple[str, ...]:
    """The entries an encoded stream event would match (its userId and anonymousId)."""
    ids = _ids_decoder.decode(data)
    found = []
    if ids.userId not in (None, ""):
        found.append(entry(key, "userId", ids.userId))
    if ids.anonymousId not in (None, ""):
        found.append(entry(key, "anonymousId", ids.anonymousId))
    return tuple(found)


class SuppressionStore(Protocol):
    async def read(self) -> frozenset[str]: ...

    async def add(self, found: Iterable[str]) -> None: ...

    async def remove(self, found: Iterable[str]) -> None: ...

    async def close(self) -> None: ...


class KeyValueStore:
    """A JetStream key-value bucket (``nats://servers/<bucket>``); created by the first write."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.servers = [f"nats://{server}" for server in parts.netloc.split(",")]
        self.bucket = parts.path.strip("/")
        self._nc: Any = None

    async def _kv(self, create: bool) -> Any:
        import nats
        from nats.js.errors import BucketNotFoundError

        from services.stream.jetstream import stream_credentials

        if self._nc is None or self._nc.is_closed:

            async def quiet(error: Exception) -> None:
                log.debug("suppression list NATS error", extra={"fields": {"error": repr(error)}})

            # A few attempts, then the call fails (the reader keeps its last set and tries
            # again at the next refresh; the command reports it): never an endless wait.
            self._nc = await nats.connect(
                servers=self.servers,
                **stream_credentials(),
                connect_timeout=2,
                max_reconnect_attempts=3,
                reconnect_time_wait=0.5,
                error_cb=quiet,
            )
        js = self._nc.jetstream(timeout=5)
        try:
            return await js.key_value(self.bucket)
        except BucketNotFoundError:
            if not create:
                return None
            # history 1: an unsuppressed id leaves only a delete marker, no old value behind.
            return await js.create_key_value(bucket=self.bucket, history=KV_HISTORY)

    async def read(self) -> frozenset[str]:
        from nats.js.errors import NoKeysError

        kv = await self._kv(create=False)
        if kv is None:
            return frozenset()
        try:
            return frozenset(await kv.keys())
        except NoKeysError:
            return frozenset()

    async def add(self, found: Iterable[str]) -> None:
        kv = await self._kv(create=True)
        for item in found:
            await kv.put(item, b"1")

    async def remove(self, found: Iterable[str]) -> None:
        kv = await self._kv(create=True)
        for item in found:
            # purge: no value and no history of the key stays in the bucket
            await kv.purge(item)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            await self._nc.close()


class ObjectStore:
    """One S3 object (``s3://<bucket>/<key>``) holding ``{"entries": [sorted hashes]}``; absent
    means empty. Writers must be serialized (the regulation command holds a Postgres lock)."""

    def __init__(self, url: str, client: Any = None) -> None:
        parts = urlsplit(url)
        self.bucket, self.key = parts.netloc, parts.path.lstrip("/")
        self._client = client

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            import botocore.config

            self._client = boto3.client(
                "s3",
                config=botocore.config.Config(
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=2,
                    read_timeout=5,
                ),
            )
        return self._client

    def _read(self) -> frozenset[str]:
        client = self._s3()
        try:
            body = client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        except client.exceptions.NoSuchKey:
            return frozenset()
        return frozenset(json.loads(body)["entries"])

    def _write(self, wanted: frozenset[str]) -> None:
        body = json.dumps({"entries": sorted(wanted)}, separators=(",", ":")).encode()
        self._s3().put_object(
            Bucket=self.bucket, Key=self.key, Body=body, ContentType="application/json"
        )

    async def read(self) -> frozenset[str]:
        return await asyncio.to_thread(self._read)

    async def add(self, found: Iterable[str]) -> None:
        current = await self.read()
        await asyncio.to_thread(self._write, current | frozenset(found))

    async def remove(self, found: Iterable[str]) -> None:
        current = await self.read()
        await asyncio.to_thread(self._write, current - frozenset(found))

    async def close(self) -> None:
        pass


@dataclass(frozen=True)
class SuppressionConfig:
    """:class:`~services.regulations.contract.SuppressionAccess` resolved: None when unset."""

    url: str
    key: str
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS

    @classmethod
    def of(
        cls, access: SuppressionAccess[str], read_key: Callable[[], str] | None = None
    ) -> SuppressionConfig | None:
        """``read_key``: where the key is when not in the access (the Lambda's secret)."""
        check_suppression(access, key_elsewhere=read_key is not None)
        if access.url is None:
            return None
        refresh = or_default(access.refresh_seconds, DEFAULT_REFRESH_SECONDS)
        key = read_key() if read_key is not None else suppression_key(access)
        return cls(access.url, key, refresh)

    def reader(self) -> SuppressedIds:
        return SuppressedIds(open_store(self.url), self.key, self.refresh_seconds)


def key_in_secret(arn: str | None) -> Callable[[], str] | None:
    """A reader of the list's key from its Secrets Manager secret (the AWS functions': the
    collector, the ops function), or None when the key is in the access (inline or a file)."""
    if arn is None:
        return None

    def read() -> str:
        import boto3

        secret = boto3.client("secretsmanager").get_secret_value(SecretId=arn)
        return str(secret.get("SecretString") or "").strip()

    return read


def open_store(url: str) -> SuppressionStore:
    if url.startswith("s3://"):
        return ObjectStore(url)
    return KeyValueStore(url)


class SuppressedIds:
    """The suppression list as a reader holds it: a cached set, at most ``refresh_seconds``
    stale once the first read succeeded."""

    def __init__(self, store: SuppressionStore, key: str, refresh_seconds: float) -> None:
        self.store = store
        self.key = key
        self.refresh_seconds = refresh_seconds
        self.entries: frozenset[str] = frozenset()
        self._read_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        try:
            self.entries = await asyncio.wait_for(self.store.read(), READ_TIMEOUT_SECONDS)
            self._read_at = time.monotonic()
        except Exception as error:  # the last set read stays in force
            log.warning(
                "suppression list not read; the last one read stays in force",
                extra={"fields": {"error": repr(error)}},
            )

    async def start(self) -> None:
        """A long-running process: refresh in the background from now on."""

        async def loop() -> None:
            while True:
                await self.refresh()
                await asyncio.sleep(self.refresh_seconds)

        self._task = asyncio.create_task(loop(), name="suppression-refresh")

    async def current(self) -> frozenset[str]:
        """The set to check against; without a background task, refreshed here when stale."""
        stale = self._read_at is None or time.monotonic() - self._read_at >= self.refresh_seconds
        if self._task is None and stale:
            await self.refresh()
        return self.entries

    def suppressed(self, data: bytes, listed: frozenset[str]) -> bool:
        return any(found in listed for found in event_entries(self.key, data))

    async def without(self, records: list[R]) -> list[R]:
        """``records`` (encoded stream events, ``.data``) without those of listed ids."""
        listed = await self.current()
        if not listed:
            return records  # nothing suppressed: no event is decoded
        return [r for r in records if not self.suppressed(r.data, listed)]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.store.close()
