"""The replay DAG (`dags/liftoff_replay.py`), parsed and rendered by real Airflow 3 with the
`[liftoff]` sections the stacks really set (tests/test_dags.py's probe): on Kubernetes one pod
per target the stack knows, the branch that picks the one asked for, and each pod against the
stack's NetworkPolicies, Secrets and the Kubernetes schema; on AWS the task invoking the ops
function with the conf, and what it decides from each invocation's summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.kubernetes_schema import schema_errors
from tests.test_dags import (
    PARAMS,
    REPLAY_DAG_ID,
    dag_of,
    in_airflow,
    liftoff_sections,
    payload_of,
    policies_admitting,
    replay_targets,
)

STACK = "kubernetes-private-cloud"  # an archive, a suppression list, two destinations
PODS = {
    "warehouse": "replay-warehouse",
    "destination:crm": "replay-to-crm",
    "destination:amplitude": "replay-to-amplitude",
}


def test_a_replay_runs_only_when_triggered_and_each_known_target_has_its_pod() -> None:
    cases = [*liftoff_sections().items(), ("no-target", {}), ("aws-without-function", {})]
    for case, section in cases:
        dag = dag_of(case, REPLAY_DAG_ID)
        assert dag["timetable"] == "NullTimetable" and dag["catchup"] is False
        assert dag["params"] == sorted(PARAMS[REPLAY_DAG_ID]["requested"])
        if section.get("target") == "aws":
            assert set(dag["tasks"]) == {"replay"}, case  # the ops function's task
            continue
        targets = replay_targets().get(case, {}) if section.get("target") == "kubernetes" else {}
        if not targets:
            assert set(dag["tasks"]) == {"replay"}, case
            kind, message = dag["tasks"]["replay"]["scheduled"]["raised"]
            assert kind == "AirflowFailException", case
            assert (
                "no replay pod" in message
                or "target is not set" in message
                or "no ops function is configured ([liftoff] reconcile_function is empty" in message
            ), message
            continue
        components = {pod["component"] for pod in targets.values()}
        assert set(dag["tasks"]) == {"choose_target", *components}, case
        assert all(dag["tasks"][c]["retries"] >= 1 for c in components)
    assert {target: pod["component"] for target, pod in replay_targets()[STACK].items()} == PODS


def test_the_branch_runs_the_pod_of_the_target_asked_for_and_refuses_another() -> None:
    tasks = dag_of(STACK, REPLAY_DAG_ID)["tasks"]["choose_target"]
    assert tasks["scheduled"]["returned"] == "replay-warehouse"
    kind, message = tasks["requested"]["raised"]
    assert kind == "AirflowFailException"
    assert message == (
        "target 'destination:no-such-one' is not one this stack knows: "
        "destination:amplitude, destination:crm, warehouse"
    )


def reached_by(task: dict[str, Any], env: dict[str, str]) -> set[str]:
    labels = task["requested"]["pod"]["metadata"]["labels"]
    endpoint = env["AWS_ENDPOINT_URL_S3"]
    return policies_admitting(STACK, labels) - {f"outside:{urlsplit(endpoint).port}"}


def test_each_pod_has_its_targets_environment_and_reaches_only_what_it_needs() -> None:
    targets = replay_targets()[STACK]
    dag = dag_of(STACK, REPLAY_DAG_ID)
    reached = {}
    for target, component in PODS.items():
        task = dag["tasks"][component]
        assert task["operator"] == "KubernetesPodOperator"
        for run in ("scheduled", "requested"):
            (container,) = task[run]["pod"]["spec"]["containers"]
            command, option, document = container["args"]
            assert (command, option) == ("replay", "--json")
            assert json.loads(document) == PARAMS[REPLAY_DAG_ID][run]  # ids as given
        pod = task["requested"]["pod"]
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env == targets[target]["environment"]
        assert env["LIFTOFF_REPLAY_PROGRESS_IN_ARCHIVE"] == "true"
        assert env["LIFTOFF_SUPPRESSION_URL"].endswith("/liftoff-suppressed")
        assert "PGPASSWORD" not in env and "LIFTOFF_SUPPRESSION_KEY" not in env
        mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
        for item in targets[target]["secrets"]:
            assert mounts[item["directory"]]["readOnly"] is True
        for name, path in env.items():
            if name.endswith("_FILE"):
                assert path.rpartition("/")[0] in mounts, (target, name)
        assert pod["spec"]["automountServiceAccountToken"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert schema_errors([pod]) == []
        reached[target] = reached_by(task, env)
    # Besides the archive: the suppression list's servers and the target alone.
    assert reached["warehouse"] == {"postgres", "nats"}
    assert reached["destination:amplitude"] == {"nats", "outside:443"}
    assert reached["destination:crm"] == {"nats", "outside:443"}  # 10.20.0.0/16 on 443 too
    assert "LIFTOFF_DESTINATION" not in targets["warehouse"]["environment"]
    crm = json.loads(targets["destination:crm"]["environment"]["LIFTOFF_DESTINATION"])
    assert crm["name"] == "crm" and "PGHOST" not in targets["destination:crm"]["environment"]


def test_aws_invokes_the_ops_function_with_the_replay_until_it_has_finished() -> None:
    aws = [(s, c) for s, c in liftoff_sections().items() if c["target"] == "aws"]
    assert aws
    for stack, section in aws:
        task = dag_of(stack, REPLAY_DAG_ID)["tasks"]["replay"]
        assert task["operator"] == "_PythonDecoratedOperator"
        for run in ("scheduled", "requested"):  # ids as given
            assert payload_of(task, run) == {
                "function": section["reconcile_function"],
                "replay": PARAMS[REPLAY_DAG_ID][run],
            }
        # Invocations one after another, each at most 15 minutes: the whole run's deadline.
        assert task["execution_timeout"] == 12 * 3600 and task["retries"] >= 1


# Runs in the Airflow venv with the DAG folder on sys.path: what the AWS task decides.
DECISIONS = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from liftoff_replay import next_step, refusal

summaries = json.loads(sys.stdin.read())
print(json.dumps({
    "steps": [next_step(summary) for summary in summaries],
    "refusals": [refusal(t) for t in ("warehouse", "destination:crm", "nonsense")],
}))
"""
DONE = {"finished": True, "exit_status": 0, "sent": 40, "parked": 0, "corrupt_objects": []}
SUMMARIES = [
    DONE,
    {**DONE, "finished": False, "exit_status": 3},  # stopped by the invocation's time
    {**DONE, "exit_status": 1, "parked": 2},  # rows the warehouse refused
    {**DONE, "finished": False, "exit_status": 1},  # failed (the function's log says why)
    {**DONE, "finished": True, "exit_status": 3},  # inconsistent: never loop on it
    {"errorMessage": "boom"},
    None,
]


def test_the_aws_task_invokes_again_only_while_unfinished_and_refuses_destinations(
    tmp_path: Path,
) -> None:
    found = in_airflow(DECISIONS, SUMMARIES, tmp_path)
    verdicts = [verdict for verdict, _ in found["steps"]]
    assert verdicts == ["done", "again", "fail", "fail", "fail", "fail", "fail"]
    assert "parked 2" in found["steps"][2][1] and "exit status 1" in found["steps"][3][1]
    assert "not a replay summary" in found["steps"][5][1]
    warehouse, crm, nonsense = found["refusals"]
    assert warehouse is None
    assert crm.startswith("target 'destination:crm': on AWS the ops function replays into the")
    assert "python -m services replay --json" in crm and "from a host in the VPC" in crm
    assert nonsense.startswith("target 'nonsense'")
