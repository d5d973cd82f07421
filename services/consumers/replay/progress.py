"""The replay's progress file: which replay it belongs to and the last acknowledged cursor.

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
from pathlib import Path
from typing import Any

from services.consumers.replay.window import Cursor
from services.contract import ConfigError

COMPACT_BYTES = 1 << 20


class Progress:
    """The progress file of one replay (``identity``: its window, selection and target)."""

    def __init__(self, path: Path, identity: dict[str, Any]) -> None:
        self.path = path
        self.identity = identity
        self._descriptor: int | None = None
        self._size = 0

    @staticmethod
    def default_path(identity: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return Path(f"liftoff-replay-{digest[:12]}.json")

    def load(self) -> Cursor | None:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ConfigError(f"--progress {str(self.path)!r} cannot be read: {error}") from None
        document = last_record(text)
        if document is None:
            raise ConfigError(
                f"--progress {str(self.path)!r} cannot be read: it holds no complete JSON "
                "record of a replay"
            )
        if document.get("replay") != self.identity:
            raise ConfigError(
                f"--progress {str(self.path)!r} records another replay "
                f"({document.get('replay')}); use another file for this one"
            )
        cursor = document.get("after")
        return Cursor(*cursor) if cursor else None

    def save(self, cursor: Cursor | None, summary: dict[str, Any]) -> None:
        """Record ``cursor`` (and the summary so far, for whoever reads the file)."""
        document = {"replay": self.identity, "after": list(cursor) if cursor else None}
        line = json.dumps({**document, "summary": summary}, sort_keys=True).encode() + b"\n"
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
