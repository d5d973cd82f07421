"""The runtime contract: every process's environment is what its contract writes and reads.

Each process (`python -m services <command>`, each Lambda handler, the Airflow DAG's reconcile
pod) has a contract beside its code (`services/**/contract.py`): settings, `environment(settings)`
and `parse(env)`. Two round trips:

- per contract, for any valid settings (Hypothesis): `parse(environment(s)) == s` — a parser
  reading another variable than the builder writes fails here;
- per workload every shipped stack declares (each Kubernetes container, init containers and
  Jobs included; each Lambda function; the DAG's reconcile pod; each process liftoff local runs
  for the stack file): `environment(parse(declared)) == declared` — a variable given to a
  process that does not read it, a misspelt name (`LIFTOFF_*` or not), a value in another shape
  fail here, with every problem of every workload in one report.

Then each workload starts as far as it can without a network: files named by `*_FILE` are
resolved from the Secrets the pod mounts (a path no volume provides fails), Secrets Manager ARNs
against a moto server holding the stack's secrets, and the process's own `load` reads them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.aws_lambda import HANDLERS
from services.cli import COMMANDS
from services.collector import contract as collector
from services.consumers.archiver import contract as archiver
from services.consumers.broadcaster import contract as broadcaster
from services.consumers.loader import contract as loader
from services.consumers.reconcile import contract as reconcile
from services.consumers.replay import contract as replay
from services.contract import Process, variables
from services.operations import contract as operations
from services.postgres import contract as postgres
from services.regulations import contract as regulations
from services.stream import contract as stream
from services.warehouse import contract as rebuild
from tests import contract_strategies
from tests.conftest import stack_run
from tests.harness import STACK_FILES, ProgramRun, stack_name_of
from tests.runtime_workloads import (
    OURS_BY_CONTAINER,
    Workload,
    dag_workloads,
    kubernetes_workloads,
    lambda_workloads,
    loaded,
    local_workloads,
    problems,
)
from tests.servers import AWS_TEST_ENV, moto_endpoint, moto_server

STACKS = [stack_name_of(p) for p in STACK_FILES]
PROCESSES: list[Process[Any]] = list(
    {
        id(p): p
        for p in [
            *(c.contract for c in COMMANDS.values()),
            *(h.contract for h in HANDLERS.values()),
            *OURS_BY_CONTAINER.values(),
        ]
    }.values()
)


def declared_workloads(stack: str) -> list[Workload]:
    run = stack_run(stack)
    return [*kubernetes_workloads(run), *lambda_workloads(run), *dag_workloads(run)]


# --- one: the contracts themselves ---------------------------------------------------------

NATS = "nats://nats:4222/EVENTS"
ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:s"


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _set(obj: Any, path: str, value: Any) -> Any:
    head, _, rest = path.partition(".")
    return dataclasses.replace(
        obj, **{head: _set(getattr(obj, head), rest, value) if rest else value}
    )


def _need(obj: Any, path: str, default: Any) -> Any:
    return obj if _get(obj, path) is not None else _set(obj, path, default)


def _scheme(obj: Any, path: str, default: str) -> Any:
    url = _get(obj, path)
    ok = url is not None and url.partition("://")[0] == default.partition("://")[0]
    return obj if ok else _set(obj, path, default)


def _one_of(obj: Any, *paths: str) -> Any:
    """At most one of ``paths`` set (the first that is), and the first if none is."""
    chosen = next((p for p in paths if _get(obj, p) is not None), None)
    for path in paths:
        if path != chosen:
            obj = _set(obj, path, None)
    return obj if chosen else _set(obj, paths[0], ARN if "arn" in paths[0] else "/run/secret")


def _valid_ensure_stream(s: Any) -> Any:
    s = _scheme(s, "stream.url", NATS)
    retention = s.retention_hours or stream.DEFAULT_RETENTION_HOURS
    window = s.duplicate_window_seconds or stream.DEFAULT_DUPLICATE_WINDOW_SECONDS
    if window > retention * 3600:
        s = dataclasses.replace(s, retention_hours=None, duplicate_window_seconds=None)
    return s


def _suppression(s: Any) -> Any:
    """The suppression list's URL and key (inline or a file): both set, or neither."""
    if None not in (_get(s, "suppression.key"), _get(s, "suppression.key_file")):
        s = _set(s, "suppression.key_file", None)
    if _get(s, "suppression.key") is None and _get(s, "suppression.key_file") is None:
        s = _set(s, "suppression.key", "k" * 16)
    if _get(s, "suppression.url") is None:
        return _set(_set(s, "suppression.key", None), "suppression.key_file", None)
    return s


def _valid_regulation(s: Any) -> Any:
    s = _suppression(_need(s, "suppression.url", "nats://n:4222/suppressed"))
    s = _need(s, "warehouse.host", "db")
    return _need(s, "secrets_file", "/run/secrets") if s.destinations else s


def _valid_collector(s: Any) -> Any:
    s = _suppression(_need(s, "stream.url", NATS))
    s = _one_of(s, "sources.write_keys", "sources.write_keys_file")
    if (s.tls_cert_file is None) != (s.tls_key_file is None):
        s = dataclasses.replace(s, tls_cert_file=None, tls_key_file=None)
    return s


def _valid_collector_function(s: Any) -> Any:
    s = _suppression(_scheme(s, "stream.url", "kinesis://events"))
    if _get(s, "suppression.url") is None:
        s = _set(s, "suppression_key_secret_arn", None)
    s = _one_of(s, "write_keys_secret_arn", "sources.write_keys")
    return s if s.sources.write_keys is None else _set(s, "sources.write_keys_file", None)


def _valid_ops_function(s: Any) -> Any:
    s = _need(_need(s, "reconcile.archive.bucket", "b"), "reconcile.warehouse.host", "db")
    s = _suppression(s)
    return s if _get(s, "suppression.url") else _set(s, "suppression_key_secret_arn", None)


def _valid_replay(s: Any) -> Any:
    s = _suppression(_need(s, "archive.bucket", "b"))
    return s if _get(s, "suppression.url") else _set(s, "suppression_key_secret_arn", None)


def _valid_loader(s: Any) -> Any:
    s = _need(s, "warehouse.host", "db")
    return _scheme(s, "runtime.stream.url", NATS)


def _valid_broadcaster(s: Any, runtime: Callable[[Any], Any]) -> Any:
    document = broadcaster.DestinationDocument(name="d", type="mixpanel")
    s = _need(s, "broadcast.destination", document)
    return runtime(_one_of(s, "broadcast.secret_arn", "broadcast.secrets_file"))


def _valid_ensure_database(s: Any) -> Any:
    for path, default in (("admin.host", "db"), ("admin.user", "admin")):
        s = _need(s, path, default)
    s = _need(_need(s, "database", "client"), "role", "client")
    if s.admin.password is None:
        s = _need(s, "admin.password_file", "/run/admin")
    return s if s.password is not None else _need(s, "password_file", "/run/client")


def _dead_letters(s: Any) -> Any:
    return _need(s, "runtime.dead_letter_url", "sqs://dead-letters")


VALID: dict[type, Callable[[Any], Any]] = {
    stream.EnsureStreamSettings: _valid_ensure_stream,
    collector.CollectorSettings: _valid_collector,
    collector.CollectorFunctionSettings: _valid_collector_function,
    collector.QuarantineSettings: lambda s: _scheme(s, "stream.url", NATS),
    archiver.ArchiverSettings: lambda s: _scheme(
        _need(s, "archiving.archive.bucket", "b"), "runtime.stream.url", NATS
    ),
    archiver.ArchiverFunctionSettings: lambda s: _dead_letters(
        _need(s, "archiving.archive.bucket", "b")
    ),
    loader.LoaderSettings: _valid_loader,
    loader.LoaderFunctionSettings: lambda s: _dead_letters(_need(s, "warehouse.host", "db")),
    broadcaster.BroadcasterSettings: lambda s: _valid_broadcaster(
        s, lambda s: _scheme(s, "runtime.stream.url", NATS)
    ),
    broadcaster.BroadcasterFunctionSettings: lambda s: _valid_broadcaster(s, _dead_letters),
    reconcile.ReconcileSettings: lambda s: _need(
        _need(s, "archive.bucket", "b"), "warehouse.host", "db"
    ),
    operations.OpsFunctionSettings: _valid_ops_function,
    replay.ReplaySettings: _valid_replay,
    postgres.EnsureDatabaseSettings: _valid_ensure_database,
    postgres.EnsureDatabaseFunctionSettings: lambda s: _need(s, "admin_secret_arn", ARN),
    postgres.BackupSettings: lambda s: _need(s, "archive.bucket", "b"),
    postgres.PostgresAccess: lambda s: s,
    postgres.PostgresServerSettings: lambda s: s,
    regulations.RegulationSettings: _valid_regulation,
    rebuild.RebuildSettings: lambda s: _need(s, "warehouse.host", "db"),
}


def valid_settings(process: Process[Any]) -> st.SearchStrategy[Any]:
    return contract_strategies.settings(process.settings).map(VALID[process.settings])


def round_trip(process: Process[Any], value: Any) -> None:
    env = process.environment(value)
    assert all(isinstance(v, str) for v in env.values()), env
    assert process.parse(env) == value, env


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.settings.__name__)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_contract_reads_back_what_it_writes(process: Process[Any], data: Any) -> None:
    round_trip(process, data.draw(valid_settings(process)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_ops_function_replays_with_settings_the_replay_contract_accepts(data: Any) -> None:
    """A ``replay`` payload runs with :meth:`OpsFunctionSettings.replay`: settings the replay's
    own contract writes and reads back (its checks included), progress in the archive."""
    replaying = data.draw(valid_settings(operations.FUNCTION)).replay()
    assert replaying.progress_in_archive is True
    round_trip(replay.PROCESS, replaying)


@pytest.mark.parametrize("process", PROCESSES, ids=lambda p: p.settings.__name__)
def test_every_variable_is_declared_once_per_process(process: Process[Any]) -> None:
    names = [v.name for v in variables(process.settings)]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert set(VALID) >= {process.settings}


# --- two: every workload of every stack ----------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
def test_every_declared_environment_is_what_its_contract_writes(stack: str) -> None:
    found = declared_workloads(stack)
    assert found, f"{stack} declares no workload"
    report = [problem for workload in found for problem in problems(workload)]
    assert not report, "\n".join(report)


@pytest.mark.parametrize("stack_file", STACK_FILES, ids=stack_name_of)
def test_every_local_process_environment_is_what_its_contract_writes(
    stack_file: Path, tmp_path: Path
) -> None:
    found = list(local_workloads(stack_file, tmp_path))
    assert {w.process for w in found} >= {stream.ENSURE_STREAM, archiver.PROCESS, collector.PROCESS}
    report = [problem for workload in found for problem in problems(workload)]
    assert not report, "\n".join(report)
    failures = []
    for workload in found:
        try:
            loaded(workload, tmp_path)
        except Exception as error:
            failures.append(f"{workload.where}: {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures)


@pytest.fixture(scope="module")
def secrets_manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield moto_endpoint(server)


def _seed_secrets(run: ProgramRun, endpoint: str, region: str) -> dict[str, str]:
    """Create the stack's Secrets Manager secrets in moto; returns declared ARN → moto ARN."""
    client = boto3.client(
        "secretsmanager",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    versions = {
        v.inputs["secretId"]: v.inputs.get("secretString", "")
        for v in run.of_type("aws:secretsmanager/secretVersion:SecretVersion")
    }
    arns = {}
    for secret in run.of_type("aws:secretsmanager/secret:Secret"):
        name = f"{run.stack}/{secret.name}"
        value = versions.get(f"{secret.name}-id")
        if value is None:
            continue
        try:
            created = client.create_secret(Name=name, SecretString=value)["ARN"]
        except client.exceptions.ResourceExistsException:
            created = client.describe_secret(SecretId=name)["ARN"]
        arns[secret.inputs["arn"]] = created
    return arns


@pytest.mark.parametrize("stack", STACKS)
def test_every_declared_workload_starts_with_its_files_and_secrets(
    stack: str, secrets_manager: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = stack_run(stack)
    region = run.config.get("aws:region", "us-east-1")
    arns = _seed_secrets(run, secrets_manager, region) if run.outputs["target"] == "aws" else {}
    # What the Lambda runtime provides: the region and credentials; here they point at moto.
    for name, value in {**AWS_TEST_ENV, "AWS_REGION": region, "AWS_DEFAULT_REGION": region}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", secrets_manager)
    failures = []
    for workload in declared_workloads(stack):
        try:
            loaded(workload, tmp_path, arns)
        except Exception as error:  # every workload's problem at once, not just the first
            failures.append(f"{workload.where}: {type(error).__name__}: {error}")
    assert not failures, "\n".join(failures)


def test_every_stack_runs_the_processes_it_should() -> None:
    contracts = {stack: {w.process for w in declared_workloads(stack)} for stack in STACKS}
    assert {
        collector.PROCESS,
        stream.ENSURE_STREAM,
        postgres.ENSURE_DATABASE,
        loader.PROCESS,
    } <= contracts["dev"]
    assert {collector.FUNCTION, archiver.FUNCTION, operations.FUNCTION} <= contracts["aws"]
    assert {archiver.PROCESS, postgres.BACKUP_UPLOAD, postgres.PG_DUMP, reconcile.PROCESS} <= (
        contracts["kubernetes-private-cloud"]
    )
    dag = [w for w in declared_workloads("kubernetes-private-cloud") if w.platform == "dag"]
    assert {w.process for w in dag} == {
        reconcile.PROCESS,
        rebuild.PROCESS,
        regulations.PROCESS,
        replay.PROCESS,
    }
    assert sum(w.process is replay.PROCESS for w in dag) == 3  # the warehouse, 2 destinations
    assert all(w.env for w in dag)
    assert rebuild.PROCESS in contracts["dev"], "the rebuild pod needs no archive"
    assert regulations.PROCESS in contracts["dev"], "the regulation pod needs no archive"


def test_every_handler_and_command_is_real() -> None:
    import importlib

    for handler in HANDLERS:
        module, _, function = handler.rpartition(".")
        assert callable(getattr(importlib.import_module(module), function)), handler
    from services.cli import resolve

    for command in COMMANDS.values():
        assert callable(resolve(command.run))
        assert command.load is None or callable(resolve(command.load))


# --- three: each miss of issue 17 fails the check ------------------------------------------


def _only(stack: str, predicate: Callable[[Workload], bool]) -> Workload:
    (found,) = [w for w in declared_workloads(stack) if predicate(w)]
    assert problems(found) == [], "the unchanged declaration passes"
    return found


def test_a_valid_variable_given_to_the_wrong_workload_fails() -> None:
    loader_pod = _only("dev", lambda w: w.process is loader.PROCESS)
    # A real variable, of the archiver: the loader never reads it.
    loader_pod.env["LIFTOFF_ARCHIVE_BATCH_MAX_EVENTS"] = "10000"
    assert problems(loader_pod) == [
        f"{loader_pod.where}: declares LIFTOFF_ARCHIVE_BATCH_MAX_EVENTS='10000', which it never "
        "reads"
    ]


def test_a_misspelt_aws_endpoint_variable_fails() -> None:
    archiver_pod = _only("kubernetes-private-cloud", lambda w: w.process is archiver.PROCESS)
    endpoint = archiver_pod.env.pop("AWS_ENDPOINT_URL_S3")
    archiver_pod.env["AWS_ENDPOINT_URL_S3_"] = endpoint
    assert problems(archiver_pod) == [
        f"{archiver_pod.where}: declares AWS_ENDPOINT_URL_S3_={endpoint!r}, which it never reads"
    ]


def test_a_parser_reading_the_wrong_constant_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The archiver's parser made to read its batch bound from the loader's variable: both the
    contract's own round trip and the declared workloads catch it."""
    from services import contract

    real_read = contract.read

    def misread(cls: type[Any], env: Any) -> Any:
        wrong = {
            **env,
            "LIFTOFF_ARCHIVE_BATCH_MAX_EVENTS": env.get("LIFTOFF_LOADER_BATCH_MAX_EVENTS", ""),
        }
        return real_read(cls, wrong)

    monkeypatch.setattr(contract, "read", misread)
    example = archiver.ArchiverSettings(
        runtime=archiver.ConsumerRuntime(stream=stream.StreamAccess(url=NATS)),
        archiving=archiver.Archiving(archive=archiver.ArchiveAccess(bucket="b")),
        batch_max_events=500,
    )
    with pytest.raises(AssertionError):
        round_trip(archiver.PROCESS, example)
    archiver_pod = next(
        w for w in declared_workloads("kubernetes-private-cloud") if w.process is archiver.PROCESS
    )
    assert any("LIFTOFF_ARCHIVE_BATCH_MAX_EVENTS" in p for p in problems(archiver_pod))


def test_a_misspelt_variable_of_the_dag_pod_fails() -> None:
    pod = _only("kubernetes-private-cloud", lambda w: w.process is reconcile.PROCESS)
    pod.env["PGPASSWORD_FLIE"] = pod.env.pop("PGPASSWORD_FILE")
    path = "/etc/liftoff/postgres/password"
    assert f"{pod.where}: declares PGPASSWORD_FLIE={path!r}, which it never reads" in problems(pod)


def test_a_renamed_variable_fails_to_parse() -> None:
    collector_pod = _only("dev", lambda w: w.process is collector.PROCESS)
    collector_pod.env["LIFTOFF_STREAM_ADDRESS"] = collector_pod.env.pop("LIFTOFF_STREAM_URL")
    assert any("LIFTOFF_STREAM_URL is not set" in p for p in problems(collector_pod))


def test_the_dag_passes_its_environment_through() -> None:
    """The DAGs name no variable: the pods' environments are [liftoff]'s, built by the
    contracts."""
    dags = Path(__file__).resolve().parent.parent / "dags"
    for path, contract in (
        ("liftoff_reconcile.py", reconcile.ReconcileSettings),
        ("liftoff_warehouse_rebuild.py", rebuild.RebuildSettings),
        ("liftoff_regulation.py", regulations.RegulationSettings),
        ("liftoff_operations.py", regulations.RegulationSettings),
        ("liftoff_replay.py", replay.ReplaySettings),
        ("liftoff_operations.py", replay.ReplaySettings),
    ):
        dag = (dags / path).read_text()
        for variable in variables(contract):
            assert variable.name not in dag, (path, variable.name)
    pod = _only("kubernetes-private-cloud", lambda w: w.process is reconcile.PROCESS)
    assert json.loads(json.dumps(pod.env)) == pod.env


# --- three: the durables the stream setup keeps -------------------------------------------


def _kept_and_run(workloads: list[Workload]) -> tuple[set[str], set[str]]:
    """(durables the stream setup is told to keep, durables the consumer processes use)."""
    kept: set[str] = set()
    run: set[str] = set()
    for workload in workloads:
        env = workload.env
        if workload.process is stream.ENSURE_STREAM:
            kept |= set(env.get("LIFTOFF_STREAM_CONSUMERS", "").split(","))
        elif env.get("LIFTOFF_STREAM_URL", "").startswith("nats://") and (
            "LIFTOFF_CONSUMER_NAME" in env
        ):
            run.add(env["LIFTOFF_CONSUMER_NAME"])
    return kept - {""}, run


@pytest.mark.parametrize("stack", STACKS)
def test_the_stream_setup_keeps_every_durable_a_consumer_of_the_stack_runs(stack: str) -> None:
    """ensure-stream deletes liftoff's durables it is not told to keep: one a running consumer
    uses would be re-created from the stream's end (a broadcaster: events lost)."""
    found = [w for w in declared_workloads(stack) if w.platform == "kubernetes"]
    kept, run = _kept_and_run(found)
    assert run <= kept and (kept == run or not run), (kept, run)


@pytest.mark.parametrize("stack_file", STACK_FILES, ids=stack_name_of)
def test_liftoff_local_keeps_every_durable_it_runs(stack_file: Path, tmp_path: Path) -> None:
    kept, run = _kept_and_run(list(local_workloads(stack_file, tmp_path)))
    assert run and run <= kept, (kept, run)
