"""What a rule sees: a resource's type, name and inputs, as plain data.

The pack (`pack.py`) builds these from what the Pulumi engine sends; the tests build them from
what the mock harness captured, or by hand. Rules never import `pulumi_policy`, so they run
anywhere and are tested as plain functions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class _Unknown:
    """A value the engine cannot know yet (computed during `pulumi preview`).

    A rule that meets one skips that check: the same rule runs again during `pulumi up`, when
    every input of the resource being created is known.
    """

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unknown during preview>"

    def __bool__(self) -> bool:
        return False


UNKNOWN = _Unknown()


def is_unknown(value: Any) -> bool:
    return value is UNKNOWN


@dataclass(frozen=True)
class Resource:
    """One declared resource: its type token, logical name and inputs (camelCase keys)."""

    type: str
    name: str
    props: Mapping[str, Any] = field(default_factory=dict)
    urn: str = ""
    protect: bool = False
    """The `protect` resource option (the engine refuses to delete the resource)."""
    provider: Mapping[str, Any] | None = None
    """Inputs of the resource's provider (AWS: `defaultTags`, JSON-encoded or not)."""
    dependencies: tuple[str, ...] = ()
    """URNs of the resources this resource's inputs depend on."""

    @property
    def label(self) -> str:
        return f"{self.type} '{self.name}'"


@dataclass(frozen=True)
class Violation:
    """A stack-level finding, attributed to the resource at `urn` when there is one."""

    message: str
    urn: str | None = None


def describe(value: Any) -> str:
    """A short, stable rendering of a value for violation messages."""
    if value is None:
        return "not set"
    if is_unknown(value):
        return repr(value)
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def violation(resource: Resource, prop: str, value: Any, required: str) -> str:
    """`<type> '<name>': <prop> is <value>; required: <what>`."""
    return f"{resource.label}: {prop} is {describe(value)}; required: {required}"


def get_path(props: Any, *path: str | int) -> Any:
    """props[path[0]][path[1]]... or None when any step is missing (or UNKNOWN if unknown)."""
    current = props
    for step in path:
        if is_unknown(current):
            return UNKNOWN
        if isinstance(step, int):
            if not isinstance(current, list | tuple) or step >= len(current):
                return None
            current = current[step]
        else:
            if not isinstance(current, Mapping):
                return None
            current = current.get(step)
    return current


def maybe_json(value: Any) -> Any:
    """Decode a JSON-encoded string (AWS provider settings, IAM documents); else the value."""
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def contains_unknown(value: Any) -> bool:
    if is_unknown(value):
        return True
    if isinstance(value, Mapping):
        return any(contains_unknown(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_unknown(v) for v in value)
    return False
