"""The contract's Postgres signals against real metrics: postgres_exporter (Debian package; the
Kubernetes target runs the same exporter's image) logs in with the `monitoring` role that
`ensure-database` creates as a member of pg_monitor only, a real Prometheus scrapes it with the
contract's rules, and the alerts fire on what the exporter really publishes: connections above
a (deliberately tiny) share of max_connections, then Postgres down once the server stops."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from components.observability import prometheus_rule_groups
from services.postgres.database import AdminConnection, DatabaseRequest, ensure_database
from tests.servers import (
    LOOPBACK,
    POSTGRES_EXPORTER,
    PROMETHEUS,
    postgres_exporter,
    postgres_server,
    prometheus_server,
)

pytestmark = pytest.mark.servers
ADMIN_PASSWORD = "admin-secret-signals"


def wait_for(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {seconds} s")


def test_postgres_alerts_fire_on_the_real_exporters_metrics(tmp_path: Path) -> None:
    for binary in (PROMETHEUS, POSTGRES_EXPORTER):
        assert Path(binary).exists(), f"{binary} missing: .ci/run installs the Debian package"
    with postgres_server(tmp_path / "pg", password=ADMIN_PASSWORD) as postgres:
        admin = AdminConnection(
            LOOPBACK, postgres.port, "postgres", ADMIN_PASSWORD, "postgres", sslmode="disable"
        )
        ensure_database(
            admin, DatabaseRequest("monitoring", "monitoring", "mon-pw", member_of=("pg_monitor",))
        )
        exporter = postgres_exporter(
            tmp_path / "exporter",
            f"{LOOPBACK}:{postgres.port}/monitoring?sslmode=disable",
            "monitoring",
            "mon-pw",
        )
        rules = {
            "groups": prometheus_rule_groups(
                {"postgresConnectionsRatio": 0.001},
                for_overrides={"LiftoffPostgresConnections": "1s", "LiftoffPostgresDown": "1s"},
            )
        }
        config = {
            # With Postgres down the exporter answers after ~1 s (its own retry): the scrape
            # timeout must exceed that, or the sample (pg_up 0) is lost with the scrape.
            "global": {
                "scrape_interval": "3s",
                "scrape_timeout": "2500ms",
                "evaluation_interval": "1s",
            },
            "scrape_configs": [
                {
                    "job_name": "postgres",
                    "static_configs": [{"targets": [f"{LOOPBACK}:{exporter.port}"]}],
                }
            ],
        }
        prometheus = prometheus_server(tmp_path / "prometheus", config, rules)
        api = f"http://{LOOPBACK}:{prometheus.port}/api/v1"

        def firing(alert: str) -> bool:
            alerts = httpx.get(f"{api}/alerts").json()["data"]["alerts"]
            return any(a["labels"]["alertname"] == alert and a["state"] == "firing" for a in alerts)

        with exporter, prometheus:
            metrics = httpx.get(f"http://{LOOPBACK}:{exporter.port}/metrics").text
            assert "\npg_up 1" in metrics  # logged in with the pg_monitor role
            assert "pg_stat_database_numbackends{" in metrics
            assert "pg_settings_max_connections" in metrics
            wait_for(lambda: firing("LiftoffPostgresConnections"), 30, "connections alert")
            assert not firing("LiftoffPostgresDown")
            # Fast shutdown (SIGINT) ends the exporter's session too; SIGTERM would wait for it.
            process = postgres.server.process
            assert process is not None
            os.kill(process.pid, signal.SIGINT)
            process.wait(30)
            wait_for(lambda: firing("LiftoffPostgresDown"), 30, "Postgres down alert")
