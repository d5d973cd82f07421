"""The warehouse tests use the services tests' PostgreSQL (tests/services/conftest.py) and
``tests.servers.pg_connect``."""
