"""``python -m services <command>``: one entry point for every service in the image.

Each command reads its settings from environment variables (see :mod:`services.config`).
Add a command by writing ``def run_<name>(env) -> int`` and registering it in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Mapping

from services import config
from services.config import ConfigError
from services.observability import configure_logging

log = logging.getLogger("liftoff.cli")


def create_collector_app() -> object:
    """uvicorn factory: builds the ASGI app from the environment (once per worker process)."""
    from services.asgi import CollectorApp
    from services.collector import Collector
    from services.streams import open_stream

    settings = config.CollectorConfig.from_env(os.environ)
    configure_logging(settings.log_level)
    return CollectorApp(Collector(open_stream(settings.stream_url), settings.write_keys))


def run_collector(env: Mapping[str, str]) -> int:
    import uvicorn

    settings = config.CollectorConfig.from_env(env)  # fail fast, before any worker starts
    configure_logging(settings.log_level)
    log.info(
        "starting collector",
        extra={
            "fields": {
                "port": settings.port,
                "workers": settings.workers,
                "sources": settings.write_keys.sources,
                "stream": settings.stream_url.partition("?")[0].rpartition("@")[2],
            }
        },
    )
    uvicorn.run(
        "services.cli:create_collector_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=20,
    )
    return 0


def run_ensure_stream(env: Mapping[str, str]) -> int:
    from services.streams.jetstream import ensure_stream

    settings = config.EnsureStreamConfig.from_env(env)
    configure_logging(settings.log_level)
    try:
        outcome = asyncio.run(ensure_stream(settings.stream_url, settings.settings))
    except Exception as error:
        # A Kubernetes Job retries on a non-zero exit; say why in one line.
        log.error("could not ensure the stream", extra={"fields": {"error": repr(error)}})
        return 1
    log.info("stream ensured", extra={"fields": {"outcome": outcome}})
    return 0


COMMANDS: dict[str, tuple[Callable[[Mapping[str, str]], int], str]] = {
    "collector": (run_collector, "serve the Segment-compatible ingestion API"),
    "ensure-stream": (run_ensure_stream, "create or update the JetStream stream (idempotent)"),
}


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        commands.add_parser(name, help=help_text)
    arguments = parser.parse_args(argv)
    command, _ = COMMANDS[arguments.command]
    try:
        return command(os.environ if env is None else env)
    except ConfigError as error:
        print(f"liftoff {arguments.command}: configuration error: {error}", file=sys.stderr)
        return 2
