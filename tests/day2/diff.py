"""What `pulumi up` would do to each resource between two declarations of one stack, from the
provider facts in `provider_facts.yaml`, and the verdict of the whole change.

A declaration is a list of plain resource records (`records(run)`: URN, type, name, inputs,
retainOnDelete, ignoreChanges), so the previous release's program (run in its own checkout)
and this one's compare alike. Like the engine: a URN only before is deleted, only after is
created; inputs at an `ignoreChanges` path of the new program keep their old value; a changed
input at a replace-on-change path replaces the resource.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from services.stream.address import JetStreamAddress

FACTS_FILE = Path(__file__).resolve().parent / "provider_facts.yaml"
POD_OWNERS = ("kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet")
CHART = "kubernetes:helm.sh/v4:Chart"
JOB = "kubernetes:batch/v1:Job"
# The verdicts, mildest first (the README's column).
IN_PLACE, RESTART, REPLACE, PROCEDURE = "in place", "restart", "replace (allowed)", "procedure"
VERDICTS = (IN_PLACE, RESTART, REPLACE, PROCEDURE)


@functools.cache
def facts() -> dict[str, Any]:
    return yaml.safe_load(FACTS_FILE.read_text())


def records(run: Any) -> list[dict[str, Any]]:
    """The comparable form of a ProgramRun (tests/harness.py) of this release."""
    return [
        {
            "urn": r.urn,
            "type": r.type,
            "name": r.name,
            "custom": r.custom,
            "inputs": r.inputs,
            "retainOnDelete": r.retain_on_delete,
            "ignoreChanges": list(getattr(r, "ignore_changes", [])),
        }
        for r in run.resources
    ]


def leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """Every leaf of `value` by its Pulumi property path (`a.b[0].c`)."""
    if isinstance(value, dict) and value:
        found: dict[str, Any] = {}
        for key, item in value.items():
            found.update(leaves(item, f"{prefix}.{key}" if prefix else str(key)))
        return found
    if isinstance(value, list) and value:
        found = {}
        for index, item in enumerate(value):
            found.update(leaves(item, f"{prefix}[{index}]"))
        return found
    return {prefix: value}


def under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith((f"{prefix}.", f"{prefix}["))


def changed_paths(before: dict[str, Any], after: dict[str, Any], ignored: list[str]) -> list[str]:
    old, new = leaves(before), leaves(after)
    changed = [p for p in sorted(set(old) | set(new)) if old.get(p, _ABSENT) != new.get(p, _ABSENT)]
    return [p for p in changed if not any(under(p, i) for i in ignored)]


_ABSENT = object()


@dataclass(frozen=True)
class Effect:
    """What the update does to one resource (or to one object a chart renders)."""

    resource: str
    """`<type> <logical name>`."""
    action: str
    """create, delete, forget (deleted with retainOnDelete), replace, restart, update, lose."""
    why: str = ""
    """The changed paths, or the data fact, behind a replacement or a loss."""
    loses: str | None = None
    """What is lost: the stateful facts' `holds`, for a stateful replace, delete or loss."""


def _replace_paths(type_: str) -> list[tuple[str, list[str]]]:
    table = facts()["replace_on_change"]
    entries = [table.get(type_)]
    if type_.startswith("kubernetes:") and type_ != CHART:
        entries.append(table["kubernetes:*"])
    return [(p, e.get("except", [])) for e in entries if e for p in e["paths"]]


def _stateful(resource: dict[str, Any], action: str) -> str | None:
    fact = facts()["stateful"].get(resource["type"])
    if fact is None or action not in fact.get("lost_on", ("replace", "delete")):
        return None
    when = fact.get("when")
    if when and not any(under(p, when) for p in leaves(resource["inputs"])):
        return None
    return str(fact["holds"])


def _replaced_by(type_: str, changed: list[str]) -> list[str]:
    hits = []
    for prefix, kept in _replace_paths(type_):
        hits += [p for p in changed if under(p, prefix) and not any(under(p, k) for k in kept)]
    return sorted(set(hits))


def _chart_effects(before: dict[str, Any], changed: list[str]) -> list[Effect]:
    chart = before["inputs"].get("chart")
    effects = []
    for entry in facts()["charts"].get(chart, []):
        hits = [p for p in changed if any(under(p, f"values.{q}") for q in entry["paths"])]
        if hits:
            effects.append(
                Effect(
                    f"{chart} chart: {entry['object']}", "replace", ", ".join(hits), "its volumes"
                )
            )
    if any(under(p, "values") for p in changed):
        effects.append(Effect(f"{CHART} {before['name']}", RESTART_ACTION))
    return effects


RESTART_ACTION = "restart"


def _data_effects(before: dict[str, Any], after: dict[str, Any]) -> list[Effect]:
    """Losses no provider sees: the data-path software refusing or unable to read its data."""
    found = []
    for fact in facts()["data"]:
        if before["type"] != fact["type"] or not before["name"].endswith(fact["name_suffix"]):
            continue
        old, new = _DATA_CHECKS[fact["check"]](before), _DATA_CHECKS[fact["check"]](after)
        if old is not None and new is not None and old != new:
            found.append(
                Effect(
                    f"{before['type']} {before['name']}", "lose", f"{fact['what']}: {old} -> {new}",
                    fact["loses"],
                )
            )  # fmt: skip
    return found


def _stream_partitions(resource: dict[str, Any]) -> int | None:
    for container in resource["inputs"]["spec"]["template"]["spec"]["containers"]:
        for variable in container.get("env", []):
            if variable.get("name") == "LIFTOFF_STREAM_URL" and "value" in variable:
                return JetStreamAddress.parse(variable["value"]).partitions
    return None


def _postgres_major(resource: dict[str, Any]) -> str | None:
    for container in resource["inputs"]["spec"]["template"]["spec"]["containers"]:
        if container.get("name") == "postgres":
            found = re.search(r":(\d+)(\.\d+)?$", str(container.get("image", "")))
            return found.group(1) if found else None
    return None


_DATA_CHECKS = {"stream_partitions": _stream_partitions, "postgres_major": _postgres_major}


def _compare(before: dict[str, Any], after: dict[str, Any]) -> list[Effect]:
    label = f"{after['type']} {after['name']}"
    changed = changed_paths(before["inputs"], after["inputs"], after.get("ignoreChanges", []))
    if not changed:
        return []
    effects = _data_effects(before, after)
    replaced = _replaced_by(after["type"], changed)
    if replaced:
        loses = _stateful(before, "replace")
        effects.append(Effect(label, "replace", ", ".join(replaced), loses))
    elif after["type"] == CHART:
        effects += _chart_effects(before, changed)
    elif after["type"] in POD_OWNERS and any(under(p, "spec.template") for p in changed):
        effects.append(Effect(label, RESTART_ACTION, ", ".join(changed[:3])))
    else:
        effects.append(Effect(label, "update", ", ".join(changed[:3])))
    return effects


def diff(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[Effect]:
    """Every effect of going from declaration `before` to `after` (custom resources and
    charts: other components have no state of their own)."""
    old = {r["urn"]: r for r in before if r["custom"] or r["type"] == CHART}
    new = {r["urn"]: r for r in after if r["custom"] or r["type"] == CHART}
    effects: list[Effect] = []
    for urn in sorted(set(old) - set(new)):
        gone = old[urn]
        label = f"{gone['type']} {gone['name']}"
        if gone.get("retainOnDelete"):
            effects.append(Effect(label, "forget"))
        else:
            loses = _stateful(gone, "delete")
            effects.append(Effect(label, "delete", "no longer declared", loses))
    for urn in sorted(set(new) - set(old)):
        effects.append(Effect(f"{new[urn]['type']} {new[urn]['name']}", "create"))
    for urn in sorted(set(old) & set(new)):
        effects += _compare(old[urn], new[urn])
    return effects


def losses(effects: list[Effect]) -> list[Effect]:
    """The effects that lose data: a stateful resource replaced or deleted, a data fact."""
    return [e for e in effects if e.loses and e.action in ("replace", "delete", "lose")]


def verdict(effects: list[Effect]) -> str:
    if losses(effects):
        return PROCEDURE
    if any(e.action == "replace" and not e.resource.startswith(JOB) for e in effects):
        return REPLACE
    if any(e.action == RESTART_ACTION for e in effects):
        return RESTART
    return IN_PLACE
