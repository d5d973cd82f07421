"""The warehouse's typed tables (Segment's warehouse schema), derived from the raw events."""
