"""The platform's Postgres: client databases (ensure-database) and backups (backup-upload)."""
