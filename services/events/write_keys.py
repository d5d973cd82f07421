"""Write keys: which source a request belongs to.

Configured as a JSON object mapping source name → write key, e.g. ``{"web": "k1", "ios": "k2"}``.
Source names become NATS subject tokens, so they are limited to letters, digits, '_' and '-'.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping

_SOURCE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def json_object(text: str, mapping: str) -> dict[str, object]:
    """``text`` as a JSON object, or a ValueError that says what was expected (``mapping``,
    e.g. "source name to write key"). JSONDecodeError's message quotes no input, so no
    secret leaks into logs."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"is not valid JSON ({error.msg} at position {error.pos})") from None
    if not isinstance(value, dict):
        raise ValueError(f"must be a JSON object mapping {mapping}")
    return value


class WriteKeys:
    def __init__(self, keys_by_source: Mapping[str, object]) -> None:
        if not keys_by_source:
            raise ValueError("must name at least one source")
        sources_by_key: dict[str, str] = {}
        for source, key in keys_by_source.items():
            if not isinstance(source, str) or not _SOURCE_NAME.match(source):
                raise ValueError(f"source name {source!r} must be 1-64 letters, digits, '_' or '-'")
            if not isinstance(key, str) or not key:
                raise ValueError(f"the write key of source {source!r} must be a non-empty string")
            if key in sources_by_key:
                raise ValueError(
                    f"sources {sources_by_key[key]!r} and {source!r} share one write key"
                )
            sources_by_key[key] = source
        self._sources_by_key = sources_by_key

    @classmethod
    def from_json(cls, text: str) -> WriteKeys:
        return cls(json_object(text, "source name to write key"))

    @property
    def sources(self) -> list[str]:
        return sorted(self._sources_by_key.values())

    def source_for(self, write_key: str | None) -> str | None:
        if not write_key:
            return None
        return self._sources_by_key.get(write_key)


class InvalidCredentials(ValueError):
    """An ``Authorization`` header that does not hold HTTP Basic credentials; the message says
    what is wrong with it without quoting the credentials."""


BASIC_FORM = "Basic base64(<write key>:)"


def basic_auth_username(authorization: str | None) -> str | None:
    """The username of an HTTP Basic ``Authorization`` header (Segment: write key, no password).

    None when there is no header; :class:`InvalidCredentials` for anything that is not
    ``Basic <base64 of UTF-8 "username:password">`` with a username."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        shown_scheme = ascii(scheme[:20])
        raise InvalidCredentials(f"the scheme is {shown_scheme}, not Basic")
    credentials = credentials.strip()
    if not credentials.isascii():
        raise InvalidCredentials("the credentials hold bytes that are not ASCII (base64 is)")
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except binascii.Error:
        raise InvalidCredentials("the credentials are not base64") from None
    except UnicodeDecodeError:
        raise InvalidCredentials("the credentials decode to bytes that are not UTF-8") from None
    username, _, _password = decoded.partition(":")
    if not username:
        raise InvalidCredentials("the credentials carry no username (the write key)")
    return username
