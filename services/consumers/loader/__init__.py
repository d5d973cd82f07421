"""The warehouse loader: every event into Postgres, deduplicated on messageId."""
