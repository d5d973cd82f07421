"""Each capability's realizations satisfy the protocol its clients are typed against.

Checked structurally, without declaring anything: every method of the protocol exists on both
realizations with the protocol's parameters (same names, kinds and defaults, in order; extra
parameters only with defaults), and every data member is assigned in the realization's
constructor.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing

import pytest

from components.archive import Archive
from components.archive.aws import ArchiveBucket
from components.archive.kubernetes import ExternalArchive
from components.postgres import PostgresService
from components.postgres.aws import RdsPostgres
from components.postgres.kubernetes import KubernetesPostgres
from components.stream import Stream
from components.stream.aws import KinesisStream
from components.stream.kubernetes import NatsJetStream

REALIZATIONS = [
    (Archive, ArchiveBucket),
    (Archive, ExternalArchive),
    (PostgresService, RdsPostgres),
    (PostgresService, KubernetesPostgres),
    (Stream, KinesisStream),
    (Stream, NatsJetStream),
]


def protocol_methods(protocol: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(protocol).items()
        if callable(member) and not name.startswith("_")
    }


def protocol_attributes(protocol: type) -> set[str]:
    return set(typing.get_type_hints(protocol)) - set(protocol_methods(protocol))


def assigned_in_constructor(cls: type) -> set[str]:
    """`self.<name>` targets anywhere in the class's methods (constructor steps included)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }


def signature_problems(name: str, expected: inspect.Signature, actual: inspect.Signature):
    wanted = list(expected.parameters.values())
    given = list(actual.parameters.values())
    problems = []
    for index, parameter in enumerate(wanted):
        if index >= len(given):
            problems.append(f"{name}: missing parameter {parameter.name}")
            continue
        other = given[index]
        if (other.name, other.kind, other.default) != (
            parameter.name,
            parameter.kind,
            parameter.default,
        ):
            problems.append(f"{name}: parameter {other} where the protocol has {parameter}")
    for extra in given[len(wanted) :]:
        if extra.default is inspect.Parameter.empty and extra.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            problems.append(f"{name}: extra parameter {extra} without a default")
    return problems


@pytest.mark.parametrize(
    ("protocol", "realization"),
    REALIZATIONS,
    ids=[f"{p.__name__}-{r.__name__}" for p, r in REALIZATIONS],
)
def test_realization_satisfies_its_protocol(protocol, realization):
    problems = []
    for name, expected in protocol_methods(protocol).items():
        member = getattr(realization, name, None)
        if not callable(member):
            problems.append(f"{name}: not a method of {realization.__name__}")
            continue
        problems += signature_problems(name, expected, inspect.signature(member))
    missing = protocol_attributes(protocol) - assigned_in_constructor(realization)
    problems += [f"{name}: never assigned" for name in sorted(missing)]
    assert not problems, f"{realization.__name__} vs {protocol.__name__}: {problems}"


def test_a_missing_member_is_found():
    class Partial:
        def __init__(self):
            self.connection = None

        def grant_write(self, peer, extra):
            return None

    methods = protocol_methods(Stream)
    assert not callable(getattr(Partial, "grant_read", None))
    assert signature_problems(
        "grant_write", methods["grant_write"], inspect.signature(Partial.grant_write)
    )
    assert protocol_attributes(Stream) <= assigned_in_constructor(Partial)
    assert "settings" not in assigned_in_constructor(Partial)
