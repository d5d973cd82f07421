"""Every AWS API a process inside a liftoff-created VPC calls has a VPC endpoint.

The VPC has no NAT and no internet gateway, so a call to an AWS API without an endpoint
hangs until it times out. The APIs are derived from the code each process runs: every
`boto3.client("<service>")` in the modules its entry point imports (transitively, within
`services/`), plus, for MWAA, AWS's documented list for environments without internet access.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from components.network.aws import MWAA_ENDPOINTS
from tests import syntax
from tests.conftest import AWS_STACKS, stack_run
from tests.harness import ROOT

FUNCTION = "aws:lambda/function:Function"
ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"

# Each Lambda handler -> the modules of services/ its work starts from (services/aws_lambda.py
# only dispatches to them).
HANDLER_ENTRY_MODULES = {
    "services.aws_lambda.collector_handler": ("services.collector.aws_lambda",),
    "services.aws_lambda.archiver_handler": (
        "services.consumers.archiver.sink",
        "services.consumers.runner.kinesis",
    ),
    "services.aws_lambda.loader_handler": (
        "services.consumers.loader.sink",
        "services.consumers.runner.kinesis",
    ),
    "services.aws_lambda.broadcaster_handler": (
        "services.consumers.broadcaster.sink",
        "services.consumers.runner.kinesis",
    ),
    "services.aws_lambda.reconcile_handler": (
        "services.consumers.reconcile.repair",
        "services.warehouse.command",  # a `rebuild` invocation
        "services.regulations.command",  # a `regulation` invocation
        "services.consumers.replay.request",  # a `replay` invocation
        "services.stream.side_channels",  # its dead-letter queues (imported when scanned)
    ),
    "services.aws_lambda.ensure_database_handler": ("services.postgres.database",),
}
# AWS's list of endpoints an MWAA environment needs without internet access
# (docs.aws.amazon.com/mwaa/latest/userguide/networking-about.html, "private routing").
MWAA_OWN_APIS = {
    "airflow.api", "airflow.env", "airflow.ops", "ecr.api", "ecr.dkr", "kms", "logs",
    "monitoring", "s3", "sqs",
}  # fmt: skip


def module_path(module: str) -> Path:
    base = ROOT / Path(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _parse(path: Path) -> ast.Module:
    return syntax.parse(path.read_text(), filename=str(path))


def clients_in(path: Path) -> set[str]:
    """Services of every `boto3.client("<service>", ...)` call in one file."""
    found = set()
    for node in ast.walk(_parse(path)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "client"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "boto3"
        ):
            first = node.args[0] if node.args else None
            assert isinstance(first, ast.Constant), f"{path}: boto3.client with a computed name"
            found.add(first.value)
    return found


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """Statements run on import (module body, also inside top-level if/try)."""
    nodes: list[ast.stmt] = []
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If | ast.Try):
            todo += [*node.body, *node.orelse, *getattr(node, "finalbody", [])]
    return nodes


def imported_services_modules(module: str) -> set[str]:
    """`services.*` modules `module` imports when it is imported. (Imports inside functions
    are lazy on purpose, e.g. a contract parsing a Kinesis URL without a client; the
    entry modules above name the code each handler really runs.)"""
    found = set()
    for node in _top_level(_parse(module_path(module))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("services"):
            found.add(node.module)
            for alias in node.names:
                if module_path(f"{node.module}.{alias.name}").exists():
                    found.add(f"{node.module}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("services")}
    return found


@functools.cache
def apis_of_handler(handler: str) -> frozenset[str]:
    seen: set[str] = set()
    todo = list(HANDLER_ENTRY_MODULES[handler])
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo += imported_services_modules(module)
    return frozenset(set().union(*(clients_in(module_path(m)) for m in seen)))


def test_the_derivation_sees_the_calls_it_must_see():
    """The scan is not vacuous: it finds the clients known to be in the code."""
    assert apis_of_handler("services.aws_lambda.loader_handler") >= {"secretsmanager", "sqs"}
    # A regulation: the list's object, its key's secret, the queues it scans.
    ops = {"s3", "secretsmanager", "sqs"}
    assert apis_of_handler("services.aws_lambda.reconcile_handler") >= ops
    assert apis_of_handler("services.aws_lambda.ensure_database_handler") == {"secretsmanager"}
    # The DAGs' one AWS call, in the module they share.
    assert clients_in(ROOT / "dags" / "liftoff_operations.py") == {"lambda"}


def test_every_file_that_calls_aws_is_reached_from_some_audited_entry_point():
    """A new boto3 client in services/ must belong to an audited process."""
    reached: set[Path] = set()
    for handler in HANDLER_ENTRY_MODULES:
        seen: set[str] = set()
        todo = list(HANDLER_ENTRY_MODULES[handler])
        while todo:
            module = todo.pop()
            if module not in seen:
                seen.add(module)
                todo += imported_services_modules(module)
        reached |= {module_path(m) for m in seen}
    # Runs only on Kubernetes (backup-upload CronJob), never as a Lambda.
    kubernetes_only = {ROOT / "services" / "backup.py"}
    for path in sorted((ROOT / "services").rglob("*.py")):
        if clients_in(path) and path not in kubernetes_only:
            assert path in reached, f"{path.relative_to(ROOT)} calls AWS from no audited handler"


def _endpoint_services(run) -> set[str]:
    return {e.inputs["serviceName"].split(".", 3)[-1] for e in run.of_type(ENDPOINT)}


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_every_in_vpc_function_has_an_endpoint_for_each_api_it_calls(stack):
    run = stack_run(stack)
    endpoints = _endpoint_services(run)
    if not run.of_type("aws:ec2/vpc:Vpc"):
        # The customer's own VPC: reaching AWS is their network's job (documented).
        assert endpoints == set()
        return
    in_vpc = [f for f in run.of_type(FUNCTION) if f.inputs.get("vpcConfig")]
    assert in_vpc
    for function in run.of_type(FUNCTION):
        handler = function.inputs["handler"]
        assert handler in HANDLER_ENTRY_MODULES, f"unaudited handler {handler}"
    for function in in_vpc:
        missing = apis_of_handler(function.inputs["handler"]) - endpoints
        assert not missing, f"{function.name} calls {sorted(missing)} with no VPC endpoint"


@pytest.mark.parametrize("stack", AWS_STACKS)
def test_mwaa_has_an_endpoint_for_each_api_it_and_its_dags_call(stack):
    run = stack_run(stack)
    if not run.of_type("aws:mwaa/environment:Environment") or not run.of_type("aws:ec2/vpc:Vpc"):
        pytest.skip("no MWAA in a liftoff-created VPC on this stack")
    dag_apis = set().union(*(clients_in(p) for p in (ROOT / "dags").rglob("*.py")))
    needed = MWAA_OWN_APIS | dag_apis
    assert needed - _endpoint_services(run) == set()
    # The platform's constant is what the audit finds (s3 is the gateway endpoint).
    assert set(MWAA_ENDPOINTS) | {"s3"} == needed
