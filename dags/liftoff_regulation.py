"""liftoff: a GDPR/CCPA regulation request (triggered by hand).

Runs `python -m services regulation` (`services/regulations/`) with the trigger's conf:
`action` (`suppress`, `delete`, `unsuppress`, `status`), `userIds`, `anonymousIds` (lists of
ids; at least one id except for `status`) and `requestId` (`status`: only that request). The
request is recorded in the warehouse (schema `liftoff_regulations`) with a status per target;
the task's log ends with it. A target left unfinished fails the task: run the same conf again
and the request resumes where it stopped (the record, not this run, knows what is done).

**Where it runs** (`liftoff_operations.py`, from Airflow's `[liftoff]` section): on Kubernetes a
pod of the services image (`python -m services regulation --json <conf>`) with the environment
`regulation_environment` and the Secrets `regulation_secrets` that liftoff builds (the
regulation's own contract, `services/regulations/contract.py`), labelled so the stack's
NetworkPolicies admit it to Postgres, the stream's servers (the suppression list, the dead
letters) and the archive; on AWS (MWAA) the ops function, invoked synchronously with a
`regulation` payload: each invocation stops a minute before Lambda's 15 minutes, the archive
scan keeping its place (the last object scanned, in the record), and the task invokes it again
while the answer says `"finished": false`; a failed target fails the task (a retry resumes).

Without a warehouse (where requests are recorded) the task fails and says why: a privacy
request must never look done when nothing ran.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, Param
from liftoff_operations import Pod, declare, function_task, pod_task

DAG_ID = "liftoff_regulation"
TASK_ID = "regulation"
# The request as one JSON document: the command's `--json`, the ops function's payload.
REQUEST = (
    "{'action': params.action, 'userIds': params.userIds or [], "
    "'anonymousIds': params.anonymousIds or [], 'requestId': params.requestId}"
)
ACTIONS = ["suppress", "delete", "unsuppress", "status"]
IDS = {"type": "string", "minLength": 1}

REGULATION_POD = Pod(
    task_id=TASK_ID,
    name="regulation",
    configured="regulation",
    # The NetworkPolicies admit the pods with this component label to Postgres, the stream's
    # servers and the archive.
    component="regulation",
    arguments=["regulation", "--json", "{{ " + REQUEST + " | tojson }}"],
    missing="the stack has no warehouse to record requests in",
    # A delete scans the whole archive once.
    deadline=timedelta(hours=6),
    fail_when_missing=True,
)


with DAG(
    dag_id=DAG_ID,
    description="Suppress, delete or unsuppress users' events, or show requests (liftoff)",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # the command serializes runs anyway (a Postgres lock)
    default_args={
        "owner": "liftoff",
        # Resumable: a retry finishes what an interrupted run left (a Lambda's 15 minutes).
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
    },
    params={
        "action": Param(type="string", enum=ACTIONS, description="What to do"),
        "userIds": Param([], type="array", items=IDS, description="The users' userIds"),
        "anonymousIds": Param([], type="array", items=IDS, description="The users' anonymousIds"),
        "requestId": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="status: only this request (default: every request)",
        ),
    },
    tags=["liftoff", "privacy"],
) as dag:
    declare(
        TASK_ID,
        kubernetes=lambda: pod_task(REGULATION_POD),
        aws=lambda: function_task(
            TASK_ID,
            "{{ {'regulation': " + REQUEST + "} | tojson }}",
            "run a regulation request",
            key="regulation_function",
            fail=True,
            # A large archive takes more than one invocation: each resumes after the last
            # object the one before scanned.
            until_finished=timedelta(hours=12),
        ),
        fail=True,
    )
