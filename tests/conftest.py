"""Shared fixtures: program runs under Pulumi mocks, cached per stack file."""

from __future__ import annotations

import functools

# Imported before any test runs: hypothesis's pytest plugin otherwise imports it in the
# terminal summary, where CPython 3.11.7 may fail compiling it ("SystemError: AST constructor
# recursion depth mismatch", after a RecursionError was caught during the tests) and a run of
# one file that passed exits 1.
import hypothesis
import pytest
import yaml

from tests.harness import STACK_FILES, ProgramRun, run_program, stack_name_of

# No time limit per example: tests never assert on time (benchmarks do), and the shared 2-core
# machines made hypothesis's default 200 ms deadline fail examples that were correct.
hypothesis.settings.register_profile(
    "liftoff", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("liftoff")


@functools.cache
def _cached_run(path: str) -> ProgramRun:
    return run_program(path)


def stack_run(name: str) -> ProgramRun:
    """The program run for a stack file (`dev`, `aws`, ...), computed once per session."""
    for path in STACK_FILES:
        if stack_name_of(path) == name:
            return _cached_run(str(path))
    raise KeyError(name)


@pytest.fixture(params=[stack_name_of(p) for p in STACK_FILES])
def any_stack(request) -> ProgramRun:
    return stack_run(request.param)


AWS_STACKS = [
    stack_name_of(p)
    for p in STACK_FILES
    if (yaml.safe_load(p.read_text()).get("config") or {}).get("liftoff:target") == "aws"
]


@pytest.fixture(params=AWS_STACKS)
def aws_stack(request) -> ProgramRun:
    """The program run of every shipped AWS stack."""
    return stack_run(request.param)


def pytest_report_header(config) -> list[str]:
    from tests.servers import NATS_SERVER, POSTGRES_BIN, ServerFailed, nats_server_version

    postgres = f"PostgreSQL: {POSTGRES_BIN}"
    try:
        version = ".".join(map(str, nats_server_version()))
    except ServerFailed as error:  # the header reports it; the tests that need it fail
        return [f"nats-server: unusable ({error})", postgres]
    return [f"nats-server: {version} ({NATS_SERVER})", postgres]
