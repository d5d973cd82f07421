"""A page in real Chromium, driven one command at a time from Python (tests/browser/session.mjs):
the debugger tests send events, restart liftoff local and look at the page in between."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.servers import REPO_ROOT

BROWSER_DIR = REPO_ROOT / "tests" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def missing() -> str | None:
    """What is missing to drive Chromium here, or None."""
    if shutil.which("node") is None:
        return "node"
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return "tests/browser/node_modules"
    if not Path(CHROMIUM).exists():
        return "chromium"
    return None


class BrowserError(AssertionError):
    pass


class Browser:
    """One Chromium page; each method is one command, answered before it returns."""

    def __init__(self, timeout: float = 60.0) -> None:
        node = shutil.which("node")
        assert node is not None
        self.timeout = timeout
        self.process = subprocess.Popen(
            [node, str(BROWSER_DIR / "session.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=BROWSER_DIR,
        )
        self._stderr: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    def call(self, op: str, **arguments: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")
        self.process.stdin.flush()
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(self.process.stdout.readline()))
        reader.start()
        reader.join(self.timeout)
        if not answer or not answer[0]:
            raise BrowserError(
                f"no answer to {op} within {self.timeout} s; node said:\n{''.join(self._stderr)}"
            )
        document = json.loads(answer[0])
        if not document["ok"]:
            raise BrowserError(f"{op} {arguments}: {document['error']}")
        return document["value"]

    def eval(self, js: str) -> Any:
        return self.call("eval", js=js)

    def wait_for(self, selector: str, text: str | None = None, timeout: float = 10.0, **kw):
        arguments: dict[str, Any] = {"selector": selector, "timeout": int(timeout * 1000), **kw}
        if text is not None:
            arguments["text"] = text
        return self.call("waitFor", **arguments)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.call("close")
            except Exception:
                self.process.kill()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
