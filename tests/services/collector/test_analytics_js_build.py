"""analytics.js is taken from the pinned npm tarball, verified, and is what the tests ran."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile

import pytest

from services.collector import analytics_js_build as build
from services.collector.browser import Library
from tests.servers import REPO_ROOT

LOCK = REPO_ROOT / "tests" / "browser" / "package-lock.json"


def _tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def test_the_pin_is_the_version_the_browser_tests_run() -> None:
    locked = json.loads(LOCK.read_text())["packages"][f"node_modules/{build.PACKAGE}"]
    assert (locked["version"], locked["integrity"]) == (build.VERSION, build.INTEGRITY)


def test_a_tarball_that_does_not_match_the_pin_is_refused() -> None:
    data = _tarball({"package/dist/umd/standalone.js": b"evil()"})
    with pytest.raises(build.IntegrityError, match="does not match"):
        build.check_integrity(data)
    build.check_integrity(data, _integrity(data))  # the same bytes under their own hash pass


def test_a_corrupt_cached_tarball_is_fetched_again(tmp_path, monkeypatch) -> None:
    good = _tarball({"package/dist/umd/standalone.js": b"ok()"})
    monkeypatch.setattr(build, "INTEGRITY", _integrity(good))
    cached = tmp_path / f"analytics-next-{build.VERSION}.tgz"
    cached.write_bytes(b"corrupt")
    fetched: list[str] = []

    class Answer(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(url, timeout):
        fetched.append(url)
        return Answer(good)

    monkeypatch.setattr(build.urllib.request, "urlopen", fake_urlopen)
    assert build.download(tmp_path) == good
    assert cached.read_bytes() == good and len(fetched) == 1
    assert build.download(tmp_path) == good and len(fetched) == 1  # then served from the cache


def test_extract_keeps_what_the_browser_loads_and_the_license(tmp_path) -> None:
    chunk, compressed = b"chunk()", gzip.compress(b"main()", mtime=0)
    data = _tarball(
        {
            "package/dist/umd/standalone.js": b"main()",
            "package/dist/umd/standalone.js.gz": compressed,
            "package/dist/umd/standalone.js.map": b"{}",
            "package/dist/umd/auto-track.bundle.0123abcd.js": chunk,
            "package/dist/umd/../../../escape.js": b"no",
            "package/dist/cjs/index.js": b"no",
            "package/LICENSE.MD": b"MIT",
            "package/package.json": json.dumps({"version": build.VERSION}).encode(),
        }
    )
    names = build.extract(data, tmp_path / "out")
    assert names == [
        "LICENSE.MD",
        "auto-track.bundle.0123abcd.js",
        "package.json",
        "standalone.js",
        "standalone.js.gz",
    ]
    library = Library(tmp_path / "out")
    assert library.available and library.version == build.VERSION
    assert library.get("standalone.js").gzipped == compressed
    assert not (tmp_path / "escape.js").exists()


def test_the_registry_is_overridable_for_mirrors(monkeypatch) -> None:
    monkeypatch.setenv("NPM_CONFIG_REGISTRY", "https://npm.mirror.internal/")
    assert build.tarball_url() == (
        f"https://npm.mirror.internal/@segment/analytics-next/-/analytics-next-{build.VERSION}.tgz"
    )


def test_image_and_lambda_package_put_the_library_where_the_collector_reads_it() -> None:
    from services.collector.browser import DEFAULT_LIBRARY_DIR

    relative = DEFAULT_LIBRARY_DIR.relative_to(REPO_ROOT / "services").as_posix()
    dockerfile = (REPO_ROOT / "services" / "Dockerfile").read_text()
    assert 'RUN ["python", "/build/analytics_js_build.py", "/out/analytics-next"]' in dockerfile
    assert f"COPY --from=analytics-js /out/analytics-next/ /app/services/{relative}/" in dockerfile
    packaging = (REPO_ROOT / "components" / "packaging.py").read_text()
    assert f'_LIBRARY_DIR = "{relative}/"' in packaging
