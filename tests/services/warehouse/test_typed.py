"""Segment's warehouse schema from one event: names, rows, column types and coercion."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.warehouse.names import segment_name, source_schema
from services.warehouse.typed import (
    MISFIT,
    coerce,
    column_type,
    derive,
    event_table,
    infer,
)

RECEIVED = "2026-11-27T20:19:03.512Z"


def contract_event(kind: str, **fields: object) -> dict[str, object]:
    return {
        "type": kind,
        "messageId": "m-1",
        "receivedAt": RECEIVED,
        "timestamp": RECEIVED,
        "sentAt": RECEIVED,
        "originalTimestamp": "2026-11-27T20:19:02Z",
        "anonymousId": "anon-1",
        "context": {"library": {"name": "analytics-python", "version": "2.3"}, "ip": "10.0.0.1"},
        "liftoff": {"source": "web", "schema": 1},
        **fields,
    }


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Order Completed", "order_completed"),
        ("productId", "product_id"),
        ("HTMLParser", "html_parser"),
        ("userID", "user_id"),
        ("Checkout - Step 2!", "checkout_step_2"),
        ("__private__", "private"),
        ("1st Visit", "_1st_visit"),
        ("!!!", "_"),
        ("Größe", "gr_e"),
    ],
)
def test_names_follow_segments_rule(text: str, name: str) -> None:
    assert segment_name(text) == name


def test_long_names_fit_postgres_and_stay_apart() -> None:
    first, second = segment_name("a" * 70 + "one"), segment_name("a" * 70 + "two")
    assert len(first.encode()) <= 63 and len(second.encode()) <= 63
    assert first != second
    assert first.startswith("a" * 54 + "_")


def test_an_event_named_like_a_sources_own_table_gets_its_own_table() -> None:
    assert event_table("Users") == "_users"
    assert event_table("Discards") == "_discards"
    assert event_table("Signed Up") == "signed_up"


def test_a_track_writes_tracks_and_its_event_table_with_properties_as_columns() -> None:
    event = contract_event(
        "track",
        event="Signed Up",
        userId=42,
        properties={
            "plan": "pro",
            "seats": 3,
            "price": 9.5,
            "trial": False,
            "tags": ["a", "b"],
            "address": {"city": "Bonn", "zipCode": None},
            "id": "property id",
            "context_ip": "a property",
            "renewsAt": "2027-01-01T00:00:00Z",
        },
    )
    (tracks_table, tracks), (table, row) = derive(event)
    assert (tracks_table, table) == ("tracks", "signed_up")
    assert tracks == {
        "id": "m-1",
        "received_at": RECEIVED,
        "sent_at": RECEIVED,
        "timestamp": RECEIVED,
        "original_timestamp": "2026-11-27T20:19:02Z",
        "user_id": "42",
        "anonymous_id": "anon-1",
        "context_library_name": "analytics-python",
        "context_library_version": "2.3",
        "context_ip": "10.0.0.1",
        "event": "signed_up",
        "event_text": "Signed Up",
    }
    assert row == {
        **tracks,
        "plan": "pro",
        "seats": 3,
        "price": 9.5,
        "trial": False,
        "tags": '["a","b"]',
        "address_city": "Bonn",
        "_id": "property id",  # never the table's own id
        "_context_ip": "a property",  # nor a context column
        "renews_at": "2027-01-01T00:00:00Z",
    }


def test_an_identify_writes_identifies_users_and_the_identity_map() -> None:
    event = contract_event("identify", userId="u-1", traits={"email": "a@b.c", "name": "A"})
    rows = dict(derive(event))
    assert rows["identifies"]["email"] == "a@b.c" and rows["identifies"]["name"] == "A"
    assert rows["users"] == {
        "id": "u-1",
        "received_at": RECEIVED,
        "timestamp": RECEIVED,
        "email": "a@b.c",
        "name": "A",
    }
    assert rows["identity_map"] == {
        "anonymous_id": "anon-1",
        "user_id": "u-1",
        "timestamp": RECEIVED,
        "received_at": RECEIVED,
    }
    anonymous = contract_event("identify", traits={"email": "x"})
    assert [table for table, _ in derive(anonymous)] == ["identifies"]


def test_pages_screens_groups_and_aliases() -> None:
    page = dict(derive(contract_event("page", name="Home", properties={"path": "/", "name": "x"})))
    assert page["pages"]["name"] == "Home" and page["pages"]["_name"] == "x"
    assert page["pages"]["path"] == "/"
    screen = dict(derive(contract_event("screen", name="Cart")))
    assert screen["screens"]["name"] == "Cart"
    group = dict(derive(contract_event("group", groupId="g-1", traits={"industry": "x"})))
    assert group["groups"]["group_id"] == "g-1" and group["groups"]["industry"] == "x"
    alias = derive(contract_event("alias", userId="u-2", previousId="anon-9"))
    assert alias[0][0] == "aliases" and alias[0][1]["previous_id"] == "anon-9"
    assert alias[1] == (
        "identity_map",
        {
            "anonymous_id": "anon-9",
            "user_id": "u-2",
            "timestamp": RECEIVED,
            "received_at": RECEIVED,
        },
    )


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (True, "boolean"),
        (3, "bigint"),
        (2**70, "double precision"),
        (1.5, "double precision"),
        ("2026-11-27T20:19:03.512Z", "timestamp"),
        ("2026-11-27", "timestamp"),
        ("2026", "text"),
        ("20261127", "text"),
        ("hello", "text"),
        ('["a"]', "text"),
    ],
)
def test_types_are_inferred_from_the_first_value(value: object, kind: str) -> None:
    assert infer(value) == kind


def test_declared_then_fixed_then_inferred() -> None:
    assert column_type("signed_up", "seats", 3, {"seats": "text"}) == "text"
    assert column_type("signed_up", "received_at", "x", {}) == "timestamp"
    assert column_type("signed_up", "seats", 3, {}) == "bigint"


@pytest.mark.parametrize(
    ("value", "kind", "stored"),
    [
        (3, "bigint", 3),
        (3.0, "bigint", 3),
        (3.5, "bigint", MISFIT),
        ("3", "bigint", MISFIT),
        (True, "bigint", MISFIT),
        (3, "double precision", 3.0),
        ("x", "double precision", MISFIT),
        (False, "boolean", False),
        ("true", "boolean", MISFIT),
        ("2026-11-27T20:19:03Z", "timestamp", datetime(2026, 11, 27, 20, 19, 3, tzinfo=UTC)),
        ("2026-11-27T20:19:03", "timestamp", datetime(2026, 11, 27, 20, 19, 3, tzinfo=UTC)),
        ("yesterday", "timestamp", MISFIT),
        (5, "timestamp", MISFIT),
        (5, "text", "5"),
        (True, "text", "true"),
        ("x", "text", "x"),
        (1, "integer", MISFIT),  # a type the writer does not know fits nothing
    ],
)
def test_values_are_coerced_strictly(value: object, kind: str, stored: object) -> None:
    result = coerce(value, kind)
    assert (
        result is MISFIT if stored is MISFIT else (result, type(result)) == (stored, type(stored))
    )


def test_a_source_never_shares_the_raw_tables_schema_nor_postgresqls() -> None:
    assert source_schema("web") == "web"
    assert source_schema("iOS App") == "i_os_app"
    assert source_schema("public") == "_public"
    assert source_schema("pg_data") == "_pg_data"
    assert source_schema("information_schema") == "_information_schema"
