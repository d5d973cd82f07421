"""Kubernetes network: a restricted namespace with default-deny NetworkPolicies."""

from __future__ import annotations

from tests.conftest import stack_run
from tests.harness import run_program


def test_namespace_enforces_restricted_pod_security():
    namespace = stack_run("kubernetes-private-cloud").one("kubernetes:core/v1:Namespace")
    labels = namespace.inputs["metadata"]["labels"]
    assert namespace.inputs["metadata"]["name"] == "liftoff-data"
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["owner"] == "data-platform"


def test_namespace_is_retained_when_data_is_protected():
    protected = stack_run("kubernetes-private-cloud").one("kubernetes:core/v1:Namespace")
    throwaway = stack_run("dev").one("kubernetes:core/v1:Namespace")
    assert protected.retain_on_delete is True
    assert throwaway.retain_on_delete is False


def test_default_deny_covers_every_pod_both_ways():
    run = stack_run("dev")
    policies = {
        r.inputs["metadata"]["name"]: r.inputs["spec"]
        for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    }
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = policies["allow-dns"]
    assert dns["policyTypes"] == ["Egress"]
    assert {p["port"] for p in dns["egress"][0]["ports"]} == {53}


def test_existing_namespace_is_used_when_creation_is_off():
    run = run_program(
        "Pulumi.dev.yaml",
        overrides={"liftoff:kubernetes": {"namespace": "team-data", "createNamespace": False}},
    )
    assert run.of_type("kubernetes:core/v1:Namespace") == []
    assert {
        r.inputs["metadata"]["namespace"]
        for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
    } == {"team-data"}
    assert run.outputs["namespace"] == "team-data"


def _dns_rule(run):
    (policy,) = [
        r
        for r in run.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")
        if r.inputs["metadata"]["name"] == "allow-dns"
    ]
    (rule,) = policy.inputs["spec"]["egress"]
    return rule


def test_dns_peers_default_to_the_dns_namespace_on_port_53():
    assert _dns_rule(stack_run("dev")) == {
        "to": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
        ],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
    }


def test_dns_peers_cover_node_local_dns_and_openshift():
    # NodeLocal DNSCache answers on a link-local address outside any pod.
    private = _dns_rule(stack_run("kubernetes-private-cloud"))
    assert private["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        },
        {"ipBlock": {"cidr": "169.254.20.10/32"}},
    ]
    # OpenShift: DNS pods in openshift-dns listen on 5353.
    openshift = run_program(
        "Pulumi.dev.yaml",
        overrides={
            "liftoff:kubernetes": {
                "namespace": "liftoff-dev",
                "dns": {"namespace": "openshift-dns", "ports": [53, 5353]},
            }
        },
    )
    rule = _dns_rule(openshift)
    assert rule["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "openshift-dns"
    }
    assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {
        (protocol, port) for protocol in ("UDP", "TCP") for port in (53, 5353)
    }
