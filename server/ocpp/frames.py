"""OCPP-J RPC framing: ``[2, id, action, payload]`` CALL, ``[3, id, payload]`` CALLRESULT,
``[4, id, code, description, details]`` CALLERROR."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from server.ocpp.errors import FORMATION_VIOLATION, PROTOCOL_ERROR, OcppError

CALL, CALLRESULT, CALLERROR = 2, 3, 4
MAX_UNIQUE_ID = 36
_ID_PREFIX = re.compile(r'^\s*\[\s*2\s*,\s*"([^"\\]{1,36})"')


@dataclass(slots=True)
class Frame:
    type: int
    unique_id: str
    action: str | None = None
    payload: Any = None
    error_code: str | None = None
    error_description: str | None = None
    error_details: Any = None


class FrameError(OcppError):
    """A frame we cannot parse; unique_id is whatever could be recovered (or "-1")."""

    def __init__(self, code: str, description: str, unique_id: str, frame_type: int | None) -> None:
        super().__init__(code, description)
        self.unique_id = unique_id
        self.frame_type = frame_type


def recover_unique_id(raw: str) -> str:
    """The unique id of a CALL whose body we will not parse (oversized, broken JSON)."""
    match = _ID_PREFIX.match(raw[:128])
    return match.group(1) if match else "-1"


def parse(raw: str) -> Frame:
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise FrameError(FORMATION_VIOLATION, f"not valid JSON: {exc}", recover_unique_id(raw),
                         None) from None
    if not isinstance(message, list) or not message:
        raise FrameError(FORMATION_VIOLATION, "an OCPP-J message is a non-empty JSON array",
                         "-1", None)
    kind = message[0]
    if type(kind) is not int or kind not in (CALL, CALLRESULT, CALLERROR):
        uid = message[1] if len(message) > 1 and isinstance(message[1], str) else "-1"
        raise FrameError(FORMATION_VIOLATION, f"unknown MessageTypeId {kind!r}", uid[:MAX_UNIQUE_ID],
                         None)
    if len(message) < 2 or not isinstance(message[1], str):
        raise FrameError(FORMATION_VIOLATION, "UniqueId must be a string", "-1", kind)
    unique_id = message[1]
    if not unique_id or len(unique_id) > MAX_UNIQUE_ID:
        raise FrameError(FORMATION_VIOLATION, "UniqueId must have 1 to 36 characters",
                         unique_id[:MAX_UNIQUE_ID] or "-1", kind)
    expected = {CALL: 4, CALLRESULT: 3, CALLERROR: 5}[kind]
    if len(message) < expected:
        raise FrameError(PROTOCOL_ERROR, f"incomplete message: {len(message)} of {expected} elements",
                         unique_id, kind)
    if len(message) > expected:
        raise FrameError(FORMATION_VIOLATION, f"{len(message)} elements where {expected} belong",
                         unique_id, kind)
    if kind == CALL:
        if not isinstance(message[2], str) or not message[2]:
            raise FrameError(FORMATION_VIOLATION, "Action must be a non-empty string", unique_id, kind)
        return Frame(CALL, unique_id, action=message[2], payload=message[3])
    if kind == CALLRESULT:
        return Frame(CALLRESULT, unique_id, payload=message[2])
    return Frame(CALLERROR, unique_id, error_code=str(message[2]),
                 error_description=str(message[3]), error_details=message[4])


def call(unique_id: str, action: str, payload: Any) -> str:
    return json.dumps([CALL, unique_id, action, payload], separators=(",", ":"))


def call_result(unique_id: str, payload: Any) -> str:
    return json.dumps([CALLRESULT, unique_id, payload], separators=(",", ":"))


def call_error(unique_id: str, code: str, description: str = "", details: Any = None) -> str:
    return json.dumps([CALLERROR, unique_id, code, description, details or {}],
                      separators=(",", ":"))
