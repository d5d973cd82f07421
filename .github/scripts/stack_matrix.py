"""Turn `.github/liftoff-stacks.json` into a GitHub Actions matrix (the one list of stacks).

    python .github/scripts/stack_matrix.py preview   # every listed stack
    python .github/scripts/stack_matrix.py deploy    # only those with "deploy": true

Prints `matrix=<json>` and `any=<true|false>` lines for $GITHUB_OUTPUT. Each matrix entry
carries what the jobs need, read from the entry and from the stack's own file
(`Pulumi.<stack>.yaml`): target, AWS region, the GitHub environments, the policy config.
A wrong entry fails the job with the entry and the problem named.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
LISTING = ROOT / ".github" / "liftoff-stacks.json"
KEYS = {"stack", "deploy", "environment", "previewEnvironment", "policyConfig"}
STACK_NAME = re.compile(r"[a-z][a-z0-9-]{0,29}")
ENVIRONMENT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")


class ListingError(ValueError):
    pass


def load_entries(listing: dict[str, Any], root: Path = ROOT) -> list[dict[str, Any]]:
    """Validated matrix entries for every stack in the listing."""
    stacks = listing.get("stacks")
    if not isinstance(stacks, list) or not stacks:
        raise ListingError("'stacks' must be a non-empty list")
    entries, seen, problems = [], set(), []
    for index, item in enumerate(stacks):
        where = f"stacks[{index}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: got {item!r}; allowed: an object")
            continue
        unknown = sorted(set(item) - KEYS)
        if unknown:
            problems.append(f"{where}: unknown keys {unknown}; allowed: {sorted(KEYS)}")
        stack = item.get("stack")
        if not isinstance(stack, str) or not STACK_NAME.fullmatch(stack):
            problems.append(f"{where}.stack: got {stack!r}; allowed: a liftoff stack name")
            continue
        if stack in seen:
            problems.append(f"{where}.stack: {stack!r} is listed twice")
        seen.add(stack)
        stack_file = root / f"Pulumi.{stack}.yaml"
        if not stack_file.is_file():
            problems.append(f"{where}.stack: {stack!r} has no {stack_file.name}")
            continue
        config = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
        deploy = item.get("deploy", False)
        if not isinstance(deploy, bool):
            problems.append(f"{where}.deploy: got {deploy!r}; allowed: true or false")
        environments = {
            "environment": item.get("environment", stack),
            "previewEnvironment": item.get("previewEnvironment", f"{stack}-preview"),
        }
        for key, name in environments.items():
            if not isinstance(name, str) or not ENVIRONMENT_NAME.fullmatch(name):
                problems.append(f"{where}.{key}: got {name!r}; allowed: a GitHub environment name")
        if environments["environment"] == environments["previewEnvironment"]:
            problems.append(
                f"{where}: environment and previewEnvironment are both "
                f"{environments['environment']!r}; the deploy environment holds the write "
                "credentials and must not be used by pull requests"
            )
        policy_config = item.get("policyConfig", "")
        if policy_config and not (root / policy_config).is_file():
            problems.append(f"{where}.policyConfig: {policy_config!r} does not exist")
        entries.append(
            {
                "stack": stack,
                "target": str(config.get("liftoff:target", "")),
                "region": str(config.get("aws:region", "")),
                "deploy": deploy,
                **environments,
                "policyConfig": policy_config,
            }
        )
    if problems:
        raise ListingError(f"{LISTING.name}: " + "; ".join(problems))
    return entries


def matrix(mode: str, listing: dict[str, Any], root: Path = ROOT) -> dict[str, Any]:
    entries = load_entries(listing, root)
    if mode == "deploy":
        entries = [e for e in entries if e["deploy"]]
    return {"include": entries}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ("preview", "deploy"):
        print(f"usage: {argv[0]} preview|deploy", file=sys.stderr)
        return 2
    try:
        result = matrix(argv[1], json.loads(LISTING.read_text()))
    except ListingError as error:
        print(f"::error::{error}", file=sys.stderr)
        return 1
    print(f"matrix={json.dumps(result, separators=(',', ':'))}")
    print(f"any={'true' if result['include'] else 'false'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
