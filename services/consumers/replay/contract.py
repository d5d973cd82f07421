"""The replay's runtime contract: ``python -m services replay`` (an operator's command, run where
both the archive and the target are reachable: see README "Replay from the archive"; the
Kubernetes replay pods; on AWS the ops function's ``replay`` payload, whose settings
:meth:`~services.operations.contract.OpsFunctionSettings.replay` maps from its own).

- The archive as for the archiver (:class:`~services.archive.contract.ArchiveAccess`:
  ``LIFTOFF_ARCHIVE_BUCKET`` ...), always.
- ``--target destination:<name>``: the broadcaster's own variables
  (:class:`~services.consumers.broadcaster.contract.Broadcast`: ``LIFTOFF_DESTINATION``, whose
  name must be ``<name>``, and its secret, not needed for ``--dry-run``).
- ``--target warehouse``: the loader's (libpq's ``PGHOST`` ..., or
  ``LIFTOFF_WAREHOUSE_SECRET_ARN``).
- The collector's suppression list (``LIFTOFF_SUPPRESSION_URL`` and its key: inline, a file, or
  on AWS ``LIFTOFF_SUPPRESSION_KEY_SECRET_ARN``): a suppressed user is never replayed.
- ``LIFTOFF_REPLAY_PROGRESS_IN_ARCHIVE=true`` (the targets' pods and ops function, whose disk
  does not outlive a run): without ``--progress``, the progress is kept in the archive bucket
  under ``liftoff/replay-progress/``; default ``false``: a file in the working directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic

from services.archive.contract import ArchiveAccess, bucket_of
from services.consumers.broadcaster.contract import Broadcast
from services.contract import Flag, V, group, log_level_variable, process, variable
from services.postgres.contract import PostgresAccess, warehouse_secret_arn_variable
from services.suppression.contract import (
    SuppressionAccess,
    check_key_secret,
    key_secret_arn_variable,
)


@dataclass(frozen=True)
class ReplaySettings(Generic[V]):
    archive: ArchiveAccess[V] = group(ArchiveAccess)
    broadcast: Broadcast[V] = group(Broadcast)
    """Only for ``--target destination:<name>``."""
    warehouse: PostgresAccess[V] = group(PostgresAccess)
    """Only for ``--target warehouse``."""
    warehouse_secret_arn: V | None = warehouse_secret_arn_variable()
    suppression: SuppressionAccess[V] = group(SuppressionAccess)
    """The collector's suppression list: a suppressed user is never replayed. Unset: the
    stack suppresses nobody."""
    suppression_key_secret_arn: V | None = key_secret_arn_variable()
    """The list's key in Secrets Manager instead (the ops function's, on AWS)."""
    progress_in_archive: bool | None = variable("LIFTOFF_REPLAY_PROGRESS_IN_ARCHIVE", Flag())
    log_level: str | None = log_level_variable()


def _check(settings: ReplaySettings[str]) -> None:
    bucket_of(settings.archive)
    check_key_secret(settings.suppression, settings.suppression_key_secret_arn)


PROCESS = process(ReplaySettings, _check)
parse = PROCESS.parse
