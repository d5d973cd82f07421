"""Deletion: a user's rows leave the warehouse (raw events and every table with their ids),
the archive objects holding them are rewritten without their lines (the others untouched), the
request is recorded with a status per target, and the same request again changes nothing."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from services.consumers.archiver.sink import decode_object, encode_object
from services.consumers.loader.schema import migrate
from services.regulations import command
from services.regulations.contract import parse

pytestmark = pytest.mark.servers

KEY = "a-test-suppression-key-0123456789"


def line(user: str | None, anonymous: str, n: int) -> bytes:
    event = {
        "type": "track",
        "event": "E",
        "messageId": f"m-{anonymous}-{n}",
        "anonymousId": anonymous,
    }
    if user is not None:
        event["userId"] = user
    return json.dumps(event, separators=(",", ":")).encode()


def fill_warehouse(env: dict[str, str]) -> psycopg.Connection:
    connection = psycopg.connect(
        host=env["PGHOST"], port=env["PGPORT"], user="postgres", dbname=env["PGDATABASE"],
        autocommit=True,
    )  # fmt: skip
    migrate(connection)
    for n, (user, anonymous) in enumerate([("u1", "a1"), ("u2", "a2"), (None, "a9"), ("u2", "a1")]):
        connection.execute(
            "INSERT INTO events (message_id, type, source, user_id, anonymous_id, timestamp,"
            " received_at, raw, stream_partition, stream_sequence)"
            " VALUES (%s, 'track', 'web', %s, %s, now(), now(), '{}', 'P', %s)",
            (f"m{n}", user, anonymous, n),
        )
    # Typed tables as issue 19 makes them (any names): one with both ids, one with one.
    connection.execute(
        "CREATE SCHEMA web; CREATE TABLE web.tracks (id text, user_id text, anonymous_id text);"
        " CREATE TABLE web.identity_map (anonymous_id text, merged_at timestamptz);"
        " INSERT INTO web.tracks VALUES ('t1', 'u1', 'a1'), ('t2', 'u2', 'a2'), ('t3', NULL, 'a9');"
        " INSERT INTO web.identity_map VALUES ('a1', now()), ('a2', now())"
    )
    return connection


def settings(env: dict[str, str], aws_env: str, bucket_name: str) -> Any:
    return parse(
        {
            **env,
            "LIFTOFF_SUPPRESSION_URL": "nats://127.0.0.1:1/unused",
            "LIFTOFF_SUPPRESSION_KEY": KEY,
            "LIFTOFF_ARCHIVE_BUCKET": bucket_name,
            "LIFTOFF_ARCHIVE_PREFIX": "archive",
            "AWS_ENDPOINT_URL": aws_env,
        }
    )


def test_delete_user_everywhere_once(
    warehouse: dict[str, str], bucket: tuple[Any, str], aws_env: str
) -> None:
    s3, name = bucket
    objects = {
        "archive/source=web/year=2026/month=12/day=01/hour=10/P-00000000000000000000.json.gz": [
            line("u1", "a1", 1), line("u2", "a2", 2), line(None, "a1", 3), line(None, "a9", 4),
        ],
        "archive/source=web/year=2026/month=12/day=01/hour=11/P-00000000000000001000.json.gz": [
            line("u2", "a2", 5), line(None, "a9", 6),
        ],
        "archive/source=web/year=2026/month=12/day=01/hour=12/P-00000000000000002000.json.gz": [
            line("u3", "a3", 7),
        ],
    }  # fmt: skip
    for key, lines in objects.items():
        s3.put_object(Bucket=name, Key=key, Body=encode_object(lines))
    before = {key: s3.get_object(Bucket=name, Key=key)["Body"].read() for key in objects}
    connection = fill_warehouse(warehouse)
    config = settings(warehouse, aws_env, name)

    status = command.run(config, action="delete", user_ids=["u1"], anonymous_ids=["a1"])
    assert status == 0

    remaining = connection.execute("SELECT message_id FROM events ORDER BY 1").fetchall()
    assert remaining == [("m1",), ("m2",)]
    assert connection.execute("SELECT id FROM web.tracks ORDER BY 1").fetchall() == [
        ("t2",),
        ("t3",),
    ]
    assert connection.execute("SELECT anonymous_id FROM web.identity_map").fetchall() == [("a2",)]

    first, *others = objects
    after = {key: s3.get_object(Bucket=name, Key=key)["Body"].read() for key in objects}
    assert decode_object(after[first]) == [line("u2", "a2", 2), line(None, "a9", 4)]
    assert after[first] == encode_object([line("u2", "a2", 2), line(None, "a9", 4)])
    assert all(after[key] == before[key] for key in others)  # byte-identical, not rewritten

    (request,) = command.record.status(connection)
    targets = request["targets"]
    assert {t: v["status"] for t, v in targets.items()} == {"archive": "done", "warehouse": "done"}
    assert targets["archive"]["detail"]["objects_rewritten"] == 1
    assert targets["archive"]["detail"]["lines_removed"] == 2
    assert targets["warehouse"]["detail"]["rows"] == {
        "public.events": 2, "web.identity_map": 1, "web.tracks": 1,
    }  # fmt: skip

    # The same request again, once finished: recorded anew, the same effect (nothing left to
    # delete: no object rewritten, no row).
    etags = {key: s3.head_object(Bucket=name, Key=key)["ETag"] for key in objects}
    assert command.run(config, action="delete", anonymous_ids=["a1"], user_ids=["u1"]) == 0
    again, _ = command.record.status(connection)
    assert again["targets"]["archive"]["detail"]["objects_rewritten"] == 0
    assert again["targets"]["warehouse"]["detail"]["rows"] == {}
    assert etags == {key: s3.head_object(Bucket=name, Key=key)["ETag"] for key in objects}


def test_a_failed_target_is_recorded_with_its_reason(
    warehouse: dict[str, str], aws_env: str
) -> None:
    connection = fill_warehouse(warehouse)
    config = settings(warehouse, aws_env, "no-such-bucket")
    assert command.run(config, action="delete", user_ids=["u1"]) == 1
    (request,) = command.record.status(connection)
    assert request["targets"]["warehouse"]["status"] == "done"
    assert request["targets"]["archive"]["status"] == "failed"
    assert "NoSuchBucket" in request["targets"]["archive"]["reason"]


def test_numeric_and_unicode_ids_are_found_in_archived_lines() -> None:
    from services.regulations.deletion import keep_line, needles

    numeric = b'{"type":"track","userId":42,"anonymousId":"x"}'
    accented = '{"type":"track","userId":"zoë","anonymousId":"y"}'.encode()
    found = needles(["42", "zoë"], [])
    assert any(n in numeric for n in found) and any(n in accented for n in found)
    assert not keep_line(numeric, frozenset({"42"}), frozenset())
    assert not keep_line(accented, frozenset({"zoë"}), frozenset())
    assert keep_line(b'{"userId":"421","anonymousId":"x"}', frozenset({"42"}), frozenset())


def test_suppress_with_the_list_unreachable_fails_fast_with_its_reason(
    warehouse: dict[str, str], aws_env: str
) -> None:
    connection = fill_warehouse(warehouse)
    config = settings(warehouse, aws_env, "unused")  # the list at nats://127.0.0.1:1: closed
    assert command.run(config, action="suppress", user_ids=["u1"]) == 1
    (request,) = command.record.status(connection)
    target = request["targets"]["suppression"]
    assert target["status"] == "failed" and "NoServersError" in target["reason"]


def _typed_event(kind: str, n: int, user: str | None, anonymous: str, **fields: Any) -> Any:
    event = {"type": kind, "messageId": f"t-{n}", "anonymousId": anonymous, **fields}
    event |= {"timestamp": "2026-12-07T10:00:00Z", "receivedAt": "2026-12-07T10:00:00Z"}
    event |= {"liftoff": {"source": "web", "schema": 1}}
    return event | ({"userId": user} if user else {})


def test_delete_reaches_every_table_the_typed_layer_writes(
    warehouse: dict[str, str], bucket: tuple[Any, str], aws_env: str
) -> None:
    """The loader's own typed writer fills `web` (users, identity_map, aliases, a discard of
    the user's value): none of the user's ids or events is left in any of it."""
    from services.warehouse.typed import derive
    from services.warehouse.writer import TypedWriter

    connection = fill_warehouse(warehouse)
    connection.execute("DROP SCHEMA web CASCADE")
    events = [
        _typed_event("track", 1, "u7", "a7", event="Signed Up", properties={"seats": 3}),
        _typed_event("page", 2, None, "a42", name="Pricing"),
        _typed_event("identify", 3, "u42", "a42", traits={"email": "u42@example.com"}),
        _typed_event("alias", 4, "u42", "a42", previousId="a42"),
        _typed_event("track", 5, "u42", "a42", event="Signed Up", properties={"seats": "many"}),
        _typed_event("identify", 6, "u7", "a7", traits={"email": "u7@example.com"}),
    ]
    writer = TypedWriter(connection, "web")
    for event in events:  # one at a time: the first value seen fixes `seats` as a number
        rows = derive(event)
        writer.prepare(rows)
        with connection.transaction():
            connection.execute(
                "INSERT INTO events (message_id, type, source, user_id, anonymous_id, timestamp,"
                " received_at, raw, stream_partition, stream_sequence)"
                " VALUES (%s, %s, 'web', %s, %s, now(), now(), %s, 'P', %s)",
                (event["messageId"], event["type"], event.get("userId"), event["anonymousId"],
                 json.dumps(event), 100 + len(event["messageId"])),
            )  # fmt: skip
            writer.write(rows)
    assert connection.execute("SELECT count(*) FROM web.discards").fetchone() == (1,)

    config = settings(warehouse, aws_env, bucket[1])
    assert command.run(config, action="delete", user_ids=["u42"], anonymous_ids=["a42"]) == 0

    tables = connection.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'web'"
    ).fetchall()
    assert {"users", "identity_map", "aliases", "discards", "signed_up"} <= {t for (t,) in tables}
    for (table,) in tables:
        dump = json.dumps(connection.execute(f"SELECT * FROM web.{table}").fetchall(), default=str)
        for needle in ("u42", "a42", "t-2", "t-3", "t-4", "t-5", "many"):
            assert needle not in dump, f"web.{table} still holds {needle!r}: {dump}"
    users = connection.execute("SELECT id, email FROM web.users").fetchall()
    assert users == [("u7", "u7@example.com")], "other users are kept"
    (request,) = command.record.status(connection)
    rows = request["targets"]["warehouse"]["detail"]["rows"]
    assert rows["web.users"] == 1 and rows["web.discards"] == 1 and rows["web.aliases"] == 1


def test_ids_are_checked_before_anything_is_connected(
    aws_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    unreachable = {"PGHOST": "127.0.0.1", "PGPORT": "1", "PGUSER": "u", "PGDATABASE": "d"}
    config = settings(unreachable, aws_env, "unused")
    assert command.run(config, action="suppress") == 2
    assert "give --user-id and/or --anonymous-id" in capsys.readouterr().err
    assert command.run(config, action="delete", user_ids=["u1", " "]) == 2
    assert "--user-id ' ': an id is a non-empty string" in capsys.readouterr().err
    # Valid ids, no database: one line naming where, no traceback.
    assert command.run(config, action="suppress", user_ids=["u1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("liftoff regulation: cannot reach the warehouse at 127.0.0.1:1: ")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
