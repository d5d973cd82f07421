"""A small reader for nested stack configuration that collects every problem.

Pulumi hands object-valued config to the program as JSON. `ConfigReader` walks one object,
converting and checking each field, and records a `Problem` (key path, value received, what
is allowed) instead of raising, so the user sees every mistake in one run. Fields the reader
was never asked about are reported as unknown when `finish()` is called.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

_MISSING = object()


@dataclass(frozen=True)
class Problem:
    key: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        received = "nothing" if self.value is _MISSING else repr(self.value)
        return f"{self.key}: got {received}; allowed: {self.allowed}"


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
