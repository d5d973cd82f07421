"""The CI workflows (.github/workflows) and the one list of stacks they run on.

Validated with the real check-jsonschema against its vendored GitHub workflow schema
(offline), then held to the rules the platform promises: least-privilege permissions, OIDC
instead of stored cloud keys, pinned actions, the policy pack on every preview and update,
approvals (GitHub environments) before `pulumi up`.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
PREVIEW = WORKFLOWS / "preview.yml"
DEPLOY = WORKFLOWS / "deploy.yml"
LISTING = ROOT / ".github" / "liftoff-stacks.json"
MATRIX_SCRIPT = ROOT / ".github" / "scripts" / "stack_matrix.py"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as a boolean.
    if True in document:
        document["on"] = document.pop(True)
    return document


def steps(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job, step) for job, body in document["jobs"].items() for step in body["steps"]]


def uses(document: dict[str, Any], action: str) -> list[tuple[str, dict[str, Any]]]:
    return [(job, s) for job, s in steps(document) if s.get("uses", "").startswith(action + "@")]


def _offline_prefix() -> list[str]:
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


def check_jsonschema(*paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *_offline_prefix(),
            str(CHECK_JSONSCHEMA),
            "--builtin-schema",
            "vendor.github-workflows",
            *map(str, paths),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- schema -------------------------------------------------------------------------------


def test_workflows_match_the_github_workflow_schema():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {PREVIEW, DEPLOY} <= set(files)
    done = check_jsonschema(*files)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["jobs"]["preview"].pop("runs-on"),
        lambda d: d["jobs"]["preview"].update(permissions={"id-token": "admin"}),
        lambda d: d["jobs"]["stacks"].update(stepz=[]),
    ],
    ids=["no-runs-on", "bad-permission", "unknown-key"],
)
def test_the_schema_check_catches_a_broken_workflow(tmp_path, breakage):
    document = load(PREVIEW)
    breakage(document)
    broken = tmp_path / "broken.yml"
    broken.write_text(yaml.safe_dump(document))
    done = check_jsonschema(broken)
    assert done.returncode != 0, done.stdout


# --- triggers, permissions, credentials ---------------------------------------------------


def test_triggers():
    assert set(load(PREVIEW)["on"]) == {"pull_request"}
    deploy_on = load(DEPLOY)["on"]
    assert deploy_on["push"]["branches"] == ["main"]
    assert set(deploy_on) <= {"push", "workflow_dispatch"}


@pytest.mark.parametrize("path", [PREVIEW, DEPLOY], ids=lambda p: p.name)
def test_least_privilege_permissions(path):
    document = load(path)
    assert document["permissions"] == {}, "nothing granted at workflow level"
    oidc_actions = ("aws-actions/configure-aws-credentials", "pulumi/auth-actions")
    for name, job in document["jobs"].items():
        permissions = job.get("permissions")
        assert isinstance(permissions, dict), f"job {name} must declare its permissions"
        assert set(permissions.values()) <= {"read", "write", "none"}
        writes = {k for k, v in permissions.items() if v == "write"}
        job_uses = {s.get("uses", "").split("@")[0] for s in job["steps"]}
        allowed = set()
        if job_uses & set(oidc_actions):
            allowed.add("id-token")
        if any(
            s.get("uses", "").startswith("pulumi/actions@")
            and str(s["with"].get("comment-on-pr")).lower() == "true"
            for s in job["steps"]
        ):
            allowed.add("pull-requests")
        assert writes == allowed, f"job {name}: writes {writes}, needs {allowed}"


@pytest.mark.parametrize("path", [PREVIEW, DEPLOY], ids=lambda p: p.name)
def test_no_long_lived_cloud_keys(path):
    text = path.read_text()
    for forbidden in (
        "aws-access-key-id",
        "aws-secret-access-key",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "PULUMI_ACCESS_TOKEN",
    ):
        assert forbidden not in text, f"{path.name} mentions {forbidden}"
    document = load(path)
    (aws_step,) = [s for _, s in uses(document, "aws-actions/configure-aws-credentials")]
    assert aws_step["with"]["role-to-assume"] == "${{ vars.AWS_ROLE_ARN }}"
    (pulumi_login,) = [s for _, s in uses(document, "pulumi/auth-actions")]
    assert pulumi_login["with"]["requested-token-type"].startswith("urn:pulumi:token-type:")
    # The cloud steps run only where OIDC tokens can be requested.
    for job, _ in [
        *uses(document, "aws-actions/configure-aws-credentials"),
        *uses(document, "pulumi/auth-actions"),
    ]:
        assert document["jobs"][job]["permissions"]["id-token"] == "write"


@pytest.mark.parametrize("path", [PREVIEW, DEPLOY], ids=lambda p: p.name)
def test_actions_are_pinned(path):
    for job, step in steps(load(path)):
        if "uses" not in step:
            continue
        _, _, ref = step["uses"].partition("@")
        assert re.fullmatch(r"v\d+(\.\d+){0,2}|[0-9a-f]{40}", ref), f"{job}: {step['uses']}"
    assert {s["uses"] for _, s in uses(load(path), "pulumi/actions")} == {"pulumi/actions@v6"}


@pytest.mark.parametrize("path", [PREVIEW, DEPLOY], ids=lambda p: p.name)
def test_run_scripts_are_valid_bash(path):
    for job, step in steps(load(path)):
        if "run" in step:
            done = subprocess.run(["bash", "-n"], input=step["run"], capture_output=True, text=True)
            assert done.returncode == 0, f"{job} / {step.get('name')}: {done.stderr}"


# --- what runs ----------------------------------------------------------------------------


def _pulumi_step(path: Path) -> tuple[str, dict[str, Any]]:
    (found,) = uses(load(path), "pulumi/actions")
    return found


def test_preview_runs_tests_then_previews_every_stack_with_the_policy_pack():
    document = load(PREVIEW)
    job_name, step = _pulumi_step(PREVIEW)
    job = document["jobs"][job_name]
    assert set(job["needs"]) == {"stacks", "test"}
    assert "bash .ci/run" in document["jobs"]["test"]["steps"][-1]["run"]
    assert step["with"]["command"] == "preview"
    assert step["with"]["policyPacks"] == "policy"
    assert "policy-config.json" in step["with"]["policyPackConfigs"]
    assert str(step["with"]["comment-on-pr"]).lower() == "true"
    assert job["strategy"]["matrix"] == "${{ fromJSON(needs.stacks.outputs.matrix) }}"
    assert "matrix.stack" in step["with"]["stack-name"]
    # Pull requests never reach the deploy environments' credentials.
    assert job["environment"] == "${{ matrix.previewEnvironment }}"
    assert "head.repo.full_name == github.repository" in job["if"]


def test_deploy_applies_opted_in_stacks_behind_environments():
    document = load(DEPLOY)
    job_name, step = _pulumi_step(DEPLOY)
    job = document["jobs"][job_name]
    assert set(job["needs"]) == {"stacks", "test"}
    assert step["with"]["command"] == "up"
    assert step["with"]["policyPacks"] == "policy"
    assert job["environment"] == "${{ matrix.environment }}"
    assert job["concurrency"]["cancel-in-progress"] is False
    assert "matrix.stack" in job["concurrency"]["group"]
    stacks_run = document["jobs"]["stacks"]["steps"][-1]["run"]
    assert "stack_matrix.py deploy" in stacks_run


@pytest.mark.parametrize("path", [PREVIEW, DEPLOY], ids=lambda p: p.name)
def test_stacks_come_from_the_one_listing(path):
    document = load(path)
    assert "stack_matrix.py" in document["jobs"]["stacks"]["steps"][-1]["run"]
    listed = {entry["stack"] for entry in json.loads(LISTING.read_text())["stacks"]}
    text = path.read_text()
    for stack in listed:
        assert not re.search(rf"\b{re.escape(stack)}\b", text.replace("matrix.stack", "")), (
            f"{path.name} names stack {stack!r}; stacks belong in {LISTING.name}"
        )


@pytest.mark.parametrize("path", [PREVIEW, DEPLOY], ids=lambda p: p.name)
def test_pulumi_cli_matches_the_sdk_pin(path):
    _, step = _pulumi_step(path)
    pin = re.search(r"^pulumi==(\S+)$", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert pin and step["with"]["pulumi-version"] == pin.group(1)


# --- the stack listing --------------------------------------------------------------------


def _matrix_module():
    spec = importlib.util.spec_from_file_location("stack_matrix", MATRIX_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_the_shipped_listing_is_valid():
    module = _matrix_module()
    entries = module.load_entries(json.loads(LISTING.read_text()))
    assert entries
    for entry in entries:
        assert entry["target"] in ("aws", "kubernetes"), entry
        assert entry["environment"] != entry["previewEnvironment"]


def test_matrix_cli_output():
    for mode in ("preview", "deploy"):
        done = subprocess.run(
            [sys.executable, str(MATRIX_SCRIPT), mode], capture_output=True, text=True, check=True
        )
        lines = dict(line.split("=", 1) for line in done.stdout.splitlines())
        matrix = json.loads(lines["matrix"])
        assert lines["any"] == ("true" if matrix["include"] else "false")


def test_listing_entries_carry_what_the_jobs_need(tmp_path):
    module = _matrix_module()
    (tmp_path / "Pulumi.acme-prod.yaml").write_text(
        "config:\n  liftoff:target: aws\n  aws:region: eu-west-1\n"
    )
    (tmp_path / "Pulumi.edge.yaml").write_text("config:\n  liftoff:target: kubernetes\n")
    listing = {
        "stacks": [
            {"stack": "acme-prod", "deploy": True, "environment": "production"},
            {"stack": "edge"},
        ]
    }
    preview = module.matrix("preview", listing, tmp_path)["include"]
    assert [e["stack"] for e in preview] == ["acme-prod", "edge"]
    assert preview[0] == {
        "stack": "acme-prod",
        "target": "aws",
        "region": "eu-west-1",
        "deploy": True,
        "environment": "production",
        "previewEnvironment": "acme-prod-preview",
        "policyConfig": "",
    }
    assert [e["stack"] for e in module.matrix("deploy", listing, tmp_path)["include"]] == [
        "acme-prod"
    ]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"stack": "ghost"}, "has no Pulumi.ghost.yaml"),
        ({"stack": "edge", "deploy": "yes"}, "deploy: got 'yes'"),
        ({"stack": "edge", "enviroment": "x"}, "unknown keys ['enviroment']"),
        ({"stack": "edge", "environment": "p", "previewEnvironment": "p"}, "must not be used"),
        ({"stack": "edge", "policyConfig": "nope.json"}, "'nope.json' does not exist"),
        ({"stack": "Edge"}, "a liftoff stack name"),
    ],
)
def test_listing_mistakes_are_named(tmp_path, entry, problem):
    module = _matrix_module()
    (tmp_path / "Pulumi.edge.yaml").write_text("config:\n  liftoff:target: kubernetes\n")
    with pytest.raises(module.ListingError, match=re.escape(problem)):
        module.load_entries({"stacks": [entry]}, tmp_path)
