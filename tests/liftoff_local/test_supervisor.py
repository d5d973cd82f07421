"""The supervisor's bookkeeping: write keys (kept by --fresh), destination credentials, the
data-directory lock, and the notes it prints about what differs from the stack."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from liftoff_local.binaries import PostgresBinaries
from liftoff_local.stack import load_plan
from liftoff_local.supervisor import (
    DataDir,
    Options,
    Ports,
    SetupError,
    Supervisor,
    destination_secrets,
    write_keys,
)
from tests.servers import REPO_ROOT


def test_write_keys_are_generated_once_and_kept(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    first = write_keys(data, ["web", "backend"])
    assert len(set(first.values())) == 2 and all(len(k) == 32 for k in first.values())
    again = write_keys(data, ["web", "backend", "ios"])  # a source added to the stack
    assert {k: again[k] for k in first} == first
    assert again["ios"] not in first.values()
    assert write_keys(data, ["web"]) == {"web": first["web"]}
    assert (tmp_path / "secrets" / "write-keys.json").stat().st_mode & 0o777 == 0o600


def test_nothing_is_sent_on_a_made_up_credential(tmp_path: Path) -> None:
    data = DataDir(tmp_path)
    # Not redirected, nothing given: no credential, so the destination does not run.
    assert destination_secrets(data, {}) == {}
    # Redirected to a local receiver: a generated credential, kept across runs.
    first = destination_secrets(data, {"crm": "signingSecret"})
    assert destination_secrets(data, {"crm": "signingSecret"}) == first
    # ...and only while redirected.
    assert destination_secrets(data, {}) == {}
    # A credential the user put there wins and is used with or without redirection.
    given = tmp_path / "secrets" / "destinations.json"
    given.write_text(json.dumps({"crm": {"signingSecret": "real"}, "mp": {"projectToken": "t"}}))
    assert destination_secrets(data, {"crm": "signingSecret"})["crm"] == {"signingSecret": "real"}
    assert destination_secrets(data, {})["mp"] == {"projectToken": "t"}
    given.write_text("[1, 2]")
    with pytest.raises(SetupError, match=r"destinations\.json must be a JSON object"):
        destination_secrets(data, {})


def test_a_second_instance_is_refused(tmp_path: Path) -> None:
    first, second = DataDir(tmp_path / "d"), DataDir(tmp_path / "d")
    first.lock()
    with pytest.raises(SetupError, match="already running with data in"):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()
    expected = 0o711 if os.geteuid() == 0 else 0o700
    assert (tmp_path / "d").stat().st_mode & 0o777 == expected


def test_ports_are_fixed_offsets_and_distinct() -> None:
    ports = Ports(8080).all(consumers=3)
    assert ports[8080] == "collector" and ports[8083] == "nats-server"
    assert sorted(ports) == [8080, 8081, 8082, 8083, 8084, 8090, 8091, 8092]


def test_fresh_keeps_the_write_keys_and_new_keys_replaces_them(tmp_path: Path) -> None:
    data = DataDir(tmp_path / "d")
    data.lock()
    keys = write_keys(data, ["web"])
    (tmp_path / "d" / "postgres").mkdir()
    (tmp_path / "d" / "local.json").write_text("{}")
    data.wipe()
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["liftoff-local.lock", "secrets"]
    assert write_keys(data, ["web"]) == keys, "--fresh keeps the write keys"
    data.forget_write_keys()
    assert write_keys(data, ["web"])["web"] != keys["web"], "--new-keys issues new ones"
    data.unlock()


def fake_nats_server(tmp_path: Path, version: str) -> str:
    """Only `nats-server --version` is asked of it here."""
    binary = tmp_path / f"nats-server-{version}"
    binary.write_text(f"#!/bin/sh\necho 'nats-server: v{version}'\n")
    binary.chmod(0o755)
    return str(binary)


def supervisor_for(tmp_path: Path, stack: str, nats_version: str, pg_major: int) -> Supervisor:
    options = Options(
        data_dir=tmp_path / "data",
        ports=Ports(20000),
        nats_server=fake_nats_server(tmp_path, nats_version),
        postgres=PostgresBinaries(Path("/usr/lib/postgresql/x/bin"), pg_major),
    )
    return Supervisor(load_plan(REPO_ROOT / stack), options, DataDir(tmp_path / "data"))


def test_an_aws_stacks_stream_note_speaks_of_kinesis_not_of_a_durability_key(
    tmp_path: Path,
) -> None:
    old = supervisor_for(tmp_path, "stacks/aws.yaml", "2.9.10", 17)
    assert old.sync_always() is False
    (runs_as, fsync) = [n for n in old.notes if n.startswith("stream:")]
    assert "Kinesis stream runs locally as JetStream" in runs_as
    assert "this nats-server (2.9.10) cannot fsync before each acknowledgement" in fsync
    assert "Kinesis's durability" in fsync and "durability 'always'" not in fsync
    current = supervisor_for(tmp_path, "stacks/aws.yaml", "2.15.1", 17)
    assert current.sync_always() is True
    assert [n for n in current.notes if "fsync" in n] == []


def test_a_kubernetes_stack_asking_for_fsync_on_an_old_nats_server_is_told(
    tmp_path: Path,
) -> None:
    stack = "stacks/kubernetes-private-cloud.yaml"  # durability: always
    old = supervisor_for(tmp_path, stack, "2.9.10", 17)
    assert old.sync_always() is False
    (note,) = [n for n in old.notes if "fsync" in n]
    assert "liftoff:stream.durability 'always'" in note and "2.10 or newer" in note
    assert supervisor_for(tmp_path, stack, "2.12.3", 17).sync_always() is True
    periodic = supervisor_for(tmp_path, "Pulumi.dev.yaml", "2.9.10", 17)  # asks for no fsync
    assert periodic.sync_always() is False and periodic.notes == periodic.plan.notes


def test_a_postgres_major_other_than_the_stacks_is_said(tmp_path: Path) -> None:
    older = supervisor_for(tmp_path, "Pulumi.dev.yaml", "2.15.1", 15)
    older.note_postgres_version()
    (note,) = [n for n in older.notes if n.startswith("postgres:")]
    assert "the stack deploys PostgreSQL 17; locally the system's PostgreSQL 15 runs" in note
    same = supervisor_for(tmp_path, "Pulumi.dev.yaml", "2.15.1", 17)
    same.note_postgres_version()
    assert [n for n in same.notes if n.startswith("postgres:")] == []
