"""The pods liftoff's DAGs run on Kubernetes (`dags/liftoff_operations.py`): for each, its whole
environment, built by the process's own contract in `services/`, and the Secrets it mounts
(key → a file in a directory). The DAGs receive them through Airflow's `[liftoff]` section as
`<pod>_environment` / `<pod>_secrets` and pass them through. The NetworkPolicies admit the
pods by their component label: `reconcile` (the reconcile and rebuild pods: Postgres, the
archive) or `regulation` (components/airflow/kubernetes.py). The replay DAG has one pod per
target the stack knows (`replay_pods`), in a file beside the DAGs (`REPLAY_TARGETS_FILE`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from components.archive import CREDENTIALS_DIR, CREDENTIALS_FILE
from components.consumers import destination_document
from components.consumers.kubernetes import SECRETS_DIR, SECRETS_FILE, destination_secret_name
from components.consumers.settings import Destination
from components.ingest import SUPPRESSION_KEY
from services.archive.contract import ArchiveAccess
from services.consumers.broadcaster.contract import Broadcast
from services.consumers.reconcile import contract as reconcile
from services.consumers.replay import contract as replay
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

REPLAY_TARGETS_FILE = "liftoff_replay_targets.json"
"""The replay DAG's pods (`replay_targets_document`), a key of the DAG ConfigMap read by
`dags/liftoff_replay.py` beside itself. A file rather than a `[liftoff]` value: the chart's
config is in a checksum on every Airflow pod, so adding a destination there rolled them all
(and stopped the DAG runs in progress); the kubelet refreshes a ConfigMap volume's files in
running pods (pulumi-kubernetes re-creates the ConfigMap when its data changes)."""
REPLAY_WAREHOUSE = "replay-warehouse"
"""The component label of the replay pod into the warehouse (the NetworkPolicies' selector)."""


def replay_component(destination: Destination) -> str:
    """The replay pod's component label for a destination (`replay-to-<name>`: never the
    warehouse's, whatever the destination's name; at most 62 characters)."""
    return f"replay-to-{destination.name}"


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
    access = _warehouse_access(args, warehouse.role)
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


def _warehouse_access(args: KubernetesAirflowArgs, role: str) -> PostgresAccess[Any]:
    return PostgresAccess[Any](
        host=args.postgres.host,
        port=str(args.postgres.port),
        database=role,
        user=role,
        password_file=f"{POSTGRES_DIR}/password",
        # In-cluster traffic, limited by NetworkPolicies (as for the loader).
        sslmode="prefer",
    )


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


def replay_pods(args: KubernetesAirflowArgs) -> dict[str, tuple[str, Pod]]:
    """`python -m services replay`'s pod for each target the stack knows (`warehouse`,
    `destination:<name>`): its component label, environment and Secrets. Each reads the archive
    (its progress object there too) and the suppression list; the warehouse pod has the
    loader's Postgres variables, a destination's pod its broadcaster's document and Secret.
    None without an archive with credentials: there is nothing to replay from."""
    client = args.archive.client() if args.archive is not None else None
    if client is None or not client.secret_name:
        return {}
    archive = dataclasses.replace(client.access, metadata_disabled=True)
    secrets = [
        {"secret": client.secret_name, "key": CREDENTIALS_FILE, "directory": CREDENTIALS_DIR}
    ]
    suppression = SuppressionAccess[Any]()
    if args.stream is not None and args.suppression_key_secret:
        suppression = SuppressionAccess(
            url=suppression_url_of(args.stream.servers_url),
            key_file=f"{SUPPRESSION_DIR}/{SUPPRESSION_KEY}",
        )
        key = {"secret": args.suppression_key_secret, "key": SUPPRESSION_KEY}
        secrets.append({**key, "directory": SUPPRESSION_DIR})
    common = replay.ReplaySettings[Any](
        archive=archive, suppression=suppression, progress_in_archive=True, log_level="INFO"
    )
    pods: dict[str, tuple[str, Pod]] = {}
    warehouse = args.warehouse
    if warehouse is not None and warehouse.secret_name:
        settings = dataclasses.replace(common, warehouse=_warehouse_access(args, warehouse.role))
        password = {"secret": warehouse.secret_name, "key": "password", "directory": POSTGRES_DIR}
        environment = replay.PROCESS.environment(settings)
        pods["warehouse"] = (REPLAY_WAREHOUSE, (environment, [*secrets, password]))
    for destination in args.destinations:
        broadcast = Broadcast[Any](
            destination=destination_document(destination),
            secrets_file=f"{SECRETS_DIR}/{SECRETS_FILE}",
        )
        settings = dataclasses.replace(common, broadcast=broadcast)
        mounted = {
            "secret": destination_secret_name(destination),
            "key": SECRETS_FILE,
            "directory": SECRETS_DIR,
        }
        pod = (replay.PROCESS.environment(settings), [*secrets, mounted])
        pods[f"destination:{destination.name}"] = (replay_component(destination), pod)
    return pods


def replay_targets_document(args: KubernetesAirflowArgs) -> str:
    """`REPLAY_TARGETS_FILE`: each target's component label, environment and Secrets (no
    secret values: names and paths only); `{}` when the stack has nothing to replay from."""
    replays = {
        target: {"component": component, "environment": variables, "secrets": secrets}
        for target, (component, (variables, secrets)) in replay_pods(args).items()
    }
    return json.dumps(replays, indent=1, sort_keys=True) + "\n"
