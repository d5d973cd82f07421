"""THE registry of destination types: each type, its fields, and the destination document.

Read by the stack validation (``components/consumers/settings.py`` validates
``liftoff:destinations`` entry by entry against :data:`TYPES`) and by the broadcaster (the
``LIFTOFF_DESTINATION`` document is decoded and checked here, and each type is built by its
module's ``destination()``), so a field the broadcaster supports is a field a stack may set.
Imports nothing else of ``services`` but the filters' grammar
(:mod:`services.consumers.broadcaster.filters`).

Adding a destination type: its module ``services/consumers/broadcaster/<type>.py`` (a
:class:`~services.consumers.broadcaster.model.DestinationType` and a
``destination(name, settings, secret, api_url)`` function), one :class:`DestinationType`
entry in :data:`TYPES`, and its tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.consumers.broadcaster.filters import FilterProblem, Filters
from services.consumers.broadcaster.filters import decode as decode_filters

NAME_PATTERN = r"[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?"
"""A destination's name: it names the broadcaster's durable consumer (``broadcaster-<name>``, at
most 64 characters) and its Kubernetes objects (DNS labels: no ``_``)."""
NAME_DESCRIBE = "a destination name: lowercase letters, digits and '-', at most 52 characters"
API_URL = "apiUrl"
"""Any type, outside a stack file: replaces the API's base URL (tests, proxies, liftoff local)."""


@dataclass(frozen=True)
class Field:
    """One field of a destination type: a setting, or its secret."""

    name: str
    required: bool = False
    secret: bool = False
    """Kept apart from the document: a Pulumi secret in the stack, a secrets file or Secrets
    Manager secret at run time."""
    pattern: str = r"\S(.{0,198}\S)?"
    """What the broadcaster accepts (a full match)."""
    describe: str = "a non-empty string of at most 200 characters"
    stack_pattern: str | None = None
    """Stricter in a stack file (default: ``pattern``), e.g. webhooks over https only."""

    def accepts(self, value: str, *, in_stack: bool = False) -> bool:
        pattern = (self.stack_pattern or self.pattern) if in_stack else self.pattern
        return re.fullmatch(pattern, value) is not None


@dataclass(frozen=True)
class DestinationType:
    name: str
    module: str
    """``services.consumers.broadcaster.<module>``, whose ``destination(name, settings, secret,
    api_url)`` builds it."""
    fields: tuple[Field, ...]
    """Required settings, optional settings, then the secret: the order a stack's problems are
    reported in."""
    segment_names: tuple[str, ...] = ()
    """The keys of Segment's ``integrations`` object that name this type (``{"Mixpanel":
    false}``), classic and Actions destinations: the filters honour them."""

    @property
    def settings(self) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if not f.secret)

    @property
    def secret(self) -> Field:
        """The one credential the type needs."""
        (secret,) = (f for f in self.fields if f.secret)
        return secret


def _secret(name: str) -> Field:
    return Field(name, required=True, secret=True, describe="a credential string")


_URL = Field(
    "url",
    required=True,
    pattern=r"https?://\S+",
    stack_pattern=r"https://\S+",
    describe="an https:// URL",
)
_REGION = Field("region", pattern="us|eu", describe="'us' or 'eu' (the API's data residency)")
_GROUP_KEY = Field(
    "groupKey", describe="the group key of Mixpanel group analytics, such as company_id"
)
_GROUP_TYPE = Field("groupType", describe="the group type of Amplitude's groups, such as company")
_MEASUREMENT_ID = Field(
    "measurementId",
    required=True,
    pattern=r"G-[A-Z0-9]{4,20}",
    describe="a GA4 measurement id such as G-ABC123DEF4",
)

TYPES: dict[str, DestinationType] = {
    kind.name: kind
    for kind in (
        DestinationType(
            "webhook",
            "webhook",
            (_URL, _secret("signingSecret")),
            ("Webhooks", "Webhooks (Actions)", "Webhook"),
        ),
        DestinationType(
            "mixpanel",
            "mixpanel",
            (_REGION, _GROUP_KEY, _secret("projectToken")),
            ("Mixpanel", "Mixpanel (Actions)"),
        ),
        DestinationType(
            "amplitude",
            "amplitude",
            (_REGION, _GROUP_TYPE, _secret("apiKey")),
            ("Amplitude", "Actions Amplitude"),
        ),
        DestinationType(
            "ga4",
            "ga4",
            (_MEASUREMENT_ID, _REGION, _secret("apiSecret")),
            ("Google Analytics 4", "Google Analytics 4 Cloud"),
        ),
    )
}


@dataclass(frozen=True)
class DestinationDocument:
    """``LIFTOFF_DESTINATION``: everything about a destination but its secret."""

    name: str
    type: str
    settings: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    """Default: every source."""
    events: tuple[str, ...] = ()
    """Default: every event."""
    filters: Filters = field(default_factory=Filters)
    """Default: only the events' ``integrations`` object filters."""

    @property
    def consumer_name(self) -> str:
        """The broadcaster's durable consumer (and process, and function) name."""
        return consumer_name(self.name)

    @property
    def integration_names(self) -> tuple[str, ...]:
        """The ``integrations`` keys naming this destination, the most specific first."""
        return (self.name, *TYPES[self.type].segment_names)

    def encode(self) -> str:
        """The document's one text (what every realization declares). Default filters are left
        out, so a stack without filters declares the text it declared before they existed (no
        broadcaster restarted by the upgrade)."""
        document: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "settings": dict(sorted(self.settings.items())),
            "sources": list(self.sources),
            "events": list(self.events),
        }
        if not self.filters.is_default:
            document["filters"] = self.filters.encode()
        return json.dumps(document, sort_keys=True)


def consumer_name(destination: str) -> str:
    return f"broadcaster-{destination}"


def decode(document: Any) -> DestinationDocument:
    """The document, checked against the registry; a ValueError says what is wrong (never
    quoting a value that could be a secret: secrets are not in the document)."""
    if not isinstance(document, dict):
        raise ValueError("must be a JSON object")
    name, kind = document.get("name"), document.get("type")
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise ValueError(f"name={name!r}: use lower-case letters, digits and '-' (max 52)")
    if kind not in TYPES:
        raise ValueError(f"type={kind!r}: use one of {', '.join(TYPES)}")
    settings = _settings(TYPES[kind], document.get("settings") or {})
    lists = {}
    for key in ("sources", "events"):
        value = document.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key} must be a list of strings")
        lists[key] = tuple(value)
    try:
        filters = decode_filters(document.get("filters"))
    except FilterProblem as problem:
        raise ValueError(str(problem)) from None
    return DestinationDocument(name, kind, settings, lists["sources"], lists["events"], filters)


def _settings(kind: DestinationType, settings: Any) -> dict[str, str]:
    if not isinstance(settings, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in settings.items()
    ):
        raise ValueError("settings must map names to strings")
    fields = {f.name: f for f in kind.settings}
    unknown = sorted(set(settings) - {*fields, API_URL})
    if unknown:
        allowed = ", ".join(sorted({*fields, API_URL}))
        raise ValueError(f"settings {unknown} are not {kind.name} settings (allowed: {allowed})")
    for item in kind.settings:
        value = settings.get(item.name)
        if item.required and not (value or "").strip():
            raise ValueError(f"settings.{item.name} is required for {kind.name}")
        if value is not None and not item.accepts(value):
            raise ValueError(f"settings.{item.name}={value!r}: use {item.describe}")
    api_url = settings.get(API_URL)
    if api_url is not None and not re.fullmatch(r"https?://\S+", api_url):
        raise ValueError(f"settings.{API_URL} must be an http(s) URL")
    return dict(settings)
