"""``python -m services collector``: the ingestion API under uvicorn (uvloop, httptools with
the limits of :mod:`services.collector.http_limits`), one app per worker process."""

from __future__ import annotations

import logging
import os

from services.collector.config import CollectorConfig
from services.collector.contract import CollectorSettings, parse
from services.observability import configure_logging

log = logging.getLogger("liftoff.cli")


def load(settings: CollectorSettings[str]) -> CollectorConfig:
    """What the collector runs with: the write keys read, origins checked (nothing opened)."""
    return CollectorConfig.load(settings)


def create_app() -> object:
    """uvicorn factory: builds the ASGI app from the environment (once per worker process)."""
    from services.collector.app import CollectorApp
    from services.collector.browser import Library
    from services.collector.ingest import Collector
    from services.collector.quarantine import open_quarantine
    from services.stream.base import open_stream

    config = load(parse(os.environ))
    configure_logging(config.log_level)
    collector = Collector(
        open_stream(config.stream_url),
        config.write_keys,
        origins=config.allowed_origins,
        library=Library(config.analytics_js_dir),
        public_url=config.public_url,
        quarantine=open_quarantine(config.quarantine_url) if config.quarantine_url else None,
        no_ip_sources=config.no_ip_sources,
        suppression=config.suppression.reader() if config.suppression else None,
    )
    return CollectorApp(collector)


def run(settings: CollectorSettings[str]) -> int:
    import functools
    import tempfile

    import uvicorn

    from services.collector.http_limits import LimitedHttpToolsProtocol
    from services.observability import MULTIPROCESS_DIR

    config = load(settings)  # fail fast, before any worker starts
    configure_logging(config.log_level)
    if config.workers > 1:
        # Inherited by the workers: their metrics go to files here, summed on every scrape.
        os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="liftoff-metrics-")
    log.info(
        "starting collector",
        extra={
            "fields": {
                "port": config.port,
                "workers": config.workers,
                "sources": config.write_keys.sources,
                "stream": config.stream_url.partition("?")[0].rpartition("@")[2],
            }
        },
    )
    limits = config.http_limits
    uvicorn.run(
        "services.collector.server:create_app",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        loop="uvloop",
        # A protocol factory: uvicorn calls it as it would the class (its annotation is narrower).
        http=functools.partial(  # type: ignore[arg-type]
            LimitedHttpToolsProtocol,
            max_header_bytes=limits.max_header_bytes,
            header_timeout=limits.header_timeout_seconds,
            body_timeout=limits.body_timeout_seconds,
            max_connections=limits.max_connections,
        ),
        # X-Forwarded-For (and -Proto) only from configured proxies: uvicorn would otherwise
        # trust 127.0.0.1 by default. It takes the nearest address not itself a trusted proxy.
        proxy_headers=bool(config.trusted_proxies),
        forwarded_allow_ips=list(config.trusted_proxies) or None,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=20,
        ssl_certfile=config.tls_cert_file,
        ssl_keyfile=config.tls_key_file,
    )
    return 0
