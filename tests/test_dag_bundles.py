"""Airflow 3 finds the platform's DAGs in the DAG ConfigMap as the kubelet mounts it.

A ConfigMap volume is not a plain directory: the kubelet writes the keys into a timestamped
directory, points `..data` at it and makes each key a symlink through `..data` (so an update
swaps one symlink atomically). Airflow's DAG file discovery walks its bundles with
`followlinks=True` and refuses to see a directory twice, so `..data` and the timestamped
directory it points at are a "recursive loop" unless the bundle's `.airflowignore` skips them.

The layout is built here from the ConfigMap and the chart values each shipped Kubernetes stack
declares (program run under mocks), in both places the chart mounts it (the default DAG folder;
liftoff's own bundle beside git-synced DAGs), and real Airflow (`.venv/airflow`) lists the DAG
files with the function its DAG processor calls on every bundle refresh.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from tests.conftest import stack_run
from tests.harness import run_program
from tests.test_dags import in_airflow

CHART = "kubernetes:helm.sh/v4:Chart"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
# What the kubelet names the directory of one ConfigMap version (atomic_writer.go).
VERSION_DIR = "..2026_12_07_08_30_00.123456789"

# Runs in the Airflow venv: lists each folder as the DAG processor's bundle refresh does
# (DagFileProcessorManager._find_files_in_bundle -> list_py_file_paths(bundle.path)).
PROBE = r"""
import json, sys
from airflow.dag_processing.bundles.local import LocalDagBundle
from airflow.utils.file import list_py_file_paths

out = {}
for folder in json.load(sys.stdin):
    bundle = LocalDagBundle(name="probe", path=folder)
    try:
        out[folder] = {"files": sorted(list_py_file_paths(bundle.path))}
    except Exception as error:
        out[folder] = {"error": f"{type(error).__name__}: {error}"}
print(json.dumps(out))
"""


def mount_config_map(data: dict[str, str], target: Path) -> None:
    """Lay `data` out as the kubelet mounts a ConfigMap volume at `target`."""
    version = target / VERSION_DIR
    version.mkdir(parents=True)
    for key, text in data.items():
        (version / key).write_text(text)
    (target / "..data").symlink_to(VERSION_DIR)
    for key in data:
        (target / key).symlink_to(Path("..data") / key)


def list_dag_files(folders: list[Path], core: dict[str, str]) -> dict[str, Any]:
    """What Airflow's discovery finds in each folder, under the chart's `[core]` config."""
    with tempfile.TemporaryDirectory(prefix="liftoff-airflow-") as home:
        settings = {"AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        settings.update({f"AIRFLOW__CORE__{key.upper()}": value for key, value in core.items()})
        found: dict[str, Any] = in_airflow(PROBE, [str(f) for f in folders], Path(home), settings)
    return found


def _declared(run: Any) -> tuple[dict[str, str], dict[str, Any]]:
    config_map = run.one(CONFIG_MAP, "liftoff-airflow-dags").inputs["data"]
    values = run.one(CHART, "liftoff-airflow-chart").inputs["values"]
    return config_map, values


def test_the_dag_processor_finds_the_dags_in_the_mounted_config_map(tmp_path: Path) -> None:
    runs = {
        "dev": stack_run("dev"),  # the ConfigMap is the default DAG folder
        "private-cloud": stack_run("kubernetes-private-cloud"),  # beside git-synced DAGs
        "image": run_program(  # beside DAGs baked into the image
            "Pulumi.dev.yaml",
            overrides={"liftoff:airflow": {"dags": {"source": "image", "image": "r.example/d:1"}}},
        ),
    }
    folders: dict[str, Path] = {}
    cores = set()
    for case, run in runs.items():
        data, values = _declared(run)
        # The DAGs' shared module is mounted beside them, and is no DAG file (`.airflowignore`).
        assert "liftoff_operations.py" in data
        mount = next(m for m in values["volumeMounts"] if m["name"] == "liftoff-dags")
        folder = tmp_path / case / mount["mountPath"].lstrip("/")
        mount_config_map(data, folder)
        folders[case] = folder
        cores.add(json.dumps(values["config"]["core"], sort_keys=True))
    assert len(cores) == 1, cores  # one [core] config for every stack: one Airflow process
    core = {k: v for k, v in json.loads(cores.pop()).items() if k != "auth_manager"}
    found = list_dag_files(list(folders.values()), core)
    for case, folder in folders.items():
        result = found[str(folder)]
        assert "error" not in result, f"{case}: {result['error']}"
        # Through the key's symlink, as the kubelet keeps it current; never the versioned copy.
        expected = [
            "liftoff_reconcile.py",
            "liftoff_regulation.py",
            "liftoff_replay.py",
            "liftoff_warehouse_rebuild.py",
        ]
        assert result["files"] == [str(folder / name) for name in expected], case


def test_the_probe_sees_the_loop_without_an_ignore_file(tmp_path: Path) -> None:
    """The layout really is a loop for Airflow: without `.airflowignore` discovery fails."""
    data, _ = _declared(stack_run("dev"))
    data = {k: v for k, v in data.items() if k != ".airflowignore"}
    mount_config_map(data, tmp_path / "dags")
    result = list_dag_files([tmp_path / "dags"], {})[str(tmp_path / "dags")]
    assert "Detected recursive loop" in result.get("error", ""), result
