"""liftoff: replay archived events of a time window to one destination or the warehouse
(triggered by hand).

Runs `python -m services replay --json <conf>` (`services/consumers/replay/`, README "Replay
from the archive"): `from`, `to` (ISO-8601, UTC), `target` (`warehouse` or
`destination:<name>`), `sources`, `types`, `events` (empty: all), `rate` (events per second,
null: no limit) and `dryRun` (counts only). The task's log ends with the summary. The progress
is kept in the archive bucket (`liftoff/replay-progress/`): the same conf run again continues
where a stopped or failed run left off, and sends nothing once it finished.

**Where it runs** (`liftoff_operations.py`, from Airflow's `[liftoff]` section): on Kubernetes a
pod of the services image per target the stack knows (`liftoff_replay_targets.json` beside this
file, in the same ConfigMap: its environment and Secrets, built by the replay's contract, and
the component label the NetworkPolicies admit to the archive, the suppression list and that
target alone); `choose_target` runs the one asked for and fails, listing the known ones, for any
other. A destination added to the stack appears here once the kubelet has refreshed the
ConfigMap and the file is parsed again (a minute or two), without restarting Airflow.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airflow.sdk import DAG, Param, task
from liftoff_operations import Pod, declare, pod_task, skipped

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.0 (MWAA)
    from airflow.exceptions import AirflowFailException

DAG_ID = "liftoff_replay"
TASK_ID = "replay"
# The replay as one JSON document: the command's `--json`, the ops function's payload.
DOCUMENT = (
    "{'from': params['from'], 'to': params['to'], 'target': params.target, "
    "'sources': params.sources or [], 'types': params.types or [], "
    "'events': params.events or [], 'rate': params.rate, 'dryRun': params.dryRun}"
)
TYPES = ["track", "identify", "page", "screen", "group", "alias"]
NAMES = {"type": "string", "minLength": 1}
# Written by the platform into the DAG ConfigMap (components/airflow/pods.py).
TARGETS_FILE = Path(__file__).with_name("liftoff_replay_targets.json")


@task.branch(task_id="choose_target")
def choose_target(target: str, tasks: dict[str, str]) -> str:
    """The pod task of ``target``; any other target fails, naming the known ones."""
    if target not in tasks:
        known = ", ".join(sorted(tasks))
        raise AirflowFailException(f"target {target!r} is not one this stack knows: {known}")
    return tasks[target]


def kubernetes() -> None:
    """A pod task per target the stack knows, after the branch that picks the one asked for."""
    targets = json.loads(TARGETS_FILE.read_text()) if TARGETS_FILE.is_file() else {}
    if not targets:
        reason = f"no replay pod is configured ({TARGETS_FILE.name} is missing or empty: the stack "
        skipped(TASK_ID, reason + "has no archive with credentials to replay from)", fail=True)
        return
    tasks = {target: pod["component"] for target, pod in targets.items()}
    chosen = choose_target(target="{{ params.target }}", tasks=tasks)
    for target, pod in sorted(targets.items()):
        chosen >> pod_task(
            Pod(
                task_id=pod["component"],
                name="replay",
                configured="replay",
                # The NetworkPolicies admit this component to the archive, the suppression
                # list and this target alone.
                component=pod["component"],
                arguments=["replay", "--json", "{{ " + DOCUMENT + " | tojson }}"],
                missing=f"no pod for {target}",
                # A long window at a low rate; the progress in S3 lets a new run continue.
                deadline=timedelta(hours=12),
                environment=pod["environment"],
                secrets=pod["secrets"],
            )
        )


def aws() -> None:
    skipped(
        TASK_ID,
        'replay on AWS runs from an operator\'s shell for now (README "Replay from the archive")',
        fail=True,
    )


with DAG(
    dag_id=DAG_ID,
    description="Replay archived events to a destination or the warehouse (liftoff)",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,  # one replay at a time: each has the rate it was given
    default_args={
        "owner": "liftoff",
        # Resumable from its progress object: a retry continues, sending nothing twice.
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
    },
    params={
        "from": Param(type="string", minLength=1, description="ISO-8601, e.g. 2026-11-27T10:00Z"),
        "to": Param(type="string", minLength=1, description="ISO-8601 (excluded)"),
        "target": Param(type="string", minLength=1, description="warehouse or destination:<name>"),
        "sources": Param([], type="array", items=NAMES, description="Sources (empty: all)"),
        "types": Param(
            [], type="array", items={"enum": TYPES}, description="Event types (empty: all)"
        ),
        "events": Param([], type="array", items=NAMES, description="Track event names"),
        "rate": Param(
            None, type=["null", "number"], exclusiveMinimum=0, description="Events per second"
        ),
        "dryRun": Param(False, type="boolean", description="Count only, send nothing"),
    },
    tags=["liftoff", "replay"],
) as dag:
    declare(TASK_ID, kubernetes=kubernetes, aws=aws, fail=True)
