"""``python -m services warehouse-rebuild``'s runtime contract: the Airflow DAG's pod on
Kubernetes (components build its whole environment with :data:`PROCESS` and hand it to Airflow
as ``[liftoff] rebuild_environment``), liftoff local, or a shell with the warehouse's variables.
On AWS the reconcile function runs rebuilds (its contract has the same variables).

The warehouse as for the loader (libpq's variables, or on AWS the secret
``LIFTOFF_WAREHOUSE_SECRET_ARN``), the declared column types as for the loader
(``LIFTOFF_WAREHOUSE_COLUMNS``) and, for ``--from archive`` only, the archive as for the
archiver (:class:`~services.archive.contract.ArchiveAccess`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic

from services.archive.contract import ArchiveAccess
from services.contract import V, group, log_level_variable, process
from services.postgres.contract import PostgresAccess, require_host, warehouse_secret_arn_variable
from services.warehouse.columns import DeclaredColumns, columns_variable


@dataclass(frozen=True)
class RebuildSettings(Generic[V]):
    warehouse: PostgresAccess[V] = group(PostgresAccess)
    warehouse_secret_arn: V | None = warehouse_secret_arn_variable()
    archive: ArchiveAccess[V] = group(ArchiveAccess)
    """Read by ``--from archive`` only."""
    columns: DeclaredColumns | None = columns_variable()
    log_level: str | None = log_level_variable()


PROCESS = process(RebuildSettings, lambda s: require_host(s.warehouse, s.warehouse_secret_arn))
parse = PROCESS.parse
