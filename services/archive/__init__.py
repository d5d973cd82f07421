"""The archive as processes reach it: where it is (the contract every client reads) and an S3
client for it. Shared by the archiver, the reconciliation and the Postgres backups."""
