"""Fixtures for the ops function's tests: S3 (moto) as the consumers' tests have it;
PostgreSQL from tests/services/conftest.py."""

from tests.services.consumers.conftest import bucket

__all__ = ["bucket"]
