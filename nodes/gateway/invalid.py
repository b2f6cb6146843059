"""Explaining a client frame that failed validation: under which req_ids to refuse it, and which
field msgspec's array path points at (messages are arrays on the wire)."""

from __future__ import annotations

import re
from typing import get_args

import msgspec

from cluster.protocol import ClientRequest, field_at, lenient_decode

_CLIENT_TYPES = {cls.__name__: cls for cls in get_args(ClientRequest)}
_ARRAY_PATH = re.compile(r"`\$\[(\d+)\](?:\[(\d+)\])?")


def readable_req_ids(frame: bytes) -> list[int]:
    """The client's req_ids in a frame that failed validation, read leniently, so that the refusal
    reaches the request that caused it: every client request is an array [tag, req_id, ...], sent
    alone or in a batch. Ids that cannot be read, or of a message type no client sends, are left
    out (the caller answers req_id 0)."""
    raw = lenient_decode(frame)
    if not isinstance(raw, list):
        return []
    requests = [raw] if raw and isinstance(raw[0], str) else raw
    ids = []
    for req in requests:
        if (isinstance(req, list) and len(req) > 1 and isinstance(req[0], str)
                and req[0] in _CLIENT_TYPES and type(req[1]) is int and 0 < req[1] < 2**63):
            ids.append(req[1])
    return ids


def describe_invalid(frame: bytes, error: msgspec.ValidationError) -> str:
    """msgspec's error for a client frame, with the field its array path points at named: messages
    are arrays on the wire, so "at `$[0][4]`" alone would leave the client counting fields."""
    text = str(error)
    match = _ARRAY_PATH.search(text)
    if match is None:
        return text
    raw = lenient_decode(frame)
    first, second = int(match.group(1)), match.group(2)
    # one message: $[field]; a batch: $[message][field]
    message, index = (raw, first) if second is None else (
        raw[first] if isinstance(raw, list) and first < len(raw) else None, int(second))
    if not isinstance(message, list) or not message or not isinstance(message[0], str):
        return text
    cls = _CLIENT_TYPES.get(message[0])
    named = field_at(cls, index) if cls is not None else None
    return f"{text} ({named})" if named else text
