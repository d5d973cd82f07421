"""Pinned upstream Helm charts (`charts/<name>.yaml`) and how a stack may redirect them."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.config import ChartSource

CHARTS_DIR = Path(__file__).resolve().parent.parent / "charts"


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
