"""The stream adapters (JetStream, Kinesis) and the stores both sides write (dead letters,
side channels)."""
