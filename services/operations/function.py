"""The ops function's cold start (:mod:`services.operations.contract`)."""

from __future__ import annotations

from typing import Any

from services.consumers.reconcile.repair import load as load_reconcile
from services.operations.contract import OpsFunctionSettings


def load(settings: OpsFunctionSettings[str]) -> Any:
    """The reconcile's (a regulation reads its secrets when it runs): nothing connected."""
    return load_reconcile(settings.reconcile)
