"""The shared event model: what an event is on the stream (model), how Segment
payloads become events (segment), and the sources' write keys (write_keys)."""
