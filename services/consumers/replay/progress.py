"""The replay's progress: which replay it belongs to and the last acknowledged cursor, in a file
(:class:`Progress`) or an S3 object (:class:`ObjectProgress`, what the targets' pods and the ops
function use: a pod's disk does not outlive it).

One JSON line per acknowledged batch, appended to a file the replay keeps open: an append costs
a ``write`` (replacing a file costs a create and a rename each time, on ext4 ~1 ms of CPU, as
much as replaying a few hundred events). A crash can leave at most the last line incomplete, and
the last complete line is the one read: it is the previous batch's, so only the batch whose line
was being written is sent again, as when the crash comes just before the line. Past
:data:`COMPACT_BYTES` the file is replaced (written beside it, then renamed over it) by its last
line alone, so it stays small whatever the replay's length.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from services.consumers.replay.window import Cursor
from services.contract import ConfigError

COMPACT_BYTES = 1 << 20
SAVE_SECONDS = 1.0
"""How often the S3 object is written at most (and once at the end): a PUT takes tens of ms,
a batch a few; once a second, S3 costs a few percent of a replay's time whatever its rate."""
OBJECT_DIRECTORY = "liftoff/replay-progress/"
"""Where a replay on a target keeps its progress by default, in the archive bucket."""


class Record(Protocol):
    """Where a replay's progress is kept (``path``: how the summary names it)."""

    @property
    def path(self) -> Path | str: ...

    def start(self, summary: dict[str, Any]) -> Cursor | None: ...

    def save(self, cursor: Cursor | None, summary: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def identity_digest(identity: dict[str, Any]) -> str:
    """What names a replay's default progress file or object."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


class Progress:
    """The progress file of one replay (``identity``: its window, selection and target)."""

    def __init__(self, path: Path, identity: dict[str, Any]) -> None:
        self.path = path
        self.identity = identity
        self._descriptor: int | None = None
        self._size = 0

    @staticmethod
    def default_path(identity: dict[str, Any]) -> Path:
        return Path(f"liftoff-replay-{identity_digest(identity)}.json")

    def load(self) -> Cursor | None:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ConfigError(f"--progress {str(self.path)!r} cannot be read: {error}") from None
        return cursor_of(last_record(text), str(self.path), self.identity)

    def save(self, cursor: Cursor | None, summary: dict[str, Any]) -> None:
        """Record ``cursor`` (and the summary so far, for whoever reads the file)."""
        line = encoded(self.identity, cursor, summary) + b"\n"
        if self._descriptor is None or self._size + len(line) > COMPACT_BYTES:
            self._replace(line)
        else:
            _write(self._descriptor, line)
            self._size += len(line)

    def _replace(self, line: bytes) -> None:
        """A new file holding ``line`` only, in place of the old one at once; kept open."""
        self.close()
        temporary = self.path.with_name(self.path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            _write(descriptor, line)
            os.replace(temporary, self.path)
        except OSError:
            os.close(descriptor)
            raise
        self._descriptor, self._size = descriptor, len(line)

    def start(self, summary: dict[str, Any]) -> Cursor | None:
        """Where to resume; a new file is written at once, so an unwritable path fails the
        run before anything is sent."""
        after = self.load()
        if after is None:
            try:
                self.save(None, summary)
            except OSError as error:
                raise ConfigError(
                    f"--progress {str(self.path)!r} cannot be written: {error.strerror}"
                ) from None
        return after

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


class ObjectProgress:
    """The progress of one replay in one S3 object (``s3://<bucket>/<key>``), replaced whole
    at most every :data:`SAVE_SECONDS` and at :meth:`close`. A replay killed in between sends
    again what it sent since the last write (at least once, messageIds kept)."""

    def __init__(self, url: str, identity: dict[str, Any], client: Any) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
            raise ConfigError(f"--progress {url!r}: use a file path or s3://<bucket>/<key>")
        self.path = url
        self.identity = identity
        self.bucket, self.key = parts.netloc, parts.path.lstrip("/")
        self.client = client
        self._pending: bytes | None = None
        self._written_at = -SAVE_SECONDS

    @staticmethod
    def default_url(bucket: str, identity: dict[str, Any]) -> str:
        return f"s3://{bucket}/{OBJECT_DIRECTORY}{identity_digest(identity)}.json"

    def load(self) -> Cursor | None:
        import botocore.exceptions

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"]
            with body:
                text = body.read()
        except self.client.exceptions.NoSuchKey:
            return None
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
            raise ConfigError(f"--progress {self.path!r} cannot be read: {error}") from None
        return cursor_of(last_record(text), self.path, self.identity)

    def save(self, cursor: Cursor | None, summary: dict[str, Any]) -> None:
        self._pending = encoded(self.identity, cursor, summary)
        if time.monotonic() - self._written_at >= SAVE_SECONDS:
            self._put()

    def _put(self) -> None:
        if self._pending is not None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=self._pending)
            self._pending, self._written_at = None, time.monotonic()

    def start(self, summary: dict[str, Any]) -> Cursor | None:
        """Where to resume; a new object is written at once, so a bucket the replay may not
        write fails the run before anything is sent."""
        import botocore.exceptions

        after = self.load()
        if after is None:
            try:
                self.save(None, summary)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
                raise ConfigError(f"--progress {self.path!r} cannot be written: {error}") from None
        return after

    def close(self) -> None:
        """Write what is not written yet (the cursor of the last acknowledged batch)."""
        self._put()


def encoded(identity: dict[str, Any], cursor: Cursor | None, summary: dict[str, Any]) -> bytes:
    document = {"replay": identity, "after": list(cursor) if cursor else None, "summary": summary}
    return json.dumps(document, sort_keys=True).encode()


def cursor_of(
    document: dict[str, Any] | None, where: str, identity: dict[str, Any]
) -> Cursor | None:
    """The cursor a progress record holds, if it is this replay's."""
    if document is None:
        raise ConfigError(
            f"--progress {where!r} cannot be read: it holds no complete JSON record of a replay"
        )
    if document.get("replay") != identity:
        raise ConfigError(
            f"--progress {where!r} records another replay ({document.get('replay')}); give "
            "this one another --progress"
        )
    cursor = document.get("after")
    return Cursor(*cursor) if cursor else None


def _write(descriptor: int, line: bytes) -> None:
    """All of ``line`` (a short write continues; its rest would otherwise start the next)."""
    view = memoryview(line)
    while view:
        view = view[os.write(descriptor, view) :]


def last_record(text: bytes) -> dict[str, Any] | None:
    """The last line of ``text`` that is a whole JSON object (an incomplete one is not: it
    lacks its closing brace). A file of the earlier format is one such line."""
    for line in reversed(text.split(b"\n")):
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if isinstance(document, dict):
            return document
    return None
