"""THE UPGRADE TEST: the previous release's data path upgraded to this commit with events
flowing, and every acknowledged event accounted for.

The previous release is the commit named in `.release/previous`. Its tree (``git archive``:
nothing is registered in the repository, even if the test is killed) runs its own local mode
(`python -m liftoff_local`, the processes the Kubernetes target runs: ensure-stream, collector,
archiver, loader and a webhook destination's broadcaster sending to a local receiver, on
nats-server, PostgreSQL and the S3 store) with this checkout's Python environment. A sender
thread posts batches with unique messageIds to the collector the whole time, retrying what is
not acknowledged, as the SDKs do. Mid-flow the previous release is
stopped (Ctrl-C: the collector first, then the consumers finish their batches, as a rollout's
SIGTERMs do) and this commit's local mode starts on the same data directory and ports: the
same stream and durable consumers, warehouse and archive. Once the sender stops and the
consumers caught up, every event the collector acknowledged (a 200) is in the warehouse once
and in the archive once, and was sent to the destination (at least once: its durable, created
by the previous release delivering everything, keeps its place): 0 lost, 0 duplicated; and the
warehouse the previous release created carries every schema migration of this one. The
release's warehouse change (the typed tables, issue 19) is checked on that data too: every
event this commit loaded is in the source's typed `tracks` once, and after the documented step
(`python -m services warehouse-rebuild --source web`, run while the loader runs) so is every
event the previous release loaded.

About 40 s, most of it one wait: local mode stops nats-server too, and the few hundred
messages the stopping loader had been delivered (and released) are still pending in the
durable's stored state when the server starts again, so they are redelivered to the new
loader after their ack wait (30 s). The same happens restarting this commit on itself (36 s);
a Kubernetes rollout of the consumers keeps the servers running. Nothing is lost.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import psycopg
import pytest

from services.consumers.loader.schema import MIGRATIONS
from tests.liftoff_local.conftest import LocalRun, free_base_port
from tests.servers import REPO_ROOT
from tests.services.consumers.broadcaster.receiver import Receiver

pytestmark = [pytest.mark.servers, pytest.mark.upgrade]

PREVIOUS_RELEASE = (REPO_ROOT / ".release" / "previous").read_text().strip()
BATCH = 20  # events per request


def previous_release_tree(target: Path) -> Path:
    """The previous release's files in ``target`` (plus this checkout's analytics.js tarball,
    so its local mode does not download it again)."""
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", "--format=tar", PREVIOUS_RELEASE],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.fail(
            f"the previous release {PREVIOUS_RELEASE} (.release/previous) is not in this "
            f"clone's history (a shallow clone? git fetch --unshallow): {archive.stderr!r}"
        )
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    cache = REPO_ROOT / "build" / "npm"
    if cache.is_dir():
        shutil.copytree(cache, target / "build" / "npm")
    return target


DESTINATION = (
    "  liftoff:destinations:\n"
    "    - name: crm\n"
    "      type: webhook\n"
    "      url: https://crm.example/hooks/liftoff\n"
    "      signingSecret:\n"
    "        secure: v1:ciphertext-only-pulumi-can-open\n"
)


def start(code: Path, data_dir: Path, base_port: int, output: Path, hook: str) -> LocalRun:
    """``code``'s local mode on the dev stack plus a webhook destination sent to ``hook``."""
    import os
    import sys

    stack = output.parent / f"{output.stem}-stack" / "Pulumi.dev.yaml"  # `dev` for both
    stack.parent.mkdir()
    stack.write_text((code / "Pulumi.dev.yaml").read_text() + DESTINATION)
    handle = output.open("ab")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "liftoff_local", "--data-dir", str(data_dir),
            "--base-port", str(base_port), "--stack", str(stack),
            "--destination-url", f"crm={hook}",
        ],
        stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        cwd=code, env=dict(os.environ), start_new_session=True,
    )  # fmt: skip
    handle.close()
    return LocalRun(process, output, data_dir).wait_ready()


class Sender(threading.Thread):
    """Posts batches of events with unique messageIds until stopped, each batch again until
    acknowledged (as an SDK retries a 5xx or a refused connection)."""

    def __init__(self, url: str, write_key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.write_key = url, write_key
        self.acknowledged: list[str] = []
        self.refused = 0  # attempts not acknowledged (retried)
        self.stopping = threading.Event()
        self.run_id = uuid.uuid4().hex[:8]

    def run(self) -> None:
        with httpx.Client(auth=(self.write_key, ""), timeout=10) as client:
            batch_number = 0
            while not self.stopping.is_set():
                ids = [f"{self.run_id}-{batch_number}-{i}" for i in range(BATCH)]
                batch_number += 1
                body = {
                    "batch": [
                        {"type": "track", "event": "Upgrade Tested", "userId": f"u-{i % 7}",
                         "messageId": message_id, "properties": {"n": i}}
                        for i, message_id in enumerate(ids)
                    ]
                }  # fmt: skip
                while True:
                    try:
                        status = client.post(f"{self.url}/v1/batch", json=body).status_code
                    except httpx.HTTPError:
                        status = 0
                    if status == 200:
                        self.acknowledged += ids
                        break
                    self.refused += 1
                    if self.stopping.wait(0.2):
                        break  # stopped: these were never acknowledged
                time.sleep(0.02)


def warehouse_counts(url: str) -> Counter[str]:
    with psycopg.connect(url, connect_timeout=5) as connection:
        rows = connection.execute("SELECT message_id FROM events").fetchall()
    return Counter(row[0] for row in rows)


def migrations(url: str) -> list[int]:
    with psycopg.connect(url, connect_timeout=5) as connection:
        rows = connection.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall()
    return [row[0] for row in rows]


def typed_tracks(url: str) -> Counter[str]:
    """The message ids in the `web` source's typed `tracks` table (none before it exists)."""
    with psycopg.connect(url, connect_timeout=5) as connection:
        if connection.execute("SELECT to_regclass('web.tracks')").fetchone() == (None,):
            return Counter()
        rows = connection.execute("SELECT id FROM web.tracks").fetchall()
    return Counter(row[0] for row in rows)


def rebuild_typed_tables(url: str) -> subprocess.CompletedProcess[str]:
    """This commit's `warehouse-rebuild --source web`, with the warehouse's libpq variables,
    as RELEASES.md tells an operator to run it after this upgrade."""
    import os
    import sys
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LIFTOFF_"))}
    env.update(
        PGHOST=str(parts.hostname), PGPORT=str(parts.port), PGUSER=str(parts.username),
        PGPASSWORD=str(parts.password), PGDATABASE=parts.path.lstrip("/"),
    )  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "services", "warehouse-rebuild", "--source", "web"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def archive_counts(data_dir: Path, bucket: str) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in (data_dir / "s3" / bucket).rglob("*.json.gz"):
        for line in gzip.decompress(path.read_bytes()).splitlines():
            found[json.loads(line)["messageId"]] += 1
    return found


def test_upgrade_from_the_previous_release_with_events_flowing_loses_and_duplicates_nothing(
    data_root: Path,
) -> None:
    previous = previous_release_tree(data_root / "previous")
    data_dir, base = data_root / "data", free_base_port()
    receiver = Receiver().__enter__()
    hook = f"{receiver.url}/hooks/liftoff"
    old = start(previous, data_dir, base, data_root / "previous.log", hook)
    sender = Sender(old.info["collectorUrl"], old.info["writeKeys"]["web"])
    new: LocalRun | None = None
    try:
        sender.start()
        deadline = time.monotonic() + 30
        while len(sender.acknowledged) < 1000 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert old.stop() == 0, old.text()  # mid-flow: the sender keeps sending
        before_upgrade = len(sender.acknowledged)
        new = start(REPO_ROOT, data_dir, base, data_root / "current.log", hook)
        deadline = time.monotonic() + 30
        while len(sender.acknowledged) < before_upgrade + 1000 and time.monotonic() < deadline:
            time.sleep(0.1)
        sender.stopping.set()
        sender.join(30)
        acknowledged = Counter(sender.acknowledged)
        assert before_upgrade >= 500 and len(acknowledged) - before_upgrade >= 500
        assert set(acknowledged.values()) == {1}
        info = new.info
        give_up = time.monotonic() + 60
        while True:  # until both caught up (a bounded wait, not a timing assertion)
            warehouse = warehouse_counts(info["warehouseUrl"])
            archive = archive_counts(data_dir, info["archive"]["bucket"])
            requests = receiver.delivered("/hooks/liftoff")
            sent = Counter(e["messageId"] for r in requests for e in r.json["batch"])
            if all(set(acknowledged) <= set(found) for found in (warehouse, archive, sent)):
                break
            if time.monotonic() > give_up:
                break
            time.sleep(0.5)
        applied = migrations(info["warehouseUrl"])
        typed_before_rebuild = typed_tracks(info["warehouseUrl"])
        rebuilt = rebuild_typed_tables(info["warehouseUrl"])  # the loader still running
        typed = typed_tracks(info["warehouseUrl"])
    finally:
        sender.stopping.set()
        for run in (old, new):
            if run is not None:
                run.stop()
        receiver.__exit__(None, None, None)
    lost = {
        "warehouse": len(set(acknowledged) - set(warehouse)),
        "archive": len(set(acknowledged) - set(archive)),
        "destination": len(set(acknowledged) - set(sent)),
    }
    duplicated = {
        "warehouse": sum(1 for n in warehouse.values() if n > 1),
        "archive": sum(1 for n in archive.values() if n > 1),
    }
    print(
        f"upgrade {PREVIOUS_RELEASE} -> this commit: {len(acknowledged)} acknowledged "
        f"({before_upgrade} before the upgrade, {sender.refused} attempts retried), "
        f"lost {lost}, duplicated {duplicated}; the destination (at least once) was sent "
        f"{sum(1 for n in sent.values() if n > 1)} event(s) twice"
    )
    assert lost == {"warehouse": 0, "archive": 0, "destination": 0}, (lost, new and new.text())
    assert duplicated == {"warehouse": 0, "archive": 0}
    # The warehouse the previous release created carries every migration of this one.
    assert applied == [version for version, _, _ in MIGRATIONS]
    # The typed tables: what this commit loaded at once, the previous release's after a rebuild.
    loaded_by_this_commit = set(sender.acknowledged[before_upgrade:])
    print(
        f"typed web.tracks: {len(typed_before_rebuild)} before the rebuild "
        f"({len(loaded_by_this_commit)} acknowledged by this commit), {len(typed)} after"
    )
    assert loaded_by_this_commit <= set(typed_before_rebuild) <= set(acknowledged)
    assert set(typed_before_rebuild.values()) == {1}
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert typed == Counter(acknowledged), (len(typed), len(acknowledged))
