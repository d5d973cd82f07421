"""Golden declarations: what every shipped stack declares, recorded to prove refactors change
nothing.

`python -m tests.golden --update` re-records `tests/golden/<stack>.json` for `Pulumi.dev.yaml`
and every file in `stacks/`. Record from the code whose behaviour is the reference (e.g. a
temporary `git worktree` of main), never from the tree being refactored; `tests/test_golden.py`
then asserts the program still declares exactly that.

A record holds every resource (type, name, parent, custom, inputs, dependencies, secret input
paths, protect, retainOnDelete) sorted by URN, and the stack outputs. Values at secret paths are
replaced by a placeholder and absolute paths under the repository are made relative, so a record
does not depend on where the checkout lives. Content hashes of shipped artifacts (the Lambda
package, DAG files) are placeholders too: a refactor may move code inside them, and what they
contain is tested where they are built (tests/components/test_packaging.py, tests/test_dags.py).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from tests.harness import ROOT, STACK_FILES, ProgramRun, run_program, stack_name_of

GOLDEN = Path(__file__).resolve().parent
SECRET = "[secret]"
ARTIFACT_HASH = "[artifact-hash]"
_PACKAGE_NAME = re.compile(r"services-[0-9a-f]+\.zip")


def golden_path(stack: str) -> Path:
    return GOLDEN / f"{stack}.json"


def _relative(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _relative(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_relative(v) for v in value]
    if isinstance(value, str) and str(ROOT) in value:
        return value.replace(str(ROOT), "<root>")
    return value


def _artifact_hashes(run: ProgramRun) -> set[str]:
    hashes = set()
    for r in run.resources:
        for key in ("sourceCodeHash", "sourceHash"):
            if isinstance(r.inputs.get(key), str):
                hashes.add(r.inputs[key])
    return hashes


def _without_artifact_hashes(value: Any, hashes: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without_artifact_hashes(v, hashes) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_artifact_hashes(v, hashes) for v in value]
    if isinstance(value, str):
        return ARTIFACT_HASH if value in hashes else _PACKAGE_NAME.sub("services.zip", value)
    return value


def _hide(value: Any, path: str, secret_paths: set[str]) -> Any:
    if path in secret_paths:
        return SECRET
    if isinstance(value, dict):
        return {k: _hide(v, f"{path}.{k}" if path else k, secret_paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_hide(v, f"{path}[{i}]", secret_paths) for i, v in enumerate(value)]
    return value


def record(run: ProgramRun) -> dict[str, Any]:
    """The comparable form of one program run."""
    resources = []
    for r in sorted(run.resources, key=lambda r: r.urn):
        secret_paths = set(r.secret_paths)
        resources.append(
            {
                "urn": r.urn,
                "type": r.type,
                "name": r.name,
                "parent": r.parent,
                "custom": r.custom,
                "protect": r.protect,
                "retainOnDelete": r.retain_on_delete,
                "dependencies": sorted(set(r.dependencies)),
                "secretPaths": sorted(secret_paths),
                "inputs": _hide(r.inputs, "", secret_paths),
            }
        )
    outputs = {
        key: SECRET if key in run.secret_outputs else value for key, value in run.outputs.items()
    }
    data = {"stack": run.stack, "resources": resources, "outputs": outputs}
    # Through JSON once, so tuples, numbers and odd types compare as they are stored.
    data = _without_artifact_hashes(_relative(data), _artifact_hashes(run))
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def dump(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.golden", description=__doc__)
    parser.add_argument("--update", action="store_true", help="re-record every stack's file")
    parser.add_argument("--out", type=Path, default=GOLDEN, help="where to write (default: here)")
    args = parser.parse_args(argv)
    if not args.update:
        parser.error("pass --update to re-record (tests/test_golden.py compares)")
    args.out.mkdir(parents=True, exist_ok=True)
    for path in STACK_FILES:
        stack = stack_name_of(path)
        target = args.out / f"{stack}.json"
        target.write_text(dump(record(run_program(path))))
        print(f"recorded {target}")
    return 0
