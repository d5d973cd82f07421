"""The stream on Kubernetes: the official NATS chart with JetStream, and the EVENTS stream."""

from __future__ import annotations

from pathlib import Path

from components.charts import load_chart_pin
from components.stream.kubernetes import (
    EVENTS_SHARE_OF_STORAGE,
    events_max_bytes,
    required_storage_gb,
)
from components.stream.settings import KubernetesStream
from tests.conftest import stack_run
from tests.harness import run_program

CHART = "kubernetes:helm.sh/v4:Chart"
JOB = "kubernetes:batch/v1:Job"
README = Path(__file__).resolve().parents[3] / "README.md"


def test_chart_is_the_pinned_official_nats_chart():
    pin = load_chart_pin("nats")
    chart = stack_run("dev").one(CHART, "liftoff-stream-chart").inputs
    assert (chart["chart"], chart["version"]) == ("nats", pin.version)
    assert chart["repositoryOpts"] == {"repo": "https://nats-io.github.io/k8s/helm/charts/"}
    assert chart["namespace"] == "liftoff-dev"
    assert chart["name"] == "nats"


def test_chart_repository_and_local_archive_can_be_overridden():
    mirrored = stack_run("kubernetes-private-cloud").one(CHART, "liftoff-stream-chart").inputs
    assert mirrored["repositoryOpts"] == {"repo": "https://charts.corp.example/nats"}
    run = run_program(
        "stacks/kubernetes-private-cloud.yaml",
        overrides={"liftoff:charts": {"nats": {"path": "vendor/nats-2.14.2.tgz"}}},
    )
    local = run.one(CHART, "liftoff-stream-chart").inputs
    assert local["chart"] == "vendor/nats-2.14.2.tgz"
    assert "repositoryOpts" not in local


def test_production_profile_runs_three_servers_with_fsync_always():
    values = (
        stack_run("kubernetes-private-cloud").one(CHART, "liftoff-stream-chart").inputs["values"]
    )
    assert values["config"]["cluster"] == {"enabled": True, "replicas": 3}
    jetstream = values["config"]["jetstream"]
    assert jetstream["merge"] == {"sync_interval": "always"}
    assert jetstream["fileStore"]["pvc"] == {
        "enabled": True,
        "size": "100Gi",
        "storageClassName": "ceph-rbd-retain",
    }
    assert jetstream["memoryStore"] == {"enabled": False}


def test_single_server_dev_keeps_the_default_fsync():
    values = stack_run("dev").one(CHART, "liftoff-stream-chart").inputs["values"]
    assert values["config"]["cluster"]["enabled"] is False
    assert "merge" not in values["config"]["jetstream"]
    assert "storageClassName" not in values["config"]["jetstream"]["fileStore"]["pvc"]


def test_every_nats_image_goes_through_the_mirror_and_pods_are_restricted():
    values = (
        stack_run("kubernetes-private-cloud").one(CHART, "liftoff-stream-chart").inputs["values"]
    )
    assert values["container"]["image"]["fullImageName"] == (
        "registry.corp.example/mirror/library/nats:2.14.2-alpine"
    )
    assert values["reloader"]["image"]["fullImageName"].startswith("registry.corp.example/mirror/")
    assert values["natsBox"]["enabled"] is False
    pod = values["podTemplate"]["merge"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in ("container", "reloader"):
        context = values[container]["merge"]["securityContext"]
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["allowPrivilegeEscalation"] is False
        assert values[container]["merge"]["resources"]["limits"]
    retention = values["statefulSet"]["merge"]["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention == {"whenDeleted": "Retain", "whenScaled": "Retain"}


def test_stream_is_created_by_a_job_named_after_its_settings():
    job = stack_run("kubernetes-private-cloud").one(JOB, "liftoff-stream-setup").inputs
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert container["args"] == ["ensure-stream"]
    assert env == {
        "LIFTOFF_STREAM_URL": (
            "nats://nats.liftoff-data.svc.cluster.local:4222/EVENTS?partitions=8"
        ),
        "LIFTOFF_STREAM_RETENTION_HOURS": "336",
        "LIFTOFF_STREAM_REPLICAS": "3",
        "LIFTOFF_STREAM_DUPLICATE_WINDOW_SECONDS": "120",
        # 75% of the 100 GiB volume, split over the 8 partitions
        "LIFTOFF_STREAM_MAX_BYTES": str(100 * 2**30 * 3 // 4 // 8),
        # 10% of it for the dead letters (quarantine and parked events)
        "LIFTOFF_DEAD_LETTER_MAX_BYTES": str(100 * 2**30 // 10),
        # the durables the stack runs: the Job deletes liftoff's others
        "LIFTOFF_STREAM_CONSUMERS": "archiver,broadcaster-amplitude,broadcaster-crm,loader",
    }
    assert container["image"] == "registry.corp.example/mirror/data/liftoff-services:0.1.0"
    changed = run_program(
        "stacks/kubernetes-private-cloud.yaml",
        overrides={"liftoff:stream": {"replicas": 3, "retentionHours": 48}},
    ).one(JOB, "liftoff-stream-setup")
    assert changed.inputs["metadata"]["name"] != job["metadata"]["name"]


def test_removing_a_destination_runs_the_setup_job_again_without_its_durable():
    """The removed broadcaster's durables would otherwise stay, their lag growing for good:
    the Job (a new name, so it runs) is told the set without it and deletes them."""
    stack = "stacks/kubernetes-private-cloud.yaml"
    before = stack_run("kubernetes-private-cloud").one(JOB, "liftoff-stream-setup").inputs
    crm_only = [{"name": "crm", "type": "webhook", "url": "https://crm.corp.example/h",
                 "signingSecret": {"secure": "v1:placeholder"}}]  # fmt: skip
    after = run_program(stack, overrides={"liftoff:destinations": crm_only}).one(
        JOB, "liftoff-stream-setup"
    )
    (container,) = after.inputs["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LIFTOFF_STREAM_CONSUMERS"] == "archiver,broadcaster-crm,loader"
    assert after.inputs["metadata"]["name"] != before["metadata"]["name"]


def test_nats_admits_only_granted_clients_and_its_own_routes():
    run = stack_run("kubernetes-private-cloud")
    policies = {
        r.name: r.inputs["spec"]
        for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if r.name.startswith("liftoff-stream-") and "-read-" not in r.name
    }
    assert set(policies) == {
        "liftoff-stream-routes-ingress",
        "liftoff-stream-routes-egress",
        "liftoff-stream-write-stream-setup-ingress",
        "liftoff-stream-write-stream-setup-egress",
        "liftoff-stream-write-collector-ingress",
        "liftoff-stream-write-collector-egress",
        # The regulation DAG's pods: the suppression list and the dead letters.
        "liftoff-stream-write-regulation-ingress",
        "liftoff-stream-write-regulation-egress",
    }
    collector_in = policies["liftoff-stream-write-collector-ingress"]["ingress"][0]
    assert collector_in["ports"] == [{"protocol": "TCP", "port": 4222}]
    assert collector_in["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "collector"
    )
    assert policies["liftoff-stream-routes-ingress"]["ingress"][0]["ports"][0]["port"] == 6222


def test_every_client_gets_the_partition_count_in_its_stream_url():
    """Collector, every consumer and the setup Job must agree on the partitions, or events
    would be published to streams nobody reads."""
    for stack, expected in (("kubernetes-private-cloud", "?partitions=8"), ("dev", "")):
        run = stack_run(stack)
        urls = {
            (resource.name, env["value"])
            for resource in run.resources
            if resource.type.startswith("kubernetes:") and "spec" in resource.inputs
            for env in _env_of(resource.inputs["spec"])
            if env.get("name") == "LIFTOFF_STREAM_URL"
        }
        assert len(urls) >= 3, stack  # the setup Job, the collector, the consumers
        for name, url in urls:
            assert url.endswith(f"/EVENTS{expected}"), (stack, name, url)


def _env_of(spec):
    """Every env entry of every container under a workload spec (any nesting)."""
    if isinstance(spec, dict):
        for key, value in spec.items():
            if key == "env" and isinstance(value, list):
                yield from (e for e in value if isinstance(e, dict))
            else:
                yield from _env_of(value)
    elif isinstance(spec, list):
        for item in spec:
            yield from _env_of(item)


def test_partitions_change_the_setup_job_and_split_max_bytes():
    run = run_program(
        "stacks/kubernetes-private-cloud.yaml", overrides={"liftoff:stream": {"partitions": 16}}
    )
    (container,) = run.one(JOB, "liftoff-stream-setup").inputs["spec"]["template"]["spec"][
        "containers"
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["LIFTOFF_STREAM_URL"].endswith("/EVENTS?partitions=16")
    assert int(env["LIFTOFF_STREAM_MAX_BYTES"]) * 16 <= 100 * 2**30 * 3 // 4


def test_the_streams_byte_bounds_fit_the_jetstream_file_store():
    """JetStream reserves each stream's max_bytes out of max_file_store on every server that
    holds a replica (all of them, with R3): the EVENTS partitions and DEADLETTER together must
    fit, or ensure-stream is refused for lack of resources."""
    for storage_gb, partitions in ((1, 1), (10, 8), (100, 64)):
        run = run_program(
            "stacks/kubernetes-private-cloud.yaml",
            overrides={"liftoff:stream": {"storageGb": storage_gb, "partitions": partitions}},
        )
        (container,) = run.one(JOB, "liftoff-stream-setup").inputs["spec"]["template"]["spec"][
            "containers"
        ]
        env = {e["name"]: e["value"] for e in container["env"]}
        values = run.one(CHART, "liftoff-stream-chart").inputs["values"]
        file_store = int(values["config"]["jetstream"]["fileStore"]["maxSize"].removesuffix("Mi"))
        reserved = int(env["LIFTOFF_STREAM_MAX_BYTES"]) * partitions + int(
            env["LIFTOFF_DEAD_LETTER_MAX_BYTES"]
        )
        assert reserved <= file_store * 2**20, (storage_gb, partitions)
        assert int(env["LIFTOFF_DEAD_LETTER_MAX_BYTES"]) >= 2**20  # holds any one dead letter


def test_durability_always_is_the_default_for_every_clustered_stream():
    """The policy that keeps acknowledged events on disk: any stack with 3 or more replicas
    that does not say otherwise fsyncs before acknowledging (sync_interval: always)."""
    for replicas in (3, 5):
        values = (
            run_program(
                "stacks/kubernetes-private-cloud.yaml",
                overrides={"liftoff:stream": {"replicas": replicas, "storageGb": 20}},
            )
            .one(CHART, "liftoff-stream-chart")
            .inputs["values"]
        )
        assert values["config"]["jetstream"]["merge"] == {"sync_interval": "always"}, replicas
    for stack in ("dev", "kubernetes-private-cloud"):
        run = stack_run(stack)
        values = run.one(CHART, "liftoff-stream-chart").inputs["values"]
        replicas = values["config"]["cluster"]["replicas"]
        if replicas >= 3:
            assert values["config"]["jetstream"]["merge"] == {"sync_interval": "always"}


def test_nats_servers_are_guaranteed_pods_with_go_and_jetstream_limits_below_them():
    values = (
        stack_run("kubernetes-private-cloud").one(CHART, "liftoff-stream-chart").inputs["values"]
    )
    resources = values["container"]["merge"]["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "2", "memory": "8Gi"}
    # GOMEMLIMIT at 80% of the memory limit; max_file_store at 90% of the 100 Gi volume.
    assert values["container"]["env"] == {"GOMEMLIMIT": "6553MiB"}
    assert values["config"]["jetstream"]["fileStore"]["maxSize"] == "92160Mi"
    reloader = values["reloader"]["merge"]["resources"]
    assert reloader["requests"] == reloader["limits"]
    # Limits alone are taken as the requests too; unequal requests are refused.
    only_limits = run_program(
        "Pulumi.dev.yaml",
        overrides={
            "liftoff:stream": {
                "replicas": 1,
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
            }
        },
    )
    merged = only_limits.one(CHART, "liftoff-stream-chart").inputs["values"]["container"]
    assert merged["merge"]["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert merged["env"] == {"GOMEMLIMIT": "819MiB"}


def test_the_readme_sizing_formula_is_the_streams_share():
    """The README sizes storageGb by the share the EVENTS streams really get (one constant),
    and a stack sized by it holds the retention it was sized for."""
    row = next(
        line for line in README.read_text().splitlines() if "| NATS (`liftoff:stream`)" in line
    )
    assert f"÷ 2^30 ÷ {EVENTS_SHARE_OF_STORAGE}" in row and "`EVENTS_SHARE_OF_STORAGE`" in row
    rate, size, hours = 200, 1000, 168  # the README's example: 200/s x 1 KB x 168 h
    storage_gb = required_storage_gb(rate, size, hours)
    assert f"`storageGb: {storage_gb}`" in row
    for partitions in (1, 8, 64):
        settings = KubernetesStream(storage_gb=storage_gb, partitions=partitions)
        assert events_max_bytes(settings) * partitions >= rate * size * hours * 3600
        smaller = KubernetesStream(storage_gb=storage_gb - 1, partitions=partitions)
        assert events_max_bytes(smaller) * partitions < rate * size * hours * 3600
