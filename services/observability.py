"""Structured JSON logs and Prometheus metrics (``prometheus_client``).

Logs never contain write keys or event bodies: callers pass only counts, codes and names
through ``extra={"fields": {...}}``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The `<name>_created` sample per counter doubles the exposition for no alert or panel.
disable_created_metrics()  # type: ignore[no-untyped-call]
# prometheus_client's multiprocess mode: set (before the workers start) when the collector
# runs several worker processes, so that `/metrics` on any of them reports all of them.
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def parse_log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in _LEVELS:
        raise ValueError(f"must be one of {', '.join(_LEVELS)}")
    return level


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own loggers: same JSON handler, and no per-request access log (hot path).
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("botocore").setLevel(max(logging.getLevelName(level), logging.WARNING))


class Counters:
    """The process's metrics, kept by the maintained `prometheus_client` library.

    A thin facade so call sites stay one line (``counters.add(name, n, **labels)``): a metric
    is created on first use with the label names of that call (always the same for one name),
    children are cached per label values. Each instance owns its registry, so tests and the
    several runners of one process never collide; :meth:`render` is the exposition text.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self._help: dict[str, str] = {}
        self._metrics: dict[str, Any] = {}
        self._children: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}

    def describe(self, name: str, help_text: str) -> None:
        self._help[name] = help_text

    def describe_histogram(
        self, name: str, help_text: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        if name not in self._metrics:
            self._metrics[name] = Histogram(
                name, help_text, labelnames=labels, buckets=buckets, registry=self.registry
            )

    def _child(self, kind: type, name: str, labels: dict[str, str]) -> Any:
        key = (name, tuple(labels.items()))
        child = self._children.get(key)
        if child is None:
            metric = self._metrics.get(name)
            if metric is None:
                help_text = self._help.get(name, name)
                metric_name = name.removesuffix("_total") if kind is Counter else name
                metric = kind(
                    metric_name, help_text, labelnames=sorted(labels), registry=self.registry
                )
                self._metrics[name] = metric
            child = metric.labels(**labels) if labels else metric
            self._children[key] = child
        return child

    def add(self, name: str, amount: float = 1, **labels: str) -> None:
        self._child(Counter, name, labels).inc(amount)

    def set(self, name: str, value: float, **labels: str) -> None:
        """A gauge: the current value (lag, positions)."""
        self._child(Gauge, name, labels).set(value)

    def forget(self, name: str, **labels: str) -> None:
        """Drop a gauge's series (what it measured is gone: a deleted durable consumer), so it
        stops being reported rather than reporting its last value forever."""
        child = self._children.pop((name, tuple(labels.items())), None)
        if child is not None:
            metric = self._metrics[name]
            metric.remove(*(labels[label] for label in metric._labelnames))

    def observe(self, name: str, value: float, **labels: str) -> None:
        """A histogram declared with :meth:`describe_histogram`."""
        self._child(Histogram, name, labels).observe(value)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels` (all of them if none)."""
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def render(self) -> str:
        if os.environ.get(MULTIPROCESS_DIR):
            # Several collector worker processes: every scrape sums all of them.
            from prometheus_client import multiprocess

            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
            return generate_latest(merged).decode()
        return generate_latest(self.registry).decode()
