"""Postgres backups on Kubernetes: upload `pg_dump` files to the archive and prune old ones.

The platform's backup CronJob runs `pg_dump --format=custom` for every database of the
platform Postgres into a scratch volume (an init container of the official postgres image, so
the dump tool always matches the server), then `python -m services backup-upload --dir <dir>`
uploads each dump to the archive bucket and deletes dumps older than the retention.

Layout: `<prefix>backups/postgres/<database>/<database>-<YYYYMMDDTHHMMSSZ>.dump`. Restore with
`pg_restore --create --dbname postgres <file>` (or `--dbname <db> --clean` into an existing one).
A run fails (non-zero exit, the Job is retried) if any upload fails; pruning only ever deletes
objects older than the retention, and never the dump just written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services import config
from services import env as runtime_env
from services.config import ConfigError
from services.consumers.archiver.sink import ArchiverConfig
from services.consumers.reconcile.repair import s3_client

log = logging.getLogger("liftoff.backup")

RETENTION_DAYS = runtime_env.BACKUP_RETENTION_DAYS
_STAMP = "%Y%m%dT%H%M%SZ"
_KEY = re.compile(r".*/(?P<database>[^/]+)-(?P<stamp>\d{8}T\d{6}Z)\.dump$")


@dataclass(frozen=True)
class BackupConfig:
    archive: ArchiverConfig
    retention_days: int

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BackupConfig:
        return cls(
            archive=ArchiverConfig.from_env(env),
            retention_days=config.integer(env, RETENTION_DAYS, 7, 1, 3650),
        )

    def key(self, database: str, at: datetime) -> str:
        return (
            f"{self.archive.prefix}backups/postgres/{database}/"
            f"{database}-{at.astimezone(UTC).strftime(_STAMP)}.dump"
        )


def upload_dumps(
    cfg: BackupConfig, directory: Path, now: datetime, client: Any = None
) -> list[str]:
    """Upload every `<database>.dump` in `directory`; returns the keys written."""
    client = client or s3_client(cfg.archive)
    dumps = sorted(directory.glob("*.dump"))
    if not dumps:
        raise ConfigError(f"no .dump files in {directory} (did pg_dump run?)")
    keys = []
    for dump in dumps:
        key = cfg.key(dump.stem, now)
        with dump.open("rb") as body:
            client.put_object(Bucket=cfg.archive.bucket, Key=key, Body=body)
        log.info("backup uploaded", extra={"fields": {"key": key, "bytes": dump.stat().st_size}})
        keys.append(key)
    return keys


def prune(cfg: BackupConfig, now: datetime, keep: set[str], client: Any = None) -> list[str]:
    """Delete dumps older than the retention (never one of `keep`); returns the keys deleted."""
    client = client or s3_client(cfg.archive)
    cutoff = now - timedelta(days=cfg.retention_days)
    prefix = f"{cfg.archive.prefix}backups/postgres/"
    deleted = []
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=cfg.archive.bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            match = _KEY.match(key)
            if key in keep or match is None:
                continue
            taken = datetime.strptime(match["stamp"], _STAMP).replace(tzinfo=UTC)
            if taken < cutoff:
                client.delete_object(Bucket=cfg.archive.bucket, Key=key)
                deleted.append(key)
    if deleted:
        log.info("old backups deleted", extra={"fields": {"count": len(deleted)}})
    return deleted
