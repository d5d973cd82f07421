"""Destination filters: which events a destination receives, and which of their fields.

One grammar, read twice: by the stack validation (``liftoff:destinations[*].filters``, through
:func:`decode`, problems named by their key) and by the broadcaster (the ``filters`` object of
the ``LIFTOFF_DESTINATION`` document). Imports nothing else of ``services`` (the registry,
:mod:`services.consumers.broadcaster.destinations`, holds it).

The stack-file shape (every key optional)::

    filters:
      integrations: honour          # or ignore: the event's Segment `integrations` object
      consent: [Analytics]          # categories context.consent.categoryPreferences must grant
      consentMissing: send          # or drop: events without categoryPreferences
      drop:                         # an event matching ANY condition is dropped
        - type: [page, screen]      # a condition holds when ALL its keys hold
        - event: [Debug Ping]
        - field: properties.plan
          in: [free, trial]         # or equals: <value>, or exists: true|false
      samplePercent: 25             # keep this share, chosen by a hash of the messageId
      allowFields: [properties.plan, traits.email]   # properties/traits keep only these
      blockFields: [context.ip, properties.card]     # removed from every event

The checks run in that order; the first that refuses an event names the reason counted in
``liftoff_broadcaster_filtered_total{destination,reason}``. Filtered events are acknowledged
(skipped), never retried, never dead-lettered.

``integrations`` follows Segment's routing rules: the entry for the destination (its own name in
the stack, else one of its type's Segment names, e.g. ``Mixpanel``) decides when present; else
``All`` (default true). ``false`` turns the destination off; ``true`` or an options object keeps
it on. Sampling hashes the messageId alone, so a retried, replayed or duplicated event gets the
same decision on every run and in every destination with the same percentage.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EVENT_TYPES = ("track", "identify", "page", "screen", "group", "alias")
FIELD_PATH = r"[^.\s][^.]{0,99}(\.[^.\s][^.]{0,99}){0,7}"
"""A dotted path into the event (``properties.plan``); a key containing a dot cannot be named."""
SHAPED_ROOTS = ("properties", "traits", "context")
"""The objects allowFields/blockFields may touch: ids, type, timestamps and the routing fields
the destinations' mappings need are never removed."""
ALLOW_ROOTS = ("properties", "traits")

Scalar = str | int | float | bool | None


class FilterProblem(ValueError):
    """A filters document that is not valid: ``path`` (``.drop[0].in``, relative to the
    ``filters`` key), the value received, and what is allowed."""

    def __init__(self, path: str, value: Any, allowed: str) -> None:
        super().__init__(f"filters{path}={value!r}: {allowed}")
        self.path, self.value, self.allowed = path, value, allowed


@dataclass(frozen=True)
class Condition:
    """One ``drop`` entry: holds when every key given holds."""

    types: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    field: str | None = None
    values: tuple[Scalar, ...] | None = None
    """``in`` (``equals`` is ``in`` of one value)."""
    exists: bool | None = None

    def holds(self, event: dict[str, Any]) -> bool:
        if self.types and event.get("type") not in self.types:
            return False
        if self.events and event.get("event") not in self.events:
            return False
        if self.field is None:
            return True
        found, value = lookup(event, self.field)
        if self.exists is not None and found != self.exists:
            return False
        return self.values is None or (found and any(_same(value, v) for v in self.values))

    def encode(self) -> dict[str, Any]:
        document: dict[str, Any] = {}
        if self.types:
            document["type"] = list(self.types)
        if self.events:
            document["event"] = list(self.events)
        if self.field is not None:
            document["field"] = self.field
        if self.values is not None:
            document["in"] = list(self.values)
        if self.exists is not None:
            document["exists"] = self.exists
        return document


@dataclass(frozen=True)
class Filters:
    """A destination's filters; the default filters only by the ``integrations`` object."""

    integrations: bool = True
    """Honour the event's ``integrations`` object (``integrations: honour``, the default)."""
    consent: tuple[str, ...] = ()
    consent_missing_drops: bool = False
    drop: tuple[Condition, ...] = ()
    sample_percent: float | None = None
    allow_fields: tuple[str, ...] = ()
    block_fields: tuple[str, ...] = ()

    @property
    def is_default(self) -> bool:
        return self == Filters()

    def refusal(self, event: dict[str, Any], names: Sequence[str]) -> str | None:
        """Why the destination called ``names`` (its own name first, then its type's Segment
        names) does not receive ``event``: ``integrations``, ``consent``, ``drop``,
        ``sample``; None when it does."""
        if self.integrations and not integrations_allow(event.get("integrations"), names):
            return "integrations"
        if self.consent and not self._consented(event):
            return "consent"
        if any(condition.holds(event) for condition in self.drop):
            return "drop"
        if self.sample_percent is not None and not sampled(
            event.get("messageId"), self.sample_percent
        ):
            return "sample"
        return None

    def shape(self, event: dict[str, Any]) -> dict[str, Any]:
        """The event as the destination receives it: allow- then block-listed fields applied
        (a copy; the event itself is left alone)."""
        if not (self.allow_fields or self.block_fields):
            return event
        shaped = dict(event)
        if self.allow_fields:
            tree = _tree(self.allow_fields)
            for root in ALLOW_ROOTS:
                if isinstance(shaped.get(root), dict):
                    shaped[root] = _keep(shaped[root], tree.get(root) or {})
        for path in self.block_fields:
            shaped = _without(shaped, path.split("."))
        return shaped

    def _consented(self, event: dict[str, Any]) -> bool:
        consent = event.get("context")
        consent = consent.get("consent") if isinstance(consent, dict) else None
        granted = consent.get("categoryPreferences") if isinstance(consent, dict) else None
        if not isinstance(granted, dict):
            return not self.consent_missing_drops
        return all(granted.get(category) is True for category in self.consent)

    def encode(self) -> dict[str, Any]:
        """The stack-file shape, defaults left out (what :func:`decode` reads back)."""
        document: dict[str, Any] = {}
        if not self.integrations:
            document["integrations"] = "ignore"
        if self.consent:
            document["consent"] = list(self.consent)
        if self.consent_missing_drops:
            document["consentMissing"] = "drop"
        if self.drop:
            document["drop"] = [condition.encode() for condition in self.drop]
        if self.sample_percent is not None:
            document["samplePercent"] = self.sample_percent
        if self.allow_fields:
            document["allowFields"] = list(self.allow_fields)
        if self.block_fields:
            document["blockFields"] = list(self.block_fields)
        return document


# --- applying ----------------------------------------------------------------------------------


def integrations_allow(integrations: Any, names: Sequence[str]) -> bool:
    """Segment's rule: the first of ``names`` present in the object decides, else ``All``."""
    if not isinstance(integrations, dict):
        return True
    for name in names:
        if name in integrations:
            return integrations[name] is not False
    return integrations.get("All", True) is not False


def sampled(message_id: Any, percent: float) -> bool:
    """Whether the event with ``message_id`` is in the ``percent`` sample (deterministic)."""
    digest = hashlib.sha256(str(message_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") < percent / 100 * 2**64


def lookup(event: dict[str, Any], path: str) -> tuple[bool, Any]:
    value: Any = event
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return False, None
        value = value[key]
    return True, value


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _tree(paths: Sequence[str]) -> dict[str, Any]:
    """``["properties.a.b", "properties.c"]`` → ``{"properties": {"a": {"b": {}}, "c": {}}}``;
    an empty node keeps its whole value."""
    tree: dict[str, Any] = {}
    for path in paths:
        node = tree
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if node is None:
                break
        else:
            node[keys[-1]] = None  # a leaf: keep whatever is there
    return tree


def _keep(value: dict[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, subtree in tree.items():
        if key not in value:
            continue
        if subtree is None:
            kept[key] = value[key]
        elif isinstance(value[key], dict):
            kept[key] = _keep(value[key], subtree)
        # else: only fields under it are allowed, and it has none: left out
    return kept


def _without(value: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    head, rest = keys[0], keys[1:]
    if head not in value:
        return value
    copy = dict(value)
    if not rest:
        del copy[head]
    elif isinstance(copy[head], dict):
        copy[head] = _without(copy[head], rest)
    return copy


# --- reading -----------------------------------------------------------------------------------


def decode(raw: Any) -> Filters:
    """The filters document (the stack file's ``filters``), checked; FilterProblem otherwise."""
    if raw is None:
        return Filters()
    if not isinstance(raw, dict):
        raise FilterProblem("", raw, "an object (integrations, consent, drop, samplePercent, ...)")
    known = {
        "integrations",
        "consent",
        "consentMissing",
        "drop",
        "samplePercent",
        "allowFields",
        "blockFields",
    }
    for key in sorted(set(raw) - known):
        raise FilterProblem(
            f".{key}", raw[key], f"no such key; known keys: {', '.join(sorted(known))}"
        )
    return Filters(
        integrations=_choice(raw, "integrations", ("honour", "ignore")) != "ignore",
        consent=_strings(raw, "consent", r"\S.{0,99}", "consent category names"),
        consent_missing_drops=_choice(raw, "consentMissing", ("send", "drop")) == "drop",
        drop=tuple(_condition(f".drop[{i}]", c) for i, c in enumerate(_list(raw, "drop"))),
        sample_percent=_percent(raw.get("samplePercent")),
        allow_fields=_paths(raw, "allowFields", ALLOW_ROOTS),
        block_fields=_paths(raw, "blockFields", SHAPED_ROOTS),
    )


def _choice(raw: dict[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    value = raw.get(key, allowed[0])
    if value not in allowed:
        raise FilterProblem(f".{key}", value, "one of " + ", ".join(allowed))
    return str(value)


def _list(raw: dict[str, Any], key: str, path: str = "") -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list) or (not value and key in raw):
        raise FilterProblem(f"{path}.{key}", value, "a non-empty list")
    return value


def _strings(
    raw: dict[str, Any], key: str, pattern: str, describe: str, path: str = ""
) -> tuple[str, ...]:
    values = _list(raw, key, path)
    for index, value in enumerate(values):
        if not isinstance(value, str) or not re.fullmatch(pattern, value):
            raise FilterProblem(f"{path}.{key}[{index}]", value, f"a list of {describe}")
    return tuple(dict.fromkeys(values))


def _paths(raw: dict[str, Any], key: str, roots: tuple[str, ...]) -> tuple[str, ...]:
    describe = "field paths such as properties.plan, under " + ", ".join(roots)
    paths = _strings(raw, key, FIELD_PATH, describe)
    for index, path in enumerate(paths):
        if path.split(".")[0] not in roots or "." not in path:
            raise FilterProblem(f".{key}[{index}]", path, f"a list of {describe}")
    return paths


def _percent(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 100:
        raise FilterProblem(".samplePercent", value, "a number above 0 and at most 100")
    return float(value)


def _condition(path: str, raw: Any) -> Condition:
    if not isinstance(raw, dict) or not raw:
        raise FilterProblem(path, raw, "an object with type, event and/or field")
    for key in sorted(set(raw) - {"type", "event", "field", "in", "equals", "exists"}):
        raise FilterProblem(f"{path}.{key}", raw[key], "type, event, field, in, equals or exists")
    types = _strings(
        raw, "type", "|".join(EVENT_TYPES), "event types: " + ", ".join(EVENT_TYPES), path
    )
    events = _strings(raw, "event", r"\S.{0,199}", "event names", path)
    field = raw.get("field")
    operators = [key for key in ("in", "equals", "exists") if key in raw]
    if field is None:
        if operators:
            raise FilterProblem(f"{path}.{operators[0]}", raw[operators[0]], "only with field")
        if not (types or events):
            raise FilterProblem(path, raw, "an object with type, event and/or field")
        return Condition(types, events)
    if not isinstance(field, str) or not re.fullmatch(FIELD_PATH, field):
        raise FilterProblem(f"{path}.field", field, "a field path such as properties.plan")
    if len(operators) != 1:
        raise FilterProblem(path, raw, "field with exactly one of in, equals, exists")
    return Condition(types, events, field, *_operator(path, operators[0], raw[operators[0]]))


def _operator(path: str, key: str, value: Any) -> tuple[tuple[Scalar, ...] | None, bool | None]:
    def scalar(item: Any) -> bool:
        return item is None or isinstance(item, str | int | float | bool)

    if key == "exists":
        if not isinstance(value, bool):
            raise FilterProblem(f"{path}.exists", value, "true or false")
        return None, value
    values = [value] if key == "equals" else value
    if not isinstance(values, list) or not values or not all(scalar(v) for v in values):
        raise FilterProblem(f"{path}.{key}", value, "JSON scalars (strings, numbers, booleans)")
    return tuple(values), None
