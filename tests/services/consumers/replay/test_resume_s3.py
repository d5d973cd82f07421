"""``python -m services replay`` keeping its progress in an S3 object (the targets' default) and
stopping by its time budget: resumed from the object after a stop and after SIGKILL, with the
archive of test_replay.py on moto and the local webhook receiver."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from services.cli import main
from services.consumers.archiver.sink import ArchiverConfig
from services.consumers.replay import progress as module
from services.consumers.replay.progress import OBJECT_DIRECTORY, ObjectProgress
from services.consumers.replay.window import Cursor
from services.contract import ConfigError
from tests.servers import REPO_ROOT
from tests.services.consumers.broadcaster.receiver import Receiver
from tests.services.consumers.replay.test_replay import (
    WINDOW,
    archive,  # noqa: F401 (fixture)
    archived_events,
    cli_env,
    finish,
    in_window,
    per_user,
    received,
    receiver,  # noqa: F401 (fixture)
    replay,
    webhook_env,
)

pytestmark = pytest.mark.servers

TARGET = ("--target", "destination:hook")
JSON_WINDOW = {"from": "2026-11-27T10:00Z", "to": "2026-11-27T11:00Z", "target": "warehouse"}
IDENTITY = {"from": "2026-11-27T10:00:00+00:00", "target": "destination:hook"}


def saved(bucket: str) -> dict[str, Any]:
    """The one progress object the replay wrote (an empty record before it wrote one)."""
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=OBJECT_DIRECTORY)
    keys = [item["Key"] for item in listed.get("Contents", [])]
    if not keys:
        return {"summary": {"sent": 0}}
    (key,) = keys
    document: dict[str, Any] = json.loads(
        boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    )
    return document


def is_suffix(part: list[str], whole: list[str]) -> bool:
    return not part or whole[-len(part) :] == part


def test_a_replay_stopped_by_its_budget_continues_from_the_s3_object_and_sends_each_event_once(
    tmp_path: Path,
    archive: ArchiverConfig,  # noqa: F811
    receiver: Receiver,  # noqa: F811
) -> None:
    expected = in_window(archived_events())
    env = cli_env(
        tmp_path,
        archive,
        **webhook_env(tmp_path, receiver),
        LIFTOFF_REPLAY_PROGRESS_IN_ARCHIVE="true",
    )
    arguments = (*TARGET, "--rate", "10", "--max-seconds", "1.5")
    runs, sent = [], 0
    while len(runs) < 10:
        process = replay(env, *arguments)
        code, summary = finish(process)
        runs.append((code, summary))
        sent += summary["sent"]
        if summary["finished"]:
            break
        assert code == 3 and summary["sent"] > 0, summary
    assert [s["finished"] for _, s in runs] == [False] * (len(runs) - 1) + [True]
    assert len(runs) >= 2 and runs[-1][0] == 0
    assert runs[0][1]["progress"].startswith(f"s3://{archive.bucket}/{OBJECT_DIRECTORY}")
    # Each stop saved its last batch: every event went exactly once, in order per user.
    got = received(receiver)
    assert sorted(e["messageId"] for e in got) == sorted(e["messageId"] for e in expected)
    assert per_user(got) == per_user(expected) and sent == len(expected)

    code, again = finish(replay(env, *arguments))
    assert (code, again["finished"], again["selected"], again["sent"]) == (0, True, 0, 0)
    assert len(received(receiver)) == len(expected)


def test_a_killed_replay_resumes_from_the_s3_object_with_what_it_had_not_recorded(
    tmp_path: Path,
    archive: ArchiverConfig,  # noqa: F811
    receiver: Receiver,  # noqa: F811
) -> None:
    expected = in_window(archived_events())
    env = cli_env(tmp_path, archive, **webhook_env(tmp_path, receiver))
    progress = f"s3://{archive.bucket}/{OBJECT_DIRECTORY}killed.json"
    arguments = (*TARGET, "--rate", "5", "--progress", progress)
    process = replay(env, *arguments)
    receiver.wait_for(lambda: saved(archive.bucket)["summary"]["sent"] >= 10, deadline=60)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    recorded = saved(archive.bucket)["summary"]["sent"]
    first = len(received(receiver))
    assert recorded < len(expected) and first < len(expected)

    code, summary = finish(replay(env, *arguments))
    assert code == 0 and summary["finished"] and summary["resumed_after"] is not None, summary
    # Exactly what the object did not record is sent again: the events after its cursor.
    assert summary["sent"] == len(expected) - recorded
    second = received(receiver)[first:]
    everything = received(receiver)
    assert {e["messageId"] for e in everything} == {e["messageId"] for e in expected}
    whole = per_user(expected)
    assert all(is_suffix(ids, whole[user]) for user, ids in per_user(second).items())


def test_the_object_is_written_at_most_once_a_second_and_its_last_cursor_at_the_end(
    aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = boto3.client("s3")
    client.create_bucket(Bucket="progress")
    client.put_bucket_versioning(Bucket="progress", VersioningConfiguration={"Status": "Enabled"})
    clock = [100.0]
    monkeypatch.setattr(module.time, "monotonic", lambda: clock[0])
    url = "s3://progress/liftoff/replay-progress/x.json"
    progress = ObjectProgress(url, IDENTITY, client)
    assert progress.start({}) is None  # written at once
    for sequence in range(1, 351):  # 350 batches, 10 ms each: 3.5 seconds
        clock[0] += 0.01
        progress.save(Cursor("2026-11-27T10", "EVENTS-0", sequence), {"sent": sequence})
    progress.close()
    versions = client.list_object_versions(Bucket="progress")["Versions"]
    assert 4 <= len(versions) <= 6  # start, about one a second, the end: not 350
    assert ObjectProgress(url, IDENTITY, client).load() == ("2026-11-27T10", "EVENTS-0", 350)
    with pytest.raises(ConfigError, match="records another replay"):
        ObjectProgress(url, {**IDENTITY, "target": "warehouse"}, client).load()


def test_an_unwritable_bucket_or_a_url_without_a_key_is_refused_before_anything_is_sent(
    aws_env: str,
) -> None:
    client = boto3.client("s3")
    with pytest.raises(ConfigError, match=r"--progress 's3://no-such-bucket/p.json' cannot be"):
        ObjectProgress("s3://no-such-bucket/p.json", IDENTITY, client).start({})
    with pytest.raises(ConfigError, match=r"use a file path or s3://<bucket>/<key>"):
        ObjectProgress("s3://bucket-only/", IDENTITY, client)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--max-seconds", "0"], "--max-seconds 0.0: use a number of seconds above 0"),
        (["--max-seconds", "5", "--dry-run"], "--max-seconds with --dry-run: a dry run keeps"),
        (["--progress", "s3://bucket-only"], "use a file path or s3://<bucket>/<key>"),
    ],
)
def test_a_budget_or_progress_location_that_cannot_work_is_refused(
    options: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    window = ["--from", "2026-11-27T10:00Z", "--to", "2026-11-27T11:00Z", "--target", "warehouse"]
    status = main(["replay", *window, *options], {"LIFTOFF_ARCHIVE_BUCKET": "archive"})
    assert status == 2 and message in capsys.readouterr().err


def test_the_json_document_is_the_same_replay_as_the_options(
    tmp_path: Path,
    archive: ArchiverConfig,  # noqa: F811
    receiver: Receiver,  # noqa: F811
) -> None:
    """`--json` (the DAG's conf, the ops function's payload): the same selection and target."""
    env = cli_env(tmp_path, archive, **webhook_env(tmp_path, receiver))
    options = ("--source", "web", "--type", "track", *TARGET, "--dry-run")
    _, by_options = finish(replay(env, *options))
    document = {
        "from": WINDOW[0],
        "to": WINDOW[1],
        "target": "destination:hook",
        "sources": ["web"],
        "types": ["track"],
        "events": None,
        "rate": None,
        "dryRun": True,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "services", "replay", "--json", json.dumps(document)],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    code, by_document = finish(process)
    assert code == 0 and 0 < by_document["would_send"] < len(in_window(archived_events()))
    assert {**by_document, "seconds": 0} == {**by_options, "seconds": 0}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"from": "2026-11-27T10:00Z", "to": "2026-11-27T11:00Z"}, "replay target None: a"),
        ({**JSON_WINDOW, "types": ["click"]}, "replay types ['click']: use track, identify"),
        ({**JSON_WINDOW, "rate": "fast"}, "replay rate 'fast': a number of events per second"),
        ({**JSON_WINDOW, "since": 1}, "unknown keys ['since']; allowed: from, to, target"),
        ({**JSON_WINDOW, "dryRun": "yes"}, "replay dryRun 'yes': true or false"),
    ],
)
def test_a_document_that_cannot_work_is_refused_naming_the_key(
    document: dict[str, Any], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["replay", "--json", json.dumps(document)], {"LIFTOFF_ARCHIVE_BUCKET": "a"})
    assert status == 2 and message in capsys.readouterr().err
    both = ["replay", "--json", json.dumps(JSON_WINDOW), "--target", "warehouse"]
    assert main(both, {"LIFTOFF_ARCHIVE_BUCKET": "a"}) == 2
    assert "give either --json or --from" in capsys.readouterr().err


def test_a_progress_write_that_fails_fails_the_run_and_still_prints_the_summary(
    tmp_path: Path,
    archive: ArchiverConfig,  # noqa: F811
    receiver: Receiver,  # noqa: F811
) -> None:
    """The object's bucket refuses writes after the start (a policy changed mid-run): the run
    exits 1 with its summary; the next one sends again what was not recorded."""
    env = cli_env(tmp_path, archive, **webhook_env(tmp_path, receiver))
    client = boto3.client("s3")
    client.create_bucket(Bucket=f"{archive.bucket}-progress")
    progress = f"s3://{archive.bucket}-progress/p.json"
    process = replay(env, *TARGET, "--rate", "10", "--progress", progress)
    receiver.wait_for(lambda: len(receiver.delivered("/hook")) >= 1)
    client.delete_object(Bucket=f"{archive.bucket}-progress", Key="p.json")
    client.delete_bucket(Bucket=f"{archive.bucket}-progress")
    code, summary = finish(process)
    assert code == 1 and summary["sent"] > 0 and not summary["finished"], summary
