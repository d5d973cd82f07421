"""``python -m services <command>``: one entry point for every service in the image.

Each command reads its settings from environment variables (see :mod:`services.config`).
Add a command by writing ``def run_<name>(env) -> int`` and registering it in ``COMMANDS``.
``--help`` shows :data:`USER_HELP` (this docstring is for contributors).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Mapping

from services import config
from services import settings as parse
from services.config import ConfigError
from services.observability import configure_logging

log = logging.getLogger("liftoff.cli")


def create_collector_app() -> object:
    """uvicorn factory: builds the ASGI app from the environment (once per worker process)."""
    from services.collector.app import CollectorApp
    from services.collector.browser import Library
    from services.collector.ingest import Collector
    from services.collector.quarantine import open_quarantine
    from services.stream.base import open_stream

    settings = config.CollectorConfig.from_env(os.environ)
    configure_logging(settings.log_level)
    collector = Collector(
        open_stream(settings.stream_url),
        settings.write_keys,
        origins=settings.allowed_origins,
        library=Library(settings.analytics_js_dir),
        public_url=settings.public_url,
        quarantine=open_quarantine(settings.quarantine_url) if settings.quarantine_url else None,
        no_ip_sources=settings.no_ip_sources,
    )
    return CollectorApp(collector)


def run_collector(env: Mapping[str, str]) -> int:
    import functools

    import uvicorn

    from services.collector.http_limits import LimitedHttpToolsProtocol

    settings = config.CollectorConfig.from_env(env)  # fail fast, before any worker starts
    configure_logging(settings.log_level)
    if settings.workers > 1:
        import tempfile

        from services.observability import MULTIPROCESS_DIR

        # Inherited by the workers: their metrics go to files here, summed on every scrape.
        os.environ[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix="liftoff-metrics-")
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
        http=functools.partial(
            LimitedHttpToolsProtocol,
            max_header_bytes=settings.http_limits.max_header_bytes,
            header_timeout=settings.http_limits.header_timeout_seconds,
            body_timeout=settings.http_limits.body_timeout_seconds,
            max_connections=settings.http_limits.max_connections,
        ),
        # X-Forwarded-For (and -Proto) only from configured proxies: uvicorn would otherwise
        # trust 127.0.0.1 by default. It takes the nearest address not itself a trusted proxy.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies) or None,
        lifespan="on",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=20,
        ssl_certfile=settings.tls_cert_file,
        ssl_keyfile=settings.tls_key_file,
    )
    return 0


def run_ensure_stream(env: Mapping[str, str]) -> int:
    from services.stream.jetstream import ensure_stream

    settings, dead_letter = parse.ensure_stream(env)
    configure_logging(settings.log_level)
    try:
        outcome = asyncio.run(ensure_stream(settings.stream_url, settings.settings))
    except Exception as error:
        # A Kubernetes Job retries on a non-zero exit; say why in one line.
        log.error("could not ensure the stream", extra={"fields": {"error": repr(error)}})
        return 1
    # Also the JetStream dead-letter stream consumers park events in (LIFTOFF_DEAD_LETTER_URL,
    # default nats://<same servers>/DEADLETTER); nothing to do for sqs://.
    from services.stream.dead_letters import ensure_dead_letter_stream

    dead_letter_outcome = "not applicable"
    if dead_letter.url.startswith("nats://"):
        try:
            dead_letter_outcome = asyncio.run(
                ensure_dead_letter_stream(
                    dead_letter.url,
                    dead_letter.retention_hours,
                    settings.settings.replicas,
                    dead_letter.max_bytes,
                )
            )
        except Exception as error:
            log.error(
                "could not ensure the dead-letter stream",
                extra={"fields": {"error": repr(error)}},
            )
            return 1
    log.info(
        "stream ensured",
        extra={"fields": {"outcome": outcome, "dead_letter_stream": dead_letter_outcome}},
    )
    return 0


def _run_stream_consumer(
    env: Mapping[str, str], settings: config.ConsumerConfig, build_sink: Callable[[], object]
) -> int:
    from services.consumers.runner.jetstream import run_consumer
    from services.stream.dead_letters import open_dead_letter

    configure_logging(settings.log_level)
    assert settings.stream_url is not None
    return run_consumer(
        settings.stream_url,
        build_sink,  # type: ignore[arg-type]
        open_dead_letter(settings.dead_letter_url),
        settings.runner_settings(),  # type: ignore[arg-type]
    )


def run_archiver(env: Mapping[str, str]) -> int:
    from services.consumers.archiver.sink import Archiver

    archive, settings = parse.archiver(env)  # fail fast on configuration errors
    return _run_stream_consumer(env, settings, lambda: Archiver(archive))


def run_loader(env: Mapping[str, str]) -> int:
    from services.consumers.loader.sink import Loader

    warehouse, settings = parse.loader(env)
    return _run_stream_consumer(env, settings, lambda: Loader(warehouse))


def run_broadcaster(env: Mapping[str, str]) -> int:
    from services.consumers.broadcaster.sink import BroadcastSink

    destination, settings = parse.broadcaster(env)  # fail fast: destination, secrets, limits
    return _run_stream_consumer(env, settings, lambda: BroadcastSink(destination))


def run_ensure_database(env: Mapping[str, str]) -> int:
    from services.postgres.database import ensure_database

    configure_logging(config.log_level(env))
    admin, request = parse.ensure_database(env)
    try:
        outcome = ensure_database(admin, request)
    except Exception as error:
        log.error("could not ensure the database", extra={"fields": {"error": repr(error)}})
        return 1
    log.info("database ensured", extra={"fields": outcome})
    return 0


def run_reconcile(
    env: Mapping[str, str], hour: str | None = None, hours_ago: int | None = None
) -> int:
    """Repair one UTC hour of the warehouse from the archive; prints the summary as one JSON
    line. Exit 0 when complete, 1 when an archive object is corrupt or the run failed."""
    import json

    from services.consumers.reconcile import repair as reconcile

    configure_logging(config.log_level(env))
    at = reconcile.parse_hour(hour) if hour is not None else reconcile.hours_ago(hours_ago or 0)
    try:
        summary = reconcile.reconcile_hour(env, at)
    except ConfigError:
        raise
    except Exception as error:
        log.error("reconciliation failed", extra={"fields": {"error": repr(error)}})
        return 1
    print(json.dumps(summary.as_dict(), sort_keys=True), flush=True)
    return 0 if summary.ok else 1


def _reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--hour", help="the UTC hour to reconcile, e.g. 2026-11-27T10")
    which.add_argument(
        "--hours-ago", type=int, metavar="N", help="the UTC hour N hours before the current one"
    )


def run_backup_upload(env: Mapping[str, str], directory: str) -> int:
    """Upload the dumps in `directory` to the archive, then prune dumps past the retention."""
    from datetime import UTC, datetime
    from pathlib import Path

    from services.postgres import backup

    configure_logging(config.log_level(env))
    settings = parse.backup_upload(env)
    now = datetime.now(UTC)
    try:
        keys = backup.upload_dumps(settings, Path(directory), now)
        backup.prune(settings, now, keep=set(keys))
    except ConfigError:
        raise
    except Exception as error:
        log.error("backup upload failed", extra={"fields": {"error": repr(error)}})
        return 1
    return 0


def _backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", dest="directory", required=True, help="the directory holding <database>.dump files"
    )


def run_quarantine(
    env: Mapping[str, str],
    action: str,
    limit: int | None = None,
    sequences: list[int] | None = None,
    body_file: str | None = None,
) -> int:
    """List the collector's quarantined events as JSON lines, or replay them: validate again
    (optionally a repaired body), publish the now-valid ones, delete those from the quarantine.
    Exit 1 when an event could not be replayed."""
    import json
    from pathlib import Path

    from services.collector import quarantine

    configure_logging(config.log_level(env))
    stream = config.stream_url(env, ("nats",))
    url = config.collector_quarantine_url(env, stream)
    if url is None or not url.startswith("nats://"):
        raise ConfigError(f"{config.DEAD_LETTER_URL} must be nats://... to read the quarantine")
    if action == "list":
        events = asyncio.run(
            quarantine.read_quarantine(url, limit=limit, sequences=sequences or ())
        )
        for event in events:
            print(json.dumps(event.as_json(), sort_keys=True), flush=True)
        return 0
    body = Path(body_file).read_bytes() if body_file else None
    try:
        outcomes = asyncio.run(
            quarantine.replay_quarantine(url, stream, sequences or (), body=body)
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    for outcome in outcomes:
        print(json.dumps(outcome, sort_keys=True), flush=True)
    return 0 if all(o["replayed"] for o in outcomes) else 1


def _quarantine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "replay"))
    parser.add_argument("--limit", type=int, help="list: at most N events (oldest first)")
    parser.add_argument(
        "--seq",
        dest="sequences",
        type=int,
        action="append",
        metavar="N",
        help="only the event at this quarantine sequence (repeatable); replay: default all",
    )
    parser.add_argument(
        "--body",
        dest="body_file",
        metavar="FILE",
        help="replay: the repaired JSON of the one event given with --seq",
    )


USER_HELP = """\
Run one part of the liftoff data platform: the ingestion API, a stream consumer, or a setup
or repair task. The services image runs these; run them by hand the same way.

Settings come from LIFTOFF_* environment variables (README: "Configuration reference",
"liftoff local"); a missing or invalid one is named on stderr, exit status 2.
"""
USER_EPILOG = """\
examples:
  LIFTOFF_STREAM_URL=nats://127.0.0.1:4222/EVENTS LIFTOFF_WRITE_KEYS='{"web": "<key>"}' \\
    python -m services collector                 # the ingestion API on port 8080
  LIFTOFF_STREAM_URL=nats://127.0.0.1:4222/EVENTS python -m services ensure-stream
  python -m services quarantine list --limit 10  # in a collector pod: what it set aside, why
  python -m services COMMAND --help              # a command's own options

exit status: 0 done (a server: stopped cleanly), 1 failed or incomplete (it says why),
2 configuration error
"""

COMMANDS: dict[str, tuple[Callable[[Mapping[str, str]], int], str]] = {
    "collector": (run_collector, "serve the Segment-compatible ingestion API"),
    "ensure-stream": (
        run_ensure_stream,
        "create or update the JetStream event and dead-letter streams (idempotent)",
    ),
    "archiver": (run_archiver, "archive the stream to S3 as gzip NDJSON (JetStream consumer)"),
    "loader": (run_loader, "load the stream into the Postgres warehouse (JetStream consumer)"),
    "broadcaster": (
        run_broadcaster,
        "forward the stream to one destination (LIFTOFF_DESTINATION; JetStream consumer)",
    ),
    "ensure-database": (
        run_ensure_database,
        "create a client's role and database on the platform Postgres (idempotent)",
    ),
    "reconcile": (
        run_reconcile,  # type: ignore[dict-item]
        "load the events of one archived hour the warehouse lacks (idempotent)",
    ),
    "backup-upload": (
        run_backup_upload,  # type: ignore[dict-item]
        "upload Postgres dumps to the archive and delete those past the retention",
    ),
    "quarantine": (
        run_quarantine,  # type: ignore[dict-item]
        "list or replay the events the collector quarantined (JetStream)",
    ),
}
COMMAND_ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "quarantine": _quarantine_arguments,
    "reconcile": _reconcile_arguments,
    "backup-upload": _backup_arguments,
}
"""Commands that take options: their parser is set up here, the options reach the command as
keyword arguments."""


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services",
        description=USER_HELP,
        epilog=USER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        subparser = commands.add_parser(name, help=help_text)
        if name in COMMAND_ARGUMENTS:
            COMMAND_ARGUMENTS[name](subparser)
    arguments = parser.parse_args(argv)
    command, _ = COMMANDS[arguments.command]
    options = {key: value for key, value in vars(arguments).items() if key != "command"}
    try:
        return command(os.environ if env is None else env, **options)
    except ConfigError as error:
        print(f"liftoff {arguments.command}: configuration error: {error}", file=sys.stderr)
        return 2
