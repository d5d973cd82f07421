"""Strict validation of declared Kubernetes objects against the real Kubernetes schema."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate

# The oldest Kubernetes minor the platform supports; strict mode rejects unknown fields.
KUBERNETES_VERSION = "1.30.0"


def schema_errors(objects: list[dict[str, Any]]) -> list[str]:
    """One line per invalid object: kind/namespace/name, the JSON path and the reason."""
    errors = []
    for obj in objects:
        metadata = obj.get("metadata") or {}
        where = f"{obj.get('kind')}/{metadata.get('namespace', '-')}/{metadata.get('name')}"
        if obj.get("apiVersion") == MONITORING_API:
            errors.extend(f"{where}: {problem}" for problem in monitoring_errors(obj))
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.absolute_path) or "(root)"
            errors.append(f"{where}: at {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            errors.append(f"{where}: {error.message}")
    return errors


# The Prometheus Operator's custom resources are not in the Kubernetes schema. These are the
# fields (and the required ones, and the duration pattern) of their monitoring.coreos.com/v1
# CRDs that liftoff may set, read from the operator's published CRDs; anything else is an error.
MONITORING_API = "monitoring.coreos.com/v1"
_DURATION = re.compile(r"^(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)$")
_ENDPOINT = {"port": str, "path": str, "interval": str, "scheme": str, "scrapeTimeout": str}
_SPECS: dict[str, tuple[set[str], set[str], str | None]] = {
    # kind: (allowed spec fields, required spec fields, the list of endpoints)
    "ServiceMonitor": (
        {"selector", "endpoints", "namespaceSelector"},
        {"selector", "endpoints"},
        "endpoints",
    ),
    "PodMonitor": (
        {"selector", "podMetricsEndpoints", "namespaceSelector"},
        {"selector"},
        "podMetricsEndpoints",
    ),
    "PrometheusRule": ({"groups"}, set(), None),
}
_GROUP = {"name", "rules", "interval", "labels"}
_RULE = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}


def monitoring_errors(obj: dict[str, Any]) -> list[str]:
    kind = obj.get("kind", "")
    if kind not in _SPECS:
        return [f"kind {kind!r} is not one liftoff declares"]
    allowed, required, endpoints = _SPECS[kind]
    spec = obj.get("spec") or {}
    problems = [f"spec.{f}: not a field of {kind}" for f in sorted(set(spec) - allowed)]
    problems += [f"spec.{f}: required" for f in sorted(required - set(spec))]
    unknown = sorted(set(obj) - {"apiVersion", "kind", "metadata", "spec"})
    if unknown:
        problems.append(f"unknown top-level fields {unknown}")
    for i, endpoint in enumerate(spec.get(endpoints, []) if endpoints else []):
        for field, value in endpoint.items():
            if field not in _ENDPOINT or not isinstance(value, _ENDPOINT[field]):
                problems.append(
                    f"spec.{endpoints}[{i}].{field}: not a {kind} endpoint field of that type"
                )
        for field in ("interval", "scrapeTimeout"):
            if field in endpoint and not _DURATION.match(endpoint[field]):
                problems.append(f"spec.{endpoints}[{i}].{field}: not a duration")
    for g, group in enumerate(spec.get("groups", [])):
        problems += [f"spec.groups[{g}].{f}: not a field" for f in sorted(set(group) - _GROUP)]
        if "name" not in group:
            problems.append(f"spec.groups[{g}].name: required")
        for r, rule in enumerate(group.get("rules", [])):
            where = f"spec.groups[{g}].rules[{r}]"
            problems += [f"{where}.{f}: not a field" for f in sorted(set(rule) - _RULE)]
            if not isinstance(rule.get("expr"), str):
                problems.append(f"{where}.expr: required")
            if "for" in rule and not _DURATION.match(rule["for"]):
                problems.append(f"{where}.for: not a duration")
            for field in ("labels", "annotations"):
                if not all(isinstance(v, str) for v in rule.get(field, {}).values()):
                    problems.append(f"{where}.{field}: values must be strings")
    return problems
