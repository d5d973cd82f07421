"""Replay from the archive: ``python -m services replay`` (see :mod:`.command`; the options and
the ``--json`` document: :mod:`.request`)."""
