"""One bad event does not cost its valid neighbours: they are accepted, it is quarantined.

Against a real nats-server -js (a server per test: the dead-letter stream owns `deadletter.>`)
and, for AWS, SQS on moto; the quarantine CLI against the same real server.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import gzip
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
import nats
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import services.events as events_package
from components.observability import SIGNALS_BY_NAME, prometheus_rule_groups
from services import cli
from services.collector.app import CollectorApp
from services.collector.ingest import MAX_GZIP_MEMBERS, Collector, decode_content
from services.collector.quarantine import SUBJECT, SqsQuarantine, open_quarantine
from services.events.limits import InvalidInput
from services.events.records import REJECTION_CODES, Rejected
from services.events.write_keys import WriteKeys
from services.stream.base import open_stream
from services.stream.dead_letters import ensure_dead_letter_stream
from tests import syntax
from tests.servers import ServerProcess, nats_url
from tests.services.conftest import unique_stream_url
from tests.services.stream.under_test import (
    WRITE_KEYS,
    jetstream_message_count,
    read_jetstream,
    wait_ready,
)

pytestmark = pytest.mark.servers

WEB_AUTH = "Basic " + base64.b64encode(b"web-key-1:").decode()
JSON = {"content-type": "application/json", "authorization": WEB_AUTH}


def quarantine_url(server: ServerProcess) -> str:
    return f"{nats_url(server)}/DEADLETTER"


async def read_raw(server_url: str, stream: str) -> list[tuple[str, dict[str, str], bytes]]:
    """(subject, headers, body bytes) of every message: quarantined bodies need not be UTF-8."""
    nc = await nats.connect(server_url, allow_reconnect=False)
    try:
        js = nc.jetstream(timeout=5)
        state = (await js.stream_info(stream)).state
        found = []
        for sequence in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            message = await js.get_msg(stream, sequence)
            found.append((message.subject, dict(message.headers or {}), message.data or b""))
        return found
    finally:
        await nc.close()


@asynccontextmanager
async def quarantining_client(
    stream_url: str, quarantine: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Collector]]:
    collector = Collector(
        open_stream(stream_url), WriteKeys(WRITE_KEYS), quarantine=open_quarantine(quarantine)
    )
    app = CollectorApp(collector)
    await collector.stream.start()
    await collector.quarantine.start()  # type: ignore[union-attr]
    try:
        await wait_ready(collector.stream)
        for _ in range(400):  # the quarantine connects in the background too
            if collector.quarantine._nc is not None:  # type: ignore[union-attr]
                break
            await asyncio.sleep(0.05)
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://collector") as client:
            yield client, collector
    finally:
        await collector.stream.close()
        await collector.quarantine.close()  # type: ignore[union-attr]


MIXED = [
    {"type": "track", "event": "ok-0", "userId": "u", "messageId": "m-0"},
    {"type": "track", "userId": "u", "messageId": "m-1"},  # no `event`
    {"type": "track", "event": "ok-2", "userId": "u", "messageId": "m-2"},
    {"type": "track", "event": "e", "userId": "u", "messageId": " m-3"},  # messageId grammar
    {"type": "identify", "userId": "u", "timestamp": "9999-12-31T23:59:59-10:00"},
    {"type": "page", "anonymousId": "a", "messageId": "m-5"},
]


def mixed_body() -> bytes:
    events = [json.dumps(e).encode() for e in MIXED]
    events.insert(6, b'{"type":"track","event":"\xff","userId":"u"}')  # invalid UTF-8
    return b'{"batch":[' + b",".join(events) + b"]}"


def test_mixed_batch_accepts_the_valid_and_quarantines_the_invalid_once(
    own_nats: ServerProcess,
) -> None:
    url, stream = unique_stream_url(own_nats)
    asyncio.run(ensure_dead_letter_stream(quarantine_url(own_nats), retention_hours=1))
    body = mixed_body()

    async def scenario() -> tuple[list[httpx.Response], str]:
        async with quarantining_client(url, quarantine_url(own_nats)) as (client, _):
            first = await client.post("/v1/batch", content=body, headers=JSON)
            retry = await client.post("/v1/batch", content=body, headers=JSON)  # SDK retry
            metrics = (await client.get("/metrics")).text
            return [first, retry], metrics

    (first, retry), metrics = asyncio.run(scenario())
    assert first.status_code == retry.status_code == 200, first.text
    answer = first.json()
    assert answer["success"] is True and answer["quarantined"] == 4
    assert [(r["index"], r.get("field")) for r in answer["rejected"]] == [
        (1, "event"),
        (3, "messageId"),
        (4, "timestamp"),
        (6, None),
    ]
    assert answer["rejected"][3]["code"] == "invalid_utf8"

    stored = asyncio.run(read_jetstream(nats_url(own_nats), stream))
    assert [m.event["messageId"] for m in stored] == ["m-0", "m-2", "m-5"]  # once, retry deduped

    quarantined = asyncio.run(read_raw(nats_url(own_nats), "DEADLETTER"))
    assert len(quarantined) == 4  # the retry was deduplicated by Nats-Msg-Id
    raw_events = [json.dumps(e).encode() for e in MIXED] + [
        b'{"type":"track","event":"\xff","userId":"u"}'
    ]
    for (subject, headers, data), index in zip(quarantined, (1, 3, 4, 6), strict=True):
        assert subject == SUBJECT
        assert data == raw_events[index]  # the original bytes, unchanged
        assert headers["Liftoff-Consumer"] == "collector"
        assert headers["Liftoff-Source"] == "web"
        assert headers["Liftoff-Route"] == "/v1/batch"
        assert headers["Liftoff-Index"] == str(index)
        assert headers["Liftoff-Reason"].startswith(f"event {index}")
        assert headers["Nats-Msg-Id"].startswith("collector:")
    assert quarantined[0][1]["Liftoff-Message-Id"] == "m-1"
    assert "Liftoff-Message-Id" not in quarantined[1][1]  # " m-3" breaks the grammar
    assert 'liftoff_collector_events_quarantined_total{code="invalid_event",source="web"} 6.0' in (
        metrics.splitlines()
    )  # 3 per request, the retry counted too
    assert 'liftoff_collector_events_accepted_total{source="web"} 6.0' in metrics.splitlines()


def test_quarantine_unavailable_means_503_and_a_retry_succeeds(own_nats: ServerProcess) -> None:
    url, stream = unique_stream_url(own_nats)
    body = mixed_body()

    async def scenario() -> list[httpx.Response]:
        async with quarantining_client(url, quarantine_url(own_nats)) as (client, _):
            # No DEADLETTER stream yet: JetStream refuses the quarantine publish.
            refused = await client.post("/v1/batch", content=body, headers=JSON)
            # ... and nothing of that request reached the event stream.
            assert await jetstream_message_count(nats_url(own_nats), stream) == 0
            await ensure_dead_letter_stream(quarantine_url(own_nats), retention_hours=1)
            retried = await client.post("/v1/batch", content=body, headers=JSON)
            return [refused, retried]

    refused, retried = asyncio.run(scenario())
    assert refused.status_code == 503
    assert refused.json()["code"] == "quarantine_unavailable"
    assert refused.headers["retry-after"]
    assert retried.status_code == 200
    stored = asyncio.run(read_jetstream(nats_url(own_nats), stream))
    assert [m.event["messageId"] for m in stored] == ["m-0", "m-2", "m-5"]
    assert len(asyncio.run(read_raw(nats_url(own_nats), "DEADLETTER"))) == 4


def test_single_event_path_quarantines_an_invalid_event_and_keeps_its_route(
    own_nats: ServerProcess,
) -> None:
    url, stream = unique_stream_url(own_nats)
    asyncio.run(ensure_dead_letter_stream(quarantine_url(own_nats), retention_hours=1))

    async def scenario() -> list[httpx.Response]:
        async with quarantining_client(url, quarantine_url(own_nats)) as (client, _):
            return [
                await client.post(
                    "/v1/track", json={"userId": "u", "messageId": "t1"}, headers=JSON
                ),
                await client.post("/v1/track", content=b'{"event": "e"', headers=JSON),
            ]

    quarantined, unreadable = asyncio.run(scenario())
    assert quarantined.status_code == 200
    assert quarantined.json()["rejected"] == [
        {
            "index": 0,
            "code": "invalid_event",
            "field": "event",
            "reason": "event 0: field `event`: Object missing required field `event`",
        }
    ]
    assert unreadable.status_code == 400  # request-level: nothing to quarantine it as
    ((_, headers, data),) = asyncio.run(read_raw(nats_url(own_nats), "DEADLETTER"))
    assert headers["Liftoff-Route"] == "/v1/track"
    assert json.loads(data) == {"userId": "u", "messageId": "t1"}
    assert asyncio.run(read_jetstream(nats_url(own_nats), stream)) == []


# Invalid events carrying the write key, spelled so that a byte search for "writeKey" misses it,
# or next to bytes that are not UTF-8 (so the event does not decode as text).
KEYED = [
    b'{"type":"track","userId":"u","write\\u004bey":"web-key-1","messageId":"k-0"}',
    b'{"writeKey":"web-key-1","type":"track","event":"\xff","userId":"u"}',
    b'{"type":"track", "userId":"u" ,\n "\\u0077riteKey" : "web-key-1" , "event":"\xfe"}',
    b'{"writeKey":"other","type":"track","userId":"u","writeKey":"web-key-1"}',
    b'{"type":"track","userId":"u","context":{"writeKey":"nested, kept"},"writeKey":"web-key-1"}',
]
KEYED_WITHOUT_KEY = [
    b'{"type":"track","userId":"u","messageId":"k-0"}',
    b'{"type":"track","event":"\xff","userId":"u"}',
    b'{"type":"track", "userId":"u" , "event":"\xfe"}',
    b'{"type":"track","userId":"u"}',
    b'{"type":"track","userId":"u","context":{"writeKey":"nested, kept"}}',
]


def test_the_write_key_stays_out_of_the_quarantine_whatever_its_spelling(
    own_nats: ServerProcess,
) -> None:
    url, _ = unique_stream_url(own_nats)
    asyncio.run(ensure_dead_letter_stream(quarantine_url(own_nats), retention_hours=1))
    batch = b'{"batch":[' + b",".join(KEYED) + b"]}"
    # A single event authenticated by an escaped `writeKey` in its body (and quarantined).
    single = b'{"userId":"u","write\\u004bey":"web-key-1"}'

    async def scenario() -> list[httpx.Response]:
        async with quarantining_client(url, quarantine_url(own_nats)) as (client, _):
            plain = {"content-type": "application/json"}
            return [
                await client.post("/v1/batch", content=batch, headers=JSON),
                await client.post("/v1/track", content=single, headers=plain),
            ]

    batch_answer, single_answer = asyncio.run(scenario())
    assert batch_answer.json()["quarantined"] == len(KEYED), batch_answer.text
    assert single_answer.json()["quarantined"] == 1, single_answer.text
    stored = [data for _, _, data in asyncio.run(read_raw(nats_url(own_nats), "DEADLETTER"))]
    assert [b"web-key-1" in data for data in stored] == [False] * (len(KEYED) + 1)
    # Exactly as sent otherwise: the other members, their bytes (valid UTF-8 or not), spacing.
    assert stored[: len(KEYED)] == KEYED_WITHOUT_KEY
    assert json.loads(stored[-1]) == {"userId": "u"}


def strict_json(text: str | bytes) -> Any:
    """What JSON.parse in Node (or any RFC 8259 reader) accepts: no NaN/Infinity literals."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_a_number_out_of_range_is_quarantined_alike_on_single_and_batch_paths(
    own_nats: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    url, stream = unique_stream_url(own_nats)
    asyncio.run(ensure_dead_letter_stream(quarantine_url(own_nats), retention_hours=1))
    single = b'{"userId":"u","event":"e","messageId":"n-1","properties":{"x":1e999}}'
    # The write key in the body: found although the body does not decode to floats.
    keyed = b'{"writeKey":"web-key-1","userId":"u","event":"e","properties":{"x":-1e999}}'
    batch = (
        b'{"batch":[{"type":"track","userId":"u","event":"e","messageId":"n-2",'
        b'"properties":{"x":1e999}},{"type":"track","userId":"u","event":"ok","messageId":"n-3"}]}'
    )

    async def scenario() -> list[httpx.Response]:
        async with quarantining_client(url, quarantine_url(own_nats)) as (client, _):
            plain = {"content-type": "application/json"}
            return [
                await client.post("/v1/track", content=single, headers=JSON),
                await client.post("/v1/track", content=keyed, headers=plain),
                await client.post("/v1/batch", content=batch, headers=JSON),
            ]

    answers = [response.json() for response in asyncio.run(scenario())]
    rejected = [answer["rejected"] for answer in answers]
    assert [answer["quarantined"] for answer in answers] == [1, 1, 1], answers
    assert [[(r["code"], r.get("field")) for r in found] for found in rejected] == [
        [("number_out_of_range", "properties")]
    ] * 3
    assert rejected[0][0]["reason"] == rejected[2][0]["reason"]
    stored = asyncio.run(read_jetstream(nats_url(own_nats), stream))
    assert [m.event["messageId"] for m in stored] == ["n-3"]

    # Listed as strict JSON (Node's JSON.parse refuses Infinity), the index an integer.
    env = {"LIFTOFF_STREAM_URL": url, "LIFTOFF_LOG_LEVEL": "ERROR"}
    assert cli.main(["quarantine", "list"], env) == 0
    listed = [strict_json(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["index"], e["code"]) for e in listed] == [(0, "number_out_of_range")] * 3
    assert listed[0]["event"] == single.decode()  # its text: no float holds 1e999


def test_quarantine_cli_lists_and_replays(
    own_nats: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, stream = unique_stream_url(own_nats)
    asyncio.run(ensure_dead_letter_stream(quarantine_url(own_nats), retention_hours=1))

    async def send() -> httpx.Response:
        async with quarantining_client(url, quarantine_url(own_nats)) as (client, _):
            return await client.post("/v1/batch", content=mixed_body(), headers=JSON)

    assert asyncio.run(send()).status_code == 200
    env = {"LIFTOFF_STREAM_URL": url, "LIFTOFF_LOG_LEVEL": "ERROR"}

    assert cli.main(["quarantine", "list"], env) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["index"], e["source"], e["route"]) for e in listed] == [
        (1, "web", "/v1/batch"),
        (3, "web", "/v1/batch"),
        (4, "web", "/v1/batch"),
        (6, "web", "/v1/batch"),
    ]
    assert listed[0]["event"] == MIXED[1]
    assert listed[3]["event"] == '{"type":"track","event":"\\xff","userId":"u"}'
    assert "`event`" in listed[0]["reason"]

    # Replaying as is: still invalid, nothing moves (exit 1 says so).
    assert cli.main(["quarantine", "replay"], env) == 1
    outcomes = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["replayed"] for o in outcomes] == [False] * 4

    # Repaired by hand: published to the stream, removed from the quarantine.
    repaired = tmp_path / "fixed.json"
    # Larger than the collector's per-event allowance alone: bounded by its own size.
    repaired.write_text(
        json.dumps({**MIXED[1], "event": "repaired", "properties": {"n": "x" * 2000}})
    )
    sequence = str(listed[0]["sequence"])
    assert cli.main(["quarantine", "replay", "--seq", sequence, "--body", str(repaired)], env) == 0
    (outcome,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert outcome == {"sequence": int(sequence), "replayed": True, "messageId": "m-1"}
    stored = asyncio.run(read_jetstream(nats_url(own_nats), stream))
    assert [m.event["messageId"] for m in stored] == ["m-0", "m-2", "m-5", "m-1"]
    assert stored[-1].event["event"] == "repaired"
    assert cli.main(["quarantine", "list"], env) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_sqs_quarantine_has_the_dead_letter_shape(aws_env: str) -> None:
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="collector-quarantine")["QueueUrl"]
    items = [
        Rejected(i, "invalid_event", f"event {i}: bad", "event", b'{"userId":"u"}', f"m-{i}")
        for i in range(12)  # more than one SendMessageBatch
    ] + [
        Rejected(12, "invalid_utf8", "event 12: not UTF-8", None, b'{"a":"\xff"}', None),
        Rejected(13, "number_out_of_range", "event 13: 1e999", "x", b'{"x":1e999}', None),
    ]

    async def put() -> None:
        quarantine = SqsQuarantine("sqs://collector-quarantine")
        await quarantine.start()
        await quarantine.put("web", "/v1/batch", "2026-01-02T03:04:05.000Z", items)

    asyncio.run(put())
    bodies: list[dict[str, Any]] = []
    while len(bodies) < 14:
        page = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        bodies.extend(strict_json(m["Body"]) for m in page.get("Messages", []))
    by_index = {b["index"]: b for b in bodies}
    assert sorted(by_index) == list(range(14))
    assert by_index[0] == {
        "reason": "event 0: bad",
        "consumer": "collector",
        "attempts": 1,
        "event": {"userId": "u"},
        "messageId": "m-0",
        "subject": None,
        "position": None,
        "source": "web",
        "route": "/v1/batch",
        "index": 0,
        "code": "invalid_event",
        "field": "event",
        "receivedAt": "2026-01-02T03:04:05.000Z",
    }
    assert by_index[12]["event"] is None  # not UTF-8: kept exactly, in base64
    assert base64.b64decode(by_index[12]["eventBase64"]) == b'{"a":"\xff"}'
    assert by_index[13]["event"] is None  # no float holds 1e999: kept exactly, the body strict
    assert base64.b64decode(by_index[13]["eventBase64"]) == b'{"x":1e999}'


def test_sqs_quarantine_keeps_large_non_ascii_events_exactly(aws_env: str) -> None:
    # 400 KB of UTF-8 escapes to 1.2 MB of ASCII JSON: past SQS's 1 MiB, so sent as base64,
    # and three of them need three SendMessageBatch calls (1 MiB per call).
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName="collector-quarantine-large")["QueueUrl"]
    raw = json.dumps({"userId": "u", "text": "é" * 200_000}, ensure_ascii=False).encode()
    items = [Rejected(i, "event_too_large", "too large", None, raw, None) for i in range(3)]

    async def put() -> None:
        quarantine = SqsQuarantine("sqs://collector-quarantine-large")
        await quarantine.start()
        await quarantine.put("web", "/v1/batch", "2026-01-02T03:04:05.000Z", items)

    asyncio.run(put())
    bodies: list[dict[str, Any]] = []
    while len(bodies) < 3:
        page = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        bodies.extend(json.loads(m["Body"]) for m in page.get("Messages", []))
    assert sorted(b["index"] for b in bodies) == [0, 1, 2]
    assert all(base64.b64decode(b["eventBase64"]) == raw for b in bodies)


# --- gzip: every member read, within the one size bound ----------------------------------------


def test_multi_member_gzip_is_read_whole() -> None:
    text = json.dumps({"batch": [{"type": "track", "event": "e", "userId": "u"}] * 3}).encode()
    members = b"".join(gzip.compress(text[i : i + 20]) for i in range(0, len(text), 20))
    assert decode_content(members, "gzip") == text


def test_multi_member_gzip_past_the_limit_is_413() -> None:
    member = gzip.compress(b" " * 300_000)
    with pytest.raises(InvalidInput) as caught:
        decode_content(member + member, "gzip")
    assert (caught.value.status, caught.value.code) == (413, "request_too_large")


def test_gzip_members_are_read_in_a_loop_up_to_a_bound() -> None:
    text = b'{"batch":[]}' + b" " * (MAX_GZIP_MEMBERS - 12)
    members = [gzip.compress(text[i : i + 1]) for i in range(len(text))]
    assert decode_content(b"".join(members), "gzip") == text
    with pytest.raises(InvalidInput) as caught:  # one member more than the bound
        decode_content(b"".join(members) + gzip.compress(b" "), "gzip")
    assert (caught.value.status, caught.value.code) == (400, "malformed_gzip")
    assert str(MAX_GZIP_MEMBERS) in caught.value.message


# mtime=0: the bodies are test ids, which must be the same in every xdist worker (a gzip
# header holds the time of compression; workers collecting a second apart differed).
EMPTY_OBJECT_GZIP = gzip.compress(b"{}", mtime=0)


@pytest.mark.parametrize(
    "body", [EMPTY_OBJECT_GZIP + b"garbage", EMPTY_OBJECT_GZIP + EMPTY_OBJECT_GZIP[:-4]]
)
def test_gzip_followed_by_junk_or_a_truncated_member_is_400(body: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_content(body, "gzip")
    assert (caught.value.status, caught.value.code) == (400, "malformed_gzip")


def test_an_unexpected_error_is_a_500_without_details() -> None:
    class BrokenStream:
        async def publish(self, records: Any) -> None:
            raise RuntimeError("secret detail: nats://user:password@host")

    from services.collector.ingest import IngestRequest

    collector = Collector(BrokenStream(), WriteKeys(WRITE_KEYS))  # type: ignore[arg-type]
    body = json.dumps({"batch": [MIXED[0]]}).encode()
    response = asyncio.run(
        collector.ingest(IngestRequest("/v1/batch", body, authorization=WEB_AUTH))
    )
    assert response.status == 500
    assert json.loads(response.body) == {
        "success": False,
        "code": "internal",
        "message": "internal error",
    }


# Request-level 400s: the whole request is refused, nothing is quarantined.
REQUEST_LEVEL_CODES = {"too_many_events"}


def _literal_400_codes() -> set[str]:
    """Every code services/events raises with status 400 (read from its source)."""
    codes = set()
    for path in (Path(events_package.__file__).parent).glob("*.py"):
        for node in ast.walk(syntax.parse(path.read_text())):
            if not isinstance(node, ast.Call) or len(node.args) < 2:
                continue
            status, code = node.args[0], node.args[1]
            if (
                isinstance(status, ast.Constant)
                and status.value == 400
                and isinstance(code, ast.Constant)
            ):
                codes.add(code.value)
    return codes


def test_rejection_codes_are_every_event_level_code() -> None:
    assert set(REJECTION_CODES) == _literal_400_codes() - REQUEST_LEVEL_CODES


def _samples(metrics: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == name
    }


def test_the_first_quarantine_burst_fires_the_dead_letter_alert(
    own_nats: ServerProcess, tmp_path: Path
) -> None:
    """Prometheus sees the collector's real /metrics before and after one burst of invalid
    events; `promtool` evaluates the LiftoffDeadLetters rule over those scrapes. A series
    born at the burst has no earlier sample and increase() sees nothing: each (source, code)
    series must be scraped at 0 from the start."""
    url, _ = unique_stream_url(own_nats)
    asyncio.run(ensure_dead_letter_stream(quarantine_url(own_nats), retention_hours=1))

    async def scenario() -> tuple[str, str]:
        async with quarantining_client(url, quarantine_url(own_nats)) as (client, _):
            before = (await client.get("/metrics")).text
            answer = await client.post("/v1/batch", content=mixed_body(), headers=JSON)
            assert answer.status_code == 200, answer.text
            return before, (await client.get("/metrics")).text

    before, after = asyncio.run(scenario())
    name = "liftoff_collector_events_quarantined_total"
    scraped_before, scraped_after = _samples(before, name), _samples(after, name)
    assert sum(scraped_after.values()) == 4
    assert {dict(labels)["source"] for labels in scraped_before} == set(WRITE_KEYS)
    series = []
    for labels in sorted({*scraped_before, *scraped_after}):
        text = ",".join(f'{k}="{v}"' for k, v in (*labels, ("namespace", "liftoff-dev")))
        # Scraped each minute: 5 scrapes before the burst ('_': no sample), 7 after.
        first = scraped_before.get(labels)
        values = ("_ " * 5 if first is None else f"{first:g}x4 ") + f"{scraped_after[labels]:g}x6"
        series.append({"series": f"{name}{{{text}}}", "values": values})
    signal = SIGNALS_BY_NAME["LiftoffDeadLetters"]
    expected = {
        "exp_labels": {
            "namespace": "liftoff-dev",
            "severity": signal.severity,
            "signal": signal.name,
        },
        "exp_annotations": {"summary": signal.meaning, "runbook": signal.runbook},
    }
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": prometheus_rule_groups()}, sort_keys=False))
    case = {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": signal.name, "exp_alerts": [expected]}
        ],
    }
    test_file = tmp_path / "burst.test.yaml"
    test_file.write_text(yaml.safe_dump({"rule_files": [str(rules)], "tests": [case]}))
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    done = subprocess.run(
        [promtool, "test", "rules", str(test_file)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
