"""The local archive store: moto's S3 server, with every object also kept as a file on disk.

moto keeps its state in memory only, so ``liftoff local`` would lose the archive on every
restart. This process serves moto's S3 API unchanged and adds two things around it:

- **write-through**: after a successful PUT/POST/DELETE the touched object (or bucket) is
  written to (or removed from) ``<dir>/<bucket>/<key>`` *before* the response goes back, so an
  archiver that was told "200" has its object on disk (written to a temporary file, fsynced,
  then renamed into place);
- **restore**: on start, every file under ``<dir>`` is loaded back into moto before the port
  opens.

The files are the objects' bytes, so the archive can also be read straight from disk
(``zcat <dir>/<bucket>/source=web/.../*.json.gz``). Only path-style requests are understood
(``http://127.0.0.1:<port>/<bucket>/<key>``: what boto3 uses against a custom endpoint).
Object metadata (content type, tags, versions) is not kept: the archive needs the bytes only.

``python -m liftoff_local.objectstore --port 9000 --dir .liftoff/dev/s3``
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

log = logging.getLogger("liftoff.local.objectstore")

REGION = "us-east-1"
_MUTATING = frozenset({"PUT", "POST", "DELETE"})


def _backend_for(bucket: str) -> Any | None:
    from moto.s3.models import s3_backends

    owner = s3_backends.bucket_accounts.get(bucket)
    if owner is None:
        return None
    partition, account = owner
    return s3_backends[account][partition]


def _default_backend() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def safe_path(root: Path, bucket: str, key: str = "") -> Path | None:
    """Where an object lives on disk, or None for names that cannot be a plain relative path
    (empty segments, '.', '..'): those are refused rather than stored somewhere surprising."""
    parts = [bucket, *key.split("/")] if key else [bucket]
    if any(part in ("", ".", "..") or "\x00" in part for part in parts):
        return None
    return root.joinpath(*parts)


class DiskMirror:
    """WSGI middleware around moto: write-through of mutations, serialized by one lock."""

    def __init__(self, app: Callable, root: Path) -> None:
        self.app = app
        self.root = root
        self._lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") not in _MUTATING:
            return self.app(environ, start_response)
        path = unquote(environ.get("PATH_INFO", ""))
        if path.startswith("/moto-api"):
            return self.app(environ, start_response)
        bucket, _, key = path.lstrip("/").partition("/")
        if not bucket or safe_path(self.root, bucket, key) is None:
            return _error(start_response, "InvalidArgument", f"unsupported object name {path!r}")
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> Callable:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        with self._lock:
            body = b"".join(self.app(environ, capture))
            if captured.get("status", "500").startswith("2"):
                self._persist(bucket, key)
        start_response(captured["status"], captured["headers"])
        return [body]

    def _persist(self, bucket: str, key: str) -> None:
        backend = _backend_for(bucket)
        bucket_dir = safe_path(self.root, bucket)
        assert bucket_dir is not None
        if backend is None or bucket not in backend.buckets:
            _remove_tree(bucket_dir)
            return
        bucket_dir.mkdir(parents=True, exist_ok=True)
        if key:
            self._persist_key(backend, bucket, key)
        else:
            # Bucket-level mutation (DeleteObjects, configuration): resync the whole bucket.
            stored = {p.relative_to(bucket_dir).as_posix() for p in _files(bucket_dir)}
            present = set(backend.buckets[bucket].keys.keys())
            for name in stored | present:
                self._persist_key(backend, bucket, name)

    def _persist_key(self, backend: Any, bucket: str, key: str) -> None:
        target = safe_path(self.root, bucket, key)
        if target is None:
            return
        found = backend.get_object(bucket, key)
        if found is None:
            target.unlink(missing_ok=True)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(found.value)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))


def _remove_tree(directory: Path) -> None:
    if not directory.exists():
        return
    for path in sorted(directory.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    directory.rmdir()


def _error(start_response: Callable, code: str, message: str) -> list[bytes]:
    from xml.sax.saxutils import escape

    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error>"
    ).encode()
    start_response("400 Bad Request", [("Content-Type", "application/xml")])
    return [body]


def restore(root: Path) -> int:
    """Load every stored object back into moto; returns how many."""
    backend = _default_backend()
    count = 0
    if not root.is_dir():
        return 0
    for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if bucket_dir.name not in backend.buckets:
            backend.create_bucket(bucket_dir.name, REGION)
        for path in _files(bucket_dir):
            backend.put_object(
                bucket_dir.name, path.relative_to(bucket_dir).as_posix(), path.read_bytes()
            )
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m liftoff_local.objectstore")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    root: Path = arguments.dir
    root.mkdir(parents=True, exist_ok=True)
    restored = restore(root)
    app = DiskMirror(DomainDispatcherApplication(create_backend_app), root)
    server = make_server(
        arguments.host, arguments.port, app, threaded=True, request_handler=MotoRequestHandler
    )
    print(f"object store on {arguments.host}:{arguments.port}, {restored} object(s) restored")
    sys.stdout.flush()

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
