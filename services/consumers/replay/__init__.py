"""Replay from the archive: ``python -m services replay`` (see :mod:`.command`)."""
