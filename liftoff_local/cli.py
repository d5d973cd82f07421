"""Command line of liftoff local (``python3 -m liftoff_local --help``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from components.validation import ConfigError
from liftoff_local.binaries import MissingBinary, find_nats_server, find_postgres
from liftoff_local.processes import StartFailed, ephemeral_ports
from liftoff_local.stack import StackFileError, load_plan, stack_name_of
from liftoff_local.supervisor import (
    DataDir,
    Options,
    Ports,
    SetupError,
    Supervisor,
    destination_secrets,
    run_until_stopped,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BASE_PORT = 8080


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m liftoff_local",
        description="Run liftoff's data path on this machine from a stack file: nats-server, "
        "PostgreSQL, a local S3 store, the collector, archiver, loader and broadcasters.",
    )
    parser.add_argument(
        "--stack",
        type=Path,
        default=REPO_ROOT / "Pulumi.dev.yaml",
        help="the stack file (default: Pulumi.dev.yaml; any file in stacks/ works)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where everything is kept (default: .liftoff/<stack> in the repository)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete the stack's stream, warehouse, archive and logs first; the write keys and "
        "other credentials (secrets/) are kept",
    )
    parser.add_argument(
        "--new-keys",
        action="store_true",
        help="issue new write keys (the old ones stop working)",
    )
    low, _ = ephemeral_ports()
    parser.add_argument(
        "--base-port",
        type=int,
        default=DEFAULT_BASE_PORT,
        help="collector on N, tracking API N+1, S3 N+2, NATS N+3, PostgreSQL N+4, consumer "
        f"health N+10… (default {DEFAULT_BASE_PORT}). Keep them below {low}, where this "
        "machine's ephemeral ports begin: the kernel hands those to outgoing connections",
    )
    parser.add_argument(
        "--listen",
        default="127.0.0.1",
        help="address the collector listens on (default 127.0.0.1; 0.0.0.0 lets a phone or "
        "emulator reach it). Everything else stays on loopback",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve the collector over HTTPS with a self-signed certificate for 127.0.0.1 and "
        "localhost (Segment's analytics.js snippet loads only from an https:// URL)",
    )
    parser.add_argument(
        "--destination-url",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="send destination NAME's requests to URL instead (e.g. a local receiver)",
    )
    return parser


def _destination_urls(values: list[str], names: set[str]) -> dict[str, str]:
    urls: dict[str, str] = {}
    for value in values:
        name, _, url = value.partition("=")
        if name not in names:
            known = ", ".join(sorted(names)) or "none in this stack"
            raise SetupError(f"--destination-url {value!r}: no destination {name!r} ({known})")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise SetupError(f"--destination-url {value!r}: URL must be http(s)://host[:port]/…")
        urls[name] = url
    return urls


def _start_over(data: DataDir, fresh: bool, new_keys: bool) -> None:
    if fresh:
        data.wipe()
        print(
            f"--fresh: deleted the stream, warehouse, archive and logs in {data.root}; kept the "
            "write keys and other credentials (secrets/; --new-keys issues new write keys)",
            flush=True,
        )
    if new_keys:
        data.forget_write_keys()
        print("--new-keys: new write keys are issued; the old ones no longer work", flush=True)


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    if not 1024 <= arguments.base_port <= 65000:
        print("liftoff local: --base-port must be from 1024 to 65000", file=sys.stderr)
        return 2
    stack_file: Path = arguments.stack
    data_dir = arguments.data_dir or REPO_ROOT / ".liftoff" / stack_name_of(stack_file)
    supervisor: Supervisor | None = None
    data = DataDir(data_dir)
    os.umask(0o077)  # everything under the data directory is private to its owner
    try:
        # Validation first: a broken stack file is reported before anything starts.
        plan = load_plan(stack_file)
        urls = _destination_urls(
            arguments.destination_url, {d.destination.name for d in plan.destinations}
        )
        options = Options(
            data_dir=data_dir,
            ports=Ports(arguments.base_port),
            nats_server=find_nats_server(),
            postgres=find_postgres() if plan.warehouse.enabled else None,
            listen=arguments.listen,
            tls=arguments.tls,
            destination_urls=urls,
        )
        data.lock()  # before anything is written: a second instance changes nothing
        _start_over(data, arguments.fresh, arguments.new_keys)
        redirected = {d.destination.name: d.secret_field for d in plan.destinations}
        redirected = {name: redirected[name] for name in urls}
        plan = load_plan(stack_file, destination_secrets(data, redirected))
        print(f"liftoff local: starting stack {plan.stack} from {stack_file}…", flush=True)
        supervisor = Supervisor(plan, options, data)
        began = time.monotonic()
        supervisor.start()
        return asyncio.run(run_until_stopped(supervisor, began))
    except ConfigError as error:
        print(f"liftoff local: {stack_file}: {error}", file=sys.stderr)
        return 2
    except (StackFileError, MissingBinary, SetupError, StartFailed) as error:
        print(f"liftoff local: {error}", file=sys.stderr)
        return 2 if not isinstance(error, StartFailed) else 1
    except OSError as error:  # e.g. a port taken between the check and the bind
        print(f"liftoff local: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if supervisor is not None and supervisor.children:
            supervisor.stop()
            print("stopped", flush=True)
        data.unlock()
