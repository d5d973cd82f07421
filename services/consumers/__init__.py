"""The consumer side: the runner framework (runner/) and each consumer (archiver/, loader/,
broadcaster/, reconcile/)."""
