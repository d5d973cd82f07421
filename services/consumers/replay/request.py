"""``python -m services replay``: the replay asked for by options or as one JSON document
(``--json DOCUMENT``: the ``liftoff_replay`` DAG's conf and the ops function's ``replay``
payload), then run by :func:`~.command.run_window` (the ops function: :func:`handle`).

``{"from", "to", "target", "sources", "types", "events", "rate", "dryRun"}``: ``from``, ``to``
and ``target`` as the options ``--from``, ``--to``, ``--target``; the lists as the repeatable
options (empty or null: all); ``rate`` events per second (null: no limit); ``dryRun`` a boolean.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from services.consumers.replay.command import NOT_FINISHED, run_window
from services.consumers.replay.contract import ReplaySettings
from services.contract import ConfigError

TYPES = ("track", "identify", "page", "screen", "group", "alias")
REQUIRED = ("from", "to", "target")
LISTS = {"sources": "sources", "types": "types", "events": "events"}
KEYS = (*REQUIRED, *LISTS, "rate", "dryRun")
FUNCTION_TARGET = "warehouse"


def options_of(text: str) -> dict[str, Any]:
    """The document's options as ``run`` takes them; a ConfigError names the key, the value and
    what is allowed."""
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ConfigError(f"replay --json: not JSON ({error})") from None
    if not isinstance(document, dict):
        raise ConfigError(f"replay --json {document!r}: expected a JSON object")
    unknown = sorted(set(document) - set(KEYS))
    if unknown:
        raise ConfigError(f"replay --json: unknown keys {unknown}; allowed: {', '.join(KEYS)}")
    options: dict[str, Any] = {}
    for key, option in (("from", "start"), ("to", "end"), ("target", "target")):
        value = document.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"replay {key} {value!r}: a non-empty string is required")
        options[option] = value
    for key, option in LISTS.items():
        value = document.get(key) or []
        if not isinstance(value, list) or not all(isinstance(i, str) and i for i in value):
            raise ConfigError(f"replay {key} {value!r}: a list of non-empty strings")
        if key == "types" and (wrong := sorted(set(value) - set(TYPES))):
            raise ConfigError(f"replay types {wrong}: use {', '.join(TYPES)}")
        options[option] = value or None
    rate = document.get("rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
        raise ConfigError(f"replay rate {rate!r}: a number of events per second, or null")
    dry_run = document.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise ConfigError(f"replay dryRun {dry_run!r}: true or false")
    return {**options, "rate": rate, "dry_run": dry_run}


def run(
    settings: ReplaySettings[str],
    start: str | None = None,
    end: str | None = None,
    target: str | None = None,
    sources: list[str] | None = None,
    types: list[str] | None = None,
    events: list[str] | None = None,
    rate: float | None = None,
    dry_run: bool = False,
    progress: str | None = None,
    max_seconds: float | None = None,
    document: str | None = None,
) -> int:
    """``python -m services replay``: the options, or ``document`` (``--json``: the DAG's conf,
    :mod:`.request`); prints the summary as one JSON line."""
    chosen = (start, end, target, sources, types, events, rate, dry_run or None)
    if document is not None:
        if any(option is not None for option in chosen):
            raise ConfigError("replay: give either --json or --from, --to, --target ...")
        result = run_window(
            settings, **options_of(document), progress=progress, max_seconds=max_seconds
        )
        return _printed(*result)
    if start is None or end is None or target is None:
        raise ConfigError("replay: --from, --to and --target are required (or --json)")
    result = run_window(
        settings, start, end, target, sources, types, events, rate, dry_run, progress, max_seconds
    )
    return _printed(*result)


def _printed(status: int, summary: dict[str, Any]) -> int:
    """The summary as one JSON line (and, when stopped by the time budget, how to go on); the
    command's exit status."""
    print(json.dumps(summary, sort_keys=True), flush=True)
    if status == NOT_FINISHED:
        print("not finished: run the same command again to continue", file=sys.stderr)
    return status


def handle(
    document: Any, settings: ReplaySettings[str], max_seconds: float | None = None
) -> dict[str, Any]:
    """The ops function's ``replay`` payload (the DAG's conf on MWAA): into the warehouse only,
    within ``max_seconds`` (what the invocation has left; a dry run has no budget: it keeps no
    progress to resume); the summary with its ``exit_status`` (0 done, 1 failed or rows parked,
    3 not finished: invoke it again)."""
    options = options_of(json.dumps(document))
    target = options["target"]
    if target != FUNCTION_TARGET:
        raise ConfigError(
            f"replay target {target!r}: the ops function replays into the warehouse only "
            f"(target {FUNCTION_TARGET!r}); a destination's documents and secrets are not in "
            "its environment: replay it with `python -m services replay --target "
            f'{target} ...` from a host in the VPC (README "Replay from the archive")'
        )
    budget = None if options["dry_run"] else max_seconds
    status, summary = run_window(settings, **options, max_seconds=budget)
    return {**summary, "exit_status": status}
