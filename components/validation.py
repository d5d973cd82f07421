"""A small reader for nested stack configuration that collects every problem.

Pulumi hands object-valued config to the program as JSON. `ConfigReader` walks one object,
converting and checking each field, and records a `Problem` (key path, value received, what
is allowed) instead of raising, so the user sees every mistake in one run. Fields the reader
was never asked about are reported as unknown when `finish()` is called.

Every capability's reader has one shape: `read_<capability>(stack: StackReading, ...)` returns
its settings (the settings a reader depends on, read before it, come as keywords).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

_MISSING = object()

Target = Literal["aws", "kubernetes"]
TARGETS: tuple[str, ...] = ("aws", "kubernetes")
DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_LABEL_DESCRIBE = "a DNS label: lowercase letters, digits and '-', at most 63 characters"
_K8S_LABEL_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
K8S_LABEL_KEY = rf"({DNS_LABEL}(\.{DNS_LABEL})*/)?{_K8S_LABEL_NAME}"
K8S_LABEL_VALUE = rf"({_K8S_LABEL_NAME})?"
CPU_QUANTITY = r"\d+(\.\d+)?m?"
MEMORY_QUANTITY = r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?"


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        received = "nothing" if self.value is _MISSING else repr(self.value)
        return f"{self.key}: got {received}; allowed: {self.allowed}"


class _Hidden:
    def __repr__(self) -> str:
        return "<secret value hidden>"


HIDDEN = _Hidden()
"""Stands in for a secret value in a `Problem`: errors never echo secrets back."""


def set_secret_hint(key: str) -> str:
    """What to say about a credential given in plaintext."""
    return (
        f"a secret: set it with `pulumi config set --secret --path '{key}' <value>` "
        "(plaintext credentials end up in the repository and in previews)"
    )


def parse_bool(raw: Any) -> bool | None:
    """A config boolean (YAML `true`, or the string Pulumi passes); None if it is not one."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return None


class ConfigError(ValueError):
    """Raised with every problem found in the stack configuration, before any resource exists."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid stack configuration ({len(self.problems)} problem(s)):\n{lines}")


class ConfigReader:
    """Reads typed fields out of one config object (a dict) at `path`."""

    def __init__(self, path: str, data: Any, problems: list[Problem]):
        self.path = path
        self.problems = problems
        self._seen: set[str] = set()
        if data is None:
            data = {}
        if not isinstance(data, dict):
            problems.append(Problem(path, data, "an object (mapping of keys to values)"))
            data = {}
        self.data: dict[str, Any] = data

    def key(self, name: str) -> str:
        return f"{self.path}.{name}"

    def problem(self, name: str, value: Any, allowed: str) -> None:
        self.problems.append(Problem(self.key(name), value, allowed))

    def missing(self, name: str, allowed: str) -> None:
        """Report `name` as required but absent (`got nothing`)."""
        self.problems.append(Problem(self.key(name), _MISSING, allowed))

    def has(self, name: str) -> bool:
        return name in self.data

    def raw(self, name: str) -> Any:
        """The value as given (None when absent), for shapes the typed readers do not cover."""
        value = self._raw(name)
        return None if value is _MISSING else value

    def _raw(self, name: str) -> Any:
        self._seen.add(name)
        return self.data.get(name, _MISSING)

    def string(
        self,
        name: str,
        default: str | None = None,
        *,
        required: bool = False,
        choices: Iterable[str] | None = None,
        pattern: str | None = None,
        describe: str | None = None,
        max_length: int | None = None,
    ) -> str | None:
        raw = self._raw(name)
        options = tuple(choices) if choices is not None else None
        allowed = describe or (
            "one of " + ", ".join(repr(c) for c in options) if options else "a string"
        )
        if raw is _MISSING or raw is None:
            if required:
                self.problems.append(Problem(self.key(name), _MISSING, f"required; {allowed}"))
            return default
        if not isinstance(raw, str):
            self.problem(name, raw, allowed)
            return default
        if options is not None and raw not in options:
            self.problem(name, raw, allowed)
            return default
        if pattern is not None and not re.fullmatch(pattern, raw):
            self.problem(name, raw, allowed)
            return default
        if max_length is not None and len(raw) > max_length:
            self.problem(name, raw, f"{allowed}, at most {max_length} characters")
            return default
        return raw

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        raw = self._raw(name)
        if raw is _MISSING or raw is None:
            return default
        allowed = f"a whole number from {minimum} to {maximum}"
        # bool is an int subclass in Python; `true` is not a number of gigabytes.
        if isinstance(raw, bool) or not isinstance(raw, int):
            if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw):
                raw = int(raw)
            else:
                self.problem(name, raw, allowed)
                return default
        if not minimum <= raw <= maximum:
            self.problem(name, raw, allowed)
            return default
        return raw

    def optional_integer(self, name: str, *, minimum: int, maximum: int) -> int | None:
        """A whole number, or None when absent."""
        raw = self.data.get(name)
        if raw is None:
            self._seen.add(name)
            return None
        return self.integer(name, minimum, minimum=minimum, maximum=maximum)

    def boolean(self, name: str, default: bool) -> bool:
        raw = self._raw(name)
        if raw is _MISSING or raw is None:
            return default
        value = parse_bool(raw)
        if value is None:
            self.problem(name, raw, "true or false")
            return default
        return value

    def string_list(self, name: str, *, item_pattern: str, describe: str) -> tuple[str, ...] | None:
        raw = self._raw(name)
        if raw is _MISSING or raw is None:
            return None
        if not isinstance(raw, list):
            self.problem(name, raw, f"a list of {describe}")
            return None
        valid = True
        for index, item in enumerate(raw):
            if not isinstance(item, str) or not re.fullmatch(item_pattern, item):
                self.problems.append(Problem(f"{self.key(name)}[{index}]", item, describe))
                valid = False
        # A list with a bad item is not used at all, so no follow-on problem is reported on it.
        return tuple(raw) if valid else None

    def string_map(
        self, name: str, check: Callable[[str, str], str | None] | None = None
    ) -> dict[str, str]:
        """A flat mapping of strings; `check(key, value)` returns what is allowed on failure."""
        raw = self._raw(name)
        if raw is _MISSING or raw is None:
            return {}
        return read_string_map(self.key(name), raw, self.problems, check)

    def object(self, name: str) -> ConfigReader:
        raw = self._raw(name)
        return ConfigReader(self.key(name), None if raw is _MISSING else raw, self.problems)

    def reject(self, name: str, reason: str) -> None:
        """Report a field that is present but does not apply here."""
        if name in self.data:
            self._seen.add(name)
            self.problem(name, self.data[name], reason)

    def finish(self) -> None:
        for name in sorted(set(self.data) - self._seen):
            known = ", ".join(sorted(self._seen)) or "none"
            self.problem(name, self.data[name], f"no such key here; known keys: {known}")


@dataclass
class StackReading:
    """One stack's configuration as every capability's reader takes it: the stack, its target
    (None when invalid: reported once, and each reader still checks what it can), the decoded
    `liftoff:*` values, every config value (for keys of other namespaces, `aws:region`), the
    secret keys, and the problems found so far, which every reader adds to."""

    project: str
    stack: str
    target: Target | None
    raw: dict[str, Any]
    values: Mapping[str, Any]
    problems: list[Problem]
    secret_keys: frozenset[str]

    def key(self, name: str) -> str:
        return f"{self.project}:{name}"

    def reader(self, name: str) -> ConfigReader:
        """A reader of the object `liftoff:<name>` (a problem now if it is not an object)."""
        return ConfigReader(self.key(name), self.raw.get(name), self.problems)

    def is_secret(self, name: str) -> bool:
        return self.key(name) in self.secret_keys

    def only_with(self, name: str, target: Target) -> None:
        """Refuse `liftoff:<name>` when present: it belongs to the other target."""
        if name in self.raw:
            self.problems.append(
                Problem(self.key(name), self.raw[name], f"only with target '{target}'")
            )


def config_keys(settings: type) -> tuple[str, ...]:
    """The config keys of a settings dataclass: the camelCase of its fields, in order."""
    return tuple(
        re.sub(r"_([a-z])", lambda m: m.group(1).upper(), f.name)
        for f in dataclasses.fields(settings)
    )


def reject_other_target(reader: ConfigReader, other: type, own: type, target: str) -> None:
    """Refuse, as "only with target `target`", every key of the other target's settings
    class `other` that this target's class `own` does not have too: which keys belong where
    is the two classes' fields, not a hand-kept list."""
    shared = set(config_keys(own))
    for name in config_keys(other):
        if name not in shared:
            reader.reject(name, f"only with target {target!r}")


def read_string_map(
    key: str,
    raw: Any,
    problems: list[Problem],
    check: Callable[[str, str], str | None] | None = None,
) -> dict[str, str]:
    if not isinstance(raw, dict):
        problems.append(Problem(key, raw, "an object mapping names to string values"))
        return {}
    result: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(value, str):
            problems.append(Problem(f"{key}.{name}", value, "a string value"))
            continue
        failure = check(name, value) if check else None
        if failure:
            problems.append(Problem(f"{key}.{name}", value, failure))
            continue
        result[name] = value
    # Sorted so that declared inputs never depend on the order keys were written in.
    return dict(sorted(result.items()))


def port_list(
    key: str, raw: Any, problems: list[Problem], default: tuple[int, ...]
) -> tuple[int, ...]:
    if raw is None:
        return default
    allowed = "a list of port numbers from 1 to 65535"
    if (
        not isinstance(raw, list)
        or not raw
        or not all(isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in raw)
    ):
        problems.append(Problem(key, raw, allowed))
        return default
    return tuple(sorted(set(raw)))


def cidr(key: str, raw: Any, problems: list[Problem], *, private: bool) -> str | None:
    try:
        network = ipaddress.ip_network(raw, strict=True) if isinstance(raw, str) else None
    except ValueError:
        network = None
    if network is None:
        problems.append(Problem(key, raw, "a CIDR such as 10.20.0.0/16 (host bits zero)"))
        return None
    if private and not network.is_private:
        problems.append(
            Problem(key, raw, "a private range (public addresses are reachable on 443 already)")
        )
        return None
    return str(network)


@dataclass(frozen=True)
class ComputeResources:
    """Kubernetes requests/limits for one container."""

    requests_cpu: str
    requests_memory: str
    limits_cpu: str
    limits_memory: str

    def to_kubernetes(self) -> dict[str, dict[str, str]]:
        return {
            "requests": {"cpu": self.requests_cpu, "memory": self.requests_memory},
            "limits": {"cpu": self.limits_cpu, "memory": self.limits_memory},
        }


def read_resources(reader: ConfigReader, defaults: ComputeResources) -> ComputeResources:
    requests = reader.object("requests")
    limits = reader.object("limits")
    cpu = "a CPU quantity such as 250m or 2"
    memory = "a memory quantity such as 512Mi or 2Gi"
    result = ComputeResources(
        requests_cpu=requests.string(
            "cpu", defaults.requests_cpu, pattern=CPU_QUANTITY, describe=cpu
        )
        or defaults.requests_cpu,
        requests_memory=requests.string(
            "memory", defaults.requests_memory, pattern=MEMORY_QUANTITY, describe=memory
        )
        or defaults.requests_memory,
        limits_cpu=limits.string("cpu", defaults.limits_cpu, pattern=CPU_QUANTITY, describe=cpu)
        or defaults.limits_cpu,
        limits_memory=limits.string(
            "memory", defaults.limits_memory, pattern=MEMORY_QUANTITY, describe=memory
        )
        or defaults.limits_memory,
    )
    for part in (requests, limits, reader):
        part.finish()
    return result
