"""The layering rule of README "Design", checked on every import of every module (lazy ones in
functions included) of services/, components/, liftoff_local/ and dags/.

services/ by role, each layer importing only the ones before it:
  leaf         services.contract, services.observability, services.events  (nothing of services
               but their own package)
  stream       → events, contract, observability
  archive      → contract, observability
  postgres     → contract, observability, archive
  warehouse    → contract, observability, archive, postgres (typed tables: Segment's schema,
               the writer, the rebuild from the raw table or the archive)
  suppression  → stream, contract, observability (the suppression list, a KV bucket beside it)
  collector    → events, stream, suppression, contract, observability   (never a consumer)
  runner       → events, stream, contract, observability
  consumer <x> → runner, events, stream, archive, postgres, warehouse, contract, observability;
               never another consumer nor the collector, except reconcile, which loads what the
               archiver wrote through the loader's own writer (→ archiver, loader), and
               replay (→ archiver, loader, broadcaster, reconcile, and suppression: a suppressed
               user is never replayed)
  regulations  → suppression, events, stream, archive, postgres, contract, observability, and
               the archiver's object format, the loader's connection and the broadcaster's
               webhook signing (deletion reaches what they wrote, as they wrote it)
  operations   → reconcile, regulations, replay, suppression, archive, postgres, warehouse,
               contract, observability (the ops function on AWS: the operations the DAGs
               invoke)
  entry points services.cli, services.aws_lambda, services.__main__ → anything of services
Contract modules (`services/**/contract.py`) and the registries (`services.stream.address`,
`services.consumers.broadcaster.destinations` and the filters grammar it holds,
`services.consumers.broadcaster.filters`, `services.warehouse.columns`,
`services.warehouse.names`) import only
`services.contract`, other contract modules and the registries: they are what components/
may import, without runtime code. A package's `__init__` imports nothing.
services never imports components, liftoff_local, pulumi or tests. components imports from
services only contract modules and registries. liftoff_local imports services and the
Pulumi-free part of components (config, validation, each capability's contract package and
settings). dags imports nothing of liftoff (Airflow runs it alone).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import syntax

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("services", "components", "liftoff_local", "dags")
REGISTRIES = (
    "services.stream.address",
    "services.consumers.broadcaster.destinations",
    "services.consumers.broadcaster.filters",
    "services.warehouse.columns",
    "services.warehouse.names",
)
CONSUMERS = ("archiver", "loader", "broadcaster", "reconcile", "replay")
COMMON = ("contract", "observability")
LAYERS: dict[str, tuple[str, ...]] = {
    "contract": (),
    "observability": (),
    "events": ("events",),
    "stream": ("stream", "events", *COMMON),
    "archive": ("archive", *COMMON),
    "postgres": ("postgres", "archive", *COMMON),
    "warehouse": ("warehouse", "archive", "postgres", *COMMON),
    "suppression": ("suppression", "stream", *COMMON),
    "collector": ("collector", "events", "stream", "suppression", *COMMON),
    "runner": ("runner", "events", "stream", *COMMON),
    **{
        consumer: (
            consumer, "runner", "events", "stream", "archive", "postgres", "warehouse", *COMMON
        )
        for consumer in CONSUMERS
    },
    "regulations": (
        "regulations", "suppression", "events", "stream", "archive", "postgres", "archiver",
        "loader", "broadcaster", *COMMON,
    ),
    "operations": (
        "operations", "reconcile", "regulations", "replay", "suppression", "archive",
        "postgres", "warehouse", *COMMON,
    ),
    "entry": (
        "entry", "contract", "observability", "events", "stream", "archive", "postgres",
        "warehouse", "collector", "runner", "suppression", "regulations", "operations",
        *CONSUMERS,
    ),
}  # fmt: skip
EXCEPTIONS = {
    "reconcile": ("archiver", "loader"),
    "replay": ("archiver", "loader", "broadcaster", "reconcile", "suppression"),
}
"""Reconciliation loads what the archiver wrote, through the loader's own writer (so a
restored row equals a streamed one); replay reads the archive as reconciliation does and sends
through the broadcaster's delivery engine or the loader's writer."""
LOCAL_MAY_USE = ("components.config", "components.validation")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield module_name(path), path


def imports(source: str, module: str, is_package: bool) -> Iterator[str]:
    """Every module `source` imports, anywhere in it (``from a import b`` → ``a.b`` when that
    is a module, else ``a``)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(syntax.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    [*package.split(".")[: len(package.split(".")) - node.level + 1], base]
                ).strip(".")
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if _exists(candidate) else base


def _exists(module: str) -> bool:
    path = ROOT / Path(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def role(module: str) -> str:
    """A services module's layer."""
    parts = module.split(".")
    if module in ("services", "services.cli", "services.aws_lambda", "services.__main__"):
        return "entry"
    if parts[1] == "consumers":
        return "runner" if len(parts) < 3 or parts[2] == "runner" else parts[2]
    return parts[1]


def is_contract(module: str) -> bool:
    return module == "services.contract" or module.endswith(".contract") or module in REGISTRIES


def problems_of(module: str, imported: list[str], is_package: bool) -> list[str]:
    """What `module` may not import, by the rule above."""
    found = []
    top = module.split(".")[0]
    for target in imported:
        found += [f"{module} imports {target}: {why}" for why in _why_not(module, target, top)]
    if top == "services" and is_package and module != "services":
        found += [
            f"{module} is a package's __init__: it imports {t}"
            for t in imported
            if t.startswith("services")
        ]
    return found


def _why_not(module: str, target: str, top: str) -> Iterator[str]:
    head = target.split(".")[0]
    if top == "dags" and head in ("services", "components", "liftoff_local"):
        yield "the DAG runs in Airflow alone"
    if top == "services":
        if head in (
            "components",
            "liftoff_local",
            "pulumi",
            "pulumi_aws",
            "pulumi_kubernetes",
            "tests",
        ):
            yield "services never imports the platform's declaration, local mode nor Pulumi"
        if head == "services" and target != "services":
            yield from _services_rule(module, target)
    if top == "components" and head == "services" and not is_contract(target):
        yield "components may import only contract modules and registries of services"
    if top == "liftoff_local":
        if head.startswith("pulumi"):
            yield "local mode runs without Pulumi"
        if head == "components" and not _pulumi_free(target):
            yield "local mode uses only the Pulumi-free part of components"


def _services_rule(module: str, target: str) -> Iterator[str]:
    if is_contract(module) and not is_contract(target):
        yield "a contract or registry imports only contracts and registries"
    mine, theirs = role(module), role(target)
    if theirs not in (*LAYERS[mine], *EXCEPTIONS.get(mine, ())):
        yield f"layer {mine} may not use layer {theirs}"


def _pulumi_free(target: str) -> bool:
    parts = target.split(".")
    return (
        target in LOCAL_MAY_USE or len(parts) == 2 or (len(parts) == 3 and parts[2] == "settings")
    )


def test_every_module_keeps_to_the_layering_rule() -> None:
    report = []
    for module, path in modules():
        is_package = path.name == "__init__.py"
        imported = sorted(set(imports(path.read_text(), module, is_package)))
        report += problems_of(module, imported, is_package)
    assert not report, "\n".join(report)


@pytest.mark.parametrize(
    ("module", "target", "why"),
    [
        ("services.collector.ingest", "services.consumers.loader.sink", "layer collector"),
        ("services.consumers.archiver.sink", "services.consumers.loader.sink", "layer archiver"),
        ("services.stream.dead_letters", "services.consumers.runner.model", "layer stream"),
        ("services.events.model", "services.contract", "layer events"),
        ("services.consumers.loader.contract", "services.consumers.loader.sink", "a contract"),
        ("services.postgres.backup", "components.archive", "never imports the platform"),
        ("components.consumers.aws", "services.consumers.broadcaster.sink", "only contract"),
        ("liftoff_local.supervisor", "components.consumers.aws", "Pulumi-free"),
        ("dags.liftoff_reconcile", "services.contract", "Airflow alone"),
    ],
)
def test_the_rule_refuses_what_it_should(module: str, target: str, why: str) -> None:
    found = problems_of(module, [target], is_package=False)
    assert found and why in found[0], found


def test_the_allowed_edges_pass() -> None:
    assert (
        problems_of(
            "services.consumers.reconcile.repair", ["services.consumers.loader.sink"], False
        )
        == []
    )
    assert problems_of("components.stream.settings", ["services.stream.address"], False) == []
    assert problems_of("liftoff_local.stack", ["components.consumers.settings"], False) == []
    assert problems_of("services.cli", ["services.consumers.archiver.sink"], False) == []
