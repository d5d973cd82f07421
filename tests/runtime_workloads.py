"""Every process a shipped stack runs, with its declared environment and its runtime contract.

Found in the program's declarations (each Kubernetes container, init containers and Jobs
included; each Lambda function; the Airflow DAGs' pods, whose environments are the
`[liftoff] <pod>_environment` values) and in liftoff local's plan for the stack file
(`liftoff_local.environments`). `problems(workload)` is the contract check
(tests/test_runtime_contract.py): `environment(parse(declared)) == declared`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from components.airflow.pods import REPLAY_TARGETS_FILE
from services.aws_lambda import HANDLERS
from services.cli import COMMANDS, resolve
from services.contract import ConfigError, Process
from services.postgres import contract as postgres
from tests.harness import DeclaredResource, ProgramRun

POD_SPEC_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet")
CHART = "kubernetes:helm.sh/v4:Chart"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"

OURS_BY_CONTAINER: dict[str, Process[Any]] = {
    "postgres": postgres.SERVER,
    "pg-dump": postgres.PG_DUMP,
}
"""Containers that run no services command but whose environment liftoff's contracts own: the
official postgres image's server and the backups' pg_dump (libpq's variables)."""
NOT_OURS = {
    "create-admin-user": "Airflow's own CLI in the chart's image (components/airflow)",
    "postgres-exporter": "postgres_exporter's image (components/observability)",
}
"""Containers whose environment is another program's contract, not a liftoff process's."""

INJECTED = {
    "lambda": frozenset(
        {
            "AWS_REGION",
            "AWS_DEFAULT_REGION",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_EXECUTION_ENV",
            "AWS_LAMBDA_FUNCTION_NAME",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            "AWS_LAMBDA_FUNCTION_VERSION",
            "AWS_LAMBDA_INITIALIZATION_TYPE",
            "AWS_LAMBDA_LOG_GROUP_NAME",
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "AWS_LAMBDA_RUNTIME_API",
            "AWS_XRAY_CONTEXT_MISSING",
            "AWS_XRAY_DAEMON_ADDRESS",
            "_AWS_XRAY_DAEMON_ADDRESS",
            "_AWS_XRAY_DAEMON_PORT",
            "_HANDLER",
            "_X_AMZN_TRACE_ID",
            "LAMBDA_TASK_ROOT",
            "LAMBDA_RUNTIME_DIR",
            "TZ",
        }
    ),
    "kubernetes": frozenset({"HOSTNAME", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}),
    "local": frozenset({"PYTHONUNBUFFERED"}),
}
"""What each platform sets in a process's environment itself (Lambda's reserved variables,
which a function may not declare; the kubelet's; liftoff local's own): never declared by a
realization, never written by a contract."""


@dataclass
class Workload:
    where: str
    platform: str
    """`kubernetes`, `lambda`, `dag` (the reconcile pod Airflow starts) or `local`."""
    process: Process[Any]
    load: Callable[[Any], object] | None
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    """Paths the environment names → their content (from the Secrets the pod mounts)."""


def problems(workload: Workload) -> list[str]:
    """What is wrong with a declared environment, as its process reads it: the contract must
    parse it, and write back exactly what was declared (a variable the process does not read,
    a misspelt or misplaced one, a value in another shape all show)."""
    injected = INJECTED.get(workload.platform, frozenset())
    found = [f"{workload.where}: declares {n}, which the platform sets itself" for n in
             sorted(injected & set(workload.env))]  # fmt: skip
    try:
        settings = workload.process.parse(workload.env)
    except ConfigError as error:
        return [*found, f"{workload.where}: {error}"]
    written = {name: str(value) for name, value in workload.process.environment(settings).items()}
    for name in sorted(set(workload.env) | set(written)):
        declared, back = workload.env.get(name), written.get(name)
        if back is None:
            found.append(f"{workload.where}: declares {name}={declared!r}, which it never reads")
        elif declared is None:
            found.append(f"{workload.where}: its contract writes {name}={back!r}, not declared")
        elif declared != back:
            found.append(f"{workload.where}: {name}={declared!r} reads back as {back!r}")
    return found


def loaded(workload: Workload, tmp_path: Path, arns: Mapping[str, str] | None = None) -> object:
    """The process's start: files the environment names resolved (to their content from the
    mounted Secrets), secrets by ARN (moto), then its contract's parse and its own load."""
    env = {name: (arns or {}).get(value, value) for name, value in workload.env.items()}
    for i, (path, content) in enumerate(sorted(workload.files.items())):
        local = tmp_path / f"file-{i}"
        local.write_text(content)
        env = {name: str(local) if value == path else value for name, value in env.items()}
    settings = workload.process.parse(env)
    return workload.load(settings) if workload.load else settings


# --- Kubernetes ------------------------------------------------------------------------------


def _pod_spec(resource: DeclaredResource) -> dict[str, Any] | None:
    spec = resource.inputs.get("spec")
    if not isinstance(spec, dict):
        return None
    if "jobTemplate" in spec:
        spec = spec["jobTemplate"].get("spec", {})
    return (spec.get("template") or {}).get("spec")


def secret_data(run: ProgramRun, namespace: str | None, name: str) -> dict[str, str]:
    for secret in run.of_type("kubernetes:core/v1:Secret"):
        metadata = secret.inputs.get("metadata", {})
        if metadata.get("name") == name and metadata.get("namespace") in (None, namespace):
            data = dict(secret.inputs.get("stringData") or {})
            for key, value in (secret.inputs.get("data") or {}).items():
                data[key] = base64.b64decode(value).decode()
            return data
    raise AssertionError(f"no Secret {namespace}/{name} declared")


def _value(run: ProgramRun, namespace: str | None, entry: dict[str, Any], where: str) -> str:
    if "value" in entry:
        return str(entry["value"])
    source = entry.get("valueFrom", {})
    if "secretKeyRef" in source:
        ref = source["secretKeyRef"]
        data = secret_data(run, namespace, ref["name"])
        assert ref["key"] in data, f"{where}: {entry['name']} names a missing key {ref}"
        return data[ref["key"]]
    return f"<{next(iter(source), 'unset')}>"  # fieldRef and the like: known at runtime only


def _mounted_file(
    run: ProgramRun, namespace: str | None, pod: dict, container: dict, path: str
) -> str | None:
    """The content the pod will see at `path`, if a mounted Secret provides it."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        root, target = PurePosixPath(mount["mountPath"]), PurePosixPath(path)
        if root not in target.parents:
            continue
        relative = str(target.relative_to(root))
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is None:
            return None
        data = secret_data(run, namespace, secret["secretName"])
        items = {i["path"]: i["key"] for i in secret.get("items", [])}
        key = items.get(relative, relative if not items else None)
        return data.get(key) if key else None
    return None


def _container_process(container: dict, where: str) -> tuple[Process[Any], Any] | None:
    args = container.get("args") or []
    if not container.get("command") and args and args[0] in COMMANDS:
        command = COMMANDS[args[0]]
        return command.contract, resolve(command.load) if command.load else None
    if container["name"] in OURS_BY_CONTAINER:
        return OURS_BY_CONTAINER[container["name"]], None
    assert container["name"] in NOT_OURS or not container.get("env"), (
        f"{where} sets variables, but no contract owns them: give it one, or list it in "
        "NOT_OURS with the program whose contract it is"
    )
    return None


def kubernetes_workloads(run: ProgramRun) -> Iterator[Workload]:
    for resource in run.resources:
        kind = resource.type.split(":")[-1]
        pod = _pod_spec(resource) if kind in POD_SPEC_KINDS else None
        if pod is None:
            continue
        namespace = resource.inputs.get("metadata", {}).get("namespace")
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            where = f"{run.stack}: {kind} {resource.name} container {container['name']}"
            owner = _container_process(container, where)
            if owner is None:
                continue
            env = {e["name"]: _value(run, namespace, e, where) for e in container.get("env", [])}
            files = {}
            for name, path in env.items():
                if name.endswith("_FILE"):
                    content = _mounted_file(run, namespace, pod, container, path)
                    assert content is not None, f"{where}: {name}={path} is on no mounted Secret"
                    files[path] = content
            yield Workload(where, "kubernetes", owner[0], owner[1], env, files)


# --- AWS Lambda ------------------------------------------------------------------------------


def lambda_workloads(run: ProgramRun) -> Iterator[Workload]:
    for function in run.of_type("aws:lambda/function:Function"):
        handler = function.inputs.get("handler", "")
        where = f"{run.stack}: Lambda {function.name} ({handler})"
        assert handler in HANDLERS, f"{where}: no such handler in services.aws_lambda.HANDLERS"
        env = dict((function.inputs.get("environment") or {}).get("variables") or {})
        entry = HANDLERS[handler]
        yield Workload(where, "lambda", entry.contract, resolve(entry.load), env)


# --- the DAGs' pods (Kubernetes: Airflow starts them from [liftoff]) -------------------------


DAG_PODS = {"reconcile": "reconcile", "rebuild": "warehouse-rebuild", "regulation": "regulation"}
"""Each DAG pod's `[liftoff]` key prefix and the command it runs."""


def replay_targets_of(run: ProgramRun) -> dict[str, Any]:
    """The replay DAG's pods as the stack ships them beside the DAGs ({}: none)."""
    for config_map in run.of_type(CONFIG_MAP):
        data = config_map.inputs.get("data") or {}
        if REPLAY_TARGETS_FILE in data:
            return json.loads(data[REPLAY_TARGETS_FILE])
    return {}


def dag_workloads(run: ProgramRun) -> Iterator[Workload]:
    for chart in run.of_type(CHART):
        section = (chart.inputs.get("values", {}).get("config") or {}).get("liftoff")
        for pod, command_name in DAG_PODS.items():
            if section and section.get(f"{pod}_environment"):
                env = json.loads(section[f"{pod}_environment"])
                secrets = json.loads(section[f"{pod}_secrets"])
                yield _dag_pod(run, chart.name, section, pod, command_name, env, secrets)
        # The replay DAG: one pod per target the stack knows.
        replays = replay_targets_of(run) if section else {}
        for target, replay in sorted(replays.items()):
            name, env, secrets = f"replay {target}", replay["environment"], replay["secrets"]
            yield _dag_pod(run, chart.name, section, name, "replay", env, secrets)


def _dag_pod(
    run: ProgramRun,
    chart: str,
    section: dict[str, Any],
    pod: str,
    command_name: str,
    env: dict[str, str],
    secrets: list[dict[str, str]],
) -> Workload:
    where = f"{run.stack}: the DAG's {pod} pod ([liftoff] of {chart})"
    namespace = section["namespace"]
    files = {}
    for item in secrets:
        content = secret_data(run, namespace, item["secret"]).get(item["key"])
        assert content is not None, f"{where}: Secret {item['secret']} has no {item['key']}"
        files[f"{item['directory']}/{item['key']}"] = content
    for name, path in env.items():
        if name.endswith("_FILE"):
            assert path in files, f"{where}: {name}={path} is on no Secret the pod mounts"
    command = COMMANDS[command_name]
    load = resolve(command.load) if command.load else None
    return Workload(where, "dag", command.contract, load, env, files)


# --- liftoff local ---------------------------------------------------------------------------


def local_workloads(stack_file: Path, tmp_path: Path) -> Iterator[Workload]:
    """Every process liftoff local runs for a stack file (each destination given a credential),
    with the files under its secrets directory written as liftoff local writes them."""
    from liftoff_local import environments
    from liftoff_local.stack import load_plan, stack_name_of
    from services.consumers.broadcaster.destinations import TYPES
    from services.stream.jetstream import stream_credentials_document

    plan = load_plan(stack_file)
    secrets = {
        d.destination.name: {d.secret_field: f"local-{d.destination.name}"}
        for d in plan.destinations
    }
    plan = load_plan(stack_file, secrets)
    files = {
        "stream": stream_credentials_document("liftoff", "local-password"),
        "s3": "[default]\naws_access_key_id = AKIAEXAMPLE\naws_secret_access_key = x\n",
        "admin": "admin-password",
        "warehouse": "warehouse-password",
        "keys": json.dumps({s.name: f"key-{s.name}" for s in plan.config.sources}),
    }
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    destination_files = {}
    for local in plan.destinations:
        path = tmp_path / f"destination-{local.destination.name}.json"
        path.write_text(json.dumps({TYPES[local.destination.type].secret.name: "s3cr3t"}))
        destination_files[local.destination.name] = str(path)
    place = environments.LocalPlace(
        nats_port=4222,
        postgres_port=5432,
        s3_port=9000,
        collector_port=8080,
        first_health_port=8090,
        stream_credentials_file=str(tmp_path / "stream"),
        s3_credentials_file=str(tmp_path / "s3"),
        admin_password_file=str(tmp_path / "admin"),
        warehouse_password_file=str(tmp_path / "warehouse"),
        write_keys_file=str(tmp_path / "keys"),
        destination_secrets_files=destination_files,
    )
    stack = stack_name_of(stack_file)
    for process in environments.processes(plan, place):
        command = COMMANDS[process.command]
        assert process.contract is command.contract, process.name
        load = resolve(command.load) if command.load else None
        where = f"{stack}: liftoff local's {process.name}"
        yield Workload(where, "local", process.contract, load, dict(process.environment))
