"""Runs the change matrix: each change of `changes.CHANGES` on each shipped stack it applies
to, declared before and after under mocks, and the previous release's program (the commit in
`.release/previous`, checked out with `git archive` and run with this venv in a subprocess).
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from tests.day2.changes import CHANGES, UPGRADE, Change, parsed_config
from tests.day2.diff import Effect, diff, records, verdict
from tests.harness import ROOT, STACK_FILES, run_program, stack_name_of

PREVIOUS_RELEASE_FILE = ROOT / ".release" / "previous"
RELEASES = ROOT / "RELEASES.md"

# Runs in the previous release's checkout (its own tests/harness.py): every stack file it
# ships, as plain records plus outputs, one JSON document.
_PREVIOUS_PROBE = r"""
import json, sys
from tests.harness import ROOT, STACK_FILES, run_program, stack_name_of
out = {}
for path in STACK_FILES:
    run = run_program(path)
    out[stack_name_of(path)] = {
        "config": str(path.relative_to(ROOT)),
        "outputs": run.outputs,
        "resources": [
            {"urn": r.urn, "type": r.type, "name": r.name, "custom": r.custom,
             "inputs": r.inputs, "retainOnDelete": r.retain_on_delete, "ignoreChanges": []}
            for r in run.resources
        ],
    }
print(json.dumps(out, default=str))
"""


@dataclass(frozen=True)
class Outcome:
    change: Change
    stack: str
    effects: list[Effect]
    verdict: str


def target_of(path: Path) -> str:
    return str(parsed_config(path)["liftoff:target"])


def stacks_for(change: Change) -> list[Path]:
    if change.target == UPGRADE:
        return list(STACK_FILES)
    chosen = [p for p in STACK_FILES if target_of(p) == change.target]
    if change.stacks:
        chosen = [p for p in chosen if stack_name_of(p) in change.stacks]
    return chosen


def previous_release() -> str:
    return PREVIOUS_RELEASE_FILE.read_text().strip()


_PREFETCH = ThreadPoolExecutor(max_workers=1, thread_name_prefix="previous-release")


@functools.cache
def prefetch_previous() -> Future[dict[str, Any]]:
    """Start declaring the previous release (a subprocess of ~8 s) while other work runs."""
    return _PREFETCH.submit(_previous_declarations)


def previous_declarations() -> dict[str, Any]:
    """Every shipped stack as the previous release declares it (its own stack files)."""
    return prefetch_previous().result()


def _previous_declarations() -> dict[str, Any]:
    commit = previous_release()
    archived = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True)
    if archived.returncode != 0:
        raise RuntimeError(
            f"the previous release {commit} (.release/previous) is not in this clone "
            f"(a shallow clone? git fetch --unshallow): {archived.stderr.decode()[-500:]}"
        )
    archive = archived.stdout
    with tempfile.TemporaryDirectory(prefix="liftoff-previous-") as checkout:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(checkout, filter="data")
        done = subprocess.run(
            [sys.executable, "-c", _PREVIOUS_PROBE],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            failure = done.stderr[-3000:]
            raise RuntimeError(f"the previous release ({commit}) did not run: {failure}")
        document: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        for stack in document.values():
            # The customer's stack file is the one they had: the previous release's.
            stack["config_text"] = (Path(checkout) / stack["config"]).read_text()
        return document


def _run(path: Path, config: dict[str, Any], previous: dict[str, Any] | None = None) -> Any:
    """The program on `path`'s stack with `config` (what the previous update exported:
    `previous`); runs of a new stack are cached (the same config declares the same)."""
    if previous is None:
        return _cached_run(path, json.dumps(config, sort_keys=True))
    return _run_uncached(path, config, previous)


@functools.cache
def _cached_run(path: Path, config_json: str) -> Any:
    return _run_uncached(path, json.loads(config_json), None)


def _run_uncached(path: Path, config: dict[str, Any], previous: dict[str, Any] | None) -> Any:
    original = parsed_config(path)
    overrides = {k: v for k, v in config.items() if original.get(k) != v}
    removed = tuple(k for k in original if k not in config)
    return run_program(path, overrides=overrides, remove=removed, previous_outputs=previous)


def outcome(change: Change, path: Path) -> Outcome | None:
    """The change on one stack, or None where it does not apply."""
    stack = stack_name_of(path)
    if change.target == UPGRADE:
        return _upgrade_outcome(change, path)
    config = parsed_config(path)
    before_config = change.before(config)
    after_config = change.after(before_config)
    if after_config is None or after_config == before_config:
        return None
    before = records(_run(path, before_config))
    effects = diff(before, records(_run(path, after_config)))
    return Outcome(change, stack, effects, verdict(effects))


def _upgrade_outcome(change: Change, path: Path) -> Outcome | None:
    stack = stack_name_of(path)
    previous = previous_declarations().get(stack)
    if previous is None:
        return None  # a stack this release ships for the first time
    # Outside the repository: other test processes list stacks/ for the shipped stacks.
    with tempfile.TemporaryDirectory(prefix="liftoff-upgrade-") as folder:
        old_file = Path(folder) / path.name
        old_file.write_text(previous["config_text"])
        # The same customer config; the stack's outputs are the previous release's.
        run = run_program(old_file, stack=stack, previous_outputs=previous["outputs"])
    effects = diff(previous["resources"], records(run))
    return Outcome(change, stack, effects, verdict(effects))


def all_outcomes() -> list[Outcome]:
    found = []
    for change in CHANGES:
        for path in stacks_for(change):
            result = outcome(change, path)
            if result is not None:
                found.append(result)
    return found
