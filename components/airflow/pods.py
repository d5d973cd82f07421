"""The pods liftoff's DAGs run on Kubernetes (`dags/liftoff_operations.py`): for each, its whole
environment, built by the process's own contract in `services/`, and the Secrets it mounts
(key → a file in a directory). The DAGs receive them through Airflow's `[liftoff]` section as
`<pod>_environment` / `<pod>_secrets` and pass them through. The NetworkPolicies admit the
pods by their component label: `reconcile` (the reconcile and rebuild pods: Postgres, the
archive) or `regulation` (components/airflow/kubernetes.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from components.archive import CREDENTIALS_DIR, CREDENTIALS_FILE
from components.ingest import SUPPRESSION_KEY
from services.archive.contract import ArchiveAccess
from services.consumers.reconcile import contract as reconcile
from services.postgres.contract import PostgresAccess
from services.regulations import contract as regulations
from services.stream.address import EVENTS_STREAM, dead_letter_url_of
from services.stream.contract import StreamAccess
from services.suppression.contract import SuppressionAccess, suppression_url_of
from services.warehouse import contract as rebuild

if TYPE_CHECKING:
    from components.airflow.kubernetes import KubernetesAirflowArgs

# Where the DAG pods mount the warehouse's password (the consumer pods' path) and the
# suppression list's key (the collector's path).
POSTGRES_DIR = "/etc/liftoff/postgres"
SUPPRESSION_DIR = "/etc/liftoff/suppression"

Pod = tuple[Mapping[str, str], list[dict[str, str]]]
"""A DAG pod's environment and the Secrets it mounts."""


def operation_pods(args: KubernetesAirflowArgs) -> dict[str, Pod]:
    """Every pod the stack can run: none without a warehouse (each keeps its work or its record
    there); the reconcile pod needs an archive with credentials too, the regulation pod the
    stream (the suppression list and the dead letters are on its servers)."""
    warehouse = args.warehouse
    if warehouse is None or not warehouse.secret_name:
        return {}
    client = args.archive.client() if args.archive is not None else None
    archive_secret = client.secret_name if client is not None else None
    # Not on EC2: boto3 must never wait for instance metadata.
    archive = (
        dataclasses.replace(client.access, metadata_disabled=True)
        if client is not None and archive_secret
        else ArchiveAccess()
    )
    access = PostgresAccess[Any](
        host=args.postgres.host,
        port=str(args.postgres.port),
        database=warehouse.role,
        user=warehouse.role,
        password_file=f"{POSTGRES_DIR}/password",
        # In-cluster traffic, limited by NetworkPolicies (as for the loader).
        sslmode="prefer",
    )
    secrets = [{"secret": warehouse.secret_name, "key": "password", "directory": POSTGRES_DIR}]
    if archive_secret:
        secrets.append(
            {"secret": archive_secret, "key": CREDENTIALS_FILE, "directory": CREDENTIALS_DIR}
        )
    columns = args.warehouse_columns or None
    # The rebuild reads the archive only for `--from archive`.
    settings = rebuild.RebuildSettings[Any](
        warehouse=access, archive=archive, log_level="INFO", columns=columns
    )
    pods: dict[str, Pod] = {"rebuild": (rebuild.PROCESS.environment(settings), secrets)}
    if archive_secret:
        repair = reconcile.ReconcileSettings[Any](
            warehouse=access, archive=archive, log_level="INFO", columns=columns
        )
        pods["reconcile"] = (reconcile.PROCESS.environment(repair), secrets)
    if args.stream is not None and args.suppression_key_secret:
        pods["regulation"] = _regulation_pod(args, access, archive, secrets)
    return pods


def _regulation_pod(
    args: KubernetesAirflowArgs,
    warehouse: PostgresAccess[Any],
    archive: ArchiveAccess[Any],
    secrets: list[dict[str, str]],
) -> Pod:
    """`python -m services regulation`: the request record in the warehouse, the suppression
    list (the stream servers' KV bucket, its key from the collector's Secret), the archive
    (rewritten without the users' lines) and the dead letters (the stream's `DEADLETTER`,
    which holds the collector's quarantine too). No destination deletion API: their
    credentials are not part of a stack's configuration (README "Privacy")."""
    assert args.stream is not None and args.suppression_key_secret is not None
    servers = args.stream.servers_url
    settings = regulations.RegulationSettings[Any](
        suppression=SuppressionAccess(
            url=suppression_url_of(servers), key_file=f"{SUPPRESSION_DIR}/{SUPPRESSION_KEY}"
        ),
        warehouse=warehouse,
        archive=archive,
        dead_letter_url=dead_letter_url_of(servers),
        # The events stream (its partitions are found on the servers): a delete waits for the
        # loader and the archiver to have acknowledged what it held (services.regulations.settle).
        stream=StreamAccess(url=f"{servers}/{EVENTS_STREAM}"),
        log_level="INFO",
    )
    key = {
        "secret": args.suppression_key_secret,
        "key": SUPPRESSION_KEY,
        "directory": SUPPRESSION_DIR,
    }
    return regulations.PROCESS.environment(settings), [*secrets, key]
