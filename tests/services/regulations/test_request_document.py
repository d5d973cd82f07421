"""The request as one JSON document: what the Airflow DAG's pod passes (`--json`) and the ops
function's `regulation` payload (`handle`). Validation names the key, the value and what is
allowed; a run left unfinished raises with its status, and invoking it again resumes it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from services import cli
from services.consumers.archiver.sink import encode_object
from services.contract import ConfigError
from services.regulations import command
from tests.services.regulations.test_deletion import fill_warehouse, line, settings


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (["delete"], "expected a JSON object"),
        ({"action": "erase", "userIds": ["u1"]}, "action 'erase': use one of suppress, delete"),
        ({"action": "delete"}, "regulation delete: give userIds and/or anonymousIds"),
        ({"action": "delete", "userIds": "u1"}, "userIds 'u1': a list of non-empty strings"),
        ({"action": "delete", "anonymousIds": [""]}, "anonymousIds ['']: a list of non-empty"),
        ({"action": "status", "requestId": "7"}, "requestId '7': a request number"),
        ({"action": "delete", "userIds": ["u1"], "user": 1}, "unknown keys ['user']; allowed"),
    ],
)
def test_a_bad_document_names_the_key_the_value_and_what_is_allowed(
    document: Any, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        command.asked(document)


def test_a_document_reads_as_the_arguments_do() -> None:
    assert command.asked(
        {"action": "delete", "userIds": ["u1"], "anonymousIds": None, "requestId": None}
    ) == command.Asked("delete", ("u1",), ())
    assert command.asked({"action": "status", "requestId": 3}) == command.Asked(
        "status", request_id=3
    )


def test_the_cli_refuses_json_with_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    env = {
        "PGHOST": "127.0.0.1",
        "LIFTOFF_SUPPRESSION_URL": "nats://127.0.0.1:1/unused",
        "LIFTOFF_SUPPRESSION_KEY": "a-test-suppression-key-0123456789",
    }
    argv = ["regulation", "delete", "--json", '{"action": "delete", "userIds": ["u1"]}']
    assert cli.main(argv, env) == 2
    assert "give either --json or the action and its ids" in capsys.readouterr().err


@pytest.mark.servers
def test_the_ops_function_payload_fails_unfinished_and_resumes(
    warehouse: dict[str, str], bucket: tuple[Any, str], aws_env: str
) -> None:
    s3, name = bucket
    key = "archive/source=web/year=2026/month=12/day=01/hour=10/P-00000000000000000000.json.gz"
    s3.put_object(Bucket=name, Key=key, Body=encode_object([line("u1", "a1", 1)]))
    connection = fill_warehouse(warehouse)
    payload = {"action": "delete", "userIds": ["u1"], "anonymousIds": [], "requestId": None}

    # The archive unreachable (a bucket that does not exist): the run raises with the status.
    with pytest.raises(RuntimeError, match=re.escape('"archive": {"status": "failed"')):
        command.handle(payload, settings(warehouse, aws_env, "no-such-bucket"))
    (first,) = command.record.status(connection)
    assert first["targets"]["warehouse"]["status"] == "done"

    # Invoked again (the DAG's retry) with the archive there: the same request resumes.
    found = command.handle(payload, settings(warehouse, aws_env, name))
    assert found["id"] == first["id"]
    assert {t: v["status"] for t, v in found["targets"].items()} == {
        "archive": "done", "warehouse": "done",
    }  # fmt: skip
    assert found["targets"]["archive"]["detail"]["lines_removed"] == 1
    assert "u1" not in json.dumps(found)  # the answer (the task log) holds no id

    status = command.handle({"action": "status", "requestId": first["id"]}, settings(
        warehouse, aws_env, name))  # fmt: skip
    assert [r["id"] for r in status["requests"]] == [first["id"]]


@pytest.mark.servers
def test_the_pod_passes_the_dag_conf_as_json(
    warehouse: dict[str, str], bucket: tuple[Any, str], aws_env: str
) -> None:
    _, name = bucket
    connection = fill_warehouse(warehouse)
    document = json.dumps({"action": "delete", "userIds": [], "anonymousIds": ["a9"]})
    assert command.run(settings(warehouse, aws_env, name), document=document) == 0
    rows = connection.execute("SELECT count(*) FROM events WHERE anonymous_id = 'a9'").fetchone()
    assert rows == (0,)
