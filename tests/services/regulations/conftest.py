"""Fixtures for the regulation tests: the consumers' PostgreSQL, S3 (moto) and dead letters."""

from tests.services.consumers.conftest import bucket, dead_letter_url, postgres, warehouse

__all__ = ["bucket", "dead_letter_url", "postgres", "warehouse"]
