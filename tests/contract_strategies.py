"""Hypothesis strategies for the settings of every runtime contract, from their declarations.

Each variable's examples come from its kind (`services.contract`: integers and numbers within
their bounds, flags, lists, JSON documents, and text by its grammar: stream URLs, paths, ARNs,
...). `valid(settings)` then completes what a process cannot start without (a stream URL of
the scheme it takes, its write keys, a bucket...), so that every example is one the process
must accept and give back unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import string
from typing import Any

from hypothesis import strategies as st

from services.consumers.broadcaster.destinations import TYPES, DestinationDocument
from services.consumers.broadcaster.filters import Filters
from services.consumers.broadcaster.filters import decode as decode_filters
from services.contract import LOG_LEVELS, Flag, Integer, Json, Kind, Names, Number, Text
from services.postgres.contract import GRANTABLE_ROLES, SSLMODES
from services.regulations.contract import DeletionDestination
from services.warehouse.columns import (
    COLUMN_TYPES,
    FIXED_COLUMNS,
    IDENTIFIER_PATTERN,
    SOURCE_PATTERN,
)

_WORD = string.ascii_letters + string.digits + "_-"
_PRINTABLE = st.characters(min_codepoint=33, max_codepoint=126)


def _text() -> st.SearchStrategy[str]:
    """Text a variable holds as is: no surrounding blanks (they are stripped), not empty."""
    inner = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
    return st.builds(lambda a, b, c: a + b + c, _PRINTABLE, inner, _PRINTABLE) | _PRINTABLE


def _word(max_size: int = 20) -> st.SearchStrategy[str]:
    return st.text(_WORD, min_size=1, max_size=max_size)


def _host() -> st.SearchStrategy[str]:
    label = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
    return st.lists(label, min_size=1, max_size=3).map(".".join)


def _stream_url() -> st.SearchStrategy[str]:
    nats = st.builds(
        lambda host, port, stream, partitions: (
            f"nats://{host}:{port}/{stream}"
            + (f"?partitions={partitions}" if partitions > 1 else "")
        ),
        _host(),
        st.integers(1, 65535),
        st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True),
        st.integers(1, 64),
    )
    kinesis = st.from_regex(r"[A-Za-z0-9_.-]{1,30}", fullmatch=True).map("kinesis://{}".format)
    return nats | kinesis


def _dead_letter_url() -> st.SearchStrategy[str]:
    nats = st.builds(lambda h, p: f"nats://{h}:{p}/DEADLETTER", _host(), st.integers(1, 65535))
    return nats | _word(40).map("sqs://{}".format)


def _filters() -> st.SearchStrategy[Filters]:
    condition = st.fixed_dictionaries(
        {"field": st.sampled_from(["properties.plan", "context.page.path"])},
        optional={"type": st.sampled_from([["page"], ["track", "identify"]])},
    ).flatmap(
        lambda c: st.sampled_from([{"in": ["free", 1, None, True]}, {"exists": False}]).map(
            lambda operator: {**c, **operator}
        )
    )
    document = st.fixed_dictionaries(
        {},
        optional={
            "integrations": st.sampled_from(["honour", "ignore"]),
            "consent": st.lists(_word(), min_size=1, max_size=2),
            "consentMissing": st.sampled_from(["send", "drop"]),
            "drop": st.lists(condition, min_size=1, max_size=2),
            "samplePercent": st.floats(0.001, 100),
            "allowFields": st.just(["properties.plan", "traits.email"]),
            "blockFields": st.just(["context.ip"]),
        },
    )
    return document.map(decode_filters)


def _destination() -> st.SearchStrategy[DestinationDocument]:
    def for_type(kind: str) -> st.SearchStrategy[DestinationDocument]:
        settings = st.fixed_dictionaries(
            {f.name: st.from_regex(f.pattern, fullmatch=True) for f in TYPES[kind].settings
             if f.required},
            optional={f.name: st.from_regex(f.pattern, fullmatch=True)
                      for f in TYPES[kind].settings if not f.required},
        )  # fmt: skip
        names = st.lists(_text(), max_size=3).map(tuple)
        return st.builds(
            DestinationDocument,
            name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
            type=st.just(kind),
            settings=settings,
            sources=names,
            events=names,
            filters=_filters(),
        )

    return st.sampled_from(sorted(TYPES)).flatmap(for_type)


def _sorted_deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_deep(value[key]) for key in sorted(value)}
    return value


_ORIGINS = st.dictionaries(
    _word(), st.lists(_text(), min_size=1, max_size=3).map(tuple), min_size=1, max_size=3
)
_ADDRESSES = st.ip_addresses().map(str)
_TEXT_BY_GRAMMAR: dict[str, st.SearchStrategy[str]] = {
    "stream-url": _stream_url(),
    "dead-letter-url": _dead_letter_url(),
    "url": st.builds(lambda h, p: f"https://{h}{p}", _host(), st.sampled_from(["", "/", "/a/b"])),
    "path": st.lists(_word(), min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts)),
    "log-level": st.sampled_from([*LOG_LEVELS, *(level.lower() for level in LOG_LEVELS)]),
    "ip": _ADDRESSES,
    "host": _host(),
    "port": st.integers(1, 65535).map(str),
    "identifier": st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True),
    "sslmode": st.sampled_from(SSLMODES),
    "secret-arn": _word().map("arn:aws:secretsmanager:us-east-1:123456789012:secret:{}".format),
    "bucket": st.from_regex(r"[a-z0-9][a-z0-9-]{2,20}", fullmatch=True),
    "key-prefix": st.lists(_word(), min_size=1, max_size=3).map("/".join),
    "aws-region": st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-2"]),
    "consumer-name": _word(64),
    "suppression-url": st.builds("nats://{}:4222/{}".format, _host(), _word())
    | st.builds("s3://{}/{}".format, _word(), _word()),
    "suppression-key": st.from_regex(r"[A-Za-z0-9]{16,40}", fullmatch=True),
    "sqs-urls": st.lists(_word().map("sqs://{}".format), min_size=1, max_size=4).map(",".join),
}
_NAMES_BY_GRAMMAR: dict[str, st.SearchStrategy[str]] = {
    "source": _word(),
    "cidr": st.ip_addresses().map(lambda a: f"{a}/{a.max_prefixlen}"),
    "role": st.sampled_from(GRANTABLE_ROLES),
    "consumer-names": st.sampled_from(["archiver", "loader"])
    | st.from_regex(r"broadcaster-[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
}
_IDENTIFIER = st.from_regex(IDENTIFIER_PATTERN, fullmatch=True)
_DECLARED_COLUMNS = st.dictionaries(
    st.from_regex(SOURCE_PATTERN, fullmatch=True),
    st.dictionaries(
        _IDENTIFIER,
        st.dictionaries(
            _IDENTIFIER.filter(lambda name: name not in FIXED_COLUMNS),
            st.sampled_from(COLUMN_TYPES),
            min_size=1,
            max_size=3,
        ),
        max_size=3,
    ),
    min_size=1,
    max_size=2,
)
"""Declared column types, sorted as the parser gives them back."""
_JSON_BY_GRAMMAR: dict[str, st.SearchStrategy[Any]] = {
    "destination": _destination(),
    "origins": _ORIGINS,
    "regulation-destinations": st.lists(
        st.builds(
            DeletionDestination,
            name=_word(),
            type=st.just("webhook"),
            settings=st.builds(lambda h: {"url": f"https://{h}/delete"}, _host()),
        ),
        max_size=3,
    ).map(tuple),
    "warehouse-columns": _DECLARED_COLUMNS.map(_sorted_deep),
}


def value(kind: Kind[Any]) -> st.SearchStrategy[Any]:
    """Examples of what a variable of this kind holds."""
    if isinstance(kind, Integer):
        return st.integers(kind.minimum, kind.maximum)
    if isinstance(kind, Number):
        low = kind.minimum
        return st.integers(math.ceil(low), 10**9) | st.floats(
            low, 1e9, allow_nan=False, allow_infinity=False
        )
    if isinstance(kind, Flag):
        return st.booleans()
    if isinstance(kind, Names):
        return st.lists(_NAMES_BY_GRAMMAR[kind.grammar], min_size=1, max_size=4).map(tuple)
    if isinstance(kind, Json):
        return _JSON_BY_GRAMMAR[kind.grammar]
    assert isinstance(kind, Text) or kind.grammar in _TEXT_BY_GRAMMAR, kind
    return _TEXT_BY_GRAMMAR.get(kind.grammar, _text())


def settings(cls: type[Any]) -> st.SearchStrategy[Any]:
    """Any settings of ``cls``: each variable set or not, groups recursively."""
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for item in dataclasses.fields(cls):
        if "variable" in item.metadata:
            fields[item.name] = st.none() | value(item.metadata["variable"].kind)
        elif "group" in item.metadata:
            fields[item.name] = settings(item.metadata["group"])
    return st.fixed_dictionaries(fields).map(lambda values: cls(**values))
