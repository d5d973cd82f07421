"""The supervisor's bookkeeping: write keys, destination credentials, the data-directory lock."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from liftoff_local.supervisor import (
    DataDir,
    Ports,
    SetupError,
    destination_secrets,
    write_keys,
)


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
