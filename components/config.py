"""Typed stack configuration for liftoff, validated before any resource is declared.

Every `liftoff:*` key is read here and nowhere else. `load_config` is a plain function over
the raw key/value strings Pulumi passes to the program, so it is tested without a runtime;
`read_stack_config` feeds it from the running Pulumi program. All problems are collected and
raised together as one `ConfigError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from components.airflow.settings import (
    AirflowSettings,
    AwsAirflowSettings,
    KubernetesAirflowSettings,
    read_airflow,
)
from components.archive.settings import ArchiveSettings, read_archive
from components.consumers.settings import (
    DESTINATION_TYPES,
    Destination,
    PrivateNetwork,
    WarehouseSettings,
    read_destinations,
    read_warehouse,
)
from components.ingest.settings import (
    IngestSettings,
    Source,
    read_ingest,
    read_sources,
)
from components.network.settings import (
    AwsSettings,
    KubernetesSettings,
    read_aws,
    read_kubernetes,
)
from components.observability.settings import (
    ObservabilitySettings,
    read_observability,
)
from components.postgres.settings import PostgresSettings, read_postgres
from components.stream.settings import (
    MAX_PARTITIONS,
    PRODUCTION_PARTITIONS,
    AwsStream,
    KubernetesStream,
    StreamSettings,
    read_stream,
)
from components.validation import (
    HIDDEN,
    K8S_LABEL_KEY,
    K8S_LABEL_VALUE,
    TARGETS,
    ConfigError,
    ConfigReader,
    Problem,
    Target,
    parse_bool,
    read_string_map,
)

# Each capability's settings live beside it (components/<capability>/settings.py); this module
# assembles them into PlatformConfig and keeps the names importable from here.
__all__ = [
    "DESTINATION_TYPES",
    "KNOWN_KEYS",
    "MAX_PARTITIONS",
    "PRODUCTION_PARTITIONS",
    "AirflowSettings",
    "ArchiveSettings",
    "AwsAirflowSettings",
    "AwsSettings",
    "AwsStream",
    "ChartSource",
    "ConfigError",
    "Destination",
    "IngestSettings",
    "KubernetesAirflowSettings",
    "KubernetesSettings",
    "KubernetesStream",
    "PlatformConfig",
    "PostgresSettings",
    "PrivateNetwork",
    "Source",
    "StreamSettings",
    "WarehouseSettings",
    "load_config",
    "read_stack_config",
]


@dataclass(frozen=True)
class ChartSource:
    """Where a Helm chart comes from. Default: the pinned upstream repository in `charts/`."""

    repository: str | None = None
    """A Helm repository URL (a private mirror), replacing the upstream one."""
    path: str | None = None
    """A local chart archive (.tgz) or directory, for air-gapped clusters."""


@dataclass(frozen=True)
class PlatformConfig:
    project: str
    stack: str
    target: Target
    postgres: PostgresSettings
    tags: dict[str, str]
    deletion_protection: bool = True
    """Default: true. Platform-wide: stateful resources (database, stream, volumes, buckets)
    refuse deletion. `liftoff:postgres.deletionProtection` overrides it for Postgres."""
    sources: tuple[Source, ...] = (Source("default"),)
    stream: StreamSettings = field(default_factory=StreamSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    charts: dict[str, ChartSource] = field(default_factory=dict)
    archive: ArchiveSettings | None = None
    """None: no archive (Kubernetes without an S3-compatible endpoint configured)."""
    destinations: tuple[Destination, ...] = ()
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    airflow: AirflowSettings = field(default_factory=AirflowSettings)
    kubernetes: KubernetesSettings | None = None
    aws: AwsSettings | None = None
    observability: ObservabilitySettings = field(default_factory=ObservabilitySettings)

    @property
    def prefix(self) -> str:
        """Stable name prefix for cloud resources that need a unique physical name."""
        return f"liftoff-{self.stack}"


# Kinesis' limit of enhanced fan-out consumers per stream (one per destination on AWS).
MAX_FAN_OUT_CONSUMERS = 20

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
CHARTS: tuple[str, ...] = ("nats", "airflow")


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
    reading = _Reading(
        project=project,
        stack=stack,
        target=_read_target(project, raw.get("target"), problems),
        raw=raw,
        values=values,
        problems=problems,
        secret_keys=secret_keys,
    )
    for read in READERS:
        reading.read.update(read(reading))
    if problems:
        raise ConfigError([_redact(p, project, secret_keys) for p in problems])
    assert reading.target is not None
    return PlatformConfig(project=project, stack=stack, target=reading.target, **reading.read)


@dataclass
class _Reading:
    """What each capability's reader gets: the stack, its target, the raw `liftoff:*` values,
    the problems found so far (every reader adds to them), and the settings read before it."""

    project: str
    stack: str
    target: Target | None
    raw: dict[str, Any]
    values: Mapping[str, Any]
    problems: list[Problem]
    secret_keys: frozenset[str]
    read: dict[str, Any] = field(default_factory=dict)

    def key(self, name: str) -> str:
        return f"{self.project}:{name}"

    def reader(self, name: str) -> ConfigReader:
        return ConfigReader(self.key(name), self.raw.get(name), self.problems)

    def is_secret(self, name: str) -> bool:
        return self.key(name) in self.secret_keys

    def only_with(self, name: str, target: Target) -> None:
        if name in self.raw:
            self.problems.append(
                Problem(self.key(name), self.raw[name], f"only with target '{target}'")
            )


def _networks(r: _Reading) -> dict[str, Any]:
    kubernetes_reader, aws_reader = r.reader("kubernetes"), r.reader("aws")
    kubernetes = aws = None
    if r.target == "kubernetes":
        kubernetes = read_kubernetes(kubernetes_reader, r.stack)
        r.only_with("aws", "aws")
    elif r.target == "aws":
        aws = read_aws(aws_reader, r.values.get("aws:region"), r.problems)
        r.only_with("kubernetes", "kubernetes")
    return {"kubernetes": kubernetes, "aws": aws}


def _destinations(r: _Reading) -> dict[str, Any]:
    destinations = read_destinations(
        r.key("destinations"),
        r.raw.get("destinations"),
        r.problems,
        is_secret=r.is_secret("destinations"),
        sources=r.read["sources"],
        target=r.target,
    )
    if r.target == "aws" and len(destinations) > MAX_FAN_OUT_CONSUMERS:
        r.problems.append(
            Problem(
                r.key("destinations"),
                [d.name for d in destinations],
                f"at most {MAX_FAN_OUT_CONSUMERS} on AWS: each destination reads the stream "
                "through its own enhanced fan-out consumer, and Kinesis registers at most "
                f"{MAX_FAN_OUT_CONSUMERS} per stream",
            )
        )
    return {"destinations": destinations}


def _charts(r: _Reading) -> dict[str, Any]:
    if r.target == "kubernetes":
        return {"charts": _read_charts(r.reader("charts"))}
    r.only_with("charts", "kubernetes")
    return {"charts": {}}


READERS: tuple[Callable[[_Reading], dict[str, Any]], ...] = (
    _networks,
    lambda r: {
        "deletion_protection": _read_deletion_protection(
            r.key("deletionProtection"), r.raw.get("deletionProtection"), r.problems
        )
    },
    lambda r: {
        "postgres": read_postgres(r.reader("postgres"), r.target, r.read["deletion_protection"])
    },
    lambda r: {"tags": _read_tags(r.key("tags"), r.raw.get("tags"), r.target, r.problems)},
    lambda r: {"sources": read_sources(r.key("sources"), r.raw.get("sources"), r.problems)},
    lambda r: {"stream": read_stream(r.reader("stream"), r.target)},
    lambda r: {"ingest": read_ingest(r.reader("ingest"), r.target)},
    lambda r: {
        "archive": read_archive(
            r.reader("archive"),
            r.target,
            present="archive" in r.raw,
            is_secret=r.is_secret("archive"),
        )
    },
    _destinations,
    lambda r: {"warehouse": read_warehouse(r.reader("warehouse"))},
    lambda r: {
        "airflow": read_airflow(r.reader("airflow"), r.target, is_secret=r.is_secret("airflow"))
    },
    lambda r: {"observability": read_observability(r.reader("observability"), r.target)},
    _charts,
)
"""Each capability's reader, in the order its problems are reported; `load_config` runs them
all, whatever the earlier ones found, so one run reports every problem."""


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


def _read_deletion_protection(key: str, raw: Any, problems: list[Problem]) -> bool:
    if raw is None:
        return True
    value = parse_bool(raw)
    if value is None:
        problems.append(Problem(key, raw, "true or false"))
        return True
    return value


def _read_tags(
    key: str, raw: Any, target: Target | None, problems: list[Problem]
) -> dict[str, str]:
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

    return read_string_map(key, raw, problems, check)


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


def _read_charts(reader: ConfigReader) -> dict[str, ChartSource]:
    charts: dict[str, ChartSource] = {}
    for chart in CHARTS:
        # Read even when absent, so an unknown chart name is answered with every known one.
        entry = reader.object(chart)
        if not reader.has(chart):
            continue
        repository = entry.string(
            "repository",
            pattern=r"(https?|oci)://\S+",
            describe="a Helm repository URL (https://... or oci://...)",
        )
        path = entry.string("path", describe="a local chart archive or directory")
        if repository and path:
            entry.problem("path", path, "either repository or path, not both")
        entry.finish()
        charts[chart] = ChartSource(repository=repository, path=path)
    reader.finish()
    return charts


def _redact(problem: Problem, project: str, secret_keys: frozenset[str]) -> Problem:
    """Never echo a secret config value back in an error message."""
    for key in secret_keys:
        if problem.key == key or problem.key.startswith((f"{key}.", f"{key}[")):
            return Problem(problem.key, HIDDEN, problem.allowed)
    return problem
