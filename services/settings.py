"""What each workload the platform deploys reads from its environment, parsed without starting
anything: one function per `python -m services <command>` and per Lambda handler.

The commands and handlers call these same functions, so a configuration error surfaces the same
way everywhere; the platform's runtime contract test (tests/test_runtime_contract.py) feeds every
environment the stacks declare through them. Secrets named by ARN are read from Secrets Manager
as at runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from services import config
from services.config import ConfigError

Env = Mapping[str, str]


@dataclass(frozen=True)
class DeadLetterStream:
    """What ``ensure-stream`` provisions for the dead letters (JetStream URLs only)."""

    url: str
    retention_hours: float
    max_bytes: int


def ensure_stream(env: Env) -> tuple[config.EnsureStreamConfig, DeadLetterStream]:
    """The stream's settings and the dead-letter stream's."""
    from services.stream.dead_letters import DEFAULT_MAX_BYTES

    settings = config.EnsureStreamConfig.from_env(env)
    return settings, DeadLetterStream(
        url=config.dead_letter_url(env, settings.stream_url),
        retention_hours=config.number(env, config.DEAD_LETTER_RETENTION_HOURS, 336.0, 0.001),
        max_bytes=config.integer(
            env, config.DEAD_LETTER_MAX_BYTES, DEFAULT_MAX_BYTES, 1024 * 1024, 2**53
        ),
    )


def _consumer(
    env: Env, name: str, events: tuple[str, int], seconds: tuple[str, float], on_lambda: bool
) -> config.ConsumerConfig:
    # On Lambda the event-source mapping sizes the batches (services.consumers.runner.kinesis).
    if on_lambda:
        return config.ConsumerConfig.from_env(env, default_name=name, on_lambda=True)
    return config.ConsumerConfig.from_env(
        env, default_name=name, batch_events=events, batch_seconds=seconds
    )


def archiver(env: Env, *, on_lambda: bool = False) -> tuple[Any, config.ConsumerConfig]:
    from services.consumers.archiver.sink import ArchiverConfig

    archive = ArchiverConfig.from_env(env)
    events, seconds = (
        (config.ARCHIVE_BATCH_MAX_EVENTS, 10000),
        (config.ARCHIVE_BATCH_MAX_SECONDS, 60.0),
    )
    return archive, _consumer(env, "archiver", events, seconds, on_lambda)


def loader(env: Env, *, on_lambda: bool = False) -> tuple[Any, config.ConsumerConfig]:
    from services.consumers.loader.sink import LoaderConfig

    warehouse = LoaderConfig.from_env(env)
    events, seconds = (config.LOADER_BATCH_MAX_EVENTS, 5000), (config.LOADER_BATCH_MAX_SECONDS, 5.0)
    return warehouse, _consumer(env, "loader", events, seconds, on_lambda)


def broadcaster(env: Env, *, on_lambda: bool = False) -> tuple[Any, config.ConsumerConfig]:
    from services.consumers.broadcaster.settings import BroadcasterConfig

    destination = BroadcasterConfig.from_env(env)
    events, seconds = (
        (config.BROADCAST_BATCH_MAX_EVENTS, 500),
        (config.BROADCAST_BATCH_MAX_SECONDS, 1.0),
    )
    return destination, _consumer(
        env, destination.destination.consumer_name, events, seconds, on_lambda
    )


def ensure_database(env: Env) -> tuple[Any, Any]:
    """The admin connection and the client's database request."""
    from services.postgres.database import admin_from_environment, request_from_environment

    try:
        return admin_from_environment(dict(env)), request_from_environment(dict(env))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def reconcile(env: Env) -> tuple[Any, Any]:
    from services.consumers.archiver.sink import ArchiverConfig
    from services.consumers.loader.sink import LoaderConfig

    config.log_level(env)
    return ArchiverConfig.from_env(env), LoaderConfig.from_env(env)


def backup_upload(env: Env) -> Any:
    from services.postgres import backup

    config.log_level(env)
    return backup.BackupConfig.from_env(env)


def lambda_collector(env: Env) -> Any:
    from services.aws_lambda import collector_settings

    return collector_settings(env)


def database_setup_lambda(env: Env) -> Any:
    from services.postgres.database import admin_from_secret

    return admin_from_secret(env)


COMMANDS: dict[str, Callable[[Env], object]] = {
    "collector": config.CollectorConfig.from_env,
    "ensure-stream": ensure_stream,
    "archiver": archiver,
    "loader": loader,
    "broadcaster": broadcaster,
    "ensure-database": ensure_database,
    "reconcile": reconcile,
    "backup-upload": backup_upload,
}
"""`python -m services <command>` → what it parses from the environment."""

HANDLERS: dict[str, Callable[[Env], object]] = {
    "services.aws_lambda.collector_handler": lambda_collector,
    "services.aws_lambda.archiver_handler": lambda env: archiver(env, on_lambda=True),
    "services.aws_lambda.loader_handler": lambda env: loader(env, on_lambda=True),
    "services.aws_lambda.broadcaster_handler": lambda env: broadcaster(env, on_lambda=True),
    "services.aws_lambda.reconcile_handler": reconcile,
    "services.aws_lambda.ensure_database_handler": database_setup_lambda,
}
"""Lambda handler → what its cold start parses from the environment."""
