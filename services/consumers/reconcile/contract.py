"""The warehouse reconciliation's runtime contract: ``python -m services reconcile``, its Lambda
function (``services.aws_lambda.reconcile_handler``, invoked by the DAG on MWAA) and the
Airflow DAG's pod on Kubernetes, whose whole environment components build with
:data:`PROCESS` and hand to Airflow as one ``[liftoff] reconcile_environment`` value.

The warehouse as for the loader (libpq's variables, or on AWS the secret
``LIFTOFF_WAREHOUSE_SECRET_ARN``) and the archive as for the archiver
(:class:`~services.archive.contract.ArchiveAccess`); the typed tables' declared column types as
for the loader (``LIFTOFF_WAREHOUSE_COLUMNS``), since it loads through the loader. On AWS the
same function also runs ``warehouse-rebuild`` (an invocation with a ``rebuild`` payload) and
regulations: its whole contract is :mod:`services.operations.contract`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic

from services.archive.contract import ArchiveAccess, bucket_of
from services.contract import V, group, log_level_variable, process
from services.postgres.contract import PostgresAccess, require_host, warehouse_secret_arn_variable
from services.warehouse.columns import DeclaredColumns, columns_variable


@dataclass(frozen=True)
class ReconcileSettings(Generic[V]):
    warehouse: PostgresAccess[V] = group(PostgresAccess)
    warehouse_secret_arn: V | None = warehouse_secret_arn_variable()
    archive: ArchiveAccess[V] = group(ArchiveAccess)
    log_level: str | None = log_level_variable()
    columns: DeclaredColumns | None = columns_variable()


def check(settings: ReconcileSettings[str]) -> None:
    bucket_of(settings.archive)
    require_host(settings.warehouse, settings.warehouse_secret_arn)


PROCESS = process(ReconcileSettings, check)
parse = PROCESS.parse
