"""Every change a customer makes to a running stack, with its verdict: the change matrix.

Each change is applied to every shipped stack of its target it makes sense for (its `after`
returns None where it does not: a stack without destinations has none to remove); the test
(`tests/test_change_matrix.py`) declares the stack before and after under mocks and diffs the
declarations with the provider facts (`provider_facts.yaml`). `verdict` is the worst outcome
over those stacks and must be exactly what the diff shows:

- in place: resources update where they are (Jobs named after their inputs run again);
- restart: pods roll to a new template (one at a time, as their owners' strategies say);
- replace (allowed): a resource without data is replaced;
- procedure: a stateful resource would be replaced or deleted, or the data path refuses or
  loses data: only with the documented `procedure` (a README section), which the program
  enforces where it can (`refused`: it refuses the change on an existing stack unless the
  `statement` keys say the procedure was followed).

The README's "Change matrix" table is generated from this list (`python -m tests.day2`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.day2.diff import IN_PLACE, PROCEDURE, REPLACE, RESTART

Config = dict[str, Any]
# The upgrade from the previous release (.release/previous): every shipped stack.
UPGRADE = "upgrade"


def parsed_config(path: Path) -> Config:
    """A stack file's config as written (`secure:` values kept, so that overrides of
    run_program stay secrets)."""
    document = yaml.safe_load(Path(path).read_text()) or {}
    return dict(document.get("config") or {})


def _with(config: Config, key: str, **fields: Any) -> Config:
    changed = copy.deepcopy(config)
    section = dict(changed.get(key) or {})
    for name, value in fields.items():
        if value is None:
            section.pop(name, None)
        else:
            section[name] = value
    changed[key] = section
    return changed


def _scaled(key: str, name: str, factor: int, default: int) -> Callable[[Config], Config]:
    def change(config: Config) -> Config:
        current = int((config.get(key) or {}).get(name, default))
        return _with(config, key, **{name: current * factor})

    return change


def _resized(key: str, default: int) -> Callable[[Config], Config]:
    def change(config: Config) -> Config:
        old = int((config.get(key) or {}).get("storageGb", default))
        return _with(config, key, storageGb=old * 2, storageResizedFrom=old)

    return change


def _partitions(config: Config) -> int:
    stream = config.get("liftoff:stream") or {}
    return int(stream.get("partitions", 8 if int(stream.get("replicas", 3)) >= 3 else 1))


def _more_replicas(config: Config) -> Config:
    """More servers, the partition count kept (its default follows replicas)."""
    replicas = int((config.get("liftoff:stream") or {}).get("replicas", 3))
    more = {1: 3, 3: 5}.get(replicas, replicas)
    return _with(config, "liftoff:stream", replicas=more, partitions=_partitions(config))


def _more_partitions(config: Config) -> Config:
    """Twice the partitions, stating the procedure was followed from the current count."""
    current = _partitions(config)
    return _with(config, "liftoff:stream", partitions=current * 2, repartitionFrom=current)


def _resources(key: str) -> Callable[[Config], Config]:
    def change(config: Config) -> Config:
        limits = {"cpu": "3", "memory": "12Gi"}
        return _with(config, key, resources={"requests": limits, "limits": limits})

    return change


def _add_source(config: Config) -> Config:
    changed = copy.deepcopy(config)
    changed["liftoff:sources"] = [*config["liftoff:sources"], {"name": "partner"}]
    return changed


def _declare_columns(config: Config) -> Config | None:
    """Declare a column type (a tracking plan) for the stack's first source."""
    if (config.get("liftoff:warehouse") or {}).get("enabled") is False:
        return None
    source = config["liftoff:sources"][0]["name"]
    columns = {source: {"order_completed": {"revenue": "double precision"}}}
    return _with(config, "liftoff:warehouse", columns=columns)


def _remove_source(config: Config) -> Config | None:
    sources = config["liftoff:sources"]
    if len(sources) < 2:
        return None
    changed = copy.deepcopy(config)
    changed["liftoff:sources"] = sources[:-1]
    for destination in changed.get("liftoff:destinations", []):
        if "sources" in destination:
            kept = [s for s in destination["sources"] if s != sources[-1]["name"]]
            destination["sources"] = kept or [sources[0]["name"]]
    return changed


WEBHOOK = {
    "name": "partner-hook",
    "type": "webhook",
    "url": "https://hooks.partner.example/in",
    "signingSecret": {"secure": "v1:placeholder-partner-signing-secret"},
}


def _add_destination(config: Config) -> Config:
    changed = copy.deepcopy(config)
    changed["liftoff:destinations"] = [*config.get("liftoff:destinations", []), WEBHOOK]
    return changed


def _remove_destination(config: Config) -> Config | None:
    destinations = config.get("liftoff:destinations", [])
    if not destinations:
        return None
    changed = copy.deepcopy(config)
    changed["liftoff:destinations"] = destinations[:-1]
    return changed


def _filter_destinations(config: Config) -> Config | None:
    destinations = config.get("liftoff:destinations", [])
    if not destinations:
        return None
    changed = copy.deepcopy(config)
    filters = {"drop": [{"type": ["page"]}], "samplePercent": 50}
    changed["liftoff:destinations"] = [{**d, "filters": filters} for d in destinations]
    return changed


def _airflow_off(config: Config) -> Config | None:
    if (config.get("liftoff:airflow") or {}).get("enabled") is False:
        return None  # already off: this stack cannot show the change
    return _with(config, "liftoff:airflow", enabled=False)


def _airflow_on(config: Config) -> Config:
    return _with(config, "liftoff:airflow", enabled=None)


def _observability_off(config: Config) -> Config:
    return _with(config, "liftoff:observability", enabled=False)


def _observability_on(config: Config) -> Config:
    labels = (config.get("liftoff:observability") or {}).get("monitorLabels")
    if config["liftoff:target"] == "kubernetes":
        labels = labels or {"release": "kube-prometheus-stack"}
        return _with(config, "liftoff:observability", enabled=True, monitorLabels=labels)
    return _with(config, "liftoff:observability", enabled=True)


def _archive_on(config: Config) -> Config | None:
    if config.get("liftoff:archive"):
        return None
    archive = {
        "endpoint": "https://objects.example:9000",
        "bucket": "liftoff-events",
        "region": "us-east-1",
        "accessKeyId": {"secure": "v1:placeholder-access-key-id"},
        "secretAccessKey": {"secure": "v1:placeholder-secret-access-key"},
    }
    changed = copy.deepcopy(config)
    changed["liftoff:archive"] = archive
    return changed


def _postgres_16(config: Config) -> Config:
    return _with(config, "liftoff:postgres", version="16")


def _postgres_17(config: Config) -> Config:
    if config["liftoff:target"] == "kubernetes":
        return _with(config, "liftoff:postgres", version="17", majorUpgradeFrom="16")
    return _with(config, "liftoff:postgres", version="17")


def _tags(config: Config) -> Config:
    changed = copy.deepcopy(config)
    changed["liftoff:tags"] = {**(config.get("liftoff:tags") or {}), "team": "data-eng"}
    return changed


def _same(config: Config) -> Config:
    return config


@dataclass(frozen=True)
class Change:
    id: str
    what: str
    """The customer's change, as the README table names it."""
    target: str
    """`aws`, `kubernetes`, or UPGRADE (every stack)."""
    after: Callable[[Config], Config | None]
    verdict: str
    before: Callable[[Config], Config] = _same
    procedure: str | None = None
    """The README section (its anchor) the change needs."""
    refused: bool = False
    """The program refuses it on an existing stack unless `statement` says it was followed."""
    statement: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The keys, by config key, that state the procedure was followed."""
    note: str = ""
    stacks: tuple[str, ...] = ()
    """A sample of the target's stacks (default: all of them): for a change that only moves a
    number of a pod template or an API field, the production stack of its target."""


# The production stack of each target: where sampled changes are declared.
K8S_PRODUCTION, AWS_PRODUCTION = "kubernetes-private-cloud", "aws"
RESIZE = "#resizing-a-volume-kubernetes"
MAJOR = "#postgres-major-version-upgrade"
PARTITIONS = "#partitions-and-a-full-stream"
REMOVE_DESTINATION = "#removing-a-destination"

CHANGES: tuple[Change, ...] = (
    # --- Kubernetes --------------------------------------------------------------------------
    Change(
        "k8s-postgres-storage", "`postgres.storageGb` (grow)", "kubernetes",
        _resized("liftoff:postgres", 20), PROCEDURE, procedure=RESIZE, refused=True,
        statement={"liftoff:postgres": ("storageResizedFrom",)},
        note="the size is in the StatefulSet's claim template",
    ),
    Change(
        "k8s-stream-storage", "`stream.storageGb` (grow)", "kubernetes",
        _resized("liftoff:stream", 10), PROCEDURE, procedure=RESIZE, refused=True,
        statement={"liftoff:stream": ("storageResizedFrom",)},
        note="the size is in the NATS chart's claim template",
    ),
    Change(
        "k8s-stream-replicas", "`stream.replicas` (1 → 3, 3 → 5)", "kubernetes",
        _more_replicas, RESTART,
        note="with `partitions` kept at the stream's count: its default follows `replicas` "
        "(1 → 8 from 3 servers), and a new count needs the partitions procedure",
    ),
    Change(
        "k8s-stream-partitions", "`stream.partitions`", "kubernetes", _more_partitions,
        PROCEDURE, procedure=PARTITIONS, refused=True,
        statement={"liftoff:stream": ("repartitionFrom",)},
        note="refused in the preview; the stream setup Job refuses it on a live stream too",
    ),
    Change(
        "k8s-stream-retention", "`stream.retentionHours`", "kubernetes",
        _scaled("liftoff:stream", "retentionHours", 2, 168), IN_PLACE,
        note="the setup Job runs again and updates the streams",
        stacks=(K8S_PRODUCTION,),
    ),
    Change(
        "k8s-stream-resources", "`stream.resources`", "kubernetes",
        _resources("liftoff:stream"), RESTART, note="NATS servers restart one at a time",
        stacks=(K8S_PRODUCTION,),
    ),
    Change(
        "k8s-postgres-resources", "`postgres.resources`", "kubernetes",
        _resources("liftoff:postgres"), RESTART, note="the one server restarts (a short outage)",
        stacks=(K8S_PRODUCTION,),
    ),
    Change(
        "k8s-postgres-major", "`postgres.version` 16 → 17", "kubernetes", _postgres_17,
        PROCEDURE, before=_postgres_16, procedure=MAJOR, refused=True,
        statement={"liftoff:postgres": ("majorUpgradeFrom",)},
        note="a data directory opens with one major only",
    ),
    Change(
        "k8s-ingest-scale", "`ingest.replicas` / `minReplicas` / `maxReplicas`", "kubernetes",
        lambda c: _scaled("liftoff:ingest", "maxReplicas", 2, 10)(
            _scaled("liftoff:ingest", "minReplicas", 2, 2)(c)
        ),
        IN_PLACE,
        stacks=(K8S_PRODUCTION,),
    ),
    Change(
        "k8s-ingest-resources", "`ingest.resources`", "kubernetes",
        _resources("liftoff:ingest"), RESTART,
        stacks=(K8S_PRODUCTION,),
    ),
    Change(
        "k8s-add-source", "add a source", "kubernetes", _add_source, REPLACE,
        note="the collector's write-key Secret is re-created with the new key (pulumi-kubernetes "
        "replaces a Secret whose data changes) and the collector rolls",
    ),
    Change(
        "k8s-remove-source", "remove a source", "kubernetes", _remove_source, REPLACE,
        note="the write-key Secret is re-created without the key; the collector rolls",
    ),
    Change(
        "k8s-warehouse-columns", "`warehouse.columns` (declare a type)", "kubernetes",
        _declare_columns, RESTART,
        note="the loader and Airflow restart; an existing column keeps its type until "
        "`warehouse-rebuild` rebuilds its table",
    ),
    Change(
        "k8s-add-destination", "add a destination", "kubernetes", _add_destination, REPLACE,
        note="its broadcaster starts at the stream's end; with an archive and Airflow, the DAG "
        "ConfigMap is re-created with its replay pod (`liftoff_replay_targets.json`; "
        "pulumi-kubernetes replaces a ConfigMap whose data changes): Airflow's pods keep "
        "running and read it once the kubelet refreshes the volume",
    ),
    Change(
        "k8s-destination-filters", "a destination's `filters`", "kubernetes",
        _filter_destinations, REPLACE,
        note="its broadcaster rolls; its durable keeps its position, the batch in flight is "
        "redelivered and filtered by the new pod; the DAG ConfigMap is re-created (its replay "
        "pod's document)",
    ),
    Change(
        "k8s-remove-destination", "remove a destination", "kubernetes", _remove_destination,
        REPLACE, note="its pods go; the stream setup Job deletes its durable consumers; the DAG "
        "ConfigMap is re-created without its replay pod",
    ),
    Change(
        "k8s-observability", "enable `observability`", "kubernetes", _observability_on,
        RESTART, before=_observability_off, note="the NATS exporter sidecar rolls the servers",
    ),
    Change(
        "k8s-airflow", "enable `airflow`", "kubernetes", _airflow_on, IN_PLACE,
        before=lambda c: _airflow_off(c) or c,
    ),
    Change(
        "k8s-archive", "add `archive`", "kubernetes", _archive_on, REPLACE,
        note="the consumers and Airflow restart (task logs to the archive); the DAG ConfigMap "
        "is re-created with the replay pods",
    ),
    Change("k8s-tags", "`tags`", "kubernetes", _tags, RESTART),
    Change(
        "k8s-stream-durability", "`stream.durability`", "kubernetes",
        lambda c: _with(c, "liftoff:stream", durability="periodic"), RESTART,
        stacks=(K8S_PRODUCTION,), note="the servers restart with the new sync_interval",
    ),
    Change(
        "k8s-stream-duplicate-window", "`stream.duplicateWindowMinutes`", "kubernetes",
        lambda c: _with(c, "liftoff:stream", duplicateWindowMinutes=10), IN_PLACE,
        stacks=(K8S_PRODUCTION,),
    ),
    Change(
        "k8s-postgres-backups", "`postgres.backupRetentionDays` / `backupSchedule`", "kubernetes",
        lambda c: _with(c, "liftoff:postgres", backupRetentionDays=21, backupSchedule="5 2 * * *"),
        IN_PLACE, stacks=(K8S_PRODUCTION,),
    ),
    Change(
        "k8s-archive-batches", "`archive.batchMaxEvents` / `batchMaxSeconds`", "kubernetes",
        lambda c: _with(c, "liftoff:archive", batchMaxEvents=20000, batchMaxSeconds=120),
        RESTART, stacks=(K8S_PRODUCTION,), note="the archiver restarts",
    ),
    Change(
        "k8s-airflow-workers", "`airflow.workers`", "kubernetes",
        _scaled("liftoff:airflow", "workers", 2, 2), RESTART, stacks=(K8S_PRODUCTION,),
    ),
    # --- AWS ---------------------------------------------------------------------------------
    Change(
        "aws-postgres-storage", "`postgres.storageGb` (grow)", "aws",
        _scaled("liftoff:postgres", "storageGb", 2, 20), IN_PLACE,
        note="RDS grows the volume online",
        stacks=(AWS_PRODUCTION,),
    ),
    Change(
        "aws-postgres-class", "`postgres.instanceClass`", "aws",
        lambda c: _with(c, "liftoff:postgres", instanceClass="db.r7g.xlarge"), IN_PLACE,
        note="applied in the maintenance window unless `applyImmediately`",
        stacks=(AWS_PRODUCTION,),
    ),
    Change(
        "aws-postgres-major", "`postgres.version` 16 → 17", "aws", _postgres_17, REPLACE,
        before=_postgres_16, procedure=MAJOR,
        note="RDS upgrades in place; the parameter group is replaced, the old one retained",
    ),
    Change(
        "aws-postgres-ha", "`postgres.highAvailability`", "aws",
        lambda c: _with(c, "liftoff:postgres", highAvailability=True), IN_PLACE,
    ),
    Change(
        "aws-stream-shards", "`stream.mode` / `shards`", "aws",
        lambda c: _with(c, "liftoff:stream", mode="provisioned", shards=8), IN_PLACE,
    ),
    Change(
        "aws-stream-retention", "`stream.retentionHours`", "aws",
        _scaled("liftoff:stream", "retentionHours", 2, 168), IN_PLACE,
        stacks=(AWS_PRODUCTION,),
    ),
    Change(
        "aws-ingest-memory", "`ingest.memoryMb`", "aws",
        lambda c: _with(c, "liftoff:ingest", memoryMb=2048), IN_PLACE,
        stacks=(AWS_PRODUCTION,),
    ),
    Change("aws-add-source", "add a source", "aws", _add_source, IN_PLACE),
    Change("aws-remove-source", "remove a source", "aws", _remove_source, IN_PLACE),
    Change(
        "aws-warehouse-columns", "`warehouse.columns` (declare a type)", "aws",
        _declare_columns, IN_PLACE,
        note="the loader and reconcile functions' environment; an existing column keeps its "
        "type until `warehouse-rebuild` rebuilds its table",
    ),
    Change("aws-add-destination", "add a destination", "aws", _add_destination, IN_PLACE),
    Change(
        "aws-destination-filters", "a destination's `filters`", "aws", _filter_destinations,
        IN_PLACE, note="its function's environment is updated; later invocations filter",
    ),
    Change(
        "aws-remove-destination", "remove a destination", "aws", _remove_destination,
        PROCEDURE, procedure=REMOVE_DESTINATION,
        note="its on-failure queue is deleted with the events parked in it",
    ),
    Change(
        "aws-observability", "enable `observability`", "aws", _observability_on, IN_PLACE,
        before=_observability_off,
    ),
    Change(
        "aws-airflow", "enable `airflow`", "aws", _airflow_on, IN_PLACE,
        before=lambda c: _airflow_off(c) or c,
    ),
    Change("aws-tags", "`tags`", "aws", _tags, IN_PLACE),
    Change(
        "aws-postgres-backups", "`postgres.backupRetentionDays`", "aws",
        lambda c: _with(c, "liftoff:postgres", backupRetentionDays=21), IN_PLACE,
        stacks=(AWS_PRODUCTION,),
    ),
    Change(
        "aws-ingest-throttling", "`ingest.throttlingRateLimit` / `throttlingBurstLimit`", "aws",
        lambda c: _with(c, "liftoff:ingest", throttlingRateLimit=8000, throttlingBurstLimit=16000),
        IN_PLACE, stacks=(AWS_PRODUCTION,),
    ),
    Change(
        "aws-archive-batches", "`archive.batchMaxEvents` / `batchMaxSeconds`", "aws",
        lambda c: _with(c, "liftoff:archive", batchMaxEvents=20000, batchMaxSeconds=120),
        IN_PLACE, stacks=(AWS_PRODUCTION,),
    ),
    Change(
        "aws-airflow-size", "`airflow.environmentClass` / `minWorkers` / `maxWorkers`", "aws",
        lambda c: _with(c, "liftoff:airflow", environmentClass="mw1.large", maxWorkers=20),
        IN_PLACE, stacks=(AWS_PRODUCTION,),
    ),
    # --- liftoff itself ----------------------------------------------------------------------
    Change(
        "upgrade", "upgrade liftoff from the previous release", UPGRADE, _same, REPLACE,
        note="what the previous release's program declared vs this one, on the same stack "
        "config; RELEASES.md says what changes (Kubernetes: the DAG and dashboard ConfigMaps "
        "are re-created with their new data)",
    ),
)  # fmt: skip
