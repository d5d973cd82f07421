"""The warehouse tests use the services tests' PostgreSQL (tests/services/conftest.py)."""

from tests.servers import pg_connect as connect

__all__ = ["connect"]
