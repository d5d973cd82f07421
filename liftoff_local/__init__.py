"""liftoff local: the platform's data path on one machine, from a stack file.

``python3 -m liftoff_local [--stack Pulumi.dev.yaml]`` runs nats-server (JetStream),
PostgreSQL, an S3-compatible store, and the collector, archiver, loader and broadcasters as
the same ``python -m services …`` processes the Kubernetes target runs. See the README,
"liftoff local". This package may import ``components.config`` (the stack validation) and
``components.consumers`` (names), never Pulumi; ``services/`` never imports this package.
"""
