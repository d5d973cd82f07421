"""Each capability's realizations satisfy the protocol its clients are typed against.

Checked structurally, without declaring anything: every method of the protocol (and of the
protocols it extends) exists on the realization with the protocol's parameters (same names,
kinds and defaults, in order; extra parameters only with defaults), and every data member is
assigned in the realization's constructor. mypy checks the same where an Args field names the
protocol; this test also covers a realization nobody passes yet, and every protocol a
capability's contract module declares must be listed here.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path
from typing import Protocol

import pytest

from components.airflow import Airflow
from components.airflow.aws import MwaaAirflow
from components.airflow.kubernetes import KubernetesAirflow
from components.archive import Archive, KubernetesArchiveContract
from components.archive.aws import ArchiveBucket
from components.archive.kubernetes import ExternalArchive
from components.consumers import AwsConsumersContract, KubernetesConsumersContract
from components.consumers.aws import AwsConsumers
from components.consumers.kubernetes import KubernetesConsumers
from components.ingest import AwsIngestContract, KubernetesIngestContract
from components.ingest.aws import LambdaCollector
from components.ingest.kubernetes import KubernetesCollector
from components.network import AwsNetworkContract, KubernetesNetworkContract
from components.network.aws import AwsNetwork
from components.network.kubernetes import KubernetesNetwork
from components.postgres import AwsPostgresContract, KubernetesPostgresContract
from components.postgres.aws import RdsPostgres
from components.postgres.kubernetes import KubernetesPostgres
from components.stream import AwsStreamContract, KubernetesStreamContract, Stream
from components.stream.aws import KinesisStream
from components.stream.kubernetes import NatsJetStream
from tests import syntax

# Each realization against its target's contract, which extends the target-neutral one.
REALIZATIONS = [
    (AwsNetworkContract, AwsNetwork),
    (KubernetesNetworkContract, KubernetesNetwork),
    (AwsPostgresContract, RdsPostgres),
    (KubernetesPostgresContract, KubernetesPostgres),
    (AwsStreamContract, KinesisStream),
    (KubernetesStreamContract, NatsJetStream),
    (AwsIngestContract, LambdaCollector),
    (KubernetesIngestContract, KubernetesCollector),
    (Archive, ArchiveBucket),
    (KubernetesArchiveContract, ExternalArchive),
    (AwsConsumersContract, AwsConsumers),
    (KubernetesConsumersContract, KubernetesConsumers),
    (Airflow, MwaaAirflow),
    (Airflow, KubernetesAirflow),
]
CAPABILITIES = (
    "network", "postgres", "stream", "ingest", "archive", "consumers", "airflow", "observability"
)  # fmt: skip


def protocol_classes(protocol: type) -> list[type]:
    """`protocol` and the protocols it extends."""
    return [
        cls
        for cls in protocol.__mro__
        if cls is not Protocol and getattr(cls, "_is_protocol", False)
    ]


def protocol_methods(protocol: type) -> dict[str, inspect.Signature]:
    methods: dict[str, inspect.Signature] = {}
    for cls in reversed(protocol_classes(protocol)):
        methods.update(
            (name, inspect.signature(member))
            for name, member in vars(cls).items()
            if callable(member) and not name.startswith("_")
        )
    return methods


def protocol_attributes(protocol: type) -> set[str]:
    """Data members (annotated, or read-only properties), by name: the annotations are not
    evaluated (they name Pulumi types)."""
    names: set[str] = set()
    for cls in protocol_classes(protocol):
        names.update(vars(cls).get("__annotations__", {}))
        names.update(name for name, member in vars(cls).items() if isinstance(member, property))
    return names - set(protocol_methods(protocol))


def assigned_in_constructor(cls: type) -> set[str]:
    """`self.<name>` targets anywhere in the class's methods (constructor steps included)."""
    # The module parsed by tests.syntax, the class found in it: inspect.getsource(cls) parses
    # the module with ast itself, outside the fallback for CPython 3.11.7's AST bug.
    path = inspect.getsourcefile(cls)
    assert path is not None
    module = syntax.parse(Path(path).read_text(), filename=path)
    (tree,) = [
        node
        for node in ast.walk(module)
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__
    ]
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


def test_every_contract_protocol_has_its_realizations_checked():
    checked = {protocol for protocol, _ in REALIZATIONS}
    checked |= {base for protocol in checked for base in protocol_classes(protocol)}
    declared = set()
    for capability in CAPABILITIES:
        module = importlib.import_module(f"components.{capability}")
        declared |= {
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and value.__module__ == module.__name__
            and getattr(value, "_is_protocol", False)
        }
    assert declared - checked == set()
