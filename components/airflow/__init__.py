"""Airflow capability: the ETL half of the platform (scheduler, API server/UI, workers).

AWS: Amazon MWAA in the stack's private subnets, DAGs from a versioned S3 bucket. Kubernetes:
the official Apache Airflow Helm chart, with its metadata database on the platform's Postgres.

Both run the platform's own DAGs (`dags/`: the hourly warehouse repair, and the operations
triggered by hand: rebuilding typed tables, regulations). Their work runs in the platform's own
runtime — the ops Lambda function on AWS, a pod of the services image on Kubernetes —
configured through Airflow's `[liftoff]` config section, so the DAG files stay thin and Airflow
needs none of the services' dependencies. What they share is a module beside them
(`dags/liftoff_operations.py`), which the folder's `.airflowignore` keeps out of DAG parsing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # the contract names Pulumi types; settings readers import it without Pulumi
    import pulumi


DAGS_DIR = Path(__file__).resolve().parent.parent.parent / "dags"
DAGS_IGNORE_PATH = DAGS_DIR / ".airflowignore"
"""What Airflow's DAG discovery skips in `dags/` (the shared module), shipped with the DAGs."""
RECONCILE = "reconcile"
REGULATION = "regulation"
"""The components (NetworkPolicy labels) of the DAGs' pods on Kubernetes."""


@dataclass(frozen=True)
class AirflowEndpoint:
    url: pulumi.Output[str]
    """The Airflow UI / REST API."""


@runtime_checkable
class Airflow(Protocol):
    """What the platform uses of Airflow, on either target."""

    endpoint: AirflowEndpoint


def dag_files(dags_dir: Path = DAGS_DIR) -> list[Path]:
    """The DAG bundle liftoff ships: every .py file under `dags/` (the DAGs and the module they
    share), in a stable order; `DAGS_IGNORE_PATH` goes with them."""
    if not dags_dir.is_dir():
        return []
    return sorted(
        path
        for path in dags_dir.rglob("*.py")
        if "__pycache__" not in path.parts and not path.name.startswith(".")
    )
