"""The stream-consumer framework: one sink, two runtimes (JetStream process, Kinesis Lambda).
See :mod:`services.consumers.runner.model`."""
