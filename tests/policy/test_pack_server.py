"""The pack's entry point, run as the Pulumi CLI runs it: `policy/__main__.py` starts the
analyzer gRPC server and prints its port; we then talk to it the way the engine does
(GetAnalyzerInfo, Configure, Analyze, AnalyzeStack). No Pulumi CLI needed."""

from __future__ import annotations

import subprocess
import sys
import threading

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime import proto
from pulumi.runtime.proto import analyzer_pb2_grpc

from policy.liftoff_policy.registry import RULES
from tests.harness import ROOT


@pytest.fixture(scope="module")
def analyzer():
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "policy" / "__main__.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT / "policy",
    )
    port: list[str] = []
    reader = threading.Thread(target=lambda: port.append(process.stdout.readline().strip()))
    reader.start()
    reader.join(timeout=60)
    try:
        if not port or not port[0].isdigit():
            process.kill()
            pytest.fail(f"the pack printed no port: {port} {process.stderr.read()[-2000:]}")
        channel = grpc.insecure_channel(f"127.0.0.1:{port[0]}")
        grpc.channel_ready_future(channel).result(timeout=30)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


def struct(value: dict) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(value)
    return message


def test_the_pack_announces_every_policy_as_mandatory(analyzer):
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "liftoff"
    assert [p.name for p in info.policies] == [rule.name for rule in RULES]
    assert {p.enforcementLevel for p in info.policies} == {proto.MANDATORY}


def test_the_pack_reports_violations_with_config(analyzer):
    analyzer.Configure(
        proto.ConfigureAnalyzerRequest(
            policyConfig={
                "k8s-images-from-registry": proto.PolicyConfig(
                    enforcementLevel=proto.MANDATORY,
                    properties=struct({"registry": "registry.corp.example/mirror"}),
                )
            }
        )
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "debug", "namespace": "apps"},
        "spec": {"containers": [{"name": "sh", "image": "docker.io/library/busybox:latest"}]},
    }
    response = analyzer.Analyze(
        proto.AnalyzeRequest(
            type="kubernetes:core/v1:Pod",
            properties=struct(pod),
            urn="urn:pulumi:dev::liftoff::kubernetes:core/v1:Pod::debug",
            name="debug",
        )
    )
    by_policy = {}
    for diagnostic in response.diagnostics:
        by_policy.setdefault(diagnostic.policyName, []).append(diagnostic)
    assert {
        "k8s-pod-security-restricted",
        "k8s-resources",
        "k8s-images-pinned",
        "k8s-images-from-registry",
    } <= set(by_policy)
    registry = by_policy["k8s-images-from-registry"][0]
    assert registry.enforcementLevel == proto.MANDATORY
    assert "under registry.corp.example/mirror/" in registry.message


def test_the_pack_runs_stack_policies(analyzer):
    bucket = proto.AnalyzerResource(
        type="aws:s3/bucket:Bucket",
        properties=struct({}),
        urn="urn:pulumi:prod::liftoff::aws:s3/bucket:Bucket::archive",
        name="archive",
    )
    response = analyzer.AnalyzeStack(proto.AnalyzeStackRequest(resources=[bucket]))
    messages = {d.policyName: d.message for d in response.diagnostics}
    assert "no public access block" in messages["aws-s3-public-access-blocked"]
    assert "no server-side encryption" in messages["aws-s3-encrypted"]
