"""Every grant is waited for: the access a capability grants a peer is in the `depends_on` of
the peer's workload (its Deployment, Job, CronJob, event-source mapping, the API's right to
invoke it, or whoever invokes it), so nothing starts before it may do its work."""

from __future__ import annotations

import re

import pytest

from tests.conftest import stack_run
from tests.harness import STACK_FILES, stack_name_of

# Who grants, and how its grant resources are named (`<component>-<verb>-<peer>...`).
GRANTORS = {
    # The broadcasters' egress (HTTPS out, the private ranges a destination lists).
    "liftoff:consumers:KubernetesConsumers": r"-broadcaster-.*-(internet|private)$",
    "liftoff:stream:KinesisStream": r"-(write|read|subscribe)-",
    "liftoff:stream:NatsJetStream": r"-(write|read)-",
    "liftoff:archive:ArchiveBucket": r"-(write|read)-",
    "liftoff:archive:ExternalArchive": r"-(write|read)-",
    "liftoff:postgres:RdsPostgres": r"-from-|-credentials-(?!value)|-setup-reads-",
    "liftoff:postgres:KubernetesPostgres": r"-from-",
}
GRANT_TYPES = {
    "aws:iam/rolePolicy:RolePolicy",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
    "kubernetes:networking.k8s.io/v1:NetworkPolicy",
}


def granted(run):
    types = {r.urn: r.type for r in run.resources}
    return [
        r
        for r in run.resources
        if r.type in GRANT_TYPES
        and types.get(r.parent) in GRANTORS
        and re.search(GRANTORS[types[r.parent]], r.name)
    ]


@pytest.mark.parametrize("stack", [stack_name_of(p) for p in STACK_FILES])
def test_every_grant_is_waited_for(stack):
    run = stack_run(stack)
    waited_for = {urn for r in run.resources for urn in r.dependencies}
    grants = granted(run)
    assert grants, "no grant found: the naming above no longer matches"
    # The reconcile function is invoked by Airflow's DAG only: without Airflow nobody calls it.
    on_demand = not any(r.type.startswith("liftoff:airflow:") for r in run.resources)
    unused = [
        g.name
        for g in grants
        if g.urn not in waited_for and not (on_demand and g.name.endswith("-reconcile"))
    ]
    assert unused == []


def test_a_dropped_grant_would_be_seen():
    run = stack_run("kubernetes-private-cloud")
    grant = next(g for g in granted(run) if g.name == "liftoff-stream-write-collector-egress")
    dependents = [r.name for r in run.resources if grant.urn in r.dependencies]
    assert dependents == ["liftoff-ingest-deployment"]
