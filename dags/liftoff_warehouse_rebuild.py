"""liftoff: rebuild a source's typed warehouse tables (triggered by hand).

Rebuilds the typed tables of one source (`tracks`, `identifies`, one table per event,
`users`, ...: Segment's warehouse schema) from the raw `events` table, or from the archive, with
the column types declared in the stack (`liftoff:warehouse.columns`), and swaps them in
atomically while the loader keeps loading (`services/warehouse/rebuild.py`). Use it after
declaring a type, to repair a column whose type the first value fixed by mistake, or to fill
the typed tables from events loaded before they existed.

**Parameters**: `source` (a source of `liftoff:sources`), `table` (one typed table, e.g.
`signed_up`; empty: every table of the source), `from` (`raw`, the default, or `archive`).
The task's log ends with the summary: events read, rows and discards per table, seconds.

**Where it runs**, from Airflow's `[liftoff]` configuration section (set by liftoff):

- `target = kubernetes`: a `KubernetesPodOperator` pod of the services image
  (`python -m services warehouse-rebuild --source <source> --table <table> --from <from>`),
  labelled like the reconcile pod so the stack's NetworkPolicies admit it to Postgres and the
  archive, credentials mounted read-only from Secrets, restricted security context, no
  service-account token. Its environment is `rebuild_environment` and its Secrets
  `rebuild_secrets`, both JSON, both built by liftoff (the environment by the rebuild's own
  contract, `services/warehouse/contract.py`): this file passes them through and names no
  variable.
- `target = aws` (MWAA): invokes the reconcile Lambda function synchronously with a `rebuild`
  payload and fails if the function failed. A Lambda function runs at most 15 minutes: a
  larger source is rebuilt by the command from a host in the VPC (README "Rebuilding typed
  tables").

Without a warehouse the task skips and says why. One run at a time (a second rebuild of the
same source would fail at once: the command allows one per source).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.configuration import conf
from airflow.sdk import DAG, Param, task

try:
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:
    from airflow.exceptions import AirflowSkipException

log = logging.getLogger(__name__)

DAG_ID = "liftoff_warehouse_rebuild"
TASK_ID = "rebuild"
SOURCE = "{{ params.source }}"
TABLE = "{{ params.table or '' }}"  # empty: every table (the command reads it so)
ORIGIN = "{{ params['from'] }}"

SERVICES_UID = 10001  # the services image's user
LAMBDA_TIMEOUT = timedelta(minutes=15)  # the longest a Lambda function may run
POD_DEADLINE = timedelta(hours=6)


def setting(key: str) -> str:
    return (conf.get("liftoff", key, fallback="") or "").strip()


def _skipped(reason: str) -> Any:
    @task(task_id=TASK_ID)
    def rebuild() -> None:
        raise AirflowSkipException(reason)

    return rebuild()


# --- Kubernetes -----------------------------------------------------------------------------------


def _kubernetes_task() -> Any:
    missing = [key for key in ("stack", "namespace", "services_image") if not setting(key)]
    if missing:
        raise ValueError(f"[liftoff] target = kubernetes needs {', '.join(missing)}")
    environment = setting("rebuild_environment")
    if not environment:
        return _skipped(
            "no rebuild pod is configured ([liftoff] rebuild_environment is empty: the stack "
            "has no warehouse): nothing to rebuild"
        )

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    def mounted(secret_name: str, key: str, directory: str) -> Secret:
        """The Secret's one key as a read-only file ``<directory>/<key>``."""
        return Secret("volume", directory, secret_name, items=[k8s.V1KeyToPath(key=key, path=key)])

    secrets = [
        mounted(item["secret"], item["key"], item["directory"])
        for item in json.loads(setting("rebuild_secrets") or "[]")
    ]
    seccomp = k8s.V1SeccompProfile(type="RuntimeDefault")
    return KubernetesPodOperator(
        task_id=TASK_ID,
        name="liftoff-warehouse-rebuild",
        namespace=setting("namespace"),
        image=setting("services_image"),
        image_pull_policy="IfNotPresent",
        arguments=["warehouse-rebuild", "--source", SOURCE, "--table", TABLE, "--from", ORIGIN],
        # The reconcile pod's component label: the NetworkPolicies admit exactly the pods
        # with it (and the stack's instance label) to Postgres and the archive.
        labels={
            "app.kubernetes.io/instance": setting("stack"),
            "app.kubernetes.io/component": "reconcile",
            "app.kubernetes.io/name": "warehouse-rebuild",
            "app.kubernetes.io/part-of": "liftoff",
        },
        env_vars=json.loads(environment),
        secrets=secrets,
        volumes=[k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="64Mi"))],
        volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=SERVICES_UID,
            run_as_group=SERVICES_UID,
            fs_group=SERVICES_UID,
            seccomp_profile=seccomp,
        ),
        container_security_context=k8s.V1SecurityContext(
            allow_privilege_escalation=False,
            privileged=False,
            read_only_root_filesystem=True,
            run_as_non_root=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"]),
            seccomp_profile=seccomp,
        ),
        # Memory is bounded by one chunk of events (services/warehouse/rebuild.py).
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "250m", "memory": "256Mi"},
            limits={"cpu": "1", "memory": "1Gi"},
        ),
        automount_service_account_token=False,
        get_logs=True,
        do_xcom_push=False,
        log_events_on_failure=True,
        on_finish_action="delete_succeeded_pod",
        startup_timeout_seconds=600,
        active_deadline_seconds=int(POD_DEADLINE.total_seconds()),
        execution_timeout=POD_DEADLINE + timedelta(minutes=10),
    )


# --- AWS (MWAA) -----------------------------------------------------------------------------------


def invoke_rebuild(function: str, source: str, table: str, origin: str) -> dict[str, Any]:
    """Invoke the reconcile function synchronously with a ``rebuild`` payload; its summary."""
    import boto3
    import botocore.config

    client = boto3.client(
        "lambda",
        config=botocore.config.Config(
            read_timeout=int(LAMBDA_TIMEOUT.total_seconds()) + 60,
            connect_timeout=10,
            tcp_keepalive=True,
            retries={"mode": "standard", "total_max_attempts": 1},
        ),
    )
    request = {"source": source, "tables": [table] if table else None, "from": origin}
    response = client.invoke(
        FunctionName=function,
        InvocationType="RequestResponse",
        Payload=json.dumps({"rebuild": request}).encode(),
    )
    payload = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError") or response.get("StatusCode") != 200:
        detail = payload if not isinstance(payload, dict) else payload.get("errorMessage", payload)
        raise RuntimeError(f"{function} failed to rebuild {source}: {detail}")
    log.info("rebuilt %s: %s", source, json.dumps(payload, sort_keys=True))
    return payload


def _aws_task() -> Any:
    function = setting("reconcile_function")
    if not function:
        return _skipped(
            "no reconcile function is configured ([liftoff] reconcile_function is empty: the "
            "stack has no warehouse or no archive): nothing runs the rebuild"
        )

    @task(task_id=TASK_ID, execution_timeout=LAMBDA_TIMEOUT + timedelta(minutes=2))
    def rebuild(function: str, source: str, table: str, origin: str) -> dict[str, Any]:
        return invoke_rebuild(function, source, table, origin)

    return rebuild(function=function, source=SOURCE, table=TABLE, origin=ORIGIN)


# --- the DAG ------------------------------------------------------------------------------------


with DAG(
    dag_id=DAG_ID,
    description="Rebuild a source's typed warehouse tables with the declared types (liftoff)",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "liftoff", "retries": 0},  # a failed rebuild changed nothing
    params={
        "source": Param(
            type="string",
            pattern=r"^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$",
            description="The source to rebuild (one of liftoff:sources)",
        ),
        "table": Param(
            None,
            type=["null", "string"],
            pattern=r"^[a-z_][a-z0-9_]{0,62}$",
            description="Only this typed table (e.g. signed_up); empty: every table",
        ),
        "from": Param(
            "raw",
            type="string",
            enum=["raw", "archive"],
            description="Read the events from the raw events table or from the archive",
        ),
    },
    tags=["liftoff", "warehouse"],
) as dag:
    TARGET = setting("target")
    if TARGET == "kubernetes":
        _kubernetes_task()
    elif TARGET == "aws":
        _aws_task()
    elif not TARGET:
        _skipped("[liftoff] target is not set: this Airflow was not deployed by liftoff")
    else:
        raise ValueError(f"[liftoff] target = {TARGET!r}: expected 'kubernetes' or 'aws'")
