"""Deterministic AWS Lambda packages of the `services/` code and its pinned dependencies.

Same source and same pins → byte-identical zip → same hash → no diff in `pulumi preview`.
Dependencies are installed for the Lambda runtime's platform (manylinux arm64, CPython 3.12)
from wheels only, then every entry is written in sorted order with a fixed timestamp and
fixed permissions. Built packages are cached under `build/lambda/` by content hash.

The package also carries analytics.js (the collector serves it):
`services/collector/analytics_js_build.py` takes it from the npm tarball of
`@segment/analytics-next` at the version and sha512 pinned in that script (its source is part of the
content hash), caching the verified tarball under `build/npm/`. It needs the npm registry (or
`NPM_CONFIG_REGISTRY`, a mirror) once per version.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAMBDA_RUNTIME = "python3.12"
LAMBDA_ARCHITECTURE = "arm64"
# The python3.12 runtime runs Amazon Linux 2023 (glibc 2.34): every manylinux tag up to it fits.
_PIP_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64")
_PYTHON_VERSION = "3.12"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Not needed at run time, and not reproducible (scripts carry the build machine's paths).
_EXCLUDED_PARTS = {"__pycache__", "bin", "tests"}
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")
# Build output inside the source tree (a local `services/static/`) never enters the package as
# source: the package's copy is always the freshly verified one.
_BUILT_DIR = "static"
_LIBRARY_SCRIPT = "collector/analytics_js_build.py"
_LIBRARY_DIR = "static/analytics-next/"


@dataclass(frozen=True)
class LambdaPackage:
    path: Path
    sha256_base64: str
    """`source_code_hash` for the Lambda function (base64 of the zip's SHA-256)."""


def _source_files(source_dir: Path, *, skip_built: bool = False) -> list[Path]:
    files = []
    for path in sorted(source_dir.rglob("*")):
        relative = path.relative_to(source_dir)
        if path.is_dir() or _EXCLUDED_PARTS & set(relative.parts):
            continue
        if skip_built and relative.parts[0] == _BUILT_DIR:
            continue
        if path.suffix in _EXCLUDED_SUFFIXES or path.name == "Dockerfile":
            continue
        files.append(path)
    return files


def _content_digest(source_dir: Path, requirements: Path) -> str:
    digest = hashlib.sha256()
    for marker in (LAMBDA_RUNTIME, LAMBDA_ARCHITECTURE, *_PIP_PLATFORMS):
        digest.update(marker.encode() + b"\0")
    digest.update(requirements.read_bytes())
    for path in _source_files(source_dir, skip_built=True):
        digest.update(str(path.relative_to(source_dir)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _install_dependencies(requirements: Path, target: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--no-compile", "--only-binary=:all:",
        *(f"--platform={platform}" for platform in _PIP_PLATFORMS), "--implementation", "cp",
        "--python-version", _PYTHON_VERSION,
        "--target", str(target), "-r", str(requirements),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"installing Lambda dependencies from {requirements} failed:\n{result.stderr}"
        )


def _fetch_library(source_dir: Path, target: Path, cache: Path) -> None:
    # Run as a script, not imported: components never import service internals.
    command = [
        sys.executable,
        str(source_dir / _LIBRARY_SCRIPT),
        str(target),
        "--cache",
        str(cache),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"taking analytics.js from npm failed:\n{result.stderr}")


def _write_zip(zip_path: Path, trees: list[tuple[Path, str, bool]]) -> None:
    """`trees`: (directory, prefix in the zip, whether it is a source tree with build output)."""
    entries: dict[str, Path] = {}
    for base, prefix, skip_built in trees:
        for path in _source_files(base, skip_built=skip_built):
            entries[prefix + path.relative_to(base).as_posix()] = path
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            path = entries[name]
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            archive.writestr(info, path.read_bytes(), compresslevel=6)


def build_lambda_package(
    source_dir: Path = ROOT / "services",
    requirements: Path = ROOT / "services" / "requirements-lambda.txt",
    build_dir: Path = ROOT / "build" / "lambda",
) -> LambdaPackage:
    """Build (or reuse) the zip holding `source_dir` as a package plus its dependencies."""
    digest = _content_digest(source_dir, requirements)
    zip_path = build_dir / f"services-{digest[:20]}.zip"
    if not zip_path.exists():
        build_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=build_dir) as staging:
            dependencies = Path(staging) / "dependencies"
            _install_dependencies(requirements, dependencies)
            trees = [(dependencies, "", False), (source_dir, f"{source_dir.name}/", True)]
            if (source_dir / _LIBRARY_SCRIPT).is_file():
                library = Path(staging) / "analytics-next"
                _fetch_library(source_dir, library, build_dir.parent / "npm")
                trees.append((library, f"{source_dir.name}/{_LIBRARY_DIR}", False))
            partial = Path(staging) / "package.zip"
            _write_zip(partial, trees)
            shutil.move(partial, zip_path)
    checksum = hashlib.sha256(zip_path.read_bytes()).digest()
    return LambdaPackage(path=zip_path, sha256_base64=base64.b64encode(checksum).decode())
