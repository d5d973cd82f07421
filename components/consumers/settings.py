"""`liftoff:destinations` and `liftoff:warehouse`: what the consumers deliver to, from the stack."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from components.ingest.settings import SOURCE_NAME, Source
from components.validation import (
    HIDDEN,
    ConfigReader,
    Problem,
    StackReading,
    Target,
    cidr,
    port_list,
    set_secret_hint,
)
from services.consumers.broadcaster.destinations import NAME_DESCRIBE, NAME_PATTERN, TYPES
from services.consumers.broadcaster.filters import FilterProblem, Filters
from services.consumers.broadcaster.filters import decode as decode_filters
from services.warehouse import columns as declared_columns
from services.warehouse import names as warehouse_names

# Kinesis' limit of enhanced fan-out consumers per stream (one per destination on AWS).
MAX_FAN_OUT_CONSUMERS = 20

DESTINATION_TYPES = TYPES
"""The destination types and their fields: the broadcaster's own registry
(`services/consumers/broadcaster/destinations.py`), so a stack may set exactly what it reads."""


@dataclass(frozen=True)
class Destination:
    """One entry of `liftoff:destinations`: where the broadcaster forwards events."""

    name: str
    type: str
    """A type of the registry: `webhook`, `mixpanel`, `amplitude` or `ga4`."""
    settings: dict[str, str]
    """Non-secret settings by field name (url, region, groupKey, groupType, measurementId)."""
    secrets: dict[str, str]
    """Secret settings by field name (signingSecret, projectToken, apiKey, apiSecret)."""
    sources: tuple[str, ...] = ()
    """Default: every source."""
    events: tuple[str, ...] = ()
    """Default: every event (and every type: identify, page, ... pass unless events is set)."""
    filters: Filters = field(default_factory=Filters)
    """Default: only the events' Segment `integrations` object decides (see
    `services/consumers/broadcaster/filters.py` for the grammar: drop conditions, sampling,
    allow/block-listed fields, consent categories)."""
    private_networks: tuple[PrivateNetwork, ...] = ()
    """Kubernetes only. Default: none — the broadcaster reaches public addresses on 443 only.
    Private CIDRs (and ports) this destination may reach, e.g. an internal webhook."""


@dataclass(frozen=True)
class PrivateNetwork:
    """`allowPrivate` entry of a destination: a CIDR inside the private network and its ports."""

    cidr: str
    ports: tuple[int, ...] = (443,)


@dataclass(frozen=True)
class WarehouseSettings:
    """`liftoff:warehouse` — the loader's database on the platform's Postgres."""

    enabled: bool = True
    """Default: true."""
    database: str = "warehouse"
    """Default: `warehouse`. Also the loader's login role."""
    batch_max_events: int = 5000
    """Default: 5000 (fewer commits: ~1.2x the rows/s of 1000 in benchmarks/pipeline.py).
    Rows per COPY..."""
    batch_max_seconds: int = 5
    """Default: 5. ...or flush when the oldest buffered event is this old."""
    columns: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    """Default: none (each column's type is inferred from its first non-null value).
    `{source: {table: {column: type}}}`: declared types of the typed tables (a tracking plan),
    for tables and columns as the warehouse names them. A change restarts the loader; a column
    that exists keeps its type until `warehouse-rebuild` rebuilds its table."""


def read_destinations(
    stack: StackReading, *, sources: tuple[Source, ...]
) -> tuple[Destination, ...]:
    """`liftoff:destinations`, sorted by name; on AWS at most `MAX_FAN_OUT_CONSUMERS`."""
    destinations = _read_destinations(
        stack.key("destinations"),
        stack.raw.get("destinations"),
        stack.problems,
        is_secret=stack.is_secret("destinations"),
        sources=sources,
        target=stack.target,
    )
    if stack.target == "aws" and len(destinations) > MAX_FAN_OUT_CONSUMERS:
        stack.problems.append(
            Problem(
                stack.key("destinations"),
                [d.name for d in destinations],
                f"at most {MAX_FAN_OUT_CONSUMERS} on AWS: each destination reads the stream "
                "through its own enhanced fan-out consumer, and Kinesis registers at most "
                f"{MAX_FAN_OUT_CONSUMERS} per stream",
            )
        )
    return destinations


def _read_destinations(
    key: str,
    raw: Any,
    problems: list[Problem],
    *,
    is_secret: bool,
    sources: tuple[Source, ...],
    target: Target | None = None,
) -> tuple[Destination, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(Problem(key, raw, "a list of destination objects"))
        return ()
    known_sources = {s.name for s in sources}
    destinations: list[Destination] = []
    for index, item in enumerate(raw):
        reader = ConfigReader(f"{key}[{index}]", item, problems)
        name = reader.string("name", required=True, pattern=NAME_PATTERN, describe=NAME_DESCRIBE)
        kind = reader.string("type", required=True, choices=sorted(DESTINATION_TYPES))
        settings, secrets = _read_destination_fields(reader, kind, is_secret=is_secret)
        only_sources = _read_only_sources(reader, known_sources)
        events = (
            reader.string_list("events", item_pattern=r"\S.{0,199}", describe="an event name") or ()
        )
        filters = _read_filters(reader)
        private: tuple[PrivateNetwork, ...] = ()
        if target == "kubernetes":
            private = _read_private_networks(
                reader.key("allowPrivate"), reader.raw("allowPrivate"), problems
            )
        else:
            reader.reject(
                "allowPrivate", "only with target 'kubernetes' (a NetworkPolicy egress rule)"
            )
        reader.finish()
        if name is None or kind is None:
            continue
        if any(d.name == name for d in destinations):
            problems.append(Problem(f"{key}[{index}].name", name, "a name not used before"))
            continue
        destinations.append(
            Destination(
                name=name,
                type=kind,
                settings=settings,
                secrets=secrets,
                sources=tuple(sorted(set(only_sources))),
                events=tuple(sorted(set(events))),
                filters=filters,
                private_networks=private,
            )
        )
    return tuple(sorted(destinations, key=lambda d: d.name))


def _read_destination_fields(
    reader: ConfigReader, kind: str | None, *, is_secret: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """The destination type's fields, as the registry lists them (required settings, optional
    settings, then the secret, which must be a Pulumi secret)."""
    settings: dict[str, str] = {}
    secrets: dict[str, str] = {}
    if kind is None:
        return settings, secrets
    for item in TYPES[kind].fields:
        if item.secret:
            value = reader.string(item.name, required=item.required, describe=item.describe)
            if value is None:
                continue
            if not is_secret:
                reader.problem(item.name, HIDDEN, set_secret_hint(reader.key(item.name)))
                continue
            secrets[item.name] = value
            continue
        value = reader.string(
            item.name,
            required=item.required,
            pattern=item.stack_pattern or item.pattern,
            describe=item.describe,
        )
        if value is not None:
            settings[item.name] = value
    return settings, secrets


def _read_filters(reader: ConfigReader) -> Filters:
    """`filters`, read by the broadcaster's own grammar; its first problem is reported."""
    try:
        return decode_filters(reader.raw("filters"))
    except FilterProblem as problem:
        reader.problems.append(
            Problem(f"{reader.key('filters')}{problem.path}", problem.value, problem.allowed)
        )
        return Filters()


def _read_only_sources(reader: ConfigReader, known_sources: set[str]) -> tuple[str, ...]:
    """`sources`: the sources whose events go to this destination (default: every source)."""
    problems = reader.problems
    only_sources = (
        reader.string_list(
            "sources", item_pattern=SOURCE_NAME, describe="a source name from liftoff:sources"
        )
        or ()
    )
    for position, source in enumerate(only_sources):
        if source not in known_sources:
            problems.append(
                Problem(
                    f"{reader.key('sources')}[{position}]",
                    source,
                    "one of liftoff:sources: " + ", ".join(sorted(known_sources)),
                )
            )
    return tuple(only_sources)


def _read_private_networks(
    key: str, raw: Any, problems: list[Problem]
) -> tuple[PrivateNetwork, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append(Problem(key, raw, "a list of {cidr, ports} objects"))
        return ()
    networks = []
    for index, entry in enumerate(raw):
        reader = ConfigReader(f"{key}[{index}]", entry, problems)
        block = reader.string("cidr", required=True, describe="a private CIDR such as 10.20.0.0/16")
        if block is not None:
            block = cidr(reader.key("cidr"), block, problems, private=True)
        ports = port_list(reader.key("ports"), reader.raw("ports"), problems, (443,))
        reader.finish()
        if block:
            networks.append(PrivateNetwork(cidr=block, ports=ports))
    return tuple(sorted(set(networks), key=lambda n: (n.cidr, n.ports)))


def read_warehouse(stack: StackReading, *, sources: tuple[Source, ...]) -> WarehouseSettings:
    reader = stack.reader("warehouse")
    defaults = WarehouseSettings()
    settings = WarehouseSettings(
        enabled=reader.boolean("enabled", True),
        database=reader.string(
            "database",
            defaults.database,
            pattern=r"[a-z][a-z0-9_]{0,30}",
            describe="a database name: lowercase letters, digits and '_', at most 31 characters",
        )
        or defaults.database,
        batch_max_events=reader.integer(
            "batchMaxEvents", defaults.batch_max_events, minimum=1, maximum=100_000
        ),
        batch_max_seconds=reader.integer(
            "batchMaxSeconds", defaults.batch_max_seconds, minimum=1, maximum=300
        ),
        columns=_read_columns(reader.key("columns"), reader.raw("columns"), stack, sources),
    )
    reader.finish()
    if settings.enabled:
        _refuse_shared_schemas(stack, sources)
    return settings


def _refuse_shared_schemas(stack: StackReading, sources: tuple[Source, ...]) -> None:
    """Each source's typed tables live in its own schema, named by the warehouse's rules
    (`web-app` and `web_app` are both `web_app`): two sources must not share one."""
    by_schema: dict[str, list[str]] = {}
    for source in sources:
        by_schema.setdefault(warehouse_names.source_schema(source.name), []).append(source.name)
    for schema, named in sorted(by_schema.items()):
        if len(named) > 1:
            allowed = (
                f"source names whose warehouse schemas differ: these would share the schema "
                f"{schema!r} and its tables (rename one, or set liftoff:warehouse.enabled: false)"
            )
            stack.problems.append(Problem(stack.key("sources"), ", ".join(named), allowed))


def _read_columns(
    key: str, raw: Any, stack: StackReading, sources: tuple[Source, ...]
) -> dict[str, dict[str, dict[str, str]]]:
    """`liftoff:warehouse.columns`: checked by the registry the loader reads it with; each
    source must be one of `liftoff:sources`."""
    if raw is None:
        return {}
    found = list(declared_columns.problems(raw))
    for path, value, allowed in found:
        stack.problems.append(Problem(".".join((key, *path)), value, allowed))
    known = sorted(s.name for s in sources)
    named = [s for s in raw if isinstance(s, str)] if isinstance(raw, dict) else []
    unknown = [
        s for s in named if re.fullmatch(declared_columns.SOURCE_PATTERN, s) and s not in known
    ]
    for source in unknown:
        stack.problems.append(
            Problem(key, source, "sources of liftoff:sources: " + ", ".join(known))
        )
    if found or unknown:
        return {}
    return declared_columns.decode(raw)
