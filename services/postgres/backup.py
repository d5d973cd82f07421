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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.archive.store import ArchiveLocation, s3_client
from services.contract import ConfigError, level_of, or_default
from services.observability import configure_logging
from services.postgres.contract import DEFAULT_RETENTION_DAYS, BackupSettings

log = logging.getLogger("liftoff.backup")

_STAMP = "%Y%m%dT%H%M%SZ"
_KEY = re.compile(r".*/(?P<database>[^/]+)-(?P<stamp>\d{8}T\d{6}Z)\.dump$")


@dataclass(frozen=True)
class BackupConfig:
    archive: ArchiveLocation
    retention_days: int

    @classmethod
    def load(cls, settings: BackupSettings[str]) -> BackupConfig:
        return cls(
            archive=ArchiveLocation.of(settings.archive),
            retention_days=or_default(settings.retention_days, DEFAULT_RETENTION_DAYS),
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


def load(settings: BackupSettings[str]) -> BackupConfig:
    return BackupConfig.load(settings)


def run(settings: BackupSettings[str], directory: str) -> int:
    """``python -m services backup-upload --dir <directory>``: upload the dumps, then prune
    dumps past the retention."""
    configure_logging(level_of(settings.log_level))
    cfg = BackupConfig.load(settings)
    now = datetime.now(UTC)
    try:
        keys = upload_dumps(cfg, Path(directory), now)
        prune(cfg, now, keep=set(keys))
    except ConfigError:
        raise
    except Exception as error:
        log.error("backup upload failed", extra={"fields": {"error": repr(error)}})
        return 1
    return 0
