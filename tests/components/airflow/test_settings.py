"""`liftoff:airflow`: web access on AWS, DAG sources and the log volume on Kubernetes."""

from __future__ import annotations

import json

import pytest

from components.config import load_config
from components.validation import ConfigError
from tests.components.configs import AWS, load, problems


def test_airflow_web_access_peers_default_to_none_and_are_read():
    config = load(AWS)
    assert config.airflow.aws.web_access_cidrs == ()
    assert config.airflow.aws.web_access_security_group_ids == ()
    assert config.network.aws.log_retention_days == 365
    config = load(
        {
            **AWS,
            "liftoff:airflow": {
                "webAccessCidrs": ["10.8.0.0/16", "10.8.0.0/16", "172.16.0.0/24"],
                "webAccessSecurityGroupIds": ["sg-0123456789abcdef0"],
            },
        }
    )
    assert config.airflow.aws.web_access_cidrs == ("10.8.0.0/16", "172.16.0.0/24")
    assert config.airflow.aws.web_access_security_group_ids == ("sg-0123456789abcdef0",)


def test_airflow_web_access_peers_are_validated():
    found = problems(
        {
            **AWS,
            "liftoff:airflow": {
                "webAccessCidrs": ["10.8.0.1/16", "0.0.0.0/0"],
                "webAccessSecurityGroupIds": ["bastion"],
            },
        }
    )
    assert any(p.startswith("liftoff:airflow.webAccessCidrs[0]: got '10.8.0.1/16'") for p in found)
    assert any(
        p.startswith("liftoff:airflow.webAccessCidrs[1]: got '0.0.0.0/0'") and "public" in p
        for p in found
    )
    assert any(
        p.startswith("liftoff:airflow.webAccessSecurityGroupIds[0]: got 'bastion'") and "sg-" in p
        for p in found
    )
    public = problems(
        {**AWS, "liftoff:airflow": {"webAccess": "public", "webAccessCidrs": ["10.8.0.0/16"]}}
    )
    assert public == [
        "liftoff:airflow.webAccessCidrs: got ['10.8.0.0/16']; allowed: only with webAccess "
        "'private' (a public web server is reached over the internet)"
    ]
    kubernetes = problems(
        {"liftoff:target": "kubernetes", "liftoff:airflow": {"webAccessCidrs": ["10.8.0.0/16"]}}
    )
    assert any("webAccessCidrs" in p and "only with target 'aws'" in p for p in kubernetes)


def test_git_credentials_are_checked():
    base = {"liftoff:target": "kubernetes"}

    def problems(dags, secret=True):
        with pytest.raises(ConfigError) as error:
            load_config(
                {**base, "liftoff:airflow": json.dumps({"dags": {"source": "git", **dags}})},
                project="liftoff",
                stack="dev",
                secret_keys={"liftoff:airflow"} if secret else set(),
            )
        return str(error.value)

    ssh = "ssh://git@git.corp.example/dags.git"
    message = problems({"repository": ssh})
    assert "liftoff:airflow.dags.sshKey" in message and "liftoff:airflow.dags.knownHosts" in message
    assert "liftoff:airflow.dags.token" in problems(
        {"repository": "https://git.example/d.git", "token": "t"}, secret=False
    )
    assert "only with an ssh:// or git@" in problems(
        {"repository": "https://git.example/d.git", "knownHosts": "h ssh-ed25519 AAAA"}
    )
