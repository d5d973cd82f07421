"""The signal contract end to end: a real Prometheus (Debian package `prometheus`) scrapes the
real collector and two real consumer processes on loopback, with the contract's own rules
(short `for:` and thresholds so the test stays fast). Traffic flows; one consumer is stopped and
its lag alert must go pending then firing through Prometheus's HTTP API — seen from the other
consumer, since a stopped process has nothing to scrape — and clear once it is back."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from components.observability import prometheus_rule_groups
from tests.servers import (
    LOOPBACK,
    PROMETHEUS,
    ServerProcess,
    collector_server,
    consumer_process,
    moto_endpoint,
    prometheus_server,
)
from tests.services.consumers.runner.test_consumer_process import archiver_env

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
WRITE_KEY = "obs-key"


def wait_for(condition: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what}: not within {seconds} s")


def test_lag_alert_fires_for_a_stopped_consumer_and_clears_after_restart(
    tmp_path: Path,
    jetstream: tuple[str, str],
    bucket: tuple[Any, str],
    dead_letter_url: str,
    moto: ServerProcess,
) -> None:
    assert Path(PROMETHEUS).exists(), "prometheus missing: .ci/run installs the Debian package"
    url, stream = jetstream
    _, bucket_name = bucket
    write_keys = json.dumps({"web": WRITE_KEY})
    collector = collector_server(tmp_path, url, write_keys)
    consumers = {}
    for name in ("archiver", "archiver-b"):
        env = {
            **archiver_env(url, bucket_name, moto_endpoint(moto), dead_letter_url),
            "LIFTOFF_CONSUMER_NAME": name,
            "LIFTOFF_CONSUMER_LAG_INTERVAL_SECONDS": "0.5",
        }
        consumers[name] = consumer_process(tmp_path, "archiver", env, name=name)
    rules = {
        "groups": prometheus_rule_groups(
            {"consumerLagEvents": 5}, for_overrides={"LiftoffConsumerLag": "2s"}
        )
    }
    targets = [f"{LOOPBACK}:{p.port}" for p in consumers.values()]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "collector",
                "static_configs": [{"targets": [f"{LOOPBACK}:{collector.port}"]}],
            },
            {"job_name": "consumers", "static_configs": [{"targets": targets}]},
        ],
    }
    prometheus = prometheus_server(tmp_path / "prometheus", config, rules)
    api = f"http://{LOOPBACK}:{prometheus.port}/api/v1"
    auth = {"Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()}

    def send(count: int, offset: int) -> None:
        batch = [
            {"type": "track", "event": "Viewed", "userId": "u1", "messageId": f"m-{offset + i}"}
            for i in range(count)
        ]
        answer = httpx.post(
            f"http://{LOOPBACK}:{collector.port}/v1/batch", json={"batch": batch}, headers=auth
        )
        assert answer.status_code == 200, answer.text

    def query(expr: str) -> list[dict[str, Any]]:
        return httpx.get(f"{api}/query", params={"query": expr}).json()["data"]["result"]

    def lag_alert_state() -> str | None:
        alerts = httpx.get(f"{api}/alerts").json()["data"]["alerts"]
        for alert in alerts:
            labels = alert["labels"]
            if labels["alertname"] == "LiftoffConsumerLag" and labels["consumer"] == "archiver-b":
                return alert["state"]
        return None

    def lag(consumer: str) -> float | None:
        found = query(
            f'max(liftoff_consumer_lag_events{{consumer="{consumer}",stream="{stream}"}})'
        )
        return float(found[0]["value"][1]) if found else None

    with collector, consumers["archiver"], consumers["archiver-b"], prometheus:
        send(20, 0)
        # Both consumers caught up, seen through Prometheus; the collector's traffic too.
        wait_for(lambda: lag("archiver-b") == 0 and lag("archiver") == 0, 30, "both caught up")
        wait_for(
            lambda: query('liftoff_collector_requests_total{route="/v1/batch",status="200"}'),
            15,
            "collector requests scraped",
        )
        assert lag_alert_state() is None
        # What the processes expose passes Prometheus's own exposition lint.
        for port in (collector.port, consumers["archiver"].port):
            text = httpx.get(f"http://{LOOPBACK}:{port}/metrics").text
            lint = subprocess.run(
                [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True
            )
            assert (lint.returncode, lint.stdout + lint.stderr) == (0, ""), text

        consumers["archiver-b"].stop()
        send(20, 100)
        states = set()

        def firing() -> bool:
            states.add(lag_alert_state())
            return "firing" in states

        wait_for(firing, 30, "LiftoffConsumerLag firing for the stopped consumer")
        assert "pending" in states  # `for:` held it pending first
        assert lag("archiver-b") >= 20
        assert lag("archiver") == 0  # the running consumer is not blamed
        age = query(f'max(liftoff_consumer_lag_seconds{{consumer="archiver-b",stream="{stream}"}})')
        assert 0 < float(age[0]["value"][1]) < 60  # the oldest unprocessed event's age

        consumers["archiver-b"].start()
        wait_for(lambda: lag_alert_state() is None, 30, "LiftoffConsumerLag cleared after restart")
        assert lag("archiver-b") == 0
        wait_for(
            lambda: query(
                f'max(liftoff_consumer_lag_seconds{{consumer="archiver-b",stream="{stream}"}}) == 0'
            ),
            15,
            "lag age back to 0",
        )
