"""``python -m services <command>``: one entry point for every service in the image.

Dispatch only. Each command is a :class:`Command`: its runtime contract (the ``contract.py``
beside its code: the settings it reads from the environment, their parser and builder), the
function that runs it and the one that loads what it needs at start (files, secrets) without
starting anything. ``main`` parses the environment with the contract, then runs. Add a command
by writing its contract and ``run(settings, **options) -> int``, and registering it in
``COMMANDS``. ``--help`` shows :data:`USER_HELP` (this docstring is for contributors).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from services.collector import contract as collector
from services.consumers.archiver import contract as archiver
from services.consumers.broadcaster import contract as broadcaster
from services.consumers.loader import contract as loader
from services.consumers.reconcile import contract as reconcile
from services.consumers.replay import contract as replay
from services.contract import ConfigError, Process
from services.postgres import contract as postgres
from services.regulations import contract as regulations
from services.stream import contract as stream
from services.warehouse import contract as rebuild


def resolve(path: str) -> Callable[..., Any]:
    """``"module:function"`` → the function (imported only when a command runs)."""
    module, _, name = path.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return function


@dataclass(frozen=True)
class Command:
    help: str
    contract: Process[Any]
    run: str
    """``module:function(settings, **options) -> exit status``."""
    load: str | None = None
    """``module:function(settings)``: what the command reads at start (files, secrets)."""
    arguments: Callable[[argparse.ArgumentParser], None] | None = None
    """The command's options; they reach ``run`` as keyword arguments."""


def _reconcile_arguments(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--hour", help="the UTC hour to reconcile, e.g. 2026-11-27T10")
    which.add_argument(
        "--hours-ago", type=int, metavar="N", help="the UTC hour N hours before the current one"
    )


def _backup_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", dest="directory", required=True, help="the directory holding <database>.dump files"
    )


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


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="start", help="ISO-8601, e.g. 2026-11-27T10:00Z")
    parser.add_argument("--to", dest="end", help="ISO-8601 (excluded)")
    parser.add_argument("--target", help="destination:<name> (LIFTOFF_DESTINATION's) or warehouse")
    parser.add_argument("--source", dest="sources", action="append", help="repeatable; default all")
    parser.add_argument(
        "--type",
        dest="types",
        action="append",
        choices=("track", "identify", "page", "screen", "group", "alias"),
        help="repeatable; default all",
    )
    parser.add_argument("--event", dest="events", action="append", help="a track event name")
    parser.add_argument("--rate", type=float, metavar="N", help="at most N events per second")
    parser.add_argument("--dry-run", action="store_true", help="count, send nothing")
    parser.add_argument(
        "--progress",
        metavar="FILE|s3://BUCKET/KEY",
        help="where progress is kept (resume); default liftoff-replay-<hash>.json here (with "
        "LIFTOFF_REPLAY_PROGRESS_IN_ARCHIVE=true: the archive bucket's liftoff/replay-progress/)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        metavar="N",
        help="stop after the batch in hand once N seconds have passed (exit 3: run it again)",
    )
    parser.add_argument(
        "--json",
        dest="document",
        metavar="DOCUMENT",
        help='instead of --from ... --dry-run: {"from", "to", "target", "sources", "types", '
        '"events", "rate", "dryRun"} (the Airflow DAG\'s conf)',
    )


def _regulation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("suppress", "delete", "unsuppress", "status"))
    parser.add_argument(
        "--user-id", dest="user_ids", action="append", metavar="ID", help="repeatable"
    )
    parser.add_argument(
        "--anonymous-id", dest="anonymous_ids", action="append", metavar="ID", help="repeatable"
    )
    parser.add_argument(
        "--request", dest="request_id", type=int, metavar="N", help="status: only request N"
    )
    parser.add_argument(
        "--json",
        dest="document",
        metavar="DOCUMENT",
        help='instead of the above: {"action", "userIds", "anonymousIds", "requestId"} (the '
        "Airflow DAG's conf)",
    )


def _rebuild_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, help="the source (liftoff:sources) to rebuild")
    parser.add_argument(
        "--table",
        dest="tables",
        action="append",
        metavar="T",
        help="only this typed table (repeatable; default: every table of the source)",
    )
    parser.add_argument(
        "--from",
        dest="origin",
        choices=("raw", "archive"),
        default="raw",
        help="read the events from the raw events table (default) or the archive",
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
  python -m services replay --from 2026-11-27T10:00Z --to 2026-11-27T12:00Z \\
    --target destination:NAME --dry-run          # what a replay from the archive would send
  python -m services regulation suppress --user-id u-123   # GDPR/CCPA (README: "Privacy")
  python -m services COMMAND --help              # a command's own options

exit status: 0 done (a server: stopped cleanly), 1 failed or incomplete (it says why),
2 configuration error, 3 replay stopped by --max-seconds (run it again to continue)
"""

COMMANDS: dict[str, Command] = {
    "collector": Command(
        "serve the Segment-compatible ingestion API",
        collector.PROCESS,
        "services.collector.server:run",
        "services.collector.server:load",
    ),
    "ensure-stream": Command(
        "create or update the JetStream event and dead-letter streams (idempotent)",
        stream.ENSURE_STREAM,
        "services.stream.setup:run",
        "services.stream.setup:load",
    ),
    "archiver": Command(
        "archive the stream to S3 as gzip NDJSON (JetStream consumer)",
        archiver.PROCESS,
        "services.consumers.archiver.sink:run",
        "services.consumers.archiver.sink:load",
    ),
    "loader": Command(
        "load the stream into the Postgres warehouse (JetStream consumer)",
        loader.PROCESS,
        "services.consumers.loader.sink:run",
        "services.consumers.loader.sink:load",
    ),
    "broadcaster": Command(
        "forward the stream to one destination (LIFTOFF_DESTINATION; JetStream consumer)",
        broadcaster.PROCESS,
        "services.consumers.broadcaster.sink:run",
        "services.consumers.broadcaster.sink:load",
    ),
    "ensure-database": Command(
        "create a client's role and database on the platform Postgres (idempotent)",
        postgres.ENSURE_DATABASE,
        "services.postgres.database:run",
        "services.postgres.database:load",
    ),
    "reconcile": Command(
        "load the events of one archived hour the warehouse lacks (idempotent)",
        reconcile.PROCESS,
        "services.consumers.reconcile.repair:run",
        "services.consumers.reconcile.repair:load",
        _reconcile_arguments,
    ),
    "backup-upload": Command(
        "upload Postgres dumps to the archive and delete those past the retention",
        postgres.BACKUP_UPLOAD,
        "services.postgres.backup:run",
        "services.postgres.backup:load",
        _backup_arguments,
    ),
    "replay": Command(
        "send archived events of a time window again, to a destination or the warehouse",
        replay.PROCESS,
        "services.consumers.replay.request:run",
        arguments=_replay_arguments,
    ),
    "warehouse-rebuild": Command(
        "rebuild a source's typed warehouse tables and swap them in (declared types applied)",
        rebuild.PROCESS,
        "services.warehouse.command:run",
        "services.warehouse.command:load",
        _rebuild_arguments,
    ),
    "quarantine": Command(
        "list or replay the events the collector quarantined (JetStream)",
        collector.QUARANTINE,
        "services.collector.quarantine:run",
        arguments=_quarantine_arguments,
    ),
    "regulation": Command(
        "suppress, delete or unsuppress users' events, or show the requests' status",
        regulations.PROCESS,
        "services.regulations.command:run",
        arguments=_regulation_arguments,
    ),
}


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services",
        description=USER_HELP,
        epilog=USER_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        subparser = commands.add_parser(name, help=command.help)
        if command.arguments is not None:
            command.arguments(subparser)
    arguments = parser.parse_args(argv)
    command = COMMANDS[arguments.command]
    options = {key: value for key, value in vars(arguments).items() if key != "command"}
    try:
        settings = command.contract.parse(os.environ if env is None else env)
        status: int = resolve(command.run)(settings, **options)
        return status
    except ConfigError as error:
        print(f"liftoff {arguments.command}: configuration error: {error}", file=sys.stderr)
        return 2
