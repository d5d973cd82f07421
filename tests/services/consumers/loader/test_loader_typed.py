"""Real analytics-python events through the collector (a real process) and JetStream into the
loader: Segment's typed tables with the right column types, a property that changes type kept
in discards without holding the batch back, and an anonymous page view joined to its user."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from segment.analytics import Client as SegmentClient

from services.consumers.loader.sink import Loader, LoaderConfig
from services.contract import read
from services.postgres.contract import PostgresAccess
from tests.servers import ServerProcess, collector_server
from tests.services.consumers.conftest import consumer_state, run_consumer_until, settings
from tests.services.stream.under_test import WRITE_KEYS_JSON

pytestmark = pytest.mark.servers


@pytest.fixture
def collector(tmp_path: Path, jetstream: tuple[str, str]) -> Iterator[ServerProcess]:
    with collector_server(tmp_path, jetstream[0], WRITE_KEYS_JSON) as server:
        yield server


def connect(env: dict[str, str]) -> psycopg.Connection:
    return psycopg.connect(
        host=env["PGHOST"], port=env["PGPORT"], user=env["PGUSER"], dbname=env["PGDATABASE"]
    )


def send(collector: ServerProcess) -> None:
    errors: list[Exception] = []
    sdk = SegmentClient(
        "web-key-1",  # source "web"
        host=f"http://127.0.0.1:{collector.port}",
        on_error=lambda error, _batch: errors.append(error),
        max_retries=1,
    )
    sdk.page(anonymous_id="anon-1", category="Docs", name="Pricing", message_id="p-1")
    sdk.track(
        anonymous_id="anon-1",
        event="Signed Up",
        properties={
            "plan": "pro",
            "seats": 3,
            "price": 9.5,
            "trial": True,
            "renewsAt": "2027-01-01T00:00:00Z",
            "tags": ["a", "b"],
            "billing": {"country": "DE"},
        },
        message_id="t-1",
    )
    sdk.identify("user-1", {"email": "a@example.com", "plan": "pro"}, anonymous_id="anon-1")
    sdk.track("user-1", "Signed Up", {"plan": "team", "seats": "three"}, message_id="t-2")
    sdk.flush()
    sdk.join()
    assert errors == []


def test_sdk_events_arrive_in_typed_tables_and_a_type_change_goes_to_discards(
    collector: ServerProcess,
    jetstream: tuple[str, str],
    warehouse: dict[str, str],
    dead_letter_url: str,
) -> None:
    url, _ = jetstream
    send(collector)
    sink = Loader(LoaderConfig.load(read(PostgresAccess, warehouse)))
    run_consumer_until(url, sink, settings("loader", batch_max_events=100), dead_letter_url)
    assert asyncio.run(consumer_state(url, "loader")) == (0, 0)  # all acknowledged
    with connect(warehouse) as connection:
        types = dict(
            connection.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'web' AND table_name = 'signed_up'"
            ).fetchall()
        )
        assert {c: types[c] for c in ("plan", "seats", "price", "trial", "renews_at")} == {
            "plan": "text",
            "seats": "bigint",
            "price": "double precision",
            "trial": "boolean",
            "renews_at": "timestamp with time zone",
        }
        assert types["tags"] == types["billing_country"] == types["context_library_name"] == "text"
        assert types["timestamp"] == types["sent_at"] == "timestamp with time zone"
        assert connection.execute(
            "SELECT id, event, event_text, plan, seats, tags, billing_country,"
            " context_library_name FROM web.signed_up ORDER BY id"
        ).fetchall() == [
            ("t-1", "signed_up", "Signed Up", "pro", 3, '["a","b"]', "DE", "analytics-python"),
            ("t-2", "signed_up", "Signed Up", "team", None, None, None, "analytics-python"),
        ]
        assert connection.execute(
            "SELECT table_name, column_name, column_type, value, message_id FROM web.discards"
        ).fetchall() == [("signed_up", "seats", "bigint", "three", "t-2")]
        assert connection.execute("SELECT count(*) FROM web.tracks").fetchone() == (2,)
        # The anonymous page view, joined to the user who identified later.
        assert connection.execute(
            "SELECT p.id, p.name, u.id, u.email FROM web.pages p"
            " JOIN web.identity_map m ON m.anonymous_id = p.anonymous_id"
            " JOIN web.users u ON u.id = m.user_id"
        ).fetchall() == [("p-1", "Pricing", "user-1", "a@example.com")]
        assert connection.execute("SELECT count(*) FROM events").fetchone() == (4,)
    metrics = sink.counters.render()
    assert 'liftoff_warehouse_discards_total{source="web",table="signed_up"} 1.0' in metrics
