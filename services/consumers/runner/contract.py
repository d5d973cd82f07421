"""What every stream consumer reads, on each runtime: :class:`ConsumerRuntime` (a JetStream
process, ``python -m services <consumer>``) and :class:`FunctionRuntime` (a Lambda function on a
Kinesis event-source mapping, which sizes the batches and is the checkpoint).

Each consumer's own contract (``services/consumers/<consumer>/contract.py``) nests one of them
beside what that consumer needs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from services.contract import (
    Integer,
    Number,
    Process,
    Text,
    V,
    check_pattern,
    group,
    log_level_variable,
    process,
    variable,
)
from services.stream.contract import (
    StreamAccess,
    dead_letter_or_default,
    dead_letter_url_variable,
    stream_url,
)

_CONSUMER_NAME = "LIFTOFF_CONSUMER_NAME"
_HEALTH_PORT = "LIFTOFF_HEALTH_PORT"
_HEALTH_HOST = "LIFTOFF_HEALTH_HOST"
_ACK_WAIT = "LIFTOFF_CONSUMER_ACK_WAIT_SECONDS"
_SHUTDOWN_GRACE = "LIFTOFF_CONSUMER_SHUTDOWN_GRACE_SECONDS"
_LAG_INTERVAL = "LIFTOFF_CONSUMER_LAG_INTERVAL_SECONDS"
_BUFFER_BYTES = "LIFTOFF_CONSUMER_BUFFER_BYTES"

DEFAULT_HEALTH_PORT = 8081
DEFAULT_HEALTH_HOST = "0.0.0.0"
"""All addresses, for the kubelet's probes (liftoff local keeps them on 127.0.0.1)."""
DEFAULT_ACK_WAIT_SECONDS = 30.0
DEFAULT_SHUTDOWN_GRACE_SECONDS = 20.0
DEFAULT_LAG_INTERVAL_SECONDS = 15.0
DEFAULT_BUFFER_BYTES = 128 * 2**20
"""A quarter of the 512 MiB memory limit the Kubernetes target gives every consumer: the rest
is the interpreter and libraries (~60-80 MiB), the sink's work on one batch and headroom."""

_NAME = check_pattern(r"[A-Za-z0-9_-]{1,64}", "must be letters, digits, '_' or '-'")


def _check_ip(raw: str) -> str | None:
    try:
        ipaddress.ip_address(raw)
    except ValueError:
        return "is not an IP address (e.g. 0.0.0.0, or 127.0.0.1 for loopback only)"
    return None


def consumer_name_variable() -> Any:
    """``LIFTOFF_CONSUMER_NAME``: the durable consumer's name (default: the consumer's own,
    ``broadcaster-<destination>`` for a broadcaster)."""
    return variable(_CONSUMER_NAME, Text("consumer-name", _NAME))


@dataclass(frozen=True)
class ConsumerRuntime(Generic[V]):
    """A consumer process on JetStream: its stream, durable consumer, dead letters, probes."""

    stream: StreamAccess[V] = group(StreamAccess)
    consumer_name: str | None = consumer_name_variable()
    dead_letter_url: V | None = dead_letter_url_variable()
    """Default: the stream's servers + ``/DEADLETTER``."""
    log_level: str | None = log_level_variable()
    health_port: int | None = variable(_HEALTH_PORT, Integer(0, 65535))
    """Default :data:`DEFAULT_HEALTH_PORT`; 0: no health endpoints."""
    health_host: str | None = variable(_HEALTH_HOST, Text("ip", _check_ip))
    """Default :data:`DEFAULT_HEALTH_HOST`."""
    ack_wait_seconds: float | None = variable(_ACK_WAIT, Number(1.0))
    shutdown_grace_seconds: float | None = variable(_SHUTDOWN_GRACE, Number(0.0))
    lag_interval_seconds: float | None = variable(_LAG_INTERVAL, Number(0.5))
    buffer_bytes: int | None = variable(_BUFFER_BYTES, Integer(2**20, 2**40))
    """The most the process holds of stream messages at once, over all its partitions
    (``services.consumers.runner.budget``). Default :data:`DEFAULT_BUFFER_BYTES`."""


@dataclass(frozen=True)
class FunctionRuntime(Generic[V]):
    """A consumer as a Lambda function: records arrive in the invocation."""

    consumer_name: str | None = consumer_name_variable()
    dead_letter_url: V | None = dead_letter_url_variable()
    """Required: ``sqs://<queue-name>``."""
    log_level: str | None = log_level_variable()


def check_runtime(runtime: ConsumerRuntime[str]) -> None:
    """What a JetStream consumer process cannot start without."""
    stream_url(runtime.stream, ("nats",))


def check_function(runtime: FunctionRuntime[str]) -> None:
    """What a consumer function cannot start without."""
    dead_letter_or_default(runtime.dead_letter_url, None)


class HasRuntime(Protocol):
    @property
    def runtime(self) -> ConsumerRuntime[str] | FunctionRuntime[str]: ...


R = TypeVar("R", bound=HasRuntime)


def consumer_process(settings: type[R], check: Callable[[R], object]) -> Process[R]:
    """A consumer's contract, as a process or as a function: what the consumer itself needs
    (``check``), then what its runtime cannot start without."""

    def checked(found: R) -> None:
        check(found)
        runtime = found.runtime
        if isinstance(runtime, ConsumerRuntime):
            check_runtime(runtime)
        else:
            check_function(runtime)

    return process(settings, checked)
