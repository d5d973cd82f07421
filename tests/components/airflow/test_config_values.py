"""The `[liftoff]` values reach the DAGs intact through what the chart does to them: Helm's
`tpl`, a line of `airflow.cfg`, and real Airflow's `conf.get` (ConfigParser's `%`
interpolation, its `$VAR` expansion), read by the DAG with `json.loads`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from components.airflow.chart import config_json
from tests.harness import ROOT

AIRFLOW_PYTHON = ROOT / ".venv" / "airflow" / "bin" / "python"
READ = "import sys; from airflow.configuration import conf; print(conf.get('liftoff', sys.argv[1]))"
HOSTILE = {
    "LIFTOFF_DESTINATION": json.dumps(
        {"url": "https://hooks.example.test/in%20box?k=$HOME&t={{ ds }}", "price": "100%"}
    ),
    "nested": [{"a": {"b": "{{{x}}}"}}, "$(VAR) ~ %(asctime)s"],
}


def read_back(tmp_path: Path, values: dict[str, str]) -> dict[str, str]:
    """Each value as Airflow gives it from an airflow.cfg written as the chart writes it."""
    home = tmp_path / "airflow"
    home.mkdir()
    lines = ["[liftoff]", *(f"{key} = {value}" for key, value in values.items())]
    (home / "airflow.cfg").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW_CONFIG": str(home / "airflow.cfg")}
    env = {k: v for k, v in env.items() if not k.startswith("AIRFLOW__")}
    found = {}
    for key in values:
        done = subprocess.run(
            [str(AIRFLOW_PYTHON), "-c", READ, key], env=env, capture_output=True, text=True
        )
        found[key] = done.stdout.strip() if done.returncode == 0 else f"error: {done.stderr[-300:]}"
    return found


def test_values_with_percent_dollar_and_braces_reach_the_dag_as_they_were(tmp_path: Path) -> None:
    if not AIRFLOW_PYTHON.exists():
        pytest.fail(f"{AIRFLOW_PYTHON} is missing: run `bash .ci/run` (it creates the venv)")
    escaped, plain = config_json(HOSTILE, sort_keys=True), json.dumps(HOSTILE, sort_keys=True)
    assert not {"%", "$"} & set(escaped) and "{{" not in escaped  # nothing for tpl either
    found = read_back(tmp_path, {"escaped": escaped, "plain": plain})
    assert json.loads(found["escaped"]) == HOSTILE
    # What the escaping is for: the same JSON written plainly does not come back.
    assert found["plain"].startswith("error") or found["plain"] != plain
