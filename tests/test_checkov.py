"""Security scan of the Kubernetes target: every object the mock harness captures, for every
Kubernetes stack, written as YAML and scanned by the real checkov, offline.

Zero failed checks, except those listed with a reason in `policy/checkov-skips.yaml`.
checkov runs once per session for all stacks (it is slow to start) from its own virtualenv
(`.venv/checkov`, made by `.ci/run`: its dependency pins clash with ours).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import stack_run
from tests.harness import ROOT, STACK_FILES, stack_name_of

CHECKOV = ROOT / ".venv" / "checkov" / "bin" / "checkov"
SKIPS_FILE = ROOT / "policy" / "checkov-skips.yaml"
KUBERNETES_STACKS = [
    stack_name_of(path)
    for path in STACK_FILES
    if (yaml.safe_load(path.read_text()) or {}).get("config", {}).get("liftoff:target")
    == "kubernetes"
]


def load_skips() -> list[dict[str, Any]]:
    skips = (yaml.safe_load(SKIPS_FILE.read_text()) or {}).get("skips") or []
    for skip in skips:
        assert set(skip) <= {"check", "name", "reason", "resources"}, skip
        assert str(skip.get("check", "")).startswith("CKV_"), skip
        assert len(str(skip.get("reason", "")).strip()) >= 40, f"{skip['check']}: say why"
    return skips


def _offline_prefix() -> list[str]:
    """Run without a network namespace when the kernel lets us: proves the scan is offline."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


def write_objects(directory: Path) -> dict[str, int]:
    """One YAML file per object; returns object counts per stack."""
    counts = {}
    for stack in KUBERNETES_STACKS:
        objects = stack_run(stack).kubernetes_objects()
        counts[stack] = len(objects)
        for index, obj in enumerate(objects):
            name = f"{stack}-{index:03d}-{obj['kind'].lower()}.yaml"
            (directory / name).write_text(yaml.safe_dump(obj, sort_keys=False))
    return counts


@functools.cache
def scan() -> dict[str, Any]:
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run `bash .ci/run` (it creates the checkov venv)")
    with tempfile.TemporaryDirectory(prefix="liftoff-checkov-") as tmp:
        counts = write_objects(Path(tmp))
        command = [
            *_offline_prefix(),
            str(CHECKOV),
            "--directory",
            tmp,
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
            "--quiet",
            "--compact",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    # checkov exits 1 when a check failed; anything else with no JSON is a crash.
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov produced no report (exit {done.returncode}):\n{done.stderr[-3000:]}")
    reports = report if isinstance(report, list) else [report]
    (kubernetes,) = [r for r in reports if r.get("check_type") == "kubernetes"]
    return {"report": kubernetes, "counts": counts}


def partition(failed: list[dict[str, Any]], skips: list[dict[str, Any]]):
    """(unexpected failures, {check id: [skipped resources]}, skip entries that matched nothing)."""
    unexpected, skipped, used = [], {}, set()
    for failure in failed:
        for index, skip in enumerate(skips):
            if failure["check_id"] != skip["check"]:
                continue
            patterns = skip.get("resources") or ["*"]
            if any(fnmatch.fnmatchcase(failure["resource"], p) for p in patterns):
                skipped.setdefault(skip["check"], []).append(failure["resource"])
                used.add(index)
                break
        else:
            unexpected.append(failure)
    stale = [skip for index, skip in enumerate(skips) if index not in used]
    return unexpected, skipped, stale


def test_there_are_kubernetes_stacks_to_scan():
    assert KUBERNETES_STACKS, "no Kubernetes stack among the stack files"
    counts = scan()["counts"]
    assert all(count > 5 for count in counts.values()), counts
    summary = scan()["report"]["summary"]
    assert summary["parsing_errors"] == 0, summary
    assert summary["resource_count"] >= sum(counts.values()) - len(counts), (summary, counts)
    assert summary["passed"] > 100, summary


def test_checkov_finds_no_failed_checks_beyond_the_skip_list():
    report = scan()["report"]
    unexpected, _, _ = partition(report["results"]["failed_checks"], load_skips())
    lines = [
        f"{f['check_id']} {f['check_name']}: {f['resource']} ({Path(f['file_path']).name})"
        for f in unexpected
    ]
    assert not lines, (
        "checkov failed checks (fix them, or add a reasoned entry to "
        + str(SKIPS_FILE.relative_to(ROOT))
        + "):\n"
        + "\n".join(lines)
    )


def test_every_skip_is_still_needed():
    report = scan()["report"]
    _, _, stale = partition(report["results"]["failed_checks"], load_skips())
    assert not stale, (
        "remove these entries from policy/checkov-skips.yaml, nothing fails them: "
        + (", ".join(s["check"] for s in stale))
    )


def test_the_scan_can_fail(tmp_path):
    """The same checkov, on one deliberately bad object: it must report failures."""
    if not CHECKOV.exists():
        pytest.fail(f"{CHECKOV} is missing: run `bash .ci/run`")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bad", "namespace": "demo"},
        "spec": {
            "hostNetwork": True,
            "containers": [
                {"name": "c", "image": "nginx:latest", "securityContext": {"privileged": True}}
            ],
        },
    }
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(pod))
    done = subprocess.run(
        [
            str(CHECKOV),
            "-d",
            str(tmp_path),
            "--framework",
            "kubernetes",
            "--skip-download",
            "-o",
            "json",
            "--quiet",
            "--compact",
            "--check",
            "CKV_K8S_16,CKV_K8S_19,CKV_K8S_14",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    failed = {f["check_id"] for f in json.loads(done.stdout)["results"]["failed_checks"]}
    assert failed == {"CKV_K8S_16", "CKV_K8S_19", "CKV_K8S_14"}, failed
