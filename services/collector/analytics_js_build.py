"""Build step: take analytics.js (the standalone build of ``@segment/analytics-next``) from
its npm tarball at a pinned version, verified against the pinned sha512 integrity.

Run at image build (``services/Dockerfile``) and Lambda package build
(``components/packaging.py``), never by the collector at run time; nothing it fetches is
committed. Standard library only, so a bare ``python`` runs it::

    python services/collector/analytics_js_build.py <output-dir> [--cache <dir>]

``NPM_CONFIG_REGISTRY`` points it at a private npm mirror (air-gapped builds), as npm does.
The output directory holds ``standalone.js`` (served as ``analytics.min.js``), the lazily
loaded ``*.bundle.*.js`` chunks, their ``.gz`` twins as published, ``LICENSE.MD`` and
``package.json``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import re
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

PACKAGE = "@segment/analytics-next"
VERSION = "1.84.3"
INTEGRITY = (
    "sha512-"
    "5l7cPBzScxhfJ0zdcKQI4daDvMIWWUk7hClT1xGRelnHUltIEoQ9w8+ZpFPoWJMpX8D7IA1nVAfJbpiKi3XaKw=="
)
DEFAULT_REGISTRY = "https://registry.npmjs.org"
# What the browser needs: the standalone build and the chunks it loads lazily (no source maps).
_KEEP = re.compile(
    r"^package/dist/umd/(standalone\.js|[A-Za-z0-9_-]+\.bundle\.[0-9a-f]+\.js)(\.gz)?$"
)
_KEEP_TOP = {"package/LICENSE.MD": "LICENSE.MD", "package/package.json": "package.json"}


class IntegrityError(RuntimeError):
    pass


def tarball_url(registry: str | None = None) -> str:
    base = (registry or os.environ.get("NPM_CONFIG_REGISTRY") or DEFAULT_REGISTRY).rstrip("/")
    name = PACKAGE.rpartition("/")[2]
    return f"{base}/{PACKAGE}/-/{name}-{VERSION}.tgz"


def check_integrity(data: bytes, integrity: str | None = None) -> None:
    algorithm, _, expected = (integrity or INTEGRITY).partition("-")
    if algorithm != "sha512":
        raise IntegrityError(f"unsupported integrity algorithm {algorithm!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise IntegrityError(
            f"{PACKAGE}@{VERSION}: tarball sha512 {actual} does not match the pinned {expected}"
        )


def download(cache_dir: Path | None = None) -> bytes:
    """The verified tarball, from ``cache_dir`` when a verified copy is there."""
    cached = cache_dir / f"analytics-next-{VERSION}.tgz" if cache_dir else None
    if cached is not None and cached.exists():
        data = cached.read_bytes()
        try:
            check_integrity(data)
            return data
        except IntegrityError:
            cached.unlink()  # a corrupt cache entry is refetched, never used
    with urllib.request.urlopen(tarball_url(), timeout=60) as response:
        data = bytes(response.read())
    check_integrity(data)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as partial:
            partial.write(data)
        os.replace(partial.name, cached)
    return data


def extract(data: bytes, output: Path) -> list[str]:
    """Write the files the browser needs into ``output``; returns their names, sorted."""
    output.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            if not member.isfile():
                continue
            match = _KEEP.match(member.name)
            name = _KEEP_TOP.get(member.name) or (match and match.group(1) + (match.group(2) or ""))
            if not name:
                continue
            source = archive.extractfile(member)
            assert source is not None
            (output / name).write_bytes(source.read())
            written.append(name)
    if "standalone.js" not in written:
        raise IntegrityError(f"{PACKAGE}@{VERSION} has no dist/umd/standalone.js")
    return sorted(written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--cache", type=Path, default=None, help="keep the verified tarball here")
    arguments = parser.parse_args(argv)
    names = extract(download(arguments.cache), arguments.output)
    print(f"{PACKAGE}@{VERSION}: {len(names)} files in {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
