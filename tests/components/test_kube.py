"""Kubernetes helpers: image references through the registry override, labels."""

from __future__ import annotations

import pytest

from components import kube


def test_image_without_mirror_is_unchanged():
    assert kube.image("docker.io/library/postgres:17.7", None) == "docker.io/library/postgres:17.7"


def test_mirror_replaces_the_registry_host_and_keeps_the_path():
    assert (
        kube.image("docker.io/nats:2.12.3-alpine", "harbor.corp:8443/proxy")
        == "harbor.corp:8443/proxy/nats:2.12.3-alpine"
    )


@pytest.mark.parametrize(
    "reference", ["postgres:17", "docker.io/library/postgres", "docker.io/library/postgres:latest"]
)
def test_unpinned_or_unqualified_images_are_refused(reference):
    with pytest.raises(ValueError, match="must"):
        kube.image(reference, None)


def test_well_known_labels_win_over_tags():
    labels = kube.labels("postgres", "dev", {"app.kubernetes.io/name": "x", "team": "data"})
    assert labels["app.kubernetes.io/name"] == "postgres"
    assert labels["team"] == "data"
    assert kube.selector("postgres", "dev").items() <= labels.items()


@pytest.mark.parametrize(
    ("reference", "host", "path", "tag"),
    [
        ("docker.io/library/postgres:17.7", "docker.io", "library/postgres", "17.7"),
        (
            "registry.k8s.io/git-sync/git-sync:v4.4.0",
            "registry.k8s.io",
            "git-sync/git-sync",
            "v4.4.0",
        ),
        ("localhost:5000/liftoff/services:1", "localhost:5000", "liftoff/services", "1"),
        ("docker.io/apache/airflow", "docker.io", "apache/airflow", None),
    ],
)
def test_image_references_have_one_parser(reference, host, path, tag):
    parsed = kube.ImageReference.parse(reference)
    assert (parsed.host, parsed.path, parsed.tag) == (host, path, tag)
    assert parsed.name == reference.rsplit(":", 1)[0] if tag else reference


def test_chart_repositories_leave_docker_hub_implicit_and_follow_the_mirror():
    airflow = kube.ImageReference.parse("docker.io/apache/airflow:3.0.2")
    assert airflow.repository() == "apache/airflow"
    assert airflow.repository("mirror.corp/hub/") == "mirror.corp/hub/apache/airflow"
    sync = kube.ImageReference.parse("registry.k8s.io/git-sync/git-sync:v4.4.0")
    assert sync.repository() == "registry.k8s.io/git-sync/git-sync"


def test_an_unqualified_reference_is_accepted_only_when_asked():
    with pytest.raises(ValueError, match="registry host"):
        kube.ImageReference.parse("apache/airflow:3.0.2")
    parsed = kube.ImageReference.parse("apache/airflow:3.0.2", qualified=False)
    assert (parsed.host, parsed.name, parsed.tag) == ("", "apache/airflow", "3.0.2")
