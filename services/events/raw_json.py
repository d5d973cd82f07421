"""Byte-level scans of JSON the decoder already accepted: nesting depth, and a top-level
member removed byte for byte (the write key, before an event is quarantined). Regexes and
bytes operations in C; nothing here decodes a whole event."""

from __future__ import annotations

import json
import re
from itertools import accumulate

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


# +1 for an opening bracket, -1 for a closing one (indexed by byte value).
_DEPTH_STEP = tuple(1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256))


def nested_deeper_than(raw: bytes, limit: int) -> bool:
    """Is this JSON (known to decode) nested deeper than ``limit``? Strings removed, then the
    running bracket count, all in C (map/accumulate over bytes), a fraction of a Python walk
    of the decoded value."""
    # Fewer brackets than the limit cannot nest past it: nothing to do for ordinary events.
    if raw.count(b"{") + raw.count(b"[") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > limit


def without_write_key(raw: bytes) -> bytes:
    """The event as sent, minus its top-level ``writeKey`` (a credential, kept out of the
    quarantine as out of the stream), whatever its spelling on the wire: ``"write\\u004bey"``
    is the same member to a JSON reader, and the event's bytes need not be UTF-8. Everything
    else is kept byte for byte. ``raw`` is syntactically JSON (the envelope's decoder checked
    it), so a scan of its top-level members suffices; it never recurses, however deep."""
    if b"writeKey" not in raw and b"\\u" not in raw:
        return raw  # no spelling of the name is possible
    members = top_level_members(raw)
    if not members:
        return raw
    kept = [i for i, (start, end, _) in enumerate(members) if not _is_write_key(raw[start:end])]
    if len(kept) == len(members):
        return raw
    parts = [raw[: members[0][0]]]
    for position, i in enumerate(kept):
        if position:  # the separator that preceded this member as sent
            parts.append(raw[members[i - 1][2] : members[i][0]])
        parts.append(raw[members[i][0] : members[i][2]])
    parts.append(raw[members[-1][2] :])
    return b"".join(parts)


_WHITESPACE = re.compile(rb"[ \t\r\n]*")


_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
"""A string (skipped whole) or a bracket: what matters inside a container value."""


_SCALAR_END = re.compile(rb"[ \t\r\n,}\]]")


def _skip_whitespace(raw: bytes, at: int) -> int:
    return _WHITESPACE.match(raw, at).end()  # type: ignore[union-attr]


_MEMBER = re.compile(
    rb'[ \t\r\n]*("(?:[^"\\]|\\.)*")[ \t\r\n]*:[ \t\r\n]*'
    rb'(?:"(?:[^"\\]|\\.)*"|[^ \t\r\n"\[\]{},:]+|([\[{]))',
    re.DOTALL,
)
"""One member, name and value, in one C-level match; a container value only starts here."""


_AFTER_MEMBER = re.compile(rb"[ \t\r\n]*(,|})")


def top_level_members(raw: bytes) -> list[tuple[int, int, int]]:
    """(name start, name end, value end) of each member of a top-level object; [] otherwise."""
    members: list[tuple[int, int, int]] = []
    at = _skip_whitespace(raw, 0)
    if raw[at : at + 1] != b"{":
        return []
    if (empty := _AFTER_MEMBER.match(raw, at + 1)) and empty.group(1) == b"}":
        return []
    at += 1
    while True:
        member = _MEMBER.match(raw, at)
        if member is None:
            return []
        value_end = _value_end(raw, member.start(2)) if member.group(2) else member.end()
        members.append((member.start(1), member.end(1), value_end))
        after = _AFTER_MEMBER.match(raw, value_end)
        if after is None or after.group(1) == b"}":
            return members
        at = after.end()


def _value_end(raw: bytes, at: int) -> int:
    """Where the JSON value starting at ``at`` ends (regex scans in C: strings skipped whole,
    brackets counted)."""
    first = raw[at : at + 1]
    if first == b'"':
        match = _JSON_STRING.match(raw, at)
        return match.end() if match else len(raw)
    if first not in (b"{", b"["):
        end = _SCALAR_END.search(raw, at)
        return end.start() if end else len(raw)
    depth = 0
    for token in _STRUCTURE.finditer(raw, at):
        bracket = token.group()
        if bracket in (b"{", b"["):
            depth += 1
        elif bracket in (b"}", b"]"):
            depth -= 1
            if depth == 0:
                return token.end()
    return len(raw)


def _is_write_key(name: bytes) -> bool:
    """Is this JSON string token (quotes included) the name ``writeKey``, however spelled?"""
    if b"\\" not in name:  # no escape: the name is its bytes
        return name == b'"writeKey"'
    # Bytes that are not UTF-8 become lone surrogates: such a name is never "writeKey".
    try:
        return bool(json.loads(name.decode("utf-8", "surrogateescape")) == "writeKey")
    except ValueError:
        return False
