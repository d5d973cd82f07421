"""The replay's progress file (services/consumers/replay/progress.py): a line appended per
acknowledged batch, the last complete one read back, compacted past its bound."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.consumers.replay import progress as module
from services.consumers.replay.progress import Progress
from services.consumers.replay.window import Cursor
from services.contract import ConfigError

IDENTITY = {"from": "2026-11-27T10:00:00+00:00", "target": "warehouse"}


def cursor(sequence: int) -> Cursor:
    return Cursor("2026-11-27T10", "EVENTS-0", sequence)


def test_each_save_appends_a_line_and_the_last_one_is_where_a_new_run_resumes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "progress.json"
    progress = Progress(path, IDENTITY)
    assert progress.start({"sent": 0}) is None
    inode = path.stat().st_ino
    for sequence in (500, 1000, 1500):
        progress.save(cursor(sequence), {"sent": sequence})
    progress.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4 and path.stat().st_ino == inode  # appended, not replaced
    assert json.loads(lines[-1]) == {
        "replay": IDENTITY,
        "after": ["2026-11-27T10", "EVENTS-0", 1500],
        "summary": {"sent": 1500},
    }
    assert Progress(path, IDENTITY).start({}) == cursor(1500)


@pytest.mark.parametrize("torn", [b'{"after": ["2026-11-27T10", "EVENTS-0", 20', b"\0" * 40])
def test_a_line_left_incomplete_by_a_crash_is_passed_over(tmp_path: Path, torn: bytes) -> None:
    """The batch whose line was being written is sent again: at least once, as when the crash
    comes just before the line."""
    path = tmp_path / "progress.json"
    progress = Progress(path, IDENTITY)
    progress.start({})
    progress.save(cursor(1000), {})
    progress.close()
    with path.open("ab") as file:
        file.write(torn)
    assert Progress(path, IDENTITY).load() == cursor(1000)


def test_the_file_is_compacted_to_its_last_line_past_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module, "COMPACT_BYTES", 2000)
    path = tmp_path / "progress.json"
    progress = Progress(path, IDENTITY)
    progress.start({})
    sizes = []
    for sequence in range(1, 200):
        progress.save(cursor(sequence), {"sent": sequence})
        sizes.append(path.stat().st_size)
    progress.close()
    assert max(sizes) <= 2000 and min(sizes[20:]) < 300  # replaced by its last line, at times
    assert not (tmp_path / "progress.json.tmp").exists()
    assert Progress(path, IDENTITY).load() == cursor(199)


def test_a_file_of_the_earlier_format_resumes_and_a_foreign_or_broken_one_is_refused(
    tmp_path: Path,
) -> None:
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"replay": IDENTITY, "after": list(cursor(7)), "summary": {}}))
    assert Progress(earlier, IDENTITY).load() == cursor(7)
    with pytest.raises(ConfigError, match="records another replay"):
        Progress(earlier, {**IDENTITY, "target": "destination:hook"}).load()
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"replay": {"from"')
    with pytest.raises(ConfigError, match=r"--progress '.*broken.json' cannot be read: it holds"):
        Progress(broken, IDENTITY).load()


def test_an_unwritable_path_fails_before_anything_is_sent() -> None:
    with pytest.raises(ConfigError, match=r"--progress '/proc/nope.json' cannot be written: "):
        Progress(Path("/proc/nope.json"), IDENTITY).start({})
