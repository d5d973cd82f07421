"""What the pinned charts make of liftoff's values, from the facts in `charts/*.facts.yaml`.

No helm binary runs in CI, so the two properties a real install depends on are checked
against facts read from each pinned chart version (see the header of each facts file):

- every key path liftoff passes is one the chart knows (the Airflow schema rejects others; the
  NATS chart silently ignores them);
- every container of every pod the values make the chart render meets Pod Security
  "restricted", resolving each security context the way the chart's templates do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CHARTS_DIR = Path(__file__).resolve().parent.parent / "charts"
_MISSING = object()


def load_facts(chart: str) -> dict[str, Any]:
    return yaml.safe_load((CHARTS_DIR / f"{chart}.facts.yaml").read_text())


def value_paths(values: Any, prefix: str = "") -> list[str]:
    """Every leaf key path of `values` (`a.b`, list items as `a[].b`)."""
    if isinstance(values, dict) and values:
        paths = []
        for key, value in values.items():
            paths.extend(value_paths(value, f"{prefix}.{key}" if prefix else str(key)))
        return paths
    if isinstance(values, list) and values and all(isinstance(v, dict) for v in values):
        return sorted({p for item in values for p in value_paths(item, f"{prefix}[]")})
    return [prefix]


def unknown_paths(values: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """Key paths in `values` that the chart version does not define."""
    known = set(facts["keys"])
    open_prefixes = tuple(f"{p}." for p in facts.get("open", ())) + tuple(
        f"{p}[]" for p in facts.get("open", ())
    )
    return sorted(
        path
        for path in value_paths(values)
        if path not in known and not path.startswith(open_prefixes)
    )


def lookup(values: dict[str, Any], path: str, defaults: dict[str, Any]) -> Any:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return defaults.get(path, _MISSING)
        node = node[part]
    return node


def _flatten(paths: list[Any]) -> list[str]:
    flat: list[str] = []
    for item in paths:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _condition(values: dict[str, Any], condition: str | None, defaults: dict[str, Any]) -> bool:
    if not condition:
        return True
    for term in condition.split("&"):
        key, _, expected = term.partition("=")
        value = lookup(values, key, defaults)
        if expected and value != expected:
            return False
        if not expected and (value is _MISSING or not value):
            return False
    return True


def _resolve(values: dict[str, Any], rule: dict[str, Any], defaults: dict[str, Any]) -> dict:
    for path in _flatten(rule["paths"]):
        value = lookup(values, path, {})
        if value is not _MISSING and value:
            return dict(value)
    default = rule["default"]
    if default == "airflow-pod":
        return {
            "runAsUser": lookup(values, "uid", {"uid": 50000}),
            "fsGroup": lookup(values, "gid", {"gid": 0}),
        }
    if default == "container":
        return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    if default.startswith("local-uid:"):
        return {"runAsUser": lookup(values, default.partition(":")[2], defaults)}
    return {}


def rendered_pods(values: dict[str, Any], facts: dict[str, Any]) -> dict[str, tuple[dict, dict]]:
    """`{pod: (pod security context, {container: container security context})}` for every
    pod the chart renders with `values`."""
    defaults = facts.get("defaults", {})
    pods = {}
    for name, pod in facts["pods"].items():
        if not _condition(values, pod.get("when"), defaults):
            continue
        containers = {
            container: _resolve(values, rule, defaults)
            for container, rule in pod["containers"].items()
            if _condition(values, rule.get("when"), defaults)
        }
        pods[name] = (_resolve(values, pod["pod"], defaults), containers)
    return pods


def restricted_problems(pod: dict[str, Any], container: dict[str, Any]) -> list[str]:
    """What Pod Security "restricted" rejects in one container (with its pod's context)."""
    problems = []

    def effective(field: str) -> Any:
        return container.get(field, pod.get(field))

    if effective("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if effective("runAsUser") == 0:
        problems.append("runAsUser is 0")
    if (effective("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile is not RuntimeDefault")
    if container.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if "ALL" not in ((container.get("capabilities") or {}).get("drop") or []):
        problems.append("capabilities.drop lacks ALL")
    if container.get("privileged"):
        problems.append("privileged")
    added = set((container.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}
    if added:
        problems.append(f"capabilities.add {sorted(added)}")
    return problems


def chart_pod_problems(values: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    return [
        f"{pod}/{container}: {problem}"
        for pod, (pod_context, containers) in rendered_pods(values, facts).items()
        for container, context in containers.items()
        for problem in restricted_problems(pod_context, context)
    ]
