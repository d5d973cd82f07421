"""What reads the suppression list: :class:`SuppressionAccess`.

``LIFTOFF_SUPPRESSION_URL``: where the list of suppressed ids is kept,
``nats://host:port[,host:port]/<KV bucket>`` (a JetStream key-value bucket: Kubernetes, local
mode) or ``s3://<bucket>/<key>`` (one JSON object: AWS); unset = no suppression.
``LIFTOFF_SUPPRESSION_KEY``: the per-stack secret the ids are keyed-hashed with (HMAC-SHA256),
so the list holds no raw id (or ``LIFTOFF_SUPPRESSION_KEY_FILE``, a file holding it).
``LIFTOFF_SUPPRESSION_KEY_SECRET_ARN`` (AWS): the Secrets Manager secret holding the key, read at
cold start instead. ``LIFTOFF_SUPPRESSION_REFRESH_SECONDS``: how often a reader refreshes its
cached copy (default :data:`DEFAULT_REFRESH_SECONDS`). Read by the collector (the container and
the Lambda function) and by ``python -m services regulation`` (and the ops function on AWS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic
from urllib.parse import urlsplit

from services.contract import ConfigError, Number, Text, V, required, secret_arn, variable

_URL = "LIFTOFF_SUPPRESSION_URL"
_KEY = "LIFTOFF_SUPPRESSION_KEY"
_KEY_FILE = "LIFTOFF_SUPPRESSION_KEY_FILE"
_KEY_SECRET_ARN = "LIFTOFF_SUPPRESSION_KEY_SECRET_ARN"
_REFRESH = "LIFTOFF_SUPPRESSION_REFRESH_SECONDS"

DEFAULT_REFRESH_SECONDS = 2.0
"""How stale a reader's copy may be: a suppression takes effect within this (plus one read)."""
MINIMUM_KEY_CHARACTERS = 16
SCHEMES = ("nats", "s3")
KV_BUCKET = "liftoff-suppressed"
"""The JetStream key-value bucket the Kubernetes and local targets keep the list in."""


def suppression_url_problem(raw: str) -> str | None:
    parts = urlsplit(raw)
    name = parts.path.strip("/")
    if parts.scheme == "nats" and parts.netloc and name and "/" not in name:
        return None
    if parts.scheme == "s3" and parts.netloc and name:
        return None
    return "must be nats://host:port[,host:port]/<KV bucket> or s3://<bucket>/<key>"


def _key_problem(raw: str) -> str | None:
    if len(raw) < MINIMUM_KEY_CHARACTERS:
        return f"must be at least {MINIMUM_KEY_CHARACTERS} characters (a random secret)"
    return None


@dataclass(frozen=True)
class SuppressionAccess(Generic[V]):
    """Where the suppression list is, and the key its entries are hashed with."""

    url: V | None = variable(_URL, Text("suppression-url", suppression_url_problem))
    """Default: none (nothing is suppressed, nothing read)."""
    key: V | None = variable(_KEY, Text("suppression-key", _key_problem, secret=True))
    """Inline (a developer's shell, the Lambda function); the Kubernetes pods mount
    ``key_file`` instead."""
    key_file: V | None = variable(_KEY_FILE, Text("path"))
    refresh_seconds: float | None = variable(_REFRESH, Number(0.1))


def key_secret_arn_variable() -> Any:
    """The ``LIFTOFF_SUPPRESSION_KEY_SECRET_ARN`` field of a contract (a Lambda function's)."""
    return variable(_KEY_SECRET_ARN, secret_arn())


def check_key_secret(access: SuppressionAccess[str], key_secret_arn: str | None) -> None:
    """The list's checks when its key may come from a secret instead."""
    check_suppression(access, key_elsewhere=key_secret_arn is not None)
    if key_secret_arn is not None and access.url is None:
        raise ConfigError(f"{_KEY_SECRET_ARN} is set but {_URL} is not")


def check_suppression(access: SuppressionAccess[str], key_elsewhere: bool = False) -> None:
    """A list needs its key, inline or as a file (or ``key_elsewhere``: the Lambda's secret),
    and a key without a list is a mistake worth naming."""
    keys = [access.key, access.key_file]
    if access.url is not None and keys == [None, None] and not key_elsewhere:
        raise ConfigError(
            f"{_KEY} (or {_KEY_FILE}) is not set ({_URL} is: the entries are hashed with it)"
        )
    if None not in keys:
        raise ConfigError(f"set only one of {_KEY} and {_KEY_FILE}")
    if access.url is None and keys != [None, None]:
        raise ConfigError(f"{_URL} is not set ({_KEY} or {_KEY_FILE} is)")


def suppression_key(access: SuppressionAccess[str]) -> str:
    """The key, read from its file when given as one (the error names the variable)."""
    if access.key is not None:
        return access.key
    path = required(_KEY_FILE, access.key_file)
    try:
        with open(path, encoding="utf-8") as file:
            key = file.read().strip()
    except OSError as error:
        raise ConfigError(f"{_KEY_FILE}={path!r} cannot be read: {error.strerror}") from None
    problem = _key_problem(key)
    if problem:
        raise ConfigError(f"{_KEY_FILE}={path!r}: the key {problem}")
    return key


def suppression_url_of(stream_url: str) -> str:
    """The suppression list beside a JetStream stream: its servers + ``/`` :data:`KV_BUCKET`."""
    servers = urlsplit(stream_url).netloc
    return f"nats://{servers}/{KV_BUCKET}"


def name_of_url() -> str:
    return _URL


def require_suppression(access: SuppressionAccess[str]) -> tuple[str, str]:
    url = required(_URL, access.url, f"e.g. nats://127.0.0.1:4222/{KV_BUCKET}")
    check_suppression(access)
    return url, suppression_key(access)
