"""The runtime contract: every environment a shipped stack declares for a workload parses.

For each stack in `stacks/` and `Pulumi.dev.yaml`: every Kubernetes container that runs a
`python -m services <command>` and every Lambda function gets its declared environment fed to
what that command or handler parses at start (services/settings.py). Variables set from
Kubernetes Secrets and `*_FILE` paths are resolved from the Secrets the stack declares and the
volumes the container mounts; Secrets Manager ARNs are resolved against a real moto server
holding the secrets the stack declares. A variable renamed on one side, a default dropped, a
value in a shape the service does not accept, or a file path no volume provides fails here.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
import pytest

from services import env as runtime_env
from services.settings import COMMANDS, HANDLERS
from tests.conftest import stack_run
from tests.harness import STACK_FILES, DeclaredResource, ProgramRun, stack_name_of
from tests.servers import AWS_TEST_ENV, moto_endpoint, moto_server

STACKS = [stack_name_of(p) for p in STACK_FILES]
KNOWN_VARIABLES = {
    value for name, value in vars(runtime_env).items() if name.isupper() and isinstance(value, str)
}
POD_SPEC_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet")


@dataclass
class Workload:
    where: str
    parser: str
    env: dict[str, str]
    files: dict[str, str] = field(default_factory=dict)
    """Paths the environment names → their content (from the Secrets the pod mounts)."""


def _pod_spec(resource: DeclaredResource) -> dict[str, Any] | None:
    spec = resource.inputs.get("spec")
    if not isinstance(spec, dict):
        return None
    if "jobTemplate" in spec:
        spec = spec["jobTemplate"].get("spec", {})
    return (spec.get("template") or {}).get("spec")


def _secret_data(run: ProgramRun, namespace: str | None, name: str) -> dict[str, str]:
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
        data = _secret_data(run, namespace, ref["name"])
        assert ref["key"] in data, f"{where}: {entry['name']} names a missing key {ref}"
        return data[ref["key"]]
    return f"<{next(iter(source), 'unset')}>"  # fieldRef and the like: known at runtime only


def _mounted_file(
    run: ProgramRun, namespace: str | None, pod: dict, container: dict, path: str
) -> str | None:
    """The content the pod will see at `path`, if a mounted Secret provides it."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        root = PurePosixPath(mount["mountPath"])
        target = PurePosixPath(path)
        if root not in target.parents:
            continue
        relative = str(target.relative_to(root))
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is None:
            return None
        data = _secret_data(run, namespace, secret["secretName"])
        items = {i["path"]: i["key"] for i in secret.get("items", [])}
        key = items.get(relative, relative if not items else None)
        return data.get(key) if key else None
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
            env = {e["name"]: _value(run, namespace, e, where) for e in container.get("env", [])}
            args = container.get("args") or []
            if container.get("command") or not args or args[0] not in COMMANDS:
                assert not any(n.startswith("LIFTOFF_") for n in env), (
                    f"{where} sets LIFTOFF_* variables but runs no services command"
                )
                continue
            files = {}
            for name, path in env.items():
                if name.endswith("_FILE"):
                    content = _mounted_file(run, namespace, pod, container, path)
                    assert content is not None, f"{where}: {name}={path} is on no mounted Secret"
                    files[path] = content
            yield Workload(where, args[0], env, files)


def lambda_workloads(run: ProgramRun) -> Iterator[Workload]:
    for function in run.of_type("aws:lambda/function:Function"):
        handler = function.inputs.get("handler", "")
        env = dict((function.inputs.get("environment") or {}).get("variables") or {})
        yield Workload(f"{run.stack}: Lambda {function.name} ({handler})", handler, env)


def workloads(stack: str) -> list[Workload]:
    run = stack_run(stack)
    return [*kubernetes_workloads(run), *lambda_workloads(run)]


@pytest.fixture(scope="module")
def secrets_manager(tmp_path_factory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield moto_endpoint(server)


def _seed_secrets(run: ProgramRun, endpoint: str, region: str) -> dict[str, str]:
    """Create the stack's Secrets Manager secrets in moto; returns declared ARN → moto ARN."""
    client = boto3.client(
        "secretsmanager",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    versions = {
        v.inputs["secretId"]: v.inputs.get("secretString", "")
        for v in run.of_type("aws:secretsmanager/secretVersion:SecretVersion")
    }
    arns = {}
    for secret in run.of_type("aws:secretsmanager/secret:Secret"):
        name = f"{run.stack}/{secret.name}"
        value = versions.get(f"{secret.name}-id")
        if value is None:
            continue
        try:
            created = client.create_secret(Name=name, SecretString=value)["ARN"]
        except client.exceptions.ResourceExistsException:
            created = client.describe_secret(SecretId=name)["ARN"]
        arns[secret.inputs["arn"]] = created
    return arns


def _parse(workload: Workload, tmp_path: Path) -> object:
    env = dict(workload.env)
    for i, (path, content) in enumerate(sorted(workload.files.items())):
        local = tmp_path / f"file-{i}"
        local.write_text(content)
        for name, value in env.items():
            if value == path:
                env[name] = str(local)
    parse = COMMANDS.get(workload.parser) or HANDLERS.get(workload.parser)
    assert parse is not None, f"{workload.where}: no parser for {workload.parser!r}"
    return parse(env)


@pytest.mark.parametrize("stack", STACKS)
def test_every_declared_workload_environment_parses(stack, secrets_manager, tmp_path, monkeypatch):
    run = stack_run(stack)
    found = workloads(stack)
    assert found, f"{stack} declares no workload"
    region = run.config.get("aws:region", "us-east-1")
    arns = _seed_secrets(run, secrets_manager, region) if run.outputs["target"] == "aws" else {}
    # What the Lambda runtime provides: the region and credentials; here they point at moto.
    for name, value in {**AWS_TEST_ENV, "AWS_REGION": region, "AWS_DEFAULT_REGION": region}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", secrets_manager)
    problems = []
    for workload in found:
        unknown = sorted(
            n for n in workload.env if n.startswith("LIFTOFF_") and n not in KNOWN_VARIABLES
        )
        if unknown:
            problems.append(f"{workload.where}: no service reads {unknown}")
        workload.env = {k: arns.get(v, v) for k, v in workload.env.items()}
        try:
            _parse(workload, tmp_path)
        except Exception as error:  # every workload's problem at once, not just the first
            problems.append(f"{workload.where}: {type(error).__name__}: {error}")
    assert not problems, "\n".join(problems)


def test_the_contract_catches_a_renamed_variable(secrets_manager, tmp_path, monkeypatch):
    (collector,) = [w for w in workloads("dev") if w.parser == "collector"]
    _parse(collector, tmp_path)
    collector.env["LIFTOFF_STREAM_ADDRESS"] = collector.env.pop(runtime_env.STREAM_URL)
    with pytest.raises(Exception, match=runtime_env.STREAM_URL):
        _parse(collector, tmp_path)


def test_every_stack_runs_the_services_it_should():
    parsers = {stack: {w.parser for w in workloads(stack)} for stack in STACKS}
    assert {"collector", "ensure-stream", "ensure-database", "loader"} <= parsers["dev"]
    assert "services.aws_lambda.collector_handler" in parsers["aws"]


def test_every_parser_names_a_real_command_or_handler():
    import importlib

    from services.cli import COMMANDS as CLI_COMMANDS

    assert set(COMMANDS) <= set(CLI_COMMANDS)
    for handler in HANDLERS:
        module, _, function = handler.rpartition(".")
        assert callable(getattr(importlib.import_module(module), function)), handler
