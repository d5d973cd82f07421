"""The Lambda package is reproducible: same source and pins, same bytes."""

from __future__ import annotations

import zipfile

from components.packaging import ROOT, build_lambda_package


def test_package_is_byte_identical_across_builds(tmp_path):
    first = build_lambda_package(build_dir=tmp_path / "one")
    second = build_lambda_package(build_dir=tmp_path / "two")
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256_base64 == second.sha256_base64


def test_package_holds_the_services_code_and_its_dependencies(tmp_path):
    package = build_lambda_package(build_dir=tmp_path)
    with zipfile.ZipFile(package.path) as archive:
        names = archive.namelist()
        infos = archive.infolist()
    assert "services/aws_lambda.py" in names or "services/__init__.py" in names
    for package in ("msgspec", "boto3", "botocore", "psycopg", "psycopg_binary", "httpx", "nats"):
        assert any(name.startswith(f"{package}/") for name in names), package
    assert not any("__pycache__" in name or name.startswith("bin/") for name in names)
    assert names == sorted(names)
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    # analytics.js, as the collector serves it (services.collector.browser.DEFAULT_LIBRARY_DIR).
    assert "services/static/analytics-next/standalone.js" in names
    assert "services/static/analytics-next/LICENSE.MD" in names


def test_a_source_change_gives_a_new_package(tmp_path):
    source = tmp_path / "services"
    source.mkdir()
    (source / "__init__.py").write_text("VALUE = 1\n")
    requirements = ROOT / "services" / "requirements-lambda.txt"
    before = build_lambda_package(source, requirements, tmp_path / "build")
    (source / "__init__.py").write_text("VALUE = 2\n")
    after = build_lambda_package(source, requirements, tmp_path / "build")
    assert before.path != after.path and before.sha256_base64 != after.sha256_base64
