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

**Where it runs** (`liftoff_operations.py`, from Airflow's `[liftoff]` section): on Kubernetes a
pod of the services image (`python -m services reconcile --hour <hour>`) with the environment
`reconcile_environment` and the Secrets `reconcile_secrets` that liftoff builds (the reconcile
process's own contract, `services/consumers/reconcile/contract.py`), labelled so the stack's
NetworkPolicies admit it to Postgres and the archive; on AWS (MWAA) the ops function, invoked
synchronously with `{"hour": <hour>}`.

Without a warehouse or an archive to repair from, the task skips and says why.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param
from liftoff_operations import Pod, declare, function_task, pod_task

try:  # Airflow >= 3.1 (the SDK's own timetables)
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow 3.0 (MWAA)
    from airflow.timetables.interval import CronDataIntervalTimetable

DAG_ID = "liftoff_reconcile"
TASK_ID = "reconcile"
HOUR_FORMAT = "%Y-%m-%dT%H"
# The UTC hour to reconcile: the `hour` parameter, else the hour before the data interval.
HOUR_EXPRESSION = (
    "(params.hour or (data_interval_start - macros.timedelta(hours=1)).strftime('"
    + HOUR_FORMAT
    + "'))"
)
HOUR = "{{ " + HOUR_EXPRESSION + " }}"

RECONCILE_POD = Pod(
    task_id=TASK_ID,
    name="reconcile",
    configured="reconcile",
    # The NetworkPolicies admit the pods with this component label to Postgres and the archive.
    component="reconcile",
    arguments=["reconcile", "--hour", HOUR],
    missing="the stack has no warehouse or no archive: nothing to repair",
    deadline=timedelta(minutes=45),
)


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
    declare(
        TASK_ID,
        kubernetes=lambda: pod_task(RECONCILE_POD),
        aws=lambda: function_task(
            TASK_ID, "{{ {'hour': " + HOUR_EXPRESSION + "} | tojson }}", "reconcile"
        ),
    )
