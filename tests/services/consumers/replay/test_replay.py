"""``python -m services replay`` against an archive the archiver's own sink wrote to moto S3, a
local webhook receiver playing the destination and a real PostgreSQL for the warehouse."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest

from services.consumers.archiver.sink import ArchiverConfig
from services.consumers.runner.model import Delivery, Position, decode
from services.suppression.lists import entries
from tests.servers import AWS_TEST_ENV, REPO_ROOT, pg_connect
from tests.services.consumers.broadcaster.conftest import SECRETS
from tests.services.consumers.broadcaster.receiver import Receiver
from tests.services.consumers.conftest import event
from tests.services.consumers.reconcile.test_reconcile import write_archive

pytestmark = pytest.mark.servers

START = datetime(2026, 11, 27, 10, tzinfo=UTC)
WINDOW = ("2026-11-27T10:30Z", "2026-11-27T11:30Z")


def archived_events() -> list[dict[str, Any]]:
    """80 events, one every 90 s from 10:00 (hours 10 and 11), two sources, 7 users."""
    events = []
    for i in range(80):
        at = (START + timedelta(seconds=90 * i)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        kind = {"type": "page", "name": "Home"} if i % 5 == 0 else {}
        events.append(event(i, source="web" if i % 3 else "ios", received_at=at, **kind))
    return events


def in_window(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    low, high = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in WINDOW)
    return [e for e in events if low <= datetime.fromisoformat(e["receivedAt"]) < high]


def deliveries(events: Sequence[dict[str, Any]]) -> list[Delivery]:
    """Two JetStream partitions (events routed by user, as the collector does)."""
    result = []
    sequences = {"EVENTS-0": 0, "EVENTS-1": 0}
    for document in events:
        partition = f"EVENTS-{int(document['userId'].split('-')[1]) % 2}"
        sequences[partition] += 1
        delivery = Delivery(
            data=json.dumps(document).encode(),
            position=Position("jetstream", partition, sequences[partition]),
            arrival=START,
        )
        assert decode(delivery) is None
        result.append(delivery)
    return result


@pytest.fixture
def archive(aws_env: str) -> ArchiverConfig:
    name = f"archive-{uuid.uuid4().hex[:10]}"
    boto3.client("s3").create_bucket(Bucket=name)
    cfg = ArchiverConfig(bucket=name, window_events=10, endpoint_url=aws_env)
    write_archive(cfg, deliveries(archived_events()))
    return cfg


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def cli_env(tmp_path: Path, archive: ArchiverConfig, **extra: str) -> dict[str, str]:
    credentials = tmp_path / "credentials"
    credentials.write_text("[default]\naws_access_key_id = replay\naws_secret_access_key = x\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PG", "LIFTOFF_"))}
    assert archive.endpoint_url is not None
    return {
        **env,
        "LIFTOFF_ARCHIVE_BUCKET": archive.bucket,
        "AWS_ENDPOINT_URL_S3": archive.endpoint_url,
        "AWS_REGION": AWS_TEST_ENV["AWS_REGION"],
        "AWS_SHARED_CREDENTIALS_FILE": str(credentials),
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        **extra,
    }


def webhook_env(tmp_path: Path, receiver: Receiver, **filters: Any) -> dict[str, str]:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"signingSecret": SECRETS["webhook"]}))
    destination = {
        "name": "hook",
        "type": "webhook",
        "settings": {"url": f"{receiver.url}/hook"},
        **({"filters": filters} if filters else {}),
    }
    return {
        "LIFTOFF_DESTINATION": json.dumps(destination),
        "LIFTOFF_DESTINATION_SECRETS_FILE": str(secrets),
    }


def replay(env: dict[str, str], *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services",
            "replay",
            "--from",
            WINDOW[0],
            "--to",
            WINDOW[1],
            *arguments,
        ],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, dict[str, Any]]:
    output, _ = process.communicate(timeout=120)
    summaries = [
        json.loads(line)
        for line in output.splitlines()
        if line.startswith("{") and '"level"' not in line
    ]
    assert len(summaries) == 1, output
    return process.returncode, summaries[0]


def received(receiver: Receiver) -> list[dict[str, Any]]:
    return [e for r in receiver.delivered("/hook") for e in r.json["batch"]]


def per_user(events: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    users: dict[str, list[str]] = {}
    for document in events:
        users.setdefault(document["userId"], []).append(document["messageId"])
    return users


def test_a_window_is_replayed_to_a_webhook_exactly_in_order_per_user_at_the_rate(
    tmp_path: Path, archive: ArchiverConfig, receiver: Receiver
) -> None:
    expected = in_window(archived_events())
    assert 30 <= len(expected) < 80
    env = cli_env(tmp_path, archive, **webhook_env(tmp_path, receiver))
    progress = str(tmp_path / "progress.json")

    code, dry = finish(replay(env, "--target", "destination:hook", "--dry-run"))
    assert code == 0 and receiver.all() == []
    assert (dry["selected"], dry["would_send"], dry["dry_run"]) == (
        len(expected),
        len(expected),
        True,
    )
    assert dry["sent"] == 0

    arguments = ("--target", "destination:hook", "--rate", "10", "--progress", progress)
    code, summary = finish(replay(env, *arguments))
    assert code == 0, summary
    got = received(receiver)
    assert sorted(e["messageId"] for e in got) == sorted(e["messageId"] for e in expected)
    assert all(e in expected for e in got)  # as on the stream: no liftoff.position added
    assert per_user(got) == per_user(expected)  # stream order per user
    assert (summary["selected"], summary["sent"], summary["parked"]) == (
        len(expected),
        len(expected),
        0,
    )
    # 10 events/s in batches of 10: batch n leaves no earlier than n seconds after the first.
    # Seen from the receiver, the first request may arrive late (its connection is set up on
    # a loaded machine: 0.88 s before the second once in CI), so one period is allowed for it;
    # a replay that did not pace would still fail from the third batch on.
    requests = receiver.delivered("/hook")
    assert len(requests) >= 3
    assert [len(r.json["batch"]) for r in requests[:-1]] == [10] * (len(requests) - 1)
    for n, request in enumerate(requests[1:], start=1):
        assert request.at - requests[0].at >= (n - 1) * 0.95, [r.at for r in requests]

    # Run again: the progress file says it is done; nothing is sent twice.
    code, again = finish(replay(env, *arguments))
    assert code == 0 and again["selected"] == 0 and again["resumed_after"] is not None
    assert len(received(receiver)) == len(expected)


def test_a_killed_replay_resumes_after_the_last_acknowledged_batch(
    tmp_path: Path, archive: ArchiverConfig, receiver: Receiver
) -> None:
    expected = [e["messageId"] for e in in_window(archived_events())]
    env = cli_env(tmp_path, archive, **webhook_env(tmp_path, receiver))
    progress = tmp_path / "progress.json"
    arguments = ("--target", "destination:hook", "--rate", "5", "--progress", str(progress))
    process = replay(env, *arguments)
    receiver.wait_for(lambda: len(receiver.delivered("/hook")) >= 2 and progress.exists())
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    first = [e["messageId"] for e in received(receiver)]
    assert 0 < len(set(first)) < len(expected)

    code, summary = finish(replay(env, *arguments))
    assert code == 0, summary
    assert summary["resumed_after"] is not None
    everything = [e["messageId"] for e in received(receiver)]
    assert set(everything) == set(expected)
    # At least once: only the batch in flight at the kill may come twice.
    assert len(everything) - len(expected) <= 5
    assert summary["selected"] <= len(expected) - len(set(first)) + 5


def test_filters_and_selection_apply_and_a_wrong_target_is_refused(
    tmp_path: Path, archive: ArchiverConfig, receiver: Receiver
) -> None:
    env = cli_env(
        tmp_path,
        archive,
        **webhook_env(tmp_path, receiver, drop=[{"field": "properties.index", "in": [34]}]),
    )
    selection = ("--type", "track", "--source", "web", "--progress", str(tmp_path / "p"))
    code, summary = finish(replay(env, "--target", "destination:hook", *selection))
    expected = [
        e["messageId"]  # m-34 among them: web, track, 10:51
        for e in in_window(archived_events())
        if e["type"] == "track" and e["liftoff"]["source"] == "web"
    ]
    assert code == 0, summary
    assert sorted(e["messageId"] for e in received(receiver)) == sorted(
        m for m in expected if m != "m-34"
    )
    assert summary["skipped"] == {"filtered out (drop)": 1}

    unwritable = replay(env, "--target", "destination:hook", "--progress", "/proc/nope.json")
    output, _ = unwritable.communicate(timeout=60)
    assert unwritable.returncode == 2 and "--progress '/proc/nope.json' cannot be written" in output
    refused = replay(env, "--target", "destination:other")
    output, _ = refused.communicate(timeout=60)
    assert refused.returncode == 2
    assert "--target 'destination:other': LIFTOFF_DESTINATION is the destination 'hook'" in output


def test_a_window_is_replayed_into_the_warehouse_once(
    tmp_path: Path, archive: ArchiverConfig, warehouse: dict[str, str]
) -> None:
    password = tmp_path / "password"
    password.write_text("unused-with-trust-auth\n")
    env = cli_env(
        tmp_path,
        archive,
        **{k: warehouse[k] for k in ("PGHOST", "PGPORT", "PGDATABASE", "PGUSER")},
        PGPASSWORD_FILE=str(password),
    )
    expected = sorted(e["messageId"] for e in in_window(archived_events()))
    code, summary = finish(replay(env, "--target", "warehouse", "--progress", str(tmp_path / "a")))
    assert code == 0, summary
    with pg_connect(warehouse) as connection:
        found = [r[0] for r in connection.execute("SELECT message_id FROM events ORDER BY 1")]
    assert sorted(found) == expected
    assert (summary["sent"], summary["already_in_warehouse"]) == (len(expected), 0)
    # Another run (a new progress file): the warehouse's dedupe on messageId holds.
    code, again = finish(replay(env, "--target", "warehouse", "--progress", str(tmp_path / "b")))
    assert code == 0 and again["already_in_warehouse"] == len(expected)
    assert again["sent"] == 0, "nothing inserted twice"


def test_a_suppressed_user_is_never_replayed_and_an_unreadable_list_stops_it(
    tmp_path: Path, archive: ArchiverConfig, receiver: Receiver
) -> None:
    key = "replay-suppression-key-0123456789"
    listed = {"entries": entries(key, ["user-3"], [])}
    boto3.client("s3").put_object(
        Bucket=archive.bucket, Key="suppressed.json", Body=json.dumps(listed).encode()
    )
    suppression = {
        "LIFTOFF_SUPPRESSION_URL": f"s3://{archive.bucket}/suppressed.json",
        "LIFTOFF_SUPPRESSION_KEY": key,
    }
    env = cli_env(tmp_path, archive, **webhook_env(tmp_path, receiver), **suppression)
    progress = ("--progress", str(tmp_path / "p"))
    code, summary = finish(replay(env, "--target", "destination:hook", *progress))
    window = in_window(archived_events())
    assert code == 0, summary
    assert any(e["userId"] == "user-3" for e in window)
    assert sorted(e["messageId"] for e in received(receiver)) == sorted(
        e["messageId"] for e in window if e["userId"] != "user-3"
    )
    assert summary["suppressed"] == sum(e["userId"] == "user-3" for e in window)

    unreadable = {**suppression, "LIFTOFF_SUPPRESSION_URL": f"s3://{archive.bucket}-gone/x.json"}
    env = cli_env(tmp_path, archive, **webhook_env(tmp_path, receiver), **unreadable)
    before = len(received(receiver))
    stopped = replay(env, "--target", "destination:hook", "--progress", str(tmp_path / "q"))
    output, _ = stopped.communicate(timeout=120)
    assert stopped.returncode == 2, output
    assert "suppression list" in output and len(received(receiver)) == before
