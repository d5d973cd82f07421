"""The real program, run under Pulumi mocks against every stack configuration we ship."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from components.config import KNOWN_KEYS, ConfigError
from tests.conftest import stack_run
from tests.harness import (
    ROOT,
    LiftoffMocks,
    ProgramRun,
    RecordingMonitor,
    mock_password,
    run_program,
    run_with_config,
)
from tests.kubernetes_schema import schema_errors


def test_every_kubernetes_object_passes_strict_schema_validation(any_stack: ProgramRun):
    assert schema_errors(any_stack.kubernetes_objects()) == []


def test_schema_validation_can_fail():
    broken = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"ports": [{"port": "not-a-number"}], "typo": True},
    }
    (error,) = schema_errors([broken])
    assert error.startswith("Service/y/x: at ")


def _plaintext_secrets(run: ProgramRun) -> set[str]:
    secrets = {
        mock_password(r.name) for r in run.of_type("random:index/randomPassword:RandomPassword")
    }
    secrets.update(v for v in run.config.values() if v.startswith("mock-secret-"))
    return secrets


def test_no_secret_appears_in_plaintext_outputs(any_stack: ProgramRun):
    secrets = _plaintext_secrets(any_stack)
    assert secrets, "every stack generates at least the Postgres password"
    for key, value in any_stack.outputs.items():
        if key in any_stack.secret_outputs:
            continue
        text = json.dumps(value, default=str)
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"stack output {key!r} holds a secret in plaintext"


def test_generated_passwords_only_travel_as_secrets(any_stack: ProgramRun):
    secrets = _plaintext_secrets(any_stack)
    for resource in any_stack.resources:
        if resource.type.startswith("random:"):
            continue
        for path, _value in _find(resource.inputs, secrets):
            assert any(path.startswith(p) for p in resource.secret_paths), (
                f"{resource.type} {resource.name}: {path} holds a secret not marked secret"
            )


def _find(value, needles, path=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _find(v, needles, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _find(v, needles, f"{path}[{i}]")
    elif isinstance(value, str) and any(n in value for n in needles):
        yield path, value


@pytest.mark.parametrize("stack_file", ["Pulumi.dev.yaml", "stacks/aws.yaml"])
def test_program_is_deterministic(stack_file):
    first = run_program(stack_file)
    second = run_program(stack_file)
    assert first.declared_inputs() == second.declared_inputs()
    assert first.outputs == second.outputs


def test_children_follow_naming_and_parenting_conventions(any_stack: ProgramRun):
    by_urn = {r.urn: r for r in any_stack.resources}
    for resource in any_stack.resources:
        if resource.type == "liftoff:index:Platform":
            continue
        parent = by_urn.get(resource.parent)
        assert parent is not None, f"{resource.name} is not inside the Platform component"
        assert resource.name.startswith(f"{parent.name}-"), (
            f"{resource.type} {resource.name!r} should be named '{parent.name}-<role>'"
        )
        if not resource.custom and not resource.type.startswith("kubernetes:helm.sh"):
            assert re.fullmatch(r"liftoff:[a-z]+:[A-Z][A-Za-z]+", resource.type)


def test_config_errors_stop_the_program_before_any_resource():
    monitor = RecordingMonitor(LiftoffMocks())
    with pytest.raises(ConfigError) as caught:
        run_with_config(
            {"liftoff:target": "kubernetes", "liftoff:postgres": '{"storageGb": -1}'},
            stack="dev",
            monitor=monitor,
        )
    assert "liftoff:postgres.storageGb: got -1" in str(caught.value)
    assert monitor.declared == []


def test_every_config_key_is_declared_in_the_project_file():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "liftoff"
    declared = {key.split(":", 1)[1] for key in project["config"]}
    assert declared == set(KNOWN_KEYS)


def test_stack_files_are_documented_at_the_top():
    for path in [ROOT / "Pulumi.dev.yaml", *sorted((ROOT / "stacks").glob("*.yaml"))]:
        assert path.read_text().startswith("# "), f"{path.name} needs a comment header"


def test_required_stacks_exist():
    names = {p.stem for p in (ROOT / "stacks").glob("*.yaml")}
    assert {"aws", "aws-byo-network", "kubernetes-private-cloud"} <= names
    assert stack_run("dev").outputs["target"] == "kubernetes"
