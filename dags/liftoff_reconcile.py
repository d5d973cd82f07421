"""liftoff: warehouse reconciliation.

Every hour, load into the warehouse the events of one archived hour that it lacks, from the
archive (`services/consumers/reconcile/`; idempotent: running an hour again loads nothing). It
repairs whatever gap the streaming loader may leave.

**Which hour.** The timetable is `CronDataIntervalTimetable("0 * * * *", UTC)`: the run that
starts at 12:00 has the data interval 11:00-12:00, and reconciles the hour *before* that
interval's start, 10:00-10:59 (UTC, by the events' `receivedAt`). So an hour is repaired one to
two hours after it closed. That lag lets the late events of the hour land first: the collector
stamps `receivedAt`, so after the hour closes its events only trail through the pipeline — the
archiver flushes at least every minute (`LIFTOFF_ARCHIVE_BATCH_MAX_SECONDS`, Kinesis batching
window at most five), consumer redeliveries back off for at most a minute, and Lambda retries
take minutes. An hour leaves room for all of that and for short outages, while a gap stays in
the warehouse for at most about two hours. Events of the hour that arrive even later (an
archiver down for longer) are repaired by triggering the DAG with the `hour` parameter
(`2026-11-27T10`), or by `python -m services reconcile --hour 2026-11-27T10`.

`catchup=False`: after Airflow was down, only the latest hour runs; trigger the hours missed
with the `hour` parameter. Hours are disjoint and loads are idempotent, so a few runs may
overlap. Failed runs retry with exponential backoff.

**Where it runs**, from Airflow's `[liftoff]` configuration section (set by liftoff):

- `target = kubernetes`: a `KubernetesPodOperator` pod of the services image
  (`python -m services reconcile --hour <hour>`), labelled so the stack's NetworkPolicies
  admit it to Postgres and the archive, credentials mounted read-only from Secrets, restricted
  security context, no service-account token. Its environment is `reconcile_environment` and
  its Secrets `reconcile_secrets`, both JSON, both built by liftoff (the environment by the
  reconcile process's own contract, `services/consumers/reconcile/contract.py`): this file
  passes them through and names no variable.
- `target = aws` (MWAA): invokes the reconcile Lambda function synchronously and fails if the
  function failed.

Without a warehouse or an archive to repair from, the task skips and says why.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.configuration import conf
from airflow.sdk import DAG, Param, task

try:  # Airflow >= 3.1 (the SDK's own timetables and exceptions)
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 3.0 (MWAA)
    from airflow.timetables.interval import CronDataIntervalTimetable
try:
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:
    from airflow.exceptions import AirflowSkipException

log = logging.getLogger(__name__)

DAG_ID = "liftoff_reconcile"
TASK_ID = "reconcile"
HOUR_FORMAT = "%Y-%m-%dT%H"
# The UTC hour to reconcile: the `hour` parameter, else the hour before the data interval.
HOUR = (
    "{{ params.hour or (data_interval_start - macros.timedelta(hours=1)).strftime('"
    + HOUR_FORMAT
    + "') }}"
)

SERVICES_UID = 10001  # the services image's user
LAMBDA_TIMEOUT = timedelta(minutes=15)  # the longest a Lambda function may run


def setting(key: str) -> str:
    return (conf.get("liftoff", key, fallback="") or "").strip()


def _skipped(reason: str) -> Any:
    @task(task_id=TASK_ID)
    def reconcile() -> None:
        raise AirflowSkipException(reason)

    return reconcile()


# --- Kubernetes -----------------------------------------------------------------------------------


def _kubernetes_task() -> Any:
    missing = [key for key in ("stack", "namespace", "services_image") if not setting(key)]
    if missing:
        raise ValueError(f"[liftoff] target = kubernetes needs {', '.join(missing)}")
    environment = setting("reconcile_environment")
    if not environment:
        return _skipped(
            "no reconcile pod is configured ([liftoff] reconcile_environment is empty: the "
            "stack has no warehouse or no archive): nothing to repair"
        )

    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    def mounted(secret_name: str, key: str, directory: str) -> Secret:
        """The Secret's one key as a read-only file ``<directory>/<key>``."""
        return Secret("volume", directory, secret_name, items=[k8s.V1KeyToPath(key=key, path=key)])

    secrets = [
        mounted(item["secret"], item["key"], item["directory"])
        for item in json.loads(setting("reconcile_secrets") or "[]")
    ]

    seccomp = k8s.V1SeccompProfile(type="RuntimeDefault")
    return KubernetesPodOperator(
        task_id=TASK_ID,
        name="liftoff-reconcile",
        namespace=setting("namespace"),
        image=setting("services_image"),
        image_pull_policy="IfNotPresent",
        arguments=["reconcile", "--hour", HOUR],
        # The NetworkPolicies admit exactly the pods with these two labels to Postgres and to
        # the archive (components/airflow/kubernetes.py).
        labels={
            "app.kubernetes.io/instance": setting("stack"),
            "app.kubernetes.io/component": "reconcile",
            "app.kubernetes.io/name": "reconcile",
            "app.kubernetes.io/part-of": "liftoff",
        },
        env_vars=json.loads(environment),
        secrets=secrets,
        # The root filesystem is read-only: a small scratch /tmp.
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
        container_resources=k8s.V1ResourceRequirements(
            requests={"cpu": "100m", "memory": "256Mi"},
            limits={"cpu": "1", "memory": "1Gi"},
        ),
        automount_service_account_token=False,
        get_logs=True,
        do_xcom_push=False,  # the summary is in the task log; no sidecar container needed
        log_events_on_failure=True,
        on_finish_action="delete_succeeded_pod",  # failed pods stay for inspection
        startup_timeout_seconds=600,
        active_deadline_seconds=45 * 60,
        execution_timeout=timedelta(minutes=50),
    )


# --- AWS (MWAA) -----------------------------------------------------------------------------------


def invoke_reconcile_function(function: str, hour: str) -> dict[str, Any]:
    """Invoke the reconcile function synchronously for ``hour``; its summary, or raise."""
    import boto3
    import botocore.config

    client = boto3.client(
        "lambda",
        config=botocore.config.Config(
            # Wait as long as the function may run; keep the idle connection alive meanwhile.
            read_timeout=int(LAMBDA_TIMEOUT.total_seconds()) + 60,
            connect_timeout=10,
            tcp_keepalive=True,
            retries={"mode": "standard", "total_max_attempts": 1},  # Airflow retries the task
        ),
    )
    response = client.invoke(
        FunctionName=function,
        InvocationType="RequestResponse",
        Payload=json.dumps({"hour": hour}).encode(),
    )
    payload = json.loads(response["Payload"].read() or b"null")
    if response.get("FunctionError") or response.get("StatusCode") != 200:
        detail = payload if not isinstance(payload, dict) else payload.get("errorMessage", payload)
        raise RuntimeError(f"{function} failed to reconcile {hour}: {detail}")
    log.info("reconciled %s: %s", hour, json.dumps(payload, sort_keys=True))
    return payload


def _aws_task() -> Any:
    function = setting("reconcile_function")
    if not function:
        return _skipped(
            "no reconcile function is configured ([liftoff] reconcile_function is empty: the "
            "stack has no warehouse or no archive): nothing to repair"
        )

    @task(task_id=TASK_ID, execution_timeout=LAMBDA_TIMEOUT + timedelta(minutes=2))
    def reconcile(function: str, hour: str) -> dict[str, Any]:
        return invoke_reconcile_function(function, hour)

    return reconcile(function=function, hour=HOUR)


# --- the DAG ------------------------------------------------------------------------------------


with DAG(
    dag_id=DAG_ID,
    description="Load the events of an archived hour that the warehouse lacks (liftoff)",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=3,
    dagrun_timeout=timedelta(hours=3),
    default_args={
        "owner": "liftoff",
        "retries": 4,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
    },
    params={
        "hour": Param(
            None,
            type=["null", "string"],
            pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}$",
            description="Reconcile this UTC hour (e.g. 2026-11-27T10) instead of the scheduled one",
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
