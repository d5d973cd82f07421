"""A replay on AWS: the ops function (`services.aws_lambda.reconcile_handler`) given a `replay`
payload (the replay DAG's conf on MWAA), with the environment the stack gives it — the archive
of tests/services/consumers/replay/test_replay.py on S3 (moto), the warehouse on PostgreSQL, the
suppression list as one S3 object with its key in Secrets Manager — and its progress kept in
the archive bucket."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3
import pytest

from services import aws_lambda
from services.aws_lambda import MARGIN_SECONDS, budget_of
from services.consumers.archiver.sink import ArchiverConfig
from services.consumers.replay.progress import OBJECT_DIRECTORY
from services.contract import ConfigError
from services.suppression.lists import entries
from tests.servers import pg_connect
from tests.services.consumers.replay.test_replay import (
    WINDOW,
    archive,  # noqa: F401 (fixture)
    archived_events,
    in_window,
)

pytestmark = pytest.mark.servers

DOCUMENT = {"from": WINDOW[0], "to": WINDOW[1], "target": "warehouse"}
KEY = "ops-replay-suppression-key-0123"


class Context:
    """What the handler reads of Lambda's context: the invocation's remaining time."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


@pytest.fixture
def ops_env(
    archive: ArchiverConfig,  # noqa: F811
    warehouse: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """The ops function's environment without the collector's stores."""
    for name, value in {**warehouse, "LIFTOFF_ARCHIVE_BUCKET": archive.bucket}.items():
        monkeypatch.setenv(name, value)
    return warehouse


def rows(warehouse: dict[str, str]) -> list[str]:
    with pg_connect(warehouse) as connection:
        if connection.execute("SELECT to_regclass('events')").fetchone() == (None,):
            return []
        return [r[0] for r in connection.execute("SELECT message_id FROM events ORDER BY 1")]


def progress_keys(bucket: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=OBJECT_DIRECTORY)
    return [item["Key"] for item in listed.get("Contents", [])]


def test_a_window_is_replayed_into_the_warehouse_without_the_suppressed_user_once(
    ops_env: dict[str, str],
    archive: ArchiverConfig,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listed = {"entries": entries(KEY, ["user-3"], [])}
    s3 = boto3.client("s3")
    s3.put_object(Bucket=archive.bucket, Key="lists/suppressed.json", Body=json.dumps(listed))
    secret = boto3.client("secretsmanager").create_secret(
        Name=f"suppression-{uuid.uuid4().hex[:8]}", SecretString=KEY
    )
    monkeypatch.setenv("LIFTOFF_SUPPRESSION_URL", f"s3://{archive.bucket}/lists/suppressed.json")
    monkeypatch.setenv("LIFTOFF_SUPPRESSION_KEY_SECRET_ARN", secret["ARN"])
    window = in_window(archived_events())
    kept = sorted(e["messageId"] for e in window if e["userId"] != "user-3")
    assert len(kept) < len(window)

    summary = aws_lambda.reconcile_handler({"replay": DOCUMENT}, Context(900))
    assert (summary["finished"], summary["exit_status"], summary["ok"]) == (True, 0, True)
    assert (summary["sent"], summary["suppressed"]) == (len(kept), len(window) - len(kept))
    assert rows(ops_env) == kept
    (key,) = progress_keys(archive.bucket)
    assert summary["progress"] == f"s3://{archive.bucket}/{key}"

    again = aws_lambda.reconcile_handler({"replay": DOCUMENT}, Context(900))
    assert (again["finished"], again["exit_status"]) == (True, 0)
    assert (again["selected"], again["sent"], again["resumed_after"] is not None) == (0, 0, True)
    assert rows(ops_env) == kept


def test_an_invocation_short_of_time_stops_and_the_next_one_finishes_sending_each_event_once(
    ops_env: dict[str, str],
    archive: ArchiverConfig,  # noqa: F811
) -> None:
    expected = sorted(e["messageId"] for e in in_window(archived_events()))
    # 10 events a second in batches of 10: the window's events take longer than 1.5 s.
    document = {**DOCUMENT, "rate": 10}
    short = Context(MARGIN_SECONDS + 1.5)
    first = aws_lambda.reconcile_handler({"replay": document}, short)
    assert (first["finished"], first["exit_status"]) == (False, 3), first
    assert 0 < first["sent"] < len(expected)
    assert len(rows(ops_env)) == first["sent"]

    second = aws_lambda.reconcile_handler({"replay": document})  # no context: no time limit
    assert (second["finished"], second["exit_status"]) == (True, 0), second
    assert second["resumed_after"] is not None and second["already_in_warehouse"] == 0
    assert first["sent"] + second["sent"] == len(expected)
    assert rows(ops_env) == expected


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {**DOCUMENT, "target": "destination:hook"},
            r"replay target 'destination:hook': the ops function replays into the warehouse "
            r"only .*python -m services replay --target destination:hook .* from a host in "
            r"the VPC",
        ),
        ({**DOCUMENT, "to": None}, r"replay to None: a non-empty string is required"),
        ({**DOCUMENT, "speed": 3}, r"unknown keys \['speed'\]; allowed: from, to, target"),
        ({**DOCUMENT, "types": ["click"]}, r"replay types \['click'\]: use track, identify"),
        (["warehouse"], r"expected a JSON object"),
    ],
)
def test_a_destination_target_or_a_bad_document_is_refused_and_nothing_is_written(
    ops_env: dict[str, str],
    archive: ArchiverConfig,  # noqa: F811
    document: Any,
    message: str,
) -> None:
    with pytest.raises(ConfigError, match=message):
        aws_lambda.reconcile_handler({"replay": document}, Context(900))
    assert progress_keys(archive.bucket) == [] and rows(ops_env) == []


def test_the_budget_is_the_remaining_time_but_the_margin() -> None:
    assert budget_of(None) is None
    assert budget_of(Context(900)) == 900 - MARGIN_SECONDS
    assert budget_of(Context(MARGIN_SECONDS + 0.2)) == 1.0  # never zero: one batch at least
