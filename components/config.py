"""Typed stack configuration for liftoff, validated before any resource is declared.

`load_config` is a plain function over the raw key/value strings Pulumi passes to the program,
so it is tested without a runtime; `read_stack_config` feeds it from the running Pulumi
program. This module reads the platform-wide keys (`target`, `deletionProtection`, `tags`) and
runs each capability's reader (`components/<capability>/settings.py`, and `charts.py` for
`liftoff:charts`), every one of the same shape over one `StackReading`; all problems are
collected and raised together as one `ConfigError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from components.airflow.settings import AirflowSettings, read_airflow
from components.archive.settings import ArchiveSettings, read_archive
from components.charts import ChartSource, read_charts
from components.consumers.settings import (
    Destination,
    WarehouseSettings,
    read_destinations,
    read_warehouse,
)
from components.ingest.settings import IngestSettings, Source, read_ingest, read_sources
from components.network.settings import (
    NetworkSettings,
    read_network,
)
from components.observability.settings import ObservabilitySettings, read_observability
from components.postgres.settings import PostgresSettings, read_postgres
from components.stream.settings import StreamSettings, read_stream
from components.validation import (
    HIDDEN,
    K8S_LABEL_KEY,
    K8S_LABEL_VALUE,
    TARGETS,
    ConfigError,
    Problem,
    StackReading,
    Target,
    parse_bool,
    read_string_map,
)

__all__ = ["KNOWN_KEYS", "ConfigError", "PlatformConfig", "load_config", "read_stack_config"]


@dataclass(frozen=True)
class PlatformConfig:
    """One stack's validated configuration: the platform-wide keys and each capability's
    settings (per target where the targets differ: `<capability>.aws` / `.kubernetes`)."""

    project: str
    stack: str
    target: Target
    postgres: PostgresSettings
    tags: dict[str, str]
    deletion_protection: bool = True
    """Default: true. Platform-wide: stateful resources (database, stream, volumes, buckets)
    refuse deletion. `liftoff:postgres.deletionProtection` overrides it for Postgres."""
    network: NetworkSettings = field(default_factory=NetworkSettings)
    """`liftoff:aws` / `liftoff:kubernetes`: where the chosen target deploys."""
    sources: tuple[Source, ...] = (Source("default"),)
    stream: StreamSettings = field(default_factory=StreamSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    charts: dict[str, ChartSource] = field(default_factory=dict)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    """On Kubernetes without an S3-compatible endpoint configured: neither target's."""
    destinations: tuple[Destination, ...] = ()
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    airflow: AirflowSettings = field(default_factory=AirflowSettings)
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)

    @property
    def prefix(self) -> str:
        """Stable name prefix for cloud resources that need a unique physical name."""
        return f"liftoff-{self.stack}"


# The config keys this program reads, in the order they are documented.
KNOWN_KEYS: tuple[str, ...] = (
    "target",
    "deletionProtection",
    "kubernetes",
    "aws",
    "postgres",
    "sources",
    "stream",
    "ingest",
    "charts",
    "archive",
    "destinations",
    "warehouse",
    "airflow",
    "observability",
    "tags",
)
_OBJECT_KEYS = frozenset(KNOWN_KEYS) - {"target", "deletionProtection"}


def load_config(
    values: Mapping[str, Any],
    *,
    project: str,
    stack: str,
    secret_keys: Iterable[str] = (),
) -> PlatformConfig:
    """Build the typed configuration from raw `namespace:key` values, or raise ConfigError.

    `values` holds every config key of the stack (Pulumi passes strings; object values are
    JSON). Keys outside the `liftoff` namespace are read only where liftoff needs them
    (`aws:region`).
    """
    problems: list[Problem] = []
    secret_keys = frozenset(secret_keys)
    raw: dict[str, Any] = {}
    for full_key, value in values.items():
        namespace, _, name = full_key.partition(":")
        if namespace != project:
            continue
        if name not in KNOWN_KEYS:
            problems.append(
                Problem(
                    full_key,
                    value,
                    "no such key; known keys: " + ", ".join(f"{project}:{k}" for k in KNOWN_KEYS),
                )
            )
            continue
        raw[name] = _decode(full_key, name, value, problems)

    stack_problem = _check_stack_name(stack)
    if stack_problem:
        problems.append(stack_problem)
    reading = StackReading(
        project=project,
        stack=stack,
        target=_read_target(project, raw.get("target"), problems),
        raw=raw,
        values=values,
        problems=problems,
        secret_keys=secret_keys,
    )
    read: dict[str, Any] = {}
    for name, reader in READERS:
        read[name] = reader(reading, read)
    if problems:
        raise ConfigError([_redact(p, project, secret_keys) for p in problems])
    assert reading.target is not None
    return PlatformConfig(project=project, stack=stack, target=reading.target, **read)


Reader = Callable[[StackReading, Mapping[str, Any]], Any]
"""One `PlatformConfig` field's reader: the stack, and the fields read before it."""

READERS: tuple[tuple[str, Reader], ...] = (
    ("network", lambda stack, _: read_network(stack)),
    ("deletion_protection", lambda stack, _: _read_deletion_protection(stack)),
    (
        "postgres",
        lambda stack, read: read_postgres(stack, deletion_protection=read["deletion_protection"]),
    ),
    ("tags", lambda stack, _: _read_tags(stack)),
    ("sources", lambda stack, _: read_sources(stack)),
    ("stream", lambda stack, _: read_stream(stack)),
    ("ingest", lambda stack, _: read_ingest(stack)),
    ("archive", lambda stack, _: read_archive(stack)),
    ("destinations", lambda stack, read: read_destinations(stack, sources=read["sources"])),
    ("warehouse", lambda stack, read: read_warehouse(stack, sources=read["sources"])),
    ("airflow", lambda stack, _: read_airflow(stack)),
    ("observability", lambda stack, _: read_observability(stack)),
    ("charts", lambda stack, _: read_charts(stack)),
)
"""Each field's reader, in the order its problems are reported; `load_config` runs them all,
whatever the earlier ones found, so one run reports every problem."""


def _decode(full_key: str, name: str, value: Any, problems: list[Problem]) -> Any:
    if name not in _OBJECT_KEYS or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        problems.append(Problem(full_key, value, "an object (write it as a YAML mapping)"))
        return None


def _check_stack_name(stack: str) -> Problem | None:
    # The stack name becomes part of namespaces, RDS identifiers and DNS names.
    if re.fullmatch(r"[a-z][a-z0-9-]{0,29}", stack) and not stack.endswith("-"):
        return None
    return Problem(
        "stack name",
        stack,
        "lowercase letters, digits and '-', starting with a letter, at most 30 characters "
        "(it becomes part of DNS names and resource identifiers)",
    )


def _read_target(project: str, value: Any, problems: list[Problem]) -> Target | None:
    allowed = "'aws' or 'kubernetes' (required)"
    if value not in TARGETS:
        problems.append(Problem(f"{project}:target", value if value is not None else None, allowed))
        return None
    return cast(Target, value)


def _read_deletion_protection(stack: StackReading) -> bool:
    key, raw = stack.key("deletionProtection"), stack.raw.get("deletionProtection")
    if raw is None:
        return True
    value = parse_bool(raw)
    if value is None:
        stack.problems.append(Problem(key, raw, "true or false"))
        return True
    return value


def _read_tags(stack: StackReading) -> dict[str, str]:
    key, raw, target = stack.key("tags"), stack.raw.get("tags"), stack.target
    if raw is None:
        return {}

    def check(name: str, value: str) -> str | None:
        if target == "kubernetes":
            if not re.fullmatch(K8S_LABEL_KEY, name) or len(name) > 253:
                return "a Kubernetes label key (name or prefix/name, at most 63 characters a part)"
            if not re.fullmatch(K8S_LABEL_VALUE, value):
                return (
                    "a Kubernetes label value: at most 63 letters, digits, '-', '_' or '.', "
                    "starting and ending with a letter or digit"
                )
        else:
            if name.lower().startswith("aws:") or not 1 <= len(name) <= 128:
                return "an AWS tag key of 1 to 128 characters, not starting with 'aws:'"
            if len(value) > 256:
                return "an AWS tag value of at most 256 characters"
        return None

    return read_string_map(key, raw, stack.problems, check)


def read_stack_config() -> PlatformConfig:
    """Read and validate the configuration of the running Pulumi program."""
    import pulumi
    from pulumi.runtime import config as runtime_config

    values: dict[str, Any] = dict(runtime_config.get_config_env())
    values.update(runtime_config.CONFIG.get())
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    secret_keys.update(runtime_config._SECRET_KEYS.get())
    return load_config(
        values,
        project=pulumi.get_project(),
        stack=pulumi.get_stack(),
        secret_keys=secret_keys,
    )


def _redact(problem: Problem, project: str, secret_keys: frozenset[str]) -> Problem:
    """Never echo a secret config value back in an error message."""
    for key in secret_keys:
        if problem.key == key or problem.key.startswith((f"{key}.", f"{key}[")):
            return Problem(problem.key, HIDDEN, problem.allowed)
    return problem
