"""The platform's DAGs (`dags/`), parsed by real Apache Airflow 3 as its DAG processor does.

Airflow lives in its own virtualenv (`.venv/airflow`, made by `.ci/run` from
`tests/airflow-requirements.txt`): its pins clash with ours. One subprocess parses the DAG
folder once per `[liftoff]` configuration — the ones the stacks in `stacks/` really set (read
from the program run under mocks), plus the edge cases — with the DAG processor's own parse
function (import errors *and* serialization errors), then renders the reconcile task for a run
and builds the pod the KubernetesPodOperator would create. This process then checks it: DAG id,
timetable, task and operator, the hour, and the pod against the stack's NetworkPolicies and
Secrets and the real Kubernetes schema.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from components.airflow.pods import REPLAY_TARGETS_FILE
from tests.conftest import stack_run
from tests.harness import ROOT, STACK_FILES, stack_name_of
from tests.kubernetes_schema import schema_errors
from tests.runtime_workloads import replay_targets_of

AIRFLOW_PYTHON = ROOT / ".venv" / "airflow" / "bin" / "python"
DAGS = ROOT / "dags"
DAG_ID = "liftoff_reconcile"
REBUILD_DAG_ID = "liftoff_warehouse_rebuild"
REGULATION_DAG_ID = "liftoff_regulation"
REPLAY_DAG_ID = "liftoff_replay"
DAG_IDS = {DAG_ID, REBUILD_DAG_ID, REGULATION_DAG_ID, REPLAY_DAG_ID}
# Ids with what JSON and Jinja escape (quotes, <, &, non-ASCII): they must arrive as given.
ODD_ID = 'o\'brien <x> & "é"'
PARAMS = {
    DAG_ID: {"scheduled": {"hour": None}, "requested": {"hour": "2026-11-20T03"}},
    # The rebuild runs only when triggered: "scheduled" is a trigger with the defaults.
    REBUILD_DAG_ID: {
        "scheduled": {"source": "web", "table": None, "from": "raw"},
        "requested": {"source": "web", "table": "signed_up", "from": "archive"},
    },
    REGULATION_DAG_ID: {
        "scheduled": {"action": "status", "userIds": [], "anonymousIds": [], "requestId": None},
        "requested": {
            "action": "delete",
            "userIds": ["u-1", ODD_ID],
            "anonymousIds": ["a-9"],
            "requestId": None,
        },
    },
    REPLAY_DAG_ID: {
        "scheduled": {
            "from": "2026-11-27T10:00Z",
            "to": "2026-11-27T11:00Z",
            "target": "warehouse",
            "sources": [],
            "types": [],
            "events": [],
            "rate": None,
            "dryRun": False,
        },
        "requested": {
            "from": "2026-11-27T10:00Z",
            "to": "2026-11-28T10:00Z",
            "target": "destination:no-such-one",
            "sources": ["web"],
            "types": ["track"],
            "events": [ODD_ID],
            "rate": 200,
            "dryRun": True,
        },
    },
}
CHART = "kubernetes:helm.sh/v4:Chart"
MWAA = "aws:mwaa/environment:Environment"

# Runs in the Airflow venv. Input (stdin): {"folders": {name: DAG folder},
# "cases": {name: {key: value}}, "params": {dag id: {"scheduled": params, "requested": params}}}.
PROBE = r"""
import copy, json, os, sys
from pathlib import Path

import pendulum
import structlog
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.dag_processing.processor import DagFileParseRequest, _parse_file
from airflow.sdk.execution_time import macros
from airflow.serialization.serialized_objects import DagSerialization
from kubernetes.client import ApiClient

request = json.load(sys.stdin)
log = structlog.get_logger()
RUN_AFTER = pendulum.datetime(2026, 11, 27, 12, 0, 30, tz="UTC")


def rendered(task, context):
    task = copy.deepcopy(task)
    task.render_template_fields(context)
    if type(task).__name__ == "KubernetesPodOperator":
        pod = task.build_pod_request_obj(dry_run=True)
        return {"pod": ApiClient().sanitize_for_serialization(pod)}
    result = {"op_kwargs": task.op_kwargs}
    # A task that only says why it skips, or a branch (its choice): run it.
    if not task.op_kwargs or "Branch" in type(task).__name__:
        try:
            result["returned"] = task.python_callable(**task.op_kwargs)
        except Exception as error:
            result["raised"] = [type(error).__name__, str(error)]
    return result


def parse(folder, case):
    for name in [n for n in os.environ if n.startswith("AIRFLOW__LIFTOFF__")]:
        del os.environ[name]
    for key, value in case.items():
        os.environ[f"AIRFLOW__LIFTOFF__{key.upper()}"] = value
    out = {"import_errors": {}, "dags": {}}
    for path in sorted(folder.rglob("*.py")):
        parsed = _parse_file(
            DagFileParseRequest(file=str(path), bundle_path=folder, bundle_name="liftoff"), log
        )
        out["import_errors"].update(parsed.import_errors or {})
        for lazy in parsed.serialized_dags:
            dag = DagSerialization.from_dict(lazy.data)
            interval = dag.timetable.infer_manual_data_interval(run_after=RUN_AFTER)
            out["dags"][dag.dag_id] = {
                "timetable": type(dag.timetable).__name__,
                "expression": dag.timetable.summary,
                "timezone": str(getattr(dag.timetable, "_timezone", None)),
                "interval": [interval.start.isoformat(), interval.end.isoformat()],
                "catchup": dag.catchup,
                "params": sorted(dag.params.keys()),
                "tasks": {
                    t.task_id: {
                        "operator": t.task_type,
                        "retries": t.retries,
                        "exponential_backoff": bool(t.retry_exponential_backoff),
                        "execution_timeout": t.execution_timeout
                        and t.execution_timeout.total_seconds(),
                    }
                    for t in dag.tasks
                },
            }
    if out["import_errors"]:
        return out
    bag = BundleDagBag(dag_folder=str(folder), bundle_path=folder, load_op_links=False)
    for dag in bag.dags.values():
        start = out["dags"][dag.dag_id]["interval"][0]
        given = request["params"][dag.dag_id]
        scheduled = {
            "params": given["scheduled"],
            "data_interval_start": pendulum.parse(start),
            "macros": macros,
        }
        requested = {**scheduled, "params": given["requested"]}
        for task in dag.tasks:
            entry = out["dags"][dag.dag_id]["tasks"][task.task_id]
            entry["scheduled"] = rendered(task, scheduled)
            entry["requested"] = rendered(task, requested)
    return out


print(json.dumps(
    {name: parse(Path(request["folders"][name]), case) for name, case in request["cases"].items()},
    default=str,
))
"""


def liftoff_sections() -> dict[str, dict[str, str]]:
    """The `[liftoff]` Airflow config each stack file really sets (program run under mocks)."""
    sections = {}
    for path in STACK_FILES:
        stack = stack_name_of(path)
        run = stack_run(stack)
        for chart in run.of_type(CHART):
            if chart.name == "liftoff-airflow-chart":
                sections[stack] = dict(chart.inputs["values"]["config"]["liftoff"])
        for environment in run.of_type(MWAA):
            options = environment.inputs["airflowConfigurationOptions"]
            sections[stack] = {
                key.removeprefix("liftoff."): value
                for key, value in options.items()
                if key.startswith("liftoff.")
            }
    return sections


@functools.cache
def replay_targets() -> dict[str, dict[str, Any]]:
    """The replay DAG's pods each Kubernetes stack ships beside the DAGs (ConfigMap key
    `REPLAY_TARGETS_FILE`), by stack."""
    stacks = [stack_name_of(path) for path in STACK_FILES]
    return {stack: replay_targets_of(stack_run(stack)) for stack in stacks}


def bundle(home: Path, case: str) -> Path:
    """The DAG folder as a stack mounts it: `dags/` and, on Kubernetes, the replay targets."""
    folder = home / "bundles" / case
    shutil.copytree(DAGS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    targets = replay_targets().get(case)
    if targets is not None and liftoff_sections().get(case, {}).get("target") == "kubernetes":
        (folder / REPLAY_TARGETS_FILE).write_text(json.dumps(targets))
    return folder


EDGE_CASES = {
    "no-target": {},
    "unknown-target": {"target": "gcp"},
    "aws-without-function": {"target": "aws"},
}


def in_airflow(
    script: str,
    given: Any,
    home: Path,
    settings: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> Any:
    """What ``script`` prints last (JSON), run in Airflow's venv with the DAG folder as its
    argument and ``given`` as JSON on its standard input: Airflow's home ``home``, none of our
    Airflow, AWS or Kubernetes variables, and ``settings``."""
    if not AIRFLOW_PYTHON.exists():
        pytest.fail(f"{AIRFLOW_PYTHON} is missing: run `bash .ci/run` (it creates the venv)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_", "KUBE"))}
    done = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", script, str(DAGS)],
        input=json.dumps(given),
        env={**env, "AIRFLOW_HOME": str(home), **(settings or {})},
        cwd=home,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@functools.cache
def parsed() -> dict[str, Any]:
    """Every case, parsed in one Airflow process (importing Airflow takes a few seconds)."""
    cases = {**liftoff_sections(), **EDGE_CASES}
    with tempfile.TemporaryDirectory(prefix="liftoff-airflow-") as home:
        settings = {
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Not `dags/`: the DAG files import their shared module from the bundle's own
            # folder, as with liftoff's second bundle beside git-synced DAGs.
            "AIRFLOW__CORE__DAGS_FOLDER": str(Path(home) / "customer-dags"),
            "KUBECONFIG": str(Path(home) / "no-kubeconfig"),
        }
        folders = {case: str(bundle(Path(home), case)) for case in cases}
        request = {"folders": folders, "cases": cases, "params": PARAMS}
        found: dict[str, Any] = in_airflow(PROBE, request, Path(home), settings, timeout=300)
    return found


def dag_of(case: str, dag_id: str = DAG_ID) -> dict[str, Any]:
    result = parsed()[case]
    assert result["import_errors"] == {}, result["import_errors"]
    assert set(result["dags"]) == DAG_IDS
    return result["dags"][dag_id]


# Runs in the Airflow venv: `invoke_until_finished` with the Lambda call replaced by answers.
LOOP = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import liftoff_operations as operations

answers, calls = json.loads(sys.stdin.read()), []

def answer(function, payload, what):
    calls.append([function, payload])
    return answers.pop(0)

operations.invoke = answer
last = operations.invoke_until_finished("ops", {"regulation": {"action": "delete"}}, "run")
print(json.dumps({"last": last, "calls": calls}))
"""


def test_a_regulation_is_invoked_again_while_it_is_not_finished(tmp_path: Path) -> None:
    answers = [{"finished": False, "id": 1}, {"finished": False, "id": 1}, {"finished": True}]
    found = in_airflow(LOOP, [*answers, {"never": "asked"}], tmp_path)
    assert found["last"] == {"finished": True}
    assert found["calls"] == [["ops", {"regulation": {"action": "delete"}}]] * 3


def payload_of(task: dict[str, Any], run: str) -> dict[str, Any]:
    """The function an AWS task invokes and the payload it sends (rendered as JSON)."""
    kwargs = task[run]["op_kwargs"]
    assert set(kwargs) == {"function", "payload"}, kwargs
    return {"function": kwargs["function"], **json.loads(kwargs["payload"])}


def kubernetes_stacks_with(archive: bool) -> list[str]:
    return [
        stack
        for stack, section in liftoff_sections().items()
        if section.get("target") == "kubernetes"
        and bool(section.get("reconcile_environment")) == archive
    ]


def test_every_stack_configuration_and_edge_case_parses() -> None:
    sections = liftoff_sections()
    assert {section["target"] for section in sections.values()} == {"aws", "kubernetes"}
    assert kubernetes_stacks_with(archive=True) and kubernetes_stacks_with(archive=False)
    for case in [*sections, "no-target", "aws-without-function"]:
        dag = dag_of(case)
        # Hourly in UTC; the run after 12:00 covers 11:00-12:00 and repairs 10:00-10:59.
        assert (dag["timetable"], dag["expression"]) == ("CronDataIntervalTimetable", "0 * * * *")
        assert dag["timezone"] == "UTC"
        assert dag["interval"] == ["2026-11-27T11:00:00+00:00", "2026-11-27T12:00:00+00:00"]
        assert dag["catchup"] is False
        assert dag["params"] == ["hour"]
        assert set(dag["tasks"]) == {"reconcile"}
        task = dag["tasks"]["reconcile"]
        assert task["retries"] >= 3 and task["exponential_backoff"], case


def test_unknown_target_is_an_import_error() -> None:
    errors = parsed()["unknown-target"]["import_errors"]
    assert len(errors) == len(DAG_IDS)  # each DAG says so
    assert all("expected 'kubernetes' or 'aws'" in error for error in errors.values())


@pytest.mark.parametrize("stack", ["kubernetes-private-cloud"])
def test_kubernetes_runs_a_restricted_pod_the_network_policies_admit(stack: str) -> None:
    assert stack in kubernetes_stacks_with(archive=True)
    section = liftoff_sections()[stack]
    task = dag_of(stack)["tasks"]["reconcile"]
    assert task["operator"] == "KubernetesPodOperator"
    pod = task["scheduled"]["pod"]
    assert pod["metadata"]["namespace"] == section["namespace"]
    (container,) = pod["spec"]["containers"]
    assert container["image"] == section["services_image"]
    assert container["args"] == ["reconcile", "--hour", "2026-11-27T10"]
    requested = task["requested"]["pod"]["spec"]["containers"][0]
    assert requested["args"] == ["reconcile", "--hour", "2026-11-20T03"]

    # The labels every reconcile NetworkPolicy selects on (Postgres ingress, archive egress).
    run = stack_run(stack)
    selectors = []
    for policy in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy"):
        spec = policy.inputs["spec"]
        if policy.name.endswith("-reconcile"):
            selectors.append(spec["podSelector"]["matchLabels"])
        for rule in spec.get("ingress", []):
            selectors += [
                peer["podSelector"]["matchLabels"]
                for peer in rule.get("from", [])
                if "podSelector" in peer
                and peer["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
                == "reconcile"
            ]
    assert len(selectors) >= 2
    for labels in selectors:
        assert labels.items() <= pod["metadata"]["labels"].items(), labels

    # The pod's environment is the [liftoff] one, passed through (built by the reconcile
    # contract, round-tripped by tests/test_runtime_contract.py); credentials only as read-only
    # files, from Secrets (and keys) the stack declares.
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env == json.loads(section["reconcile_environment"])
    assert env["PGPASSWORD_FILE"] == "/etc/liftoff/postgres/password"
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == "/etc/liftoff/archive/credentials"
    assert not any("PASSWORD" in name and not name.endswith("_FILE") for name in env)
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    declared = {
        secret.inputs["metadata"]["name"]: secret
        for secret in run.of_type("kubernetes:core/v1:Secret")
    }
    secrets = json.loads(section["reconcile_secrets"])
    assert {f"{item['directory']}/{item['key']}" for item in secrets} >= {
        env["PGPASSWORD_FILE"],
        env["AWS_SHARED_CREDENTIALS_FILE"],
    }
    for item in secrets:
        directory, key, secret_name = item["directory"], item["key"], item["secret"]
        mount = mounts[directory]
        assert mount["readOnly"] is True
        source = volumes[mount["name"]]["secret"]
        assert source["secretName"] == secret_name
        assert source["items"] == [{"key": key, "path": key}]
        assert secret_name in declared, secret_name
        data = {**declared[secret_name].inputs.get("stringData", {})}
        data.update(declared[secret_name].inputs.get("data", {}))
        assert key in data, (secret_name, sorted(data))

    # Pod Security "restricted", a writable /tmp only, no API token, requests and limits.
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]
    assert set(container["resources"]) == {"requests", "limits"}
    assert schema_errors([pod]) == []


def test_kubernetes_without_an_archive_skips_and_says_why() -> None:
    for stack in kubernetes_stacks_with(archive=False):
        task = dag_of(stack)["tasks"]["reconcile"]
        assert task["operator"] == "_PythonDecoratedOperator"
        kind, message = task["scheduled"]["raised"]
        assert kind == "AirflowSkipException"
        assert "no reconcile pod is configured" in message


def test_aws_invokes_the_reconcile_function_for_the_hour() -> None:
    aws = [stack for stack, section in liftoff_sections().items() if section["target"] == "aws"]
    assert aws
    for stack in aws:
        function = liftoff_sections()[stack]["reconcile_function"]
        task = dag_of(stack)["tasks"]["reconcile"]
        assert task["operator"] == "_PythonDecoratedOperator"
        assert payload_of(task, "scheduled") == {"function": function, "hour": "2026-11-27T10"}
        assert payload_of(task, "requested")["hour"] == "2026-11-20T03"
        assert "raised" not in task["scheduled"]
        # Synchronous Lambda invocations last at most 15 minutes; the task waits a little more.
        assert 15 * 60 < task["execution_timeout"] <= 20 * 60


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("no-target", "[liftoff] target is not set"),
        ("aws-without-function", "no ops function is configured"),
    ],
)
def test_unconfigured_targets_skip_and_say_why(case: str, reason: str) -> None:
    task = dag_of(case)["tasks"]["reconcile"]
    assert task["scheduled"]["raised"][0] == "AirflowSkipException"
    assert reason in task["scheduled"]["raised"][1]


# --- the warehouse rebuild -------------------------------------------------------------------


def test_the_rebuild_runs_only_when_triggered() -> None:
    for case in [*liftoff_sections(), "no-target", "aws-without-function"]:
        dag = dag_of(case, REBUILD_DAG_ID)
        assert dag["timetable"] == "NullTimetable" and dag["catchup"] is False
        assert dag["params"] == ["from", "source", "table"]
        assert set(dag["tasks"]) == {"rebuild"}


@pytest.mark.parametrize("stack", ["kubernetes-private-cloud", "dev"])
def test_kubernetes_rebuilds_in_a_pod_like_the_reconcile_pod(stack: str) -> None:
    """The rebuild pod: the command with the trigger's parameters, the [liftoff] environment
    and Secrets passed through, the reconcile pod's NetworkPolicy labels and security."""
    section = liftoff_sections()[stack]
    task = dag_of(stack, REBUILD_DAG_ID)["tasks"]["rebuild"]
    assert task["operator"] == "KubernetesPodOperator"
    pod = task["scheduled"]["pod"]
    (container,) = pod["spec"]["containers"]
    assert container["args"] == [
        "warehouse-rebuild", "--source", "web", "--table", "", "--from", "raw",
    ]  # fmt: skip
    requested = task["requested"]["pod"]["spec"]["containers"][0]
    assert requested["args"][3:] == ["--table", "signed_up", "--from", "archive"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env == json.loads(section["rebuild_environment"])
    mounted = {mount["mountPath"] for mount in container["volumeMounts"]}
    for item in json.loads(section["rebuild_secrets"]):
        assert item["directory"] in mounted
    reconcile_pod = kube_reconcile_labels(stack)
    assert reconcile_pod.items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert schema_errors([pod]) == []


def kube_reconcile_labels(stack: str) -> dict[str, str]:
    """The labels the stack's NetworkPolicies admit to Postgres as the reconcile pods."""
    (policy,) = [
        p
        for p in stack_run(stack).of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if p.name.endswith("-reconcile")
    ] or [None]
    if policy is not None:
        return dict(policy.inputs["spec"]["podSelector"]["matchLabels"])
    return {"app.kubernetes.io/instance": stack, "app.kubernetes.io/component": "reconcile"}


def test_aws_invokes_the_reconcile_function_with_a_rebuild() -> None:
    for stack, section in liftoff_sections().items():
        if section["target"] != "aws":
            continue
        task = dag_of(stack, REBUILD_DAG_ID)["tasks"]["rebuild"]
        assert payload_of(task, "scheduled") == {
            "function": section["reconcile_function"],
            "rebuild": {"source": "web", "tables": None, "from": "raw"},
        }
        assert payload_of(task, "requested")["rebuild"] == {
            "source": "web", "tables": ["signed_up"], "from": "archive",
        }  # fmt: skip
        assert 15 * 60 < task["execution_timeout"] <= 20 * 60


# --- regulations -----------------------------------------------------------------------------


def test_a_regulation_runs_only_when_triggered_and_retries_to_resume() -> None:
    for case in [*liftoff_sections(), "no-target", "aws-without-function"]:
        dag = dag_of(case, REGULATION_DAG_ID)
        assert dag["timetable"] == "NullTimetable" and dag["catchup"] is False
        assert dag["params"] == ["action", "anonymousIds", "requestId", "userIds"]
        assert set(dag["tasks"]) == {"regulation"}
        assert dag["tasks"]["regulation"]["retries"] >= 1, case


@pytest.mark.parametrize("stack", ["kubernetes-private-cloud", "dev"])
def test_kubernetes_runs_a_regulation_in_a_pod_the_network_policies_admit(stack: str) -> None:
    """The regulation pod: the conf as one JSON argument (ids arrive exactly as given), the
    [liftoff] environment and Secrets passed through, admitted by the NetworkPolicies to
    Postgres, the NATS servers and the archive, restricted, valid against the schema."""
    section = liftoff_sections()[stack]
    task = dag_of(stack, REGULATION_DAG_ID)["tasks"]["regulation"]
    assert task["operator"] == "KubernetesPodOperator"
    for run in ("scheduled", "requested"):
        (container,) = task[run]["pod"]["spec"]["containers"]
        regulation, option, document = container["args"]
        assert (regulation, option) == ("regulation", "--json")
        assert json.loads(document) == PARAMS[REGULATION_DAG_ID][run]
    pod = task["requested"]["pod"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env == json.loads(section["regulation_environment"])
    assert env["LIFTOFF_SUPPRESSION_URL"].endswith("/liftoff-suppressed")
    assert env["LIFTOFF_SUPPRESSION_KEY_FILE"] == "/etc/liftoff/suppression/key"
    assert env["LIFTOFF_DEAD_LETTER_URL"].endswith(":4222/DEADLETTER")  # holds the quarantine
    assert "LIFTOFF_SUPPRESSION_KEY" not in env and "PGPASSWORD" not in env
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    secrets = json.loads(section["regulation_secrets"])
    assert {item["secret"] for item in secrets} >= {"collector-suppression-key"}
    for item in secrets:
        assert mounts[item["directory"]]["readOnly"] is True
    assert (
        f"{mounts['/etc/liftoff/suppression']['mountPath']}/key"
        == env["LIFTOFF_SUPPRESSION_KEY_FILE"]
    )

    labels = pod["metadata"]["labels"]
    reached = policies_admitting(stack, labels)
    # The archive's endpoint when the stack has one (dev has none: no archive target).
    endpoint = env.get("AWS_ENDPOINT_URL_S3")
    archive = {f"outside:{urlsplit(endpoint).port}"} if endpoint else set()
    assert reached == {"postgres", "nats", *archive}, reached  # and nothing else
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert schema_errors([pod]) == []


def policies_admitting(stack: str, labels: dict[str, str]) -> set[str]:
    """Where the stack's NetworkPolicies let pods with `labels` go: the component of each pod
    they may reach (an egress rule from them and an ingress rule admitting them), and
    `outside:<port>` for an address block (the archive's endpoint)."""

    def admits(selector: dict[str, Any]) -> bool:
        wanted = selector.get("matchLabels", {})
        return bool(wanted) and wanted.items() <= labels.items()

    egress: set[str] = set()
    ingress: set[str] = set()
    for policy in stack_run(stack).of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy"):
        spec = policy.inputs["spec"]
        target = spec["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/component")
        for rule in spec.get("ingress", []):
            if any(admits(peer.get("podSelector", {})) for peer in rule.get("from", [])):
                ingress.add(str(target))
        if not admits(spec["podSelector"]):
            continue
        for rule in spec.get("egress", []):
            for peer in rule.get("to", []):
                if "ipBlock" in peer:
                    egress.update(f"outside:{port['port']}" for port in rule["ports"])
                elif "podSelector" in peer:
                    found = peer["podSelector"].get("matchLabels", {})
                    egress.add(found.get("app.kubernetes.io/component", "?"))
    return {item for item in egress if item.startswith("outside:") or item in ingress}


def test_without_a_regulation_pod_or_function_the_task_fails_and_says_why() -> None:
    for case, section in [*liftoff_sections().items(), ("no-target", {})]:
        if section.get("regulation_environment") or section.get("regulation_function"):
            continue
        task = dag_of(case, REGULATION_DAG_ID)["tasks"]["regulation"]
        kind, message = task["scheduled"]["raised"]
        assert kind == "AirflowFailException", case
        assert (
            "no regulation pod" in message
            or "regulation_function" in message
            or ("target is not set" in message)
        ), message


def test_aws_invokes_the_ops_function_with_the_regulation() -> None:
    aws = [(s, c) for s, c in liftoff_sections().items() if c["target"] == "aws"]
    assert aws
    for stack, section in aws:
        # The ops function runs regulations: the same function, named for them too.
        assert section["regulation_function"] == section["reconcile_function"]
        task = dag_of(stack, REGULATION_DAG_ID)["tasks"]["regulation"]
        for run in ("scheduled", "requested"):
            assert payload_of(task, run) == {
                "function": section["regulation_function"],
                "regulation": PARAMS[REGULATION_DAG_ID][run],
            }
        # Invoked again while the answer says finished: false (a large archive), for 12 h.
        assert task["execution_timeout"] == 12 * 3600
