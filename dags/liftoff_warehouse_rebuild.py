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

**Where it runs** (`liftoff_operations.py`, from Airflow's `[liftoff]` section): on Kubernetes a
pod of the services image (`python -m services warehouse-rebuild --source <source> --table
<table> --from <from>`) with the environment `rebuild_environment` and the Secrets
`rebuild_secrets` that liftoff builds (the rebuild's own contract,
`services/warehouse/contract.py`), labelled like the reconcile pod so the stack's
NetworkPolicies admit it to Postgres and the archive; on AWS (MWAA) the ops function, invoked
synchronously with a `rebuild` payload. A Lambda function runs at most 15 minutes: a larger
source is rebuilt by the command from a host in the VPC (README "Rebuilding typed tables").

Without a warehouse the task skips and says why. One run at a time (a second rebuild of the
same source would fail at once: the command allows one per source).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param
from liftoff_operations import Pod, declare, function_task, pod_task

DAG_ID = "liftoff_warehouse_rebuild"
TASK_ID = "rebuild"
SOURCE = "{{ params.source }}"
TABLE = "{{ params.table or '' }}"  # empty: every table (the command reads it so)
ORIGIN = "{{ params['from'] }}"
# The ops function's `rebuild` payload (services/warehouse/command.py: handle).
PAYLOAD = (
    "{{ {'rebuild': {'source': params.source, 'tables': [params.table] if params.table else "
    "none, 'from': params['from']}} | tojson }}"
)

REBUILD_POD = Pod(
    task_id=TASK_ID,
    name="warehouse-rebuild",
    configured="rebuild",
    # The reconcile pod's component label: the NetworkPolicies admit exactly the pods with it
    # (and the stack's instance label) to Postgres and the archive.
    component="reconcile",
    arguments=["warehouse-rebuild", "--source", SOURCE, "--table", TABLE, "--from", ORIGIN],
    missing="the stack has no warehouse: nothing to rebuild",
    deadline=timedelta(hours=6),
    # Memory is bounded by one chunk of events (services/warehouse/rebuild.py).
    cpu_request="250m",
)


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
    declare(
        TASK_ID,
        kubernetes=lambda: pod_task(REBUILD_POD),
        aws=lambda: function_task(TASK_ID, PAYLOAD, "rebuild typed tables"),
    )
