"""`liftoff:destinations` and `liftoff:warehouse`: what the consumers deliver to."""

from __future__ import annotations

import json

import pytest

from components.config import load_config
from components.validation import ConfigError
from tests.components.configs import AWS, load, problems


def test_destination_credentials_must_be_secrets():
    values = {
        "liftoff:target": "kubernetes",
        "liftoff:destinations": [
            {"name": "crm", "type": "webhook", "url": "https://x.example/h", "signingSecret": "s3"}
        ],
    }
    (message,) = problems(values)
    assert message.startswith("liftoff:destinations[0].signingSecret: got <secret value hidden>")
    assert "pulumi config set --secret --path 'liftoff:destinations[0].signingSecret'" in message
    assert "s3" not in message.replace("https", "")
    raw = {k: json.dumps(v) if isinstance(v, list) else v for k, v in values.items()}
    config = load_config(raw, project="liftoff", stack="dev", secret_keys=["liftoff:destinations"])
    (destination,) = config.destinations
    assert destination.secrets == {"signingSecret": "s3"}
    assert destination.settings == {"url": "https://x.example/h"}


def test_destination_type_fields_and_sources_are_checked():
    found = problems(
        {
            "liftoff:target": "aws",
            "aws:region": "eu-west-1",
            "liftoff:sources": [{"name": "web"}],
            "liftoff:destinations": [
                {"name": "a", "type": "segment"},
                {
                    "name": "b",
                    "type": "ga4",
                    "measurementId": "UA-1",
                    "apiSecret": "x",
                    "sources": ["ios"],
                },
            ],
        }
    )
    text = "\n".join(found)
    assert "liftoff:destinations[0].type: got 'segment'; allowed: one of 'amplitude', 'ga4'" in text
    assert "liftoff:destinations[1].measurementId: got 'UA-1'" in text
    assert (
        "liftoff:destinations[1].sources[0]: got 'ios'; allowed: one of liftoff:sources: web"
        in text
    )


def test_private_ranges_are_checked():

    from components.config import load_config

    destination = {
        "name": "crm",
        "type": "webhook",
        "url": "https://crm.example/h",
        "signingSecret": "s",
        "allowPrivate": [{"cidr": "8.8.8.0/24"}, {"cidr": "10.0.0.1/8", "ports": [70000]}],
    }
    with pytest.raises(ConfigError) as error:
        load_config(
            {"liftoff:target": "kubernetes", "liftoff:destinations": json.dumps([destination])},
            project="liftoff",
            stack="dev",
            secret_keys={"liftoff:destinations"},
        )
    message = str(error.value)
    # Values of a secret key are never echoed; the keys and what is allowed are.
    assert "liftoff:destinations[0].allowPrivate[0].cidr" in message
    assert "a private range" in message
    assert "liftoff:destinations[0].allowPrivate[1].cidr" in message and "host bits zero" in message
    assert "liftoff:destinations[0].allowPrivate[1].ports" in message


def test_warehouse_settings():
    assert load(AWS).warehouse.database == "warehouse"
    found = problems({**AWS, "liftoff:warehouse": {"database": "dwh", "batchMaxEvents": 0}})
    assert found == [
        "liftoff:warehouse.batchMaxEvents: got 0; allowed: a whole number from 1 to 100000"
    ]


def test_declared_column_types_are_read_sorted():
    columns = {"default": {"signed_up": {"seats": "bigint", "plan": "text"}}}
    found = load({**AWS, "liftoff:warehouse": {"columns": columns}}).warehouse.columns
    assert found == columns and list(found["default"]["signed_up"]) == ["plan", "seats"]
    assert load(AWS).warehouse.columns == {}


def test_declared_column_types_are_checked():
    columns = {
        "default": {
            "signed_up": {"plan": "varchar", "Seats": "bigint"},
            "Signed Up": {"plan": "text"},
            "pages": {},
            "tracks": {"received_at": "text"},
        },
        "mobile": {"tracks": {"x": "text"}},
        "Web App": {},
    }
    found = problems({**AWS, "liftoff:warehouse": {"columns": columns}})
    assert found == [
        "liftoff:warehouse.columns.default.signed_up.plan: got 'varchar'; allowed: one of "
        "bigint, boolean, double precision, text, timestamp",
        "liftoff:warehouse.columns.default.signed_up: got 'Seats'; allowed: column names: a "
        "warehouse name as the typed tables spell it: lowercase letters, digits and '_', not "
        "starting with a digit, at most 63 characters",
        "liftoff:warehouse.columns.default: got 'Signed Up'; allowed: table names: a warehouse "
        "name as the typed tables spell it: lowercase letters, digits and '_', not starting "
        "with a digit, at most 63 characters",
        "liftoff:warehouse.columns.default.pages: got {}; allowed: an object of column name → "
        "type, at least one column",
        "liftoff:warehouse.columns.default.tracks: got 'received_at'; allowed: a property or "
        "trait column: the tables' own (anonymous_id, event, event_text, group_id, id, name, "
        "original_timestamp, previous_id, received_at, sent_at, timestamp, user_id, uuid_ts) "
        "have fixed types",
        "liftoff:warehouse.columns: got 'Web App'; allowed: source names (lowercase letters, "
        "digits, '-' and '_')",
        "liftoff:warehouse.columns: got 'mobile'; allowed: sources of liftoff:sources: default",
    ]
    assert problems({**AWS, "liftoff:warehouse": {"columns": ["default"]}}) == [
        "liftoff:warehouse.columns: got ['default']; allowed: an object of sources, each an "
        "object of tables"
    ]


def test_sources_sharing_a_warehouse_schema_are_refused():
    sources = [{"name": "web-app"}, {"name": "web_app"}, {"name": "ios"}, {"name": "public"}]
    (message,) = problems({**AWS, "liftoff:sources": sources})
    assert message.startswith("liftoff:sources: got 'web-app, web_app'; allowed: source names")
    assert "would share the schema 'web_app'" in message
    # Without the warehouse there are no schemas to share.
    off = load({**AWS, "liftoff:sources": sources, "liftoff:warehouse": {"enabled": False}})
    assert [s.name for s in off.sources] == ["ios", "public", "web-app", "web_app"]
