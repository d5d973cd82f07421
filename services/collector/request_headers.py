"""The request headers the collector reads, decoded once for both transports.

Whatever bytes a client puts in a header, reading it ends in a value or in a 4xx naming the
header, the value and what is allowed (:class:`~services.events.limits.InvalidInput`), never in an
exception: the ASGI transport hands over raw bytes (decoded as Latin-1, which cannot fail), API
Gateway hands over text (duplicates already joined with commas).

- ``Authorization``, ``Content-Type``, ``Origin``, ``Host``: one value; sent twice → 400 (two
  write keys or two media types would leave the answer to whichever copy a reader takes; an
  ``Authorization`` is never quoted back, it holds credentials);
- ``Content-Encoding``: repeats are a list of codings (RFC 9110), joined, and the collector
  accepts one (``gzip``) → 415 otherwise;
- ``Origin``: a browser sends an ASCII serialisation (or ``null``) → 400 otherwise. Only its
  bytes are checked here: which origins a source allows is :mod:`services.collector.browser`'s
  business, and apps' origins such as ``capacitor://localhost`` must pass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.events.limits import InvalidInput

SINGLE_VALUED = {
    "authorization": "Authorization",
    "content-type": "Content-Type",
    "origin": "Origin",
    "host": "Host",
}
_READ = {
    *SINGLE_VALUED,
    "content-encoding",
    "content-length",
    "if-none-match",
    "accept-encoding",
}
SHOWN_CHARACTERS = 100
"""How much of a refused value an answer quotes."""


def shown(value: str) -> str:
    """A header value quoted for an error message: ASCII only (other bytes escaped), cut short."""
    text = ascii(value[:SHOWN_CHARACTERS])
    return text if len(value) <= SHOWN_CHARACTERS else text + " (cut)"


def invalid_header(name: str, value: str, allowed: str) -> InvalidInput:
    return InvalidInput(
        400, "invalid_header", f"header {name}: {shown(value)} is not {allowed}", field=name
    )


def _printable_ascii(value: str) -> bool:
    return value.isascii() and value.isprintable()


@dataclass(frozen=True, slots=True)
class RequestHeaders:
    authorization: str | None = None
    content_type: str = ""
    content_encoding: str = ""
    origin: str | None = None
    host: str | None = None
    content_length: str | None = None
    if_none_match: str | None = None
    accept_encoding: str | None = None

    @classmethod
    def from_raw(cls, pairs: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
        """From an ASGI scope's ``headers`` (lower-case names, raw values)."""
        found: dict[str, list[str]] = {}
        for name, value in pairs:
            text_name = name.decode("latin-1")
            if text_name in _READ:
                found.setdefault(text_name, []).append(value.decode("latin-1"))
        return cls._from_lists(found)

    @classmethod
    def from_mapping(cls, headers: Mapping[str, str]) -> RequestHeaders:
        """From API Gateway's ``headers`` (lower-case names; repeats joined with commas)."""
        return cls._from_lists(
            {name: [value] for name, value in headers.items() if name in _READ and value}
        )

    @classmethod
    def _from_lists(cls, found: dict[str, list[str]]) -> RequestHeaders:
        for name, label in SINGLE_VALUED.items():
            values = found.get(name, [])
            if len(values) > 1:
                raise _sent_more_than_once(label, values)
        origin = _one(found, "origin")
        if origin is not None and not _printable_ascii(origin):
            raise invalid_header(
                "Origin", origin, "an origin as browsers send it (printable ASCII, or null)"
            )
        return cls(
            authorization=_one(found, "authorization"),
            content_type=_one(found, "content-type") or "",
            content_encoding=", ".join(found.get("content-encoding", [])),
            origin=origin,
            host=_one(found, "host"),
            content_length=_one(found, "content-length"),
            if_none_match=_one(found, "if-none-match"),
            accept_encoding=_one(found, "accept-encoding"),
        )


def _sent_more_than_once(label: str, values: list[str]) -> InvalidInput:
    """A header sent twice; the credentials of an ``Authorization`` are never quoted back."""
    allowed = f"one value: the header was sent {len(values)} times"
    if label != "Authorization":
        return invalid_header(label, ", ".join(values), allowed)
    return InvalidInput(
        400,
        "invalid_header",
        f"header Authorization: sent {len(values)} times (values not shown: they hold "
        "credentials); send it once, as Basic base64(<write key>:)",
        field=label,
    )


def _one(found: dict[str, list[str]], name: str) -> str | None:
    values = found.get(name)
    return values[-1] if values else None


def client_address(host: str | None) -> str | None:
    """The client address the ASGI server established, checked: the TCP peer is always an IP
    address, so anything else came from a trusted proxy's ``X-Forwarded-For`` (uvicorn takes
    the nearest entry that is not itself a trusted proxy: a client can write that entry when
    its own peer is trusted)."""
    if host is None:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise invalid_header(
            "X-Forwarded-For",
            host,
            "an IP address (the client entry a trusted proxy forwarded, optionally with a port)",
        ) from None
    return host
