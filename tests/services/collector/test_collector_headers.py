"""Hostile headers and trailers, against `python -m services collector` on a real nats-server -js.

Every header the collector reads (Authorization, Content-Type, Content-Encoding, Content-Length,
Origin, Host, X-Forwarded-For from a trusted proxy) gets a JSON 4xx naming it whatever bytes it
holds, never a 5xx, and nothing of a refused request is published. A chunked request's trailer
section is bounded like the headers and never acts as headers: a trailer `Authorization` does
not authenticate, a trailer `Content-Encoding` does not decode.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from services.stream.dead_letters import ensure_dead_letter_stream
from tests.servers import LOOPBACK, ServerProcess, collector_server, nats_server, nats_url
from tests.services.collector.test_collector_hostile import peak_rss_kib, reset_peak_rss
from tests.services.conftest import unique_stream_url
from tests.services.stream.under_test import WRITE_KEYS_JSON, jetstream_message_count

pytestmark = pytest.mark.servers

WEB_AUTH = b"Basic d2ViLWtleS0xOg=="  # web-key-1:
EVENT = b'{"userId":"u","event":"e"}'
BATCH = b'{"batch":[{"type":"track","userId":"u","event":"e"}]}'


@pytest.fixture(scope="module")
def nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with nats_server(tmp_path_factory.mktemp("nats")) as server:
        asyncio.run(ensure_dead_letter_stream(f"{nats_url(server)}/DEADLETTER", 1))
        yield server


@pytest.fixture(scope="module")
def stream(nats: ServerProcess) -> tuple[str, str]:
    return unique_stream_url(nats)


@pytest.fixture(scope="module")
def collector(
    tmp_path_factory: pytest.TempPathFactory, stream: tuple[str, str]
) -> Iterator[ServerProcess]:
    url, _ = stream
    # Loopback is a trusted proxy, so X-Forwarded-For is read (and can be hostile).
    env = {"LIFTOFF_TRUSTED_PROXIES": "127.0.0.0/8"}
    workdir = tmp_path_factory.mktemp("collector")
    with collector_server(workdir, url, WRITE_KEYS_JSON, extra_env=env) as server:
        yield server


def exchange(port: int, request: bytes, timeout: float = 20) -> bytes:
    """Send `request` whole, read one complete answer (or until the server closes)."""
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                head, separator, body = received.partition(b"\r\n\r\n")
                if separator and len(body) >= content_length(head):
                    break
        except ConnectionResetError:
            pass
        return received


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def answer_of(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), raw[:300]
    return int(head.split()[1]), json.loads(body)


def post(path: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: collector\r\n" + lines
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


def stored(nats: ServerProcess, stream: tuple[str, str]) -> int:
    return asyncio.run(jetstream_message_count(nats_url(nats), stream[1]))


AUTH = (b"Authorization", WEB_AUTH)
# name → (request, status, code, the header the answer names)
HEADER_CASES: dict[str, tuple[bytes, int, str, str]] = {
    "Authorization with non-ASCII bytes": (
        post(b"/v1/track", [(b"Authorization", b"Basic \xe9\xe9\xe9")], EVENT),
        401,
        "invalid_write_key",
        "Authorization",
    ),
    "Authorization decoding to bytes that are not UTF-8": (
        post(b"/v1/track", [(b"Authorization", b"Basic 6Ok6")], EVENT),  # b"\xe9\xe9:"
        401,
        "invalid_write_key",
        "Authorization",
    ),
    "Authorization that is not base64": (
        post(b"/v1/track", [(b"Authorization", b"Basic !!!")], EVENT),
        401,
        "invalid_write_key",
        "Authorization",
    ),
    "Authorization with another scheme": (
        post(b"/v1/track", [(b"Authorization", b"Bearer abc")], EVENT),
        401,
        "invalid_write_key",
        "Authorization",
    ),
    "Authorization sent twice": (
        post(b"/v1/track", [AUTH, (b"Authorization", b"Basic aW9zLWtleS0yOg==")], EVENT),
        400,
        "invalid_header",
        "Authorization",
    ),
    "Content-Type with non-ASCII bytes": (
        post(b"/v1/track", [AUTH, (b"Content-Type", b"application/json\xff")], EVENT),
        415,
        "unsupported_media_type",
        "Content-Type",
    ),
    "Content-Type sent twice": (
        post(
            b"/v1/track",
            [AUTH, (b"Content-Type", b"application/json"), (b"Content-Type", b"text/html")],
            EVENT,
        ),
        400,
        "invalid_header",
        "Content-Type",
    ),
    "Content-Encoding with non-ASCII bytes": (
        post(b"/v1/track", [AUTH, (b"Content-Encoding", b"gz\xffip")], EVENT),
        415,
        "unsupported_content_encoding",
        "Content-Encoding",
    ),
    "Content-Encoding gzip twice (a body gzipped twice)": (
        post(
            b"/v1/track",
            [AUTH, (b"Content-Encoding", b"gzip"), (b"Content-Encoding", b"gzip")],
            gzip.compress(gzip.compress(EVENT)),
        ),
        415,
        "unsupported_content_encoding",
        "Content-Encoding",
    ),
    "Origin with non-ASCII bytes": (
        post(b"/v1/track", [AUTH, (b"Origin", b"https://\xe9vil.example")], EVENT),
        400,
        "invalid_header",
        "Origin",
    ),
    "Origin with non-ASCII bytes on a read route": (
        b"GET /healthz HTTP/1.1\r\nHost: collector\r\nOrigin: https://\xe9vil.example\r\n\r\n",
        400,
        "invalid_header",
        "Origin",
    ),
    "X-Forwarded-For that is not an address (trusted proxy)": (
        post(b"/v1/track", [AUTH, (b"X-Forwarded-For", b"\xe9garbage")], EVENT),
        400,
        "invalid_header",
        "X-Forwarded-For",
    ),
    "X-Forwarded-For with a port that is not one (trusted proxy)": (
        post(b"/v1/batch", [AUTH, (b"X-Forwarded-For", b"203.0.113.5:http")], BATCH),
        400,
        "invalid_header",
        "X-Forwarded-For",
    ),
    "Host with non-ASCII bytes on the settings route": (
        b"GET /v1/projects/web-key-1/settings HTTP/1.1\r\nHost: \xe9vil\r\n\r\n",
        400,
        "invalid_host",
        "Host",
    ),
    "Content-Length that is not a number": (
        b"POST /v1/track HTTP/1.1\r\nHost: collector\r\nContent-Length: \xb2\r\n\r\n",
        400,
        "malformed_http",
        "Content-Length",
    ),
}


@pytest.mark.parametrize("case", HEADER_CASES, ids=list(HEADER_CASES))
def test_a_hostile_header_gets_a_json_4xx_naming_it_and_nothing_is_published(
    collector: ServerProcess, nats: ServerProcess, stream: tuple[str, str], case: str
) -> None:
    request, status, code, header = HEADER_CASES[case]
    before = stored(nats, stream)

    got_status, answer = answer_of(exchange(collector.port, request))

    assert (got_status, answer["success"], answer["code"]) == (status, False, code), answer
    assert header in str(answer["message"])
    if header == "Authorization":  # the credentials sent are never quoted back
        for credentials in re.findall(rb"Authorization: \S+ (\S+)\r\n", request):
            assert credentials.decode("latin-1") not in str(answer["message"]), answer
    if code not in ("invalid_host", "malformed_http"):
        assert answer["field"] == header
    assert stored(nats, stream) == before
    assert "Traceback" not in collector.log_path.read_text()


def test_a_valid_forwarded_for_from_a_trusted_proxy_is_still_accepted(
    collector: ServerProcess, nats: ServerProcess, stream: tuple[str, str]
) -> None:
    before = stored(nats, stream)
    forwarded = [AUTH, (b"X-Forwarded-For", b"192.0.2.1, [2001:db8::1]:443")]
    status, answer = answer_of(exchange(collector.port, post(b"/v1/track", forwarded, EVENT)))
    assert (status, answer) == (200, {"success": True})
    assert stored(nats, stream) == before + 1


# --- trailers ----------------------------------------------------------------------------------


def chunked(headers: list[tuple[bytes, bytes]], body: bytes, trailers: bytes) -> bytes:
    lines = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return (
        b"POST /v1/batch HTTP/1.1\r\nHost: collector\r\nContent-Type: application/json\r\n"
        + lines + b"Transfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(body) + body + b"\r\n0\r\n" + trailers + b"\r\n"
    )  # fmt: skip


def test_a_trailer_authorization_does_not_authenticate(
    collector: ServerProcess, nats: ServerProcess, stream: tuple[str, str]
) -> None:
    before = stored(nats, stream)
    request = chunked([], BATCH, b"Authorization: " + WEB_AUTH + b"\r\n")
    status, answer = answer_of(exchange(collector.port, request))
    assert (status, answer["code"]) == (401, "invalid_write_key")
    assert stored(nats, stream) == before


def test_a_trailer_content_encoding_does_not_decode(
    collector: ServerProcess, nats: ServerProcess, stream: tuple[str, str]
) -> None:
    before = stored(nats, stream)
    request = chunked([AUTH], BATCH, b"Content-Encoding: gzip\r\nContent-Type: text/html\r\n")
    status, answer = answer_of(exchange(collector.port, request))
    assert (status, answer) == (200, {"success": True})  # read as the headers said: plain JSON
    assert stored(nats, stream) == before + 1


def flood_trailers(port: int, outcomes: list[str], size: int = 32 * 1024 * 1024) -> None:
    """A complete chunked body, then a trailer field that never ends."""
    head = chunked([AUTH], BATCH, b"")[:-2]  # the request up to the trailer section
    with socket.create_connection((LOOPBACK, port), timeout=30) as sock:
        sock.sendall(head + b"X-Flood: ")
        chunk = b"a" * 65536
        try:
            for _ in range(size // len(chunk)):
                sock.sendall(chunk)
            answer = sock.recv(64)
        except (ConnectionResetError, BrokenPipeError):
            outcomes.append("closed")
            return
        outcomes.append(answer.split(b"\r\n")[0].decode() if answer else "closed")


def test_trailer_floods_are_cut_off_and_memory_stays_bounded(
    collector: ServerProcess, nats: ServerProcess, stream: tuple[str, str]
) -> None:
    before, rss_before = stored(nats, stream), reset_peak_rss(collector)
    outcomes: list[str] = []
    floods = [
        threading.Thread(target=flood_trailers, args=(collector.port, outcomes)) for _ in "1234"
    ]
    for thread in floods:
        thread.start()
    for thread in floods:
        thread.join()
    assert len(outcomes) == 4
    assert all(o in ("closed", "HTTP/1.1 431 Request Header Fields Too Large") for o in outcomes)
    # 4 x 32 MiB of trailer were sent; a trailer section is bounded like the headers (64 KiB).
    # The peak counts (memory freed once a connection closes is given back, so the RSS after
    # the flood says nothing).
    assert peak_rss_kib(collector) - rss_before < 32 * 1024
    assert stored(nats, stream) == before  # the requests never completed: nothing published
    assert httpx.get(f"http://{LOOPBACK}:{collector.port}/healthz").status_code == 200


def test_trailers_over_the_header_limit_get_431(collector: ServerProcess) -> None:
    request = chunked([AUTH], BATCH, b"X-Big: " + b"a" * 100_000 + b"\r\n")
    status, answer = answer_of(exchange(collector.port, request))
    assert (status, answer["code"]) == (431, "trailers_too_large")


trailer_names = st.sampled_from(
    [
        *[b"Authorization", b"Content-Encoding", b"Content-Type", b"Origin", b"Host"] * 3,
        b"X-Forwarded-For",
        b"X-Anything",
        b"Content-Length",  # the parser refuses these two in a trailer section
        b"Transfer-Encoding",
    ]
)
# Any byte an HTTP parser takes in a field value (no control bytes), ASCII or not.
trailer_values = st.binary(max_size=30).map(
    lambda raw: bytes(byte for byte in raw if byte >= 0x20 and byte != 0x7F).strip()
) | st.sampled_from([b"Basic d2ViLWtleS0xOg==", b"Basic aW9zLWtleS0yOg==", b"gzip", b"br"])


@settings(
    derandomize=True,
    database=None,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    trailers=st.lists(st.tuples(trailer_names, trailer_values), min_size=1, max_size=4),
    authorized=st.booleans(),
    body=st.sampled_from([BATCH, b'{"batch":[{"type":"track"}]}', b'{"batch":', b"\xff"]),
)
def test_trailers_never_change_the_answer(
    collector: ServerProcess,
    nats: ServerProcess,
    stream: tuple[str, str],
    trailers: list[tuple[bytes, bytes]],
    authorized: bool,
    body: bytes,
) -> None:
    headers = [AUTH] if authorized else []
    section = b"".join(name + b": " + value + b"\r\n" for name, value in trailers)
    plain_status, plain = answer_of(exchange(collector.port, chunked(headers, body, b"")))
    before = stored(nats, stream)
    status, answer = answer_of(exchange(collector.port, chunked(headers, body, section)))

    assert status < 500, answer
    if answer.get("code") in ("malformed_http", "trailers_too_large"):
        # The trailer section itself refused (the parser takes no Content-Length or
        # Transfer-Encoding there): the request never completed, nothing was published.
        assert stored(nats, stream) == before
        event(f"refused: {answer['code']}")
    else:
        assert (status, answer.get("code")) == (plain_status, plain.get("code"))
        event(f"as without trailers: {status}")
