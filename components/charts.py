"""Pinned upstream Helm charts (`charts/<name>.yaml`) and how a stack may redirect them
(`liftoff:charts`, Kubernetes only: a platform-wide key read with the others by config.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.validation import StackReading

CHARTS_DIR = Path(__file__).resolve().parent.parent / "charts"
CHARTS: tuple[str, ...] = ("nats", "airflow")
"""The charts a stack may redirect."""


@dataclass(frozen=True)
class ChartSource:
    """Where a Helm chart comes from. Default: the pinned upstream repository in `charts/`."""

    repository: str | None = None
    """A Helm repository URL (a private mirror), replacing the upstream one."""
    path: str | None = None
    """A local chart archive (.tgz) or directory, for air-gapped clusters."""


def read_charts(stack: StackReading) -> dict[str, ChartSource]:
    """`liftoff:charts` on Kubernetes (refused on AWS): a repository or a path per chart."""
    if stack.target != "kubernetes":
        stack.only_with("charts", "kubernetes")
        return {}
    reader = stack.reader("charts")
    charts: dict[str, ChartSource] = {}
    for chart in CHARTS:
        # Read even when absent, so an unknown chart name is answered with every known one.
        entry = reader.object(chart)
        if not reader.has(chart):
            continue
        repository = entry.string(
            "repository",
            pattern=r"(https?|oci)://\S+",
            describe="a Helm repository URL (https://... or oci://...)",
        )
        path = entry.string("path", describe="a local chart archive or directory")
        if repository and path:
            entry.problem("path", path, "either repository or path, not both")
        entry.finish()
        charts[chart] = ChartSource(repository=repository, path=path)
    reader.finish()
    return charts


@dataclass(frozen=True)
class ChartPin:
    chart: str
    version: str
    repository: str
    images: dict[str, str]
    values: dict[str, Any]

    def source_args(self, source: ChartSource | None) -> dict[str, Any]:
        """`chart`/`version`/`repository_opts` for a Helm chart resource."""
        if source and source.path:
            return {"chart": source.path}
        repository = (source.repository if source else None) or self.repository
        return {
            "chart": self.chart,
            "version": self.version,
            "repository_opts": {"repo": repository},
        }


def load_chart_pin(name: str) -> ChartPin:
    document = yaml.safe_load((CHARTS_DIR / f"{name}.yaml").read_text())
    return ChartPin(
        chart=document["chart"],
        version=str(document["version"]),
        repository=document["repository"],
        images=dict(document.get("images") or {}),
        values=copy.deepcopy(document.get("values") or {}),
    )


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge `override` onto `base` (dicts recursively; anything else replaced)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
