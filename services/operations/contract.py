"""The ops function's runtime contract (``services.aws_lambda.reconcile_handler``, on AWS): the
one Lambda function the platform's DAGs invoke on MWAA (``dags/liftoff_operations.py``).

An ``hour`` payload repairs the warehouse from the archive and a ``rebuild`` payload rebuilds
typed tables, both with the reconcile's variables (:mod:`services.consumers.reconcile.contract`);
a ``regulation`` payload runs ``python -m services regulation``'s request with those and the
regulation's own: the suppression list (its key from a secret), the collector's quarantine and
the consumers' dead-letter queues. Without a suppression URL the function runs no regulation.
A ``replay`` payload replays an archived window into the warehouse with those
(:meth:`OpsFunctionSettings.replay`), the suppression list read first when the stack has one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic

from services.consumers.reconcile import contract as reconcile
from services.consumers.reconcile.contract import ReconcileSettings
from services.consumers.replay.contract import ReplaySettings
from services.contract import V, group, process
from services.regulations import contract as regulations
from services.suppression.contract import (
    SuppressionAccess,
    check_key_secret,
    key_secret_arn_variable,
)


@dataclass(frozen=True)
class OpsFunctionSettings(Generic[V]):
    """The reconcile's variables and what a regulation needs besides."""

    reconcile: ReconcileSettings[V] = group(ReconcileSettings)
    suppression: SuppressionAccess[V] = group(SuppressionAccess)
    suppression_key_secret_arn: V | None = key_secret_arn_variable()
    quarantine_url: V | None = regulations.quarantine_url_variable()
    dead_letter_urls: V | None = regulations.dead_letter_urls_variable()

    def regulation(self) -> regulations.RegulationSettings[V]:
        """The settings of ``python -m services regulation`` this function runs with."""
        repair = self.reconcile
        return regulations.RegulationSettings(
            suppression=self.suppression,
            suppression_key_secret_arn=self.suppression_key_secret_arn,
            warehouse=repair.warehouse,
            warehouse_secret_arn=repair.warehouse_secret_arn,
            archive=repair.archive,
            quarantine_url=self.quarantine_url,
            dead_letter_urls=self.dead_letter_urls,
            log_level=repair.log_level,
        )

    def replay(self) -> ReplaySettings[V]:
        """The settings of ``python -m services replay`` this function runs a ``replay``
        payload with: into the warehouse, the suppression list read first, the progress in the
        archive bucket (the function's disk does not outlive an invocation)."""
        repair = self.reconcile
        return ReplaySettings(
            archive=repair.archive,
            warehouse=repair.warehouse,
            warehouse_secret_arn=repair.warehouse_secret_arn,
            suppression=self.suppression,
            suppression_key_secret_arn=self.suppression_key_secret_arn,
            progress_in_archive=True,
            log_level=repair.log_level,
        )


def _check_function(settings: OpsFunctionSettings[str]) -> None:
    reconcile.check(settings.reconcile)
    check_key_secret(settings.suppression, settings.suppression_key_secret_arn)


FUNCTION = process(OpsFunctionSettings, _check_function)
parse_function = FUNCTION.parse
