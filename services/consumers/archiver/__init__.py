"""The archiver: microbatches every event into the archive (gzip NDJSON)."""
