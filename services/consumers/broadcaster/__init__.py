"""The broadcaster: forwards stream events to one third-party destination per process/function.

One destination = one durable consumer (``broadcaster-<name>``) = one Kubernetes Deployment or
one Lambda function with its own Kinesis event-source mapping. Destinations share nothing but
the stream, so a slow or failing destination never holds back another (nor the archive).

- :mod:`.settings` — ``LIFTOFF_DESTINATION`` and secrets from the environment.
- :mod:`.delivery` — filter, batch, send, retry (backoff + full jitter, ``Retry-After``), park.
- :mod:`.webhook`, :mod:`.mixpanel`, :mod:`.amplitude`, :mod:`.ga4` — each type's documented
  request format, limits, dedupe field and what it skips (see each module's docstring).
- :mod:`.signing` — the webhook signature and its verification recipe.
- :mod:`.sink` — the consumer-framework sink: ``python -m services broadcaster`` (JetStream) and
  ``services.aws_lambda.broadcaster_handler`` (Kinesis, deadline-aware).

Per event the outcome is *delivered* or *skipped* (checkpoint), *parked* (dead letter with the
reason, then checkpoint) or *deferred* (shutdown or deadline: not checkpointed, redelivered).
"""
