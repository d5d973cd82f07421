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
ConfigMap and the file is parsed again (a minute or two), without restarting Airflow. On AWS
(MWAA) one task invokes the ops function (`[liftoff] reconcile_function`) with
`{"replay": <conf>}` for the warehouse, again while its summary says `finished: false` (each
invocation stops a minute before Lambda's 15 minutes, its progress saved), and fails on an
error; a `destination:<name>` target fails at once, naming the command an operator runs from a
host in the VPC.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, task
from liftoff_operations import FUNCTION, Pod, declare, invoke, pod_task, setting, skipped

try:
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 3.0 (MWAA)
    from airflow.exceptions import AirflowFailException

log = logging.getLogger(__name__)

DAG_ID = "liftoff_replay"
TASK_ID = "replay"
FUNCTION_TARGET = "warehouse"  # what the ops function replays into (AWS)
NOT_FINISHED = 3  # its summary's exit_status when stopped by the invocation's time
# A long window at a low rate; the progress in S3 lets a new run (or invocation) continue.
DEADLINE = timedelta(hours=12)
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
                deadline=DEADLINE,
                environment=pod["environment"],
                secrets=pod["secrets"],
            )
        )


def refusal(target: str) -> str | None:
    """Why the ops function does not replay to ``target`` (None: it does, the warehouse)."""
    if target == FUNCTION_TARGET:
        return None
    return (
        f"target {target!r}: on AWS the ops function replays into the warehouse only (a "
        "destination's document and secret ARN would not fit its environment); replay to a "
        "destination from a host in the VPC with `python -m services replay --json "
        "'<this run's conf>'` and the destination's variables (README \"Replay from the archive\")"
    )


def next_step(summary: Any) -> tuple[str, str]:
    """What an invocation's answer asks for: ``("again", why)`` (stopped by the invocation's
    time: its progress is saved), ``("done", why)`` or ``("fail", why)``."""
    if not isinstance(summary, dict) or "finished" not in summary:
        return "fail", f"the ops function answered {summary!r}, not a replay summary"
    status, finished = summary.get("exit_status"), summary["finished"]
    counts = f"sent {summary.get('sent')}, parked {summary.get('parked')}"
    if status == 0 and finished is True:
        return "done", f"finished: {counts}"
    if status == NOT_FINISHED and finished is False:
        return "again", f"not finished within the invocation ({counts}): invoking it again"
    corrupt = len(summary.get("corrupt_objects") or [])
    return "fail", (
        f"the replay did not complete (exit status {status}, {counts}, {corrupt} corrupt "
        "archive objects): see the summary above and the ops function's log"
    )


def aws() -> None:
    """One task invoking the ops function with the replay's document until it has finished
    (each invocation at most 15 minutes, resuming from the progress in the archive)."""
    function = setting(FUNCTION)
    if not function:
        reason = f"no ops function is configured ([liftoff] {FUNCTION} is empty: the stack has "
        skipped(TASK_ID, reason + "no warehouse to replay into)", fail=True)
        return

    @task(task_id=TASK_ID, execution_timeout=DEADLINE)
    def replay(function: str, payload: str) -> dict[str, Any]:
        document = json.loads(payload)
        refused = refusal(document["replay"].get("target"))
        if refused is not None:
            raise AirflowFailException(refused)
        while True:  # bounded by the task's deadline; each invocation saves its progress
            summary = invoke(function, document, "replay")  # logs the summary
            verdict, why = next_step(summary)
            log.info("replay: %s", why)
            if verdict == "done":
                return dict(summary)
            if verdict == "fail":
                raise AirflowFailException(why)

    replay(function=function, payload="{{ {'replay': " + DOCUMENT + " } | tojson }}")


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
