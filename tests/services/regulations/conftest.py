"""Fixtures for the regulation tests: the consumers' PostgreSQL and S3 (moto) ones."""

from tests.services.consumers.conftest import bucket, postgres, warehouse

__all__ = ["bucket", "postgres", "warehouse"]
