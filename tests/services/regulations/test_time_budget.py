"""A regulation within a time budget (the ops function's invocation, `handle(max_seconds=…)`):
the archive scan stops after the chunk in hand once past its deadline, recorded as `pending`
with the last object scanned, and the next run resumes after it — each object read once over
all the runs, the user's lines gone from every one. Real PostgreSQL and S3 (moto)."""

from __future__ import annotations

from typing import Any

import pytest

from services.consumers.archiver.sink import decode_object, encode_object
from services.regulations import command
from services.regulations.deletion import ARCHIVE_CHUNK
from tests.services.regulations.test_deletion import line, settings

pytestmark = pytest.mark.servers

OBJECTS = 2 * ARCHIVE_CHUNK + 22  # two full chunks, then the rest


def key(n: int) -> str:
    return f"archive/o/{n:04d}.json.gz"


def test_a_delete_past_its_deadline_resumes_after_the_last_object_scanned(
    warehouse: dict[str, str], bucket: tuple[Any, str], aws_env: str
) -> None:
    s3, name = bucket
    for n in range(OBJECTS):
        s3.put_object(
            Bucket=name, Key=key(n), Body=encode_object([line("u1", "a1", n), line("u2", "a2", n)])
        )
    regulation = settings(warehouse, aws_env, name)
    document = {"action": "delete", "userIds": ["u1"], "anonymousIds": [], "requestId": None}

    archive = []  # the archive target as each run left it
    for _ in range(10):
        # No time at all: each run does the least it may, one chunk of one target.
        answer = command.handle(document, regulation, max_seconds=0.0)
        archive.append(answer["targets"]["archive"])
        if answer["finished"]:
            break
    assert answer["finished"] is True, answer
    assert all(target["status"] == "done" for target in answer["targets"].values())

    first, second, third = archive[:3]
    assert (first["status"], first["reason"]) == ("pending", command.STOPPED)
    assert first["detail"]["resume_after"] == key(ARCHIVE_CHUNK - 1)
    assert first["detail"]["objects_read"] == ARCHIVE_CHUNK
    assert second["detail"]["resume_after"] == key(2 * ARCHIVE_CHUNK - 1)
    assert second["detail"]["objects_read"] == 2 * ARCHIVE_CHUNK
    assert third["status"] == "done"
    assert third["detail"] == {
        "objects_read": OBJECTS,  # each once
        "objects_rewritten": OBJECTS,
        "bytes_rewritten": third["detail"]["bytes_rewritten"],
        "lines_removed": OBJECTS,
        "resume_after": None,
    }
    for n in range(OBJECTS):
        kept = decode_object(s3.get_object(Bucket=name, Key=key(n))["Body"].read())
        assert [b'"userId":"u1"' in x for x in kept] == [False], n


def test_without_a_budget_a_delete_runs_to_the_end_at_once(
    warehouse: dict[str, str], bucket: tuple[Any, str], aws_env: str
) -> None:
    s3, name = bucket
    for n in range(ARCHIVE_CHUNK + 1):
        s3.put_object(Bucket=name, Key=key(n), Body=encode_object([line("u1", "a1", n)]))
    document = {"action": "delete", "userIds": ["u1"], "anonymousIds": [], "requestId": None}
    answer = command.handle(document, settings(warehouse, aws_env, name))
    assert answer["finished"] is True
    assert answer["targets"]["archive"]["detail"]["objects_read"] == ARCHIVE_CHUNK + 1
