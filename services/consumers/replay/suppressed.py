"""The suppression list as the replay reads it: once, before anything is sent (a suppressed
user's events are never replayed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.consumers.replay.contract import ReplaySettings
from services.consumers.replay.lines import ArchivedEvent
from services.contract import ConfigError
from services.suppression.lists import (
    READ_TIMEOUT_SECONDS,
    SuppressedIds,
    SuppressionConfig,
    key_in_secret,
)


async def suppression(settings: ReplaySettings[str]) -> SuppressedIds | None:
    """The suppression list, read once before anything is sent (a list that cannot be read
    stops the replay: it must never send a suppressed user's events), or None when the stack
    suppresses nobody. Read once, not refreshed in the background: no S3 or NATS call runs
    beside the replay's own; the replay follows the list as it was when it started."""
    try:
        config = SuppressionConfig.of(
            settings.suppression, key_in_secret(settings.suppression_key_secret_arn)
        )
    except ConfigError:
        raise
    except Exception as error:  # the key's secret (the ops function's)
        raise ConfigError(
            f"the suppression list's key cannot be read ({error!r}); nothing was replayed"
        ) from None
    if config is None:
        return None
    listed = config.reader()
    try:
        listed.entries = await asyncio.wait_for(listed.store.read(), READ_TIMEOUT_SECONDS)
    except Exception as error:
        await listed.store.close()
        raise ConfigError(
            f"the suppression list at {config.url} cannot be read ({error!r}); nothing was "
            "replayed: a suppressed user's events must not be sent"
        ) from None
    return listed


def suppressed_check(listed: SuppressedIds | None) -> Callable[[ArchivedEvent], bool] | None:
    """Whether an event's user is on the list as read (None: the list is absent or empty)."""
    if listed is None or not listed.entries:
        return None
    return lambda event: listed.suppressed(event.data, listed.entries)
