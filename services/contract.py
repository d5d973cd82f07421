"""How every runtime contract is written: the environment a process reads, as typed settings.

Each process the platform runs (``python -m services <command>``, each Lambda handler, the
Airflow DAG's reconcile pod) has a ``contract.py`` beside its code. It declares a frozen
dataclass whose fields mirror that process's environment exactly: one field per variable
(:func:`variable`: the name, spelled once, and its :class:`Kind`), ``None`` meaning "not set"
(the documented default applies where the value is used; defaults are named constants of the
contract module), and nested groups (:func:`group`) for what several processes share. Then:

- ``environment(settings)`` (:func:`environment` here) is the only code that writes those names:
  it emits exactly the fields that are set, sorted by name. The AWS, Kubernetes and local
  realizations all call it; when components build settings, values may be Pulumi inputs (the
  ``V`` type parameter), which text fields pass through untouched.
- ``parse(env)`` (:func:`read` here, plus the checks between fields) is the only code that reads
  them: each value is validated by its kind, with an error naming the variable. Nothing is read
  from files or secret stores here (paths stay paths): the process's own ``load`` step does that.

So ``parse(environment(s)) == s`` for every valid ``s``, and ``environment(parse(declared))``
gives back exactly what a realization declared, minus anything no process reads
(``tests/test_runtime_contract.py`` checks both for every workload of every shipped stack).

This module is a leaf: it imports nothing else of ``services``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

V = TypeVar("V")
"""The type of a value known only when the platform is deployed: ``str`` at run time and in
tests, a Pulumi ``Input[str]`` when components build settings."""
T = TypeVar("T")
S = TypeVar("S")

Env = Mapping[str, str]


class ConfigError(Exception):
    """A missing or invalid environment variable; the message names it."""


# --- kinds: how one variable's text becomes a value, and back --------------------------------


class Kind(Generic[T]):
    """How a variable's text is read (validated, with errors naming the variable) and written."""

    grammar = "text"
    """What the text looks like (``tests/test_runtime_contract.py`` generates examples by it)."""

    def read(self, name: str, raw: str) -> T:
        raise NotImplementedError

    def write(self, value: T) -> Any:
        return str(value)


class Text(Kind[str]):
    """A string, checked by ``check`` (which returns what is wrong, or None). Written as is: a
    Pulumi input stays one. ``secret``: errors never quote the value."""

    def __init__(
        self,
        grammar: str = "text",
        check: Callable[[str], str | None] | None = None,
        *,
        secret: bool = False,
    ) -> None:
        self.grammar = grammar
        self.check = check
        self.secret = secret

    def read(self, name: str, raw: str) -> str:
        problem = self.check(raw) if self.check else None
        if problem:
            shown = name if self.secret else f"{name}={raw!r}"
            raise ConfigError(f"{shown} {problem}")
        return raw

    def write(self, value: str) -> Any:
        return value


class Integer(Kind[int]):
    grammar = "integer"

    def __init__(self, minimum: int, maximum: int) -> None:
        self.minimum, self.maximum = minimum, maximum

    def read(self, name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer") from None
        if not self.minimum <= value <= self.maximum:
            raise ConfigError(f"{name}={value} must be between {self.minimum} and {self.maximum}")
        return value


class Number(Kind[float]):
    """A number of at least ``minimum``; written back as it was read (``5`` stays ``5``, ``0.5``
    stays ``0.5``: integral text is read as an ``int``)."""

    grammar = "number"

    def __init__(self, minimum: float) -> None:
        self.minimum = minimum

    def read(self, name: str, raw: str) -> float:
        try:
            value: float = int(raw) if re.fullmatch(r"[+-]?\d+", raw) else float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if not value >= self.minimum:
            raise ConfigError(f"{name}={value:g} must be at least {self.minimum:g}")
        return value


class Flag(Kind[bool]):
    grammar = "flag"

    def read(self, name: str, raw: str) -> bool:
        if raw not in ("true", "false"):
            raise ConfigError(f"{name}={raw!r} must be true or false")
        return raw == "true"

    def write(self, value: bool) -> str:
        return "true" if value else "false"


class Names(Kind[tuple[str, ...]]):
    """A comma-separated list (blank items ignored), each item checked by ``check``."""

    def __init__(self, grammar: str, check: Callable[[str], str | None]) -> None:
        self.grammar = grammar
        self.check = check

    def read(self, name: str, raw: str) -> tuple[str, ...]:
        items = tuple(item.strip() for item in raw.split(",") if item.strip())
        for item in items:
            problem = self.check(item)
            if problem:
                raise ConfigError(f"{name} item {item!r} {problem}")
        return items

    def write(self, value: tuple[str, ...]) -> str:
        return ",".join(value)


class Json(Kind[T]):
    """A JSON document: ``decode`` turns the parsed JSON into the value (a ValueError says what
    is wrong, without quoting secrets), ``encode`` writes the value's one canonical text."""

    grammar = "json"

    def __init__(
        self, grammar: str, decode: Callable[[Any], T], encode: Callable[[T], str]
    ) -> None:
        self.grammar, self.decode, self.encode = grammar, decode, encode

    def read(self, name: str, raw: str) -> T:
        try:
            document = json.loads(raw)
        except ValueError as error:
            raise ConfigError(f"{name} is not JSON: {error}") from None
        try:
            return self.decode(document)
        except ValueError as error:
            raise ConfigError(f"{name} {error}") from None

    def write(self, value: T) -> str:
        return self.encode(value)


# --- declaring settings --------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    name: str
    kind: Kind[Any]


def variable(name: str, kind: Kind[Any] | None = None) -> Any:
    """A settings field read from (and written to) the environment variable ``name``."""
    return field(default=None, metadata={"variable": Variable(name, kind or Text())})


def group(cls: type[Any]) -> Any:
    """A settings field holding a group of variables shared by several contracts."""
    return field(default_factory=cls, metadata={"group": cls})


def environment(settings: object) -> dict[str, Any]:
    """The variables ``settings`` sets (its groups' too), sorted by name."""
    out: dict[str, Any] = {}
    for item in fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, item.name)
        declared = item.metadata.get("variable")
        if declared is not None:
            if value is not None:
                out[declared.name] = declared.kind.write(value)
        elif "group" in item.metadata:
            out.update(environment(value))
    return dict(sorted(out.items()))


def read(cls: type[S], env: Env) -> S:
    """``cls`` from ``env``: every variable it (and its groups) declares, validated; blank or
    unset → None."""
    values: dict[str, Any] = {}
    for item in fields(cls):  # type: ignore[arg-type]
        declared = item.metadata.get("variable")
        if declared is not None:
            raw = env.get(declared.name, "").strip()
            values[item.name] = declared.kind.read(declared.name, raw) if raw else None
        elif "group" in item.metadata:
            values[item.name] = read(item.metadata["group"], env)
    return cls(**values)


def variables(cls: type[Any]) -> Iterator[Variable]:
    """Every variable ``cls`` declares, its groups' included."""
    for item in fields(cls):
        if "variable" in item.metadata:
            yield item.metadata["variable"]
        elif "group" in item.metadata:
            yield from variables(item.metadata["group"])


def name_of(cls: type[Any], field_name: str) -> str:
    """The variable a settings field is read from, for runtime code whose errors name it."""
    for item in fields(cls):
        if item.name == field_name and "variable" in item.metadata:
            return str(item.metadata["variable"].name)
    raise KeyError(f"{cls.__name__} has no variable field {field_name!r}")


def or_default(value: T | None, default: T) -> T:
    """A setting's value, or its default when it is not set (0 and "" are values)."""
    return default if value is None else value


def required(name: str, value: T | None, example: str = "") -> T:
    """``value``, or the error that ``name`` is not set."""
    if value is None:
        raise ConfigError(f"{name} is not set" + (f" ({example})" if example else ""))
    return value


# --- what many processes read ----------------------------------------------------------------

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_LOG_LEVEL = "INFO"
_LOG_LEVEL = "LIFTOFF_LOG_LEVEL"


def _check_log_level(raw: str) -> str | None:
    return None if raw.upper() in LOG_LEVELS else f"must be one of {', '.join(LOG_LEVELS)}"


def log_level_variable() -> Any:
    """``LIFTOFF_LOG_LEVEL`` (any case); default :data:`DEFAULT_LOG_LEVEL`."""
    return variable(_LOG_LEVEL, Text("log-level", _check_log_level))


def level_of(value: str | None) -> str:
    """The logging level a ``log_level`` setting means."""
    return (value or DEFAULT_LOG_LEVEL).upper()


def check_pattern(pattern: str, describe: str) -> Callable[[str], str | None]:
    """A ``check`` refusing text that does not fully match ``pattern``."""
    compiled = re.compile(pattern)
    return lambda raw: None if compiled.fullmatch(raw) else describe


def secret_arn() -> Text:
    """The kind of a variable naming a Secrets Manager secret by ARN (read at cold start)."""
    return Text(
        "secret-arn",
        check_pattern(r"arn:aws[a-z-]*:secretsmanager:\S+", "is not a Secrets Manager ARN"),
    )


@dataclass(frozen=True)
class Process(Generic[S]):
    """One process's contract: its settings, the builder and the parser."""

    settings: type[S]
    parse: Callable[[Env], S]
    environment: Callable[[S], Mapping[str, Any]]


def process(settings: type[S], check: Callable[[S], object] | None = None) -> Process[S]:
    """A :class:`Process` of ``settings``: parsed by :func:`read`, then ``check`` (what the
    process cannot start without, across variables; its errors name them); built by
    :func:`environment`."""

    def parse(env: Env) -> S:
        found = read(settings, env)
        if check is not None:
            check(found)
        return found

    return Process(settings, parse, environment)
