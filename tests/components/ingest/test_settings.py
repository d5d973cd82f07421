"""`liftoff:sources` and `liftoff:ingest`: sources, origins and the collector's edge."""

from __future__ import annotations

import pytest

from tests.components.configs import load, problems


def test_collect_ip_per_source_defaults_to_true():
    config = load(
        {
            "liftoff:target": "kubernetes",
            "liftoff:sources": [{"name": "web"}, {"name": "backend", "collectIp": False}],
        }
    )
    assert {s.name: s.collect_ip for s in config.sources} == {"web": True, "backend": False}


def test_collector_edge_settings_are_validated_and_named():
    found = problems(
        {
            "liftoff:target": "kubernetes",
            "liftoff:sources": [{"name": "web", "collectIp": "sometimes"}],
            "liftoff:ingest": {
                "trustedProxies": ["10.0.0.0/8", "10.0.0.0/33", "proxy.local"],
                "maxHeaderBytes": 10,
                "headerTimeoutSeconds": 0,
            },
        }
    )
    text = "\n".join(found)
    assert "liftoff:sources[0].collectIp: got 'sometimes'; allowed: true or false" in text
    assert "liftoff:ingest.trustedProxies[1]: got '10.0.0.0/33'" in text
    assert "liftoff:ingest.trustedProxies[2]: got 'proxy.local'" in text
    assert "liftoff:ingest.maxHeaderBytes: got 10" in text
    assert "liftoff:ingest.headerTimeoutSeconds: got 0" in text


def test_trusted_proxies_are_normalised_and_kubernetes_only():
    config = load(
        {
            "liftoff:target": "kubernetes",
            "liftoff:ingest": {"trustedProxies": ["10.1.2.3/8", "fd00::1", "10.0.0.0/8"]},
        }
    )
    assert config.ingest.kubernetes.trusted_proxies == ("10.0.0.0/8", "fd00::1/128")
    found = problems({"liftoff:target": "aws", "liftoff:ingest": {"trustedProxies": []}})
    assert any("liftoff:ingest.trustedProxies" in p and "kubernetes" in p for p in found)


def test_allowed_origins_per_source():
    config = load(
        {
            "liftoff:target": "kubernetes",
            "liftoff:sources": [
                {"name": "web", "allowedOrigins": ["https://b.example", "https://*.a.example"]},
                {"name": "backend"},
            ],
        }
    )
    sources = {s.name: s for s in config.sources}
    assert sources["web"].allowed_origins == ("https://*.a.example", "https://b.example")
    assert sources["web"].restricts_origins
    assert sources["backend"].allowed_origins == ("*",)
    assert not sources["backend"].restricts_origins


@pytest.mark.parametrize(
    "origin",
    [
        "https://shop.example/",  # a path: browsers never send one
        "https://Shop.example",  # browsers send the host in lower case
        "ftp://shop.example",
        "shop.example",
        "https://shop.example:port",
        "null",
        "",
    ],
)
def test_malformed_allowed_origins_are_named(origin):
    found = problems(
        {
            "liftoff:target": "kubernetes",
            "liftoff:sources": [{"name": "web", "allowedOrigins": ["https://ok.example", origin]}],
        }
    )
    assert any(
        p.startswith(f"liftoff:sources[0].allowedOrigins[1]: got {origin!r}") for p in found
    ), found


def test_allowed_origins_must_be_a_non_empty_list():
    found = problems(
        {
            "liftoff:target": "kubernetes",
            "liftoff:sources": [
                {"name": "web", "allowedOrigins": []},
                {"name": "ios", "allowedOrigins": "https://shop.example"},
            ],
        }
    )
    text = "\n".join(found)
    assert "liftoff:sources[0].allowedOrigins: got []" in text
    assert "liftoff:sources[1].allowedOrigins: got 'https://shop.example'" in text


def test_public_url_of_the_collector():
    config = load(
        {
            "liftoff:target": "kubernetes",
            "liftoff:ingest": {
                "host": "events.example.com",
                "publicUrl": "https://events.example.com",
            },
        }
    )
    assert config.ingest.kubernetes.public_url == "https://events.example.com"
    found = problems(
        {"liftoff:target": "kubernetes", "liftoff:ingest": {"publicUrl": "https://e.example/x"}}
    )
    assert any(p.startswith("liftoff:ingest.publicUrl: got 'https://e.example/x'") for p in found)
    found = problems(
        {
            "liftoff:target": "aws",
            "aws:region": "eu-west-1",
            "liftoff:ingest": {"publicUrl": "https://e.example"},
        }
    )
    assert any(p.startswith("liftoff:ingest.publicUrl:") for p in found), found
