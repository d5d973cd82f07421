"""`liftoff:sources` and `liftoff:ingest`: who sends events and how the collector takes them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from components.validation import (
    DNS_LABEL,
    ComputeResources,
    ConfigReader,
    Problem,
    StackReading,
    read_resources,
    reject_other_target,
)


@dataclass(frozen=True)
class Source:
    """One entry of `liftoff:sources`: a sender of events with its own write key."""

    name: str
    allowed_origins: tuple[str, ...] = ("*",)
    """`allowedOrigins`. Default: `["*"]` (any web page may send with this write key). A list
    of browser origins (`https://shop.example.com`, `https://*.example.com` for subdomains,
    `http://localhost:3000`): the collector answers CORS for them only and refuses (403) a
    browser request from any other origin with this source's key, on both targets. Server
    SDKs (no `Origin` header) are not affected."""
    collect_ip: bool = True
    """Default: true: `context.ip` is filled from the client's address when an event has none.
    False: the source's events keep no IP address at all (not filled, and a client-sent
    `context.ip` is removed) — for privacy."""

    @property
    def restricts_origins(self) -> bool:
        return "*" not in self.allowed_origins


@dataclass(frozen=True)
class KubernetesIngest:
    """`liftoff:ingest` on Kubernetes: the collector Deployment, its autoscaler, Ingress and
    HTTP limits."""

    replicas: int = 2
    """Default: 2. Collector pods at creation (then the autoscaler owns it)."""
    min_replicas: int = 2
    """Default: 2. Autoscaler floor."""
    max_replicas: int = 10
    """Default: 10. Autoscaler ceiling."""
    host: str | None = None
    """Default: none (no Ingress; the collector is reachable in-cluster only)."""
    ingress_class: str | None = None
    """Default: the cluster's default IngressClass."""
    tls_secret: str | None = None
    """Default: none (plain HTTP at the Ingress). Needs `host`."""
    public_url: str | None = None
    """`publicUrl`. Default: `https://<host>` with `tlsSecret`, `http://<host>` without, none
    without `host`. Where browsers and SDKs reach the collector when that is
    not what the Ingress alone says (TLS terminated by a load balancer in front, another
    gateway); it is the `collectorUrl` output and what analytics.js's settings name."""
    resources: ComputeResources = field(
        default_factory=lambda: ComputeResources("250m", "256Mi", "1", "512Mi")
    )
    """Default: requests 250m CPU / 256Mi, limits 1 CPU / 512Mi."""
    trusted_proxies: tuple[str, ...] = ()
    """Default: none (`X-Forwarded-For` is never believed). Addresses or CIDRs
    of the proxies in front of the collector (the ingress controller's pods) whose
    `X-Forwarded-For` gives the client address for `context.ip`."""
    max_header_bytes: int = 64 * 1024
    """Default: 65536. Request line + headers; larger is refused with 431."""
    header_timeout_seconds: int = 10
    """Default: 10. Time to send a request's headers (408 after it)."""
    body_timeout_seconds: int = 30
    """Default: 30. Time to send a request's body (connection closed after)."""
    max_connections: int = 512
    """Default: 512. Open connections per collector pod; more are closed."""


@dataclass(frozen=True)
class AwsIngest:
    """`liftoff:ingest` on AWS: API Gateway throttling and the collector function."""

    throttling_rate_limit: int = 1000
    """Default: 1000 requests/s steady. API Gateway stage throttling."""
    throttling_burst_limit: int = 2000
    """Default: 2000 requests."""
    memory_mb: int = 512
    """Default: 512. Collector Lambda memory (CPU scales with it)."""


@dataclass(frozen=True)
class IngestSettings:
    """`liftoff:ingest` — the collector (HTTP ingestion API): the chosen target's settings.
    A key of the other target is refused by construction (`reject_other_target`)."""

    aws: AwsIngest | None = None
    """Set on AWS."""
    kubernetes: KubernetesIngest | None = None
    """Set on Kubernetes."""


SOURCE_NAME = r"[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?"


# A browser origin as browsers send it (lower-case, no path), `*.` for any subdomain, or `*`.
ALLOWED_ORIGIN = r"\*|https?://(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?"


def read_sources(stack: StackReading) -> tuple[Source, ...]:
    """`liftoff:sources`, sorted by name. Default: one source, `default`."""
    key, raw, problems = stack.key("sources"), stack.raw.get("sources"), stack.problems
    if raw is None:
        return (Source("default"),)
    allowed = "a list of {name: <source>} objects, at least one"
    if not isinstance(raw, list) or not raw:
        problems.append(Problem(key, raw, allowed))
        return ()
    sources: list[Source] = []
    for index, item in enumerate(raw):
        reader = ConfigReader(f"{key}[{index}]", item, problems)
        name = reader.string(
            "name",
            required=True,
            pattern=SOURCE_NAME,
            describe="a source name: lowercase letters, digits, '-' or '_', at most 63 "
            "characters (it becomes part of stream subjects and archive paths)",
        )
        origins = _read_allowed_origins(reader)
        collect_ip = reader.boolean("collectIp", True)
        reader.finish()
        if name is None:
            continue
        if any(s.name == name for s in sources):
            problems.append(
                Problem(f"{key}[{index}].name", name, "a name not used by another source")
            )
            continue
        sources.append(Source(name, origins, collect_ip=collect_ip))
    # Sorted: the order sources were listed in must not change what is declared.
    return tuple(sorted(sources, key=lambda s: s.name))


def _read_allowed_origins(reader: ConfigReader) -> tuple[str, ...]:
    origins = reader.string_list(
        "allowedOrigins",
        item_pattern=ALLOWED_ORIGIN,
        describe="'*' or a browser origin scheme://host[:port] (http or https, lower-case, "
        "no path; https://*.example.com for its subdomains)",
    )
    if origins is None:
        return Source.allowed_origins
    if not origins:
        reader.problem("allowedOrigins", [], "at least one origin, or '*' (the default)")
        return Source.allowed_origins
    # Sorted and deduplicated: listing order must not change what is declared.
    return tuple(sorted(set(origins)))


def read_ingest(stack: StackReading) -> IngestSettings:
    reader = stack.reader("ingest")
    if stack.target == "aws":
        defaults = AwsIngest()
        rate = reader.integer(
            "throttlingRateLimit", defaults.throttling_rate_limit, minimum=1, maximum=100000
        )
        burst = reader.integer(
            "throttlingBurstLimit", defaults.throttling_burst_limit, minimum=1, maximum=100000
        )
        memory = reader.integer("memoryMb", defaults.memory_mb, minimum=128, maximum=10240)
        reject_other_target(reader, KubernetesIngest, AwsIngest, "kubernetes")
        reader.finish()
        return IngestSettings(
            aws=AwsIngest(
                throttling_rate_limit=rate, throttling_burst_limit=burst, memory_mb=memory
            )
        )
    return IngestSettings(kubernetes=_read_kubernetes_ingest(reader))


def _read_kubernetes_ingest(reader: ConfigReader) -> KubernetesIngest:
    defaults = KubernetesIngest()
    replicas = reader.integer("replicas", defaults.replicas, minimum=1, maximum=100)
    minimum = reader.integer(
        "minReplicas", min(defaults.min_replicas, replicas), minimum=1, maximum=100
    )
    maximum = reader.integer(
        "maxReplicas", max(defaults.max_replicas, replicas), minimum=1, maximum=1000
    )
    if minimum > maximum:
        reader.problem("minReplicas", minimum, f"at most maxReplicas ({maximum})")
    host = reader.string(
        "host",
        pattern=rf"{DNS_LABEL}(\.{DNS_LABEL})+",
        describe="a DNS host name such as events.example.com",
    )
    ingress_class = reader.string(
        "ingressClass", pattern=DNS_LABEL, describe="an IngressClass name"
    )
    tls_secret = reader.string("tlsSecret", pattern=DNS_LABEL, describe="a Secret name")
    if tls_secret and not host:
        reader.problem("tlsSecret", tls_secret, "only together with host")
    if ingress_class and not host:
        reader.problem("ingressClass", ingress_class, "only together with host")
    public_url = reader.string(
        "publicUrl",
        pattern=rf"https?://{DNS_LABEL}(\.{DNS_LABEL})*(:[0-9]{{1,5}})?",
        describe="http(s)://host[:port] without a path, e.g. https://events.example.com",
    )
    resources = read_resources(reader.object("resources"), defaults.resources)
    trusted = _read_trusted_proxies(reader)
    header_bytes = reader.integer(
        "maxHeaderBytes", defaults.max_header_bytes, minimum=1024, maximum=1024 * 1024
    )
    header_timeout = reader.integer(
        "headerTimeoutSeconds", defaults.header_timeout_seconds, minimum=1, maximum=300
    )
    body_timeout = reader.integer(
        "bodyTimeoutSeconds", defaults.body_timeout_seconds, minimum=1, maximum=300
    )
    connections = reader.integer(
        "maxConnections", defaults.max_connections, minimum=1, maximum=100000
    )
    reject_other_target(reader, AwsIngest, KubernetesIngest, "aws")
    reader.finish()
    return KubernetesIngest(
        replicas=replicas,
        min_replicas=minimum,
        max_replicas=maximum,
        host=host,
        ingress_class=ingress_class,
        tls_secret=tls_secret,
        public_url=public_url,
        resources=resources,
        trusted_proxies=trusted,
        max_header_bytes=header_bytes,
        header_timeout_seconds=header_timeout,
        body_timeout_seconds=body_timeout,
        max_connections=connections,
    )


def _read_trusted_proxies(reader: ConfigReader) -> tuple[str, ...]:
    items = reader.string_list(
        "trustedProxies", item_pattern=r".+", describe="an IP address or CIDR"
    )
    networks: list[str] = []
    for index, item in enumerate(items or ()):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            reader.problems.append(
                Problem(
                    f"{reader.key('trustedProxies')}[{index}]",
                    item,
                    "an IP address or CIDR such as 10.0.0.0/8",
                )
            )
    # Sorted and deduplicated: the listing order must not change what is declared.
    return tuple(sorted(set(networks)))
