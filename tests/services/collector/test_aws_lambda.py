"""The Lambda handler (API Gateway HTTP API, payload 2.0) against moto Kinesis + Secrets Manager."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from services import aws_lambda
from services.collector import aws_lambda as collector_lambda
from services.collector.ingest import ROUTES
from services.contract import ConfigError
from tests.services.stream.under_test import WRITE_KEYS, WRITE_KEYS_JSON, read_kinesis

pytestmark = pytest.mark.servers

WEB_AUTH = "Basic " + base64.b64encode(b"web-key-1:").decode()


@pytest.fixture(autouse=True)
def cold_start() -> Iterator[None]:
    aws_lambda.reset_for_tests()
    yield
    aws_lambda.reset_for_tests()


@pytest.fixture
def lambda_env(kinesis: tuple[Any, str], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    client, name = kinesis
    monkeypatch.setenv("LIFTOFF_STREAM_URL", f"kinesis://{name}")
    monkeypatch.setenv("LIFTOFF_WRITE_KEYS", WRITE_KEYS_JSON)
    monkeypatch.delenv("LIFTOFF_WRITE_KEYS_SECRET_ARN", raising=False)
    return client, name


def http_api_event(
    body: bytes,
    *,
    path: str = "/v1/batch",
    method: str = "POST",
    headers: dict[str, str] | None = None,
    base64_encoded: bool = True,
    stage: str = "$default",
) -> dict[str, Any]:
    # The shape API Gateway HTTP APIs send (payload format 2.0).
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", **(headers or {})},
        "requestContext": {
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "stage": stage,
            "http": {"method": method, "path": path, "sourceIp": "203.0.113.9"},
        },
        "body": base64.b64encode(body).decode() if base64_encoded else body.decode(),
        "isBase64Encoded": base64_encoded,
    }


def events(count: int) -> list[dict[str, Any]]:
    return [
        {"type": "track", "event": "E", "userId": f"u{i % 3}", "messageId": f"m{i}"}
        for i in range(count)
    ]


def test_gzip_base64_batch_lands_on_kinesis(lambda_env: tuple[Any, str]) -> None:
    client, name = lambda_env
    body = gzip.compress(json.dumps({"batch": events(25)}).encode())
    response = aws_lambda.collector_handler(
        http_api_event(body, headers={"content-encoding": "gzip", "authorization": WEB_AUTH}),
        None,
    )
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"success": True}
    assert response["headers"]["access-control-allow-origin"] == "*"
    stored = read_kinesis(client, name)
    assert sorted(e["messageId"] for _, e in stored) == sorted(f"m{i}" for i in range(25))
    assert {key for key, _ in stored} == {"u0", "u1", "u2"}
    assert {e["liftoff"]["source"] for _, e in stored} == {"web"}


def test_plain_body_single_event_under_a_named_stage(lambda_env: tuple[Any, str]) -> None:
    client, name = lambda_env
    body = json.dumps({"userId": "u", "event": "Clicked", "writeKey": "ios-key-2"}).encode()
    response = aws_lambda.collector_handler(
        http_api_event(body, path="/prod/v1/track", base64_encoded=False, stage="prod"), None
    )
    assert response["statusCode"] == 200, response["body"]
    ((key, event),) = read_kinesis(client, name)
    assert (key, event["type"], event["liftoff"]["source"]) == ("u", "track", "ios")


def test_bad_input_publishes_nothing(lambda_env: tuple[Any, str]) -> None:
    client, name = lambda_env
    bad_third = [*events(2), {"type": "group", "userId": "u"}]
    response = aws_lambda.collector_handler(
        http_api_event(
            json.dumps({"batch": bad_third}).encode(), headers={"authorization": WEB_AUTH}
        ),
        None,
    )
    assert response["statusCode"] == 400
    answer = json.loads(response["body"])
    assert (answer["index"], answer["field"]) == (2, "groupId")
    assert read_kinesis(client, name) == []


def test_method_path_and_preflight(lambda_env: tuple[Any, str]) -> None:
    get = aws_lambda.collector_handler(http_api_event(b"", method="GET"), None)
    unknown = aws_lambda.collector_handler(http_api_event(b"{}", path="/v2/batch"), None)
    preflight = aws_lambda.collector_handler(
        http_api_event(
            b"", method="OPTIONS", headers={"access-control-request-headers": "content-type"}
        ),
        None,
    )
    assert (get["statusCode"], unknown["statusCode"], preflight["statusCode"]) == (405, 404, 204)
    allowed = preflight["headers"]["access-control-allow-headers"].lower().split(", ")
    assert {"content-type", "authorization"} <= set(allowed)
    # CORS on every answer, errors included (the API's edge CORS is off).
    assert {r["headers"].get("access-control-allow-origin") for r in (get, unknown)} == {"*"}


def test_write_keys_from_secrets_manager(
    lambda_env: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, name = lambda_env
    secret = boto3.client("secretsmanager").create_secret(
        Name=f"liftoff-write-keys-{name}", SecretString=json.dumps({"server": "from-secret"})
    )
    monkeypatch.delenv("LIFTOFF_WRITE_KEYS")
    monkeypatch.setenv("LIFTOFF_WRITE_KEYS_SECRET_ARN", secret["ARN"])
    body = json.dumps({"batch": events(1)}).encode()

    def post(key: str) -> int:
        auth = "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        response = aws_lambda.collector_handler(
            http_api_event(body, headers={"authorization": auth}), None
        )
        return response["statusCode"]

    assert post("from-secret") == 200
    assert post(WRITE_KEYS["web"]) == 401  # only the secret's keys count
    ((_, event),) = read_kinesis(client, name)
    assert event["liftoff"]["source"] == "server"


def test_kinesis_failure_is_a_503(aws_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFTOFF_STREAM_URL", "kinesis://does-not-exist?max_attempts=1")
    monkeypatch.setenv("LIFTOFF_WRITE_KEYS", WRITE_KEYS_JSON)
    response = aws_lambda.collector_handler(
        http_api_event(
            json.dumps({"batch": events(1)}).encode(), headers={"authorization": WEB_AUTH}
        ),
        None,
    )
    assert response["statusCode"] == 503
    assert response["headers"]["retry-after"] == "5"


def test_cold_start_configuration_errors_name_the_variable(
    aws_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIFTOFF_STREAM_URL", raising=False)
    monkeypatch.setenv("LIFTOFF_WRITE_KEYS", WRITE_KEYS_JSON)
    with pytest.raises(ConfigError, match="LIFTOFF_STREAM_URL"):
        aws_lambda.collector_handler(http_api_event(b"{}"), None)
    monkeypatch.setenv("LIFTOFF_STREAM_URL", "nats://nats:4222/EVENTS")
    with pytest.raises(ConfigError, match="kinesis://"):
        aws_lambda.collector_handler(http_api_event(b"{}"), None)


def test_context_ip_from_api_gateway_source_ip_and_per_source_opt_out(
    lambda_env: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, name = lambda_env
    monkeypatch.setenv("LIFTOFF_IP_COLLECTION_OFF", "ios")
    ios_auth = "Basic " + base64.b64encode(b"ios-key-2:").decode()
    sent = [
        {"type": "track", "event": "E", "userId": "u", "messageId": "web-1"},
        {
            "type": "track",
            "event": "E",
            "userId": "u",
            "messageId": "web-2",
            "context": {"ip": "198.51.100.1"},
        },
    ]
    spoofed = {"authorization": WEB_AUTH, "x-forwarded-for": "192.0.2.66"}
    for headers in (spoofed, {"authorization": ios_auth}):
        body = json.dumps({"batch": sent}).encode()
        response = aws_lambda.collector_handler(http_api_event(body, headers=headers), None)
        assert response["statusCode"] == 200, response["body"]
    ips = {
        (e["liftoff"]["source"], e["messageId"]): e.get("context", {}).get("ip")
        for _, e in read_kinesis(client, name)
    }
    assert ips == {
        ("web", "web-1"): "203.0.113.9",  # requestContext.http.sourceIp, never the header
        ("web", "web-2"): "198.51.100.1",  # what the client sent is kept
        ("ios", "web-1"): None,  # collection off: neither filled ...
        ("ios", "web-2"): None,  # ... nor kept
    }


def test_invalid_events_go_to_the_sqs_quarantine(
    lambda_env: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, name = lambda_env
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"{name}-quarantine")["QueueUrl"]
    monkeypatch.setenv("LIFTOFF_DEAD_LETTER_URL", f"sqs://{name}-quarantine")
    bad_third = [*events(2), {"type": "group", "userId": "u", "messageId": "g-1"}]
    response = aws_lambda.collector_handler(
        http_api_event(
            json.dumps({"batch": bad_third}).encode(), headers={"authorization": WEB_AUTH}
        ),
        None,
    )
    assert response["statusCode"] == 200
    answer = json.loads(response["body"])
    assert (answer["quarantined"], answer["rejected"][0]["index"]) == (1, 2)
    assert sorted(e["messageId"] for _, e in read_kinesis(client, name)) == ["m0", "m1"]
    (message,) = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
    parked = json.loads(message["Body"])
    assert (parked["consumer"], parked["source"], parked["index"], parked["field"]) == (
        "collector",
        "web",
        2,
        "groupId",
    )
    assert parked["event"] == bad_third[2] and parked["messageId"] == "g-1"


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "stored"),
    [
        ("/v1/track", b'{"event":"\xff","userId":"u"}', 400, "invalid_utf8", 0),
        (
            "/v1/batch",
            b'{"batch":[{"p":' + b"[" * 5000 + b"]" * 5000 + b"}]}",
            400,
            "nesting_too_deep",
            0,
        ),
        (
            "/v1/batch",
            b'{"batch":[{"type":"track","event":"e","userId":"u","messageId":"ok"},'
            b'{"type":"track","event":"e","userId":"u","timestamp":"9999-12-31T23:59:59-10:00"}]}',
            200,
            "invalid_event",
            1,
        ),
    ],
)
def test_hostile_bodies_through_api_gateway(
    lambda_env: tuple[Any, str],
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    body: bytes,
    status: int,
    code: str,
    stored: int,
) -> None:
    client, name = lambda_env
    boto3.client("sqs").create_queue(QueueName=f"{name}-q")
    monkeypatch.setenv("LIFTOFF_DEAD_LETTER_URL", f"sqs://{name}-q")
    response = aws_lambda.collector_handler(
        http_api_event(body, path=path, headers={"authorization": WEB_AUTH}), None
    )
    assert response["statusCode"] == status
    answer = json.loads(response["body"])
    assert (answer.get("code") or answer["rejected"][0]["code"]) == code
    assert len(read_kinesis(client, name)) == stored


TRACK = b'{"userId":"u","event":"e"}'
# name → (headers, body as API Gateway passes it, base64?, status, code, the header named)
HOSTILE_HEADERS: dict[str, tuple[dict[str, str], str, bool, int, str, str]] = {
    "Authorization with non-ASCII text": (
        {"authorization": "Basic \u00e9\u00e9\u00e9"},
        TRACK.decode(),
        False,
        401,
        "invalid_write_key",
        "Authorization",
    ),
    "Authorization decoding to bytes that are not UTF-8": (
        {"authorization": "Basic 6Ok6"},
        TRACK.decode(),
        False,
        401,
        "invalid_write_key",
        "Authorization",
    ),
    "Origin with non-ASCII text": (
        {"authorization": WEB_AUTH, "origin": "https://\u00e9vil.example"},
        TRACK.decode(),
        False,
        400,
        "invalid_header",
        "Origin",
    ),
    "Content-Type with non-ASCII text": (
        {"authorization": WEB_AUTH, "content-type": "application/json\u00ff"},
        TRACK.decode(),
        False,
        415,
        "unsupported_media_type",
        "Content-Type",
    ),
    "a text body with a lone surrogate": (
        {"authorization": WEB_AUTH},
        '{"userId":"u","event":"\ud800"}',
        False,
        400,
        "invalid_utf8",
        "",
    ),
    "a base64 body with non-ASCII text": (
        {"authorization": WEB_AUTH},
        "e30=\u00e9",
        True,
        400,
        "malformed_body",
        "",
    ),
}


@pytest.mark.parametrize("case", HOSTILE_HEADERS, ids=list(HOSTILE_HEADERS))
def test_hostile_headers_through_api_gateway_get_a_4xx_naming_them(
    lambda_env: tuple[Any, str], case: str
) -> None:
    client, name = lambda_env
    headers, body, base64_encoded, status, code, header = HOSTILE_HEADERS[case]
    event = http_api_event(b"", path="/v1/track", headers=headers)
    event["body"], event["isBase64Encoded"] = body, base64_encoded
    response = aws_lambda.collector_handler(event, None)
    answer = json.loads(response["body"])
    assert (response["statusCode"], answer["code"]) == (status, code), answer
    assert header in answer["message"]
    assert answer.get("field", "") == header
    assert read_kinesis(client, name) == []


def test_analytics_js_routes_and_short_paths_under_a_named_stage(
    lambda_env: tuple[Any, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    client, name = lambda_env
    (tmp_path / "standalone.js").write_bytes(b"/* analytics.js */\n")
    (tmp_path / "standalone.js.gz").write_bytes(gzip.compress(b"/* analytics.js */\n", mtime=0))
    monkeypatch.setattr(collector_lambda, "DEFAULT_LIBRARY_DIR", tmp_path)

    def call(path: str, method: str = "GET", **headers: str) -> dict[str, Any]:
        event = http_api_event(
            b"", path=f"/prod{path}", method=method, headers=headers, stage="prod"
        )
        return aws_lambda.collector_handler({**event, "body": None}, None)

    settings = call("/v1/projects/web-key-1/settings", origin="https://shop.example")
    segment = json.loads(settings["body"])["integrations"]["Segment.io"]
    assert (segment["apiHost"], segment["protocol"]) == (
        "abc123.execute-api.eu-west-1.amazonaws.com/prod/v1",
        "https",
    )
    assert settings["headers"]["access-control-allow-origin"] == "*"
    unknown = call("/v1/projects/nope/settings")
    assert unknown["statusCode"] == 404 and unknown["headers"]["access-control-allow-origin"]
    head = call("/v1/projects/web-key-1/settings", method="HEAD")
    assert (head["statusCode"], head["body"]) == (200, "")
    library = call("/analytics.js/v1/web-key-1/analytics.min.js", **{"accept-encoding": "gzip"})
    assert library["isBase64Encoded"] and library["headers"]["content-encoding"] == "gzip"
    assert gzip.decompress(base64.b64decode(library["body"])) == b"/* analytics.js */\n"
    cached = call(
        "/analytics.js/v1/web-key-1/analytics.min.js",
        **{"if-none-match": library["headers"]["etag"]},
    )
    assert cached["statusCode"] == 200  # that ETag names the gzip representation
    cached = call(
        "/analytics.js/v1/web-key-1/analytics.min.js",
        **{"if-none-match": library["headers"]["etag"], "accept-encoding": "gzip"},
    )
    assert cached["statusCode"] == 304
    preflight = call("/v1/projects/web-key-1/settings", method="OPTIONS", origin="https://a.b")
    assert preflight["statusCode"] == 204
    assert "authorization" in preflight["headers"]["access-control-allow-headers"].lower()

    body = json.dumps({"userId": "u", "event": "E", "writeKey": "web-key-1"}).encode()
    short = aws_lambda.collector_handler(
        http_api_event(
            body, path="/prod/v1/t", headers={"content-type": "text/plain"}, stage="prod"
        ),
        None,
    )
    assert short["statusCode"] == 200, short["body"]
    assert [event["event"] for _, event in read_kinesis(client, name)] == ["E"]


def test_allowed_origins_are_enforced_on_lambda(
    lambda_env: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, name = lambda_env
    monkeypatch.setenv("LIFTOFF_ALLOWED_ORIGINS", json.dumps({"web": ["https://shop.example"]}))
    body = json.dumps({"batch": events(2)}).encode()

    def post(origin: str) -> dict[str, Any]:
        headers = {"authorization": WEB_AUTH, "origin": origin}
        return aws_lambda.collector_handler(http_api_event(body, headers=headers), None)

    refused, allowed = post("https://evil.example"), post("https://shop.example")
    assert refused["statusCode"] == 403
    assert json.loads(refused["body"])["code"] == "origin_not_allowed"
    assert allowed["statusCode"] == 200
    assert allowed["headers"]["access-control-allow-origin"] == "https://shop.example"
    assert "Origin" in allowed["headers"]["vary"]
    assert len(read_kinesis(client, name)) == 2  # only the allowed request's events


def test_unknown_source_in_allowed_origins_is_a_config_error(
    lambda_env: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LIFTOFF_ALLOWED_ORIGINS", json.dumps({"shop": ["https://a.example"]}))
    with pytest.raises(ConfigError, match="LIFTOFF_ALLOWED_ORIGINS names sources without"):
        aws_lambda.collector_handler(http_api_event(b"{}"), None)


def test_preflight_and_cors_on_every_route_of_the_function(lambda_env: tuple[Any, str]) -> None:
    """The API routes every method to the function; it must answer like the container."""
    paths = [
        *ROUTES,
        "/v1/projects/web-key-1/settings",
        "/analytics.js/v1/web-key-1/analytics.min.js",
        "/analytics-next/bundles/auto-track.bundle.0123abcd.js",
    ]
    for path in paths:
        headers = {"origin": "https://shop.example", "access-control-request-method": "POST"}
        answer = aws_lambda.collector_handler(
            {**http_api_event(b"", path=path, method="OPTIONS", headers=headers), "body": None},
            None,
        )
        assert answer["statusCode"] == 204, path
        assert answer["headers"]["access-control-allow-origin"] == "*", path
        allowed = answer["headers"]["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed, path
