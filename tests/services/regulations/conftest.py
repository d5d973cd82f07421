"""Fixtures for the regulation tests: S3 (moto) and dead letters as the consumers' tests have
them; PostgreSQL from tests/services/conftest.py."""

from tests.services.consumers.conftest import bucket, dead_letter_url

__all__ = ["bucket", "dead_letter_url"]
