"""Deployment reality for the Kubernetes target: what a real cluster and the pinned charts
require of everything liftoff declares, checked over whole classes of objects.

Mocks accept any input; these tests check the declarations against facts about Kubernetes
(Pod Security "restricted", PDB arithmetic, what a bare kind/k3d cluster offers) and about
the pinned charts (`charts/*.facts.yaml`: the key paths each version defines and how it
resolves every pod's security contexts).
"""

from __future__ import annotations

import copy
import functools
import json

import pytest

from tests.chart_facts import chart_pod_problems, load_facts, restricted_problems, unknown_paths
from tests.harness import ProgramRun, run_program

CHART = "kubernetes:helm.sh/v4:Chart"
CHART_NAMES = {"airflow": "liftoff-airflow-chart", "nats": "liftoff-stream-chart"}
# The shipped Kubernetes stacks, plus the shapes their options switch on (Celery with its
# Redis, DAGs over SSH or from an image, a public UI) so every branch of the values is seen.
VARIANTS: dict[str, tuple[str, dict]] = {
    "dev": ("Pulumi.dev.yaml", {}),
    "kubernetes-private-cloud": ("stacks/kubernetes-private-cloud.yaml", {}),
    "dev-celery-git-ssh-public-ui": (
        "Pulumi.dev.yaml",
        {
            "liftoff:airflow": {
                "executor": "CeleryExecutor",
                "workers": 2,
                "webAccess": "public",
                "host": "airflow.example.com",
                "ingressClass": "nginx",
                "tlsSecret": "airflow-tls",
                "dags": {
                    "source": "git",
                    "repository": "git@git.example.com:data/dags.git",
                    "sshKey": {"secure": "v1:placeholder-ssh-key"},
                    "knownHosts": "git.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample",
                },
            }
        },
    ),
    "dev-image-dags-shared-logs": (
        "Pulumi.dev.yaml",
        {
            "liftoff:airflow": {
                "dags": {"source": "image", "image": "registry.example/airflow-dags:1.0.0"},
                "logsStorageClass": "cephfs",
            }
        },
    ),
}


@functools.cache
def variant_run(name: str) -> ProgramRun:
    path, overrides = VARIANTS[name]
    return run_program(path, overrides=overrides)


def chart_values(run: ProgramRun, chart: str) -> dict:
    return run.one(CHART, CHART_NAMES[chart]).inputs["values"]


@pytest.mark.parametrize("chart", sorted(CHART_NAMES))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chart_values_use_only_keys_the_pinned_chart_defines(variant, chart):
    facts = load_facts(chart)
    run = variant_run(variant)
    assert run.one(CHART, CHART_NAMES[chart]).inputs["version"] == facts["version"]
    assert unknown_paths(chart_values(run, chart), facts) == []


def test_key_facts_catch_keys_the_chart_does_not_define():
    airflow = load_facts("airflow")
    values = copy.deepcopy(chart_values(variant_run("dev"), "airflow"))
    # The key today's charts/airflow.yaml passed: the schema's createUserJob has no `enabled`.
    assert "createUserJob.enabled" in airflow["rejected"]
    values["createUserJob"] = {"enabled": False}
    values["scheduler"]["replica"] = 2
    assert unknown_paths(values, airflow) == ["createUserJob.enabled", "scheduler.replica"]
    nats = copy.deepcopy(chart_values(variant_run("dev"), "nats"))
    nats["container"]["resourcez"] = {}
    assert unknown_paths(nats, load_facts("nats")) == ["container.resourcez"]


@pytest.mark.parametrize("chart", sorted(CHART_NAMES))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_the_charts_render_meets_restricted(variant, chart):
    assert chart_pod_problems(chart_values(variant_run(variant), chart), load_facts(chart)) == []


def test_restricted_check_sees_the_chart_defaults_liftoff_overrides():
    airflow = load_facts("airflow")
    values = copy.deepcopy(chart_values(variant_run("dev-celery-git-ssh-public-ui"), "airflow"))
    del values["redis"]["securityContexts"]
    del values["dags"]["gitSync"]["securityContexts"]
    problems = chart_pod_problems(values, airflow)
    # The chart's Redis runs as root, and git-sync falls back to a bare runAsUser.
    assert "redis/redis: runAsUser is 0" in problems
    assert "scheduler/git-sync: allowPrivilegeEscalation is not false" in problems
    # Components off by default stay restricted when a customer turns them on.
    values = chart_values(variant_run("dev"), "airflow")
    assert (
        chart_pod_problems({**values, "statsd": {**values["statsd"], "enabled": True}}, airflow)
        == []
    )
    bare = {k: v for k, v in values.items() if k != "statsd"}
    assert "statsd/statsd: runAsNonRoot is not true" in chart_pod_problems(
        {**bare, "statsd": {"enabled": True}}, airflow
    )
    nats = copy.deepcopy(chart_values(variant_run("dev"), "nats"))
    del nats["reloader"]["merge"]["securityContext"]
    nats["natsBox"]["enabled"] = True
    del nats["natsBox"]["container"]
    problems = chart_pod_problems(nats, load_facts("nats"))
    assert "nats/reloader: capabilities.drop lacks ALL" in problems
    assert "nats-box/nats-box: allowPrivilegeEscalation is not false" in problems


def _pod_specs(run: ProgramRun):
    for obj in run.kubernetes_objects():
        kind = obj.get("kind")
        spec = obj.get("spec") or {}
        if kind in ("Deployment", "StatefulSet", "Job"):
            yield obj["metadata"]["name"], spec["template"]["spec"]
        elif kind == "CronJob":
            yield obj["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_liftoff_declares_itself_meets_restricted(variant):
    problems = []
    specs = list(_pod_specs(variant_run(variant)))
    assert specs
    for name, spec in specs:
        pod = spec.get("securityContext") or {}
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            context = container.get("securityContext") or {}
            problems += [
                f"{name}/{container['name']}: {p}" for p in restricted_problems(pod, context)
            ]
            if not (container.get("resources") or {}).get("limits"):
                problems.append(f"{name}/{container['name']}: no resource limits")
    assert problems == []


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_disruption_budget_allows_an_eviction(variant):
    """A PDB that allows no disruption (one replica, minAvailable 1) blocks every drain."""
    objects = variant_run(variant).kubernetes_objects()
    workloads = [o for o in objects if o.get("kind") in ("Deployment", "StatefulSet")]
    budgets = [o for o in objects if o.get("kind") == "PodDisruptionBudget"]
    assert budgets
    for budget in budgets:
        spec = budget["spec"]
        replicas = sum(
            w["spec"].get("replicas", 1)
            for w in workloads
            if _selects(spec["selector"], w["spec"]["template"]["metadata"]["labels"])
        )
        assert replicas >= 1, budget["metadata"]["name"]
        if "minAvailable" in spec:
            allowed = replicas - int(spec["minAvailable"])
        else:
            allowed = int(spec["maxUnavailable"])
        assert allowed >= 1, f"{budget['metadata']['name']} allows no eviction of {replicas}"


def test_dev_stack_runs_on_a_bare_kind_cluster():
    """Only the default StorageClass (ReadWriteOnce), no ingress controller, no load balancer."""
    run = variant_run("dev")
    objects = run.kubernetes_objects()
    kinds = {o.get("kind") for o in objects}
    assert "Ingress" not in kinds and "StorageClass" not in kinds
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj.get("kind") == "Service":
            assert spec.get("type", "ClusterIP") != "LoadBalancer", obj["metadata"]["name"]
        claims = [*spec.get("volumeClaimTemplates", [])]
        if obj.get("kind") == "PersistentVolumeClaim":
            claims.append(obj)
        for claim in claims:
            assert claim["spec"]["accessModes"] == ["ReadWriteOnce"], obj["metadata"]["name"]
            assert "storageClassName" not in claim["spec"], obj["metadata"]["name"]
    airflow = chart_values(run, "airflow")
    # The chart's only ReadWriteMany claim is the shared log volume; no chart Ingress.
    assert airflow["logs"]["persistence"]["enabled"] is False
    assert airflow.get("ingress", {}).get("apiServer", {}).get("enabled") is not True
    nats = chart_values(run, "nats")
    assert nats["config"].get("websocket", {}).get("ingress", {}).get("enabled") is not True
    for values in (airflow, nats):
        assert "storageClassName" not in str(values)
        assert "LoadBalancer" not in str(values)


# Egress that reaches beyond the namespace without naming its peers: Airflow's scheduler and
# workers launch pods through the Kubernetes API and git-sync reaches the git host, neither of
# which has an address to select.
UNSELECTED_EGRESS = {"airflow-outbound": {443, 6443, 22}}
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")


def egress_problems(objects: list[dict], config: dict[str, str]) -> list[str]:
    """Egress beyond the namespace names its ports; private ranges open only where the stack
    lists them (DNS CIDRs, a destination's allowPrivate) or to the archive's port."""
    kubernetes = json.loads(config.get("liftoff:kubernetes", "{}"))
    configured = set((kubernetes.get("dns") or {}).get("cidrs") or [])
    for destination in json.loads(config.get("liftoff:destinations", "[]")):
        configured |= {entry["cidr"] for entry in destination.get("allowPrivate") or []}
    archive = json.loads(config.get("liftoff:archive", "{}"))
    archive_port = int(archive["endpoint"].rsplit(":", 1)[1]) if archive else None
    problems = []
    for policy in objects:
        if policy.get("kind") != "NetworkPolicy":
            continue
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("egress") or []:
            ports = {p["port"] for p in rule.get("ports") or []}
            peers = rule.get("to")
            in_namespace = bool(peers) and all(set(peer) == {"podSelector"} for peer in peers)
            if not ports and not in_namespace:
                problems.append(f"{name}: egress beyond the namespace on every port")
            if not peers:
                if not ports or not ports <= UNSELECTED_EGRESS.get(name, set()):
                    problems.append(f"{name}: egress to any address on {sorted(ports)}")
                continue
            for peer in peers:
                block = peer.get("ipBlock")
                if block is None:
                    continue
                if block["cidr"] == "0.0.0.0/0":
                    if sorted(block.get("except") or []) == sorted(PRIVATE):
                        continue  # the internet, private ranges excluded
                    if ports == {archive_port}:
                        continue  # the archive endpoint (possibly inside the network)
                    problems.append(f"{name}: 0.0.0.0/0 with private ranges on {sorted(ports)}")
                elif block["cidr"] not in configured:
                    problems.append(f"{name}: {block['cidr']} is not configured")
    return problems


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_egress_rule_names_its_ports_and_opens_private_ranges_only_where_configured(
    variant,
):
    run = variant_run(variant)
    assert egress_problems(run.kubernetes_objects(), run.config) == []


def test_egress_check_catches_private_ranges_nobody_configured():
    run = variant_run("kubernetes-private-cloud")
    config = {**run.config, "liftoff:destinations": "[]"}
    loose = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "loose"},
        "spec": {"egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]},
    }
    assert egress_problems([*run.kubernetes_objects(), loose], config) == [
        "broadcaster-crm-private: 10.20.0.0/16 is not configured",
        "replay-to-crm-private: 10.20.0.0/16 is not configured",  # its replay pod's too
        "loose: egress beyond the namespace on every port",
        "loose: 0.0.0.0/0 with private ranges on []",
    ]
