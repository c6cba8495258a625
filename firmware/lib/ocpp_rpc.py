"""OCPP-J 1.6 RPC framing: CALL [2, id, action, payload], CALLRESULT [3, id, payload],
CALLERROR [4, id, code, description, details]; the 1.6 error codes; a compact validator
for the payloads the central system sends.

Validation specs are dicts `field -> type code`; a leading "!" marks a required field:
  "s20"  string of at most 20 characters ("s" any length)
  "i"    integer           "d"  number (decimal)        "b"  boolean
  "t"    ISO 8601 date-time string
  "o"    object            "a"  array
  "e:A|B|C"  one of the listed strings
Missing required field -> OccurenceConstraintViolation (1.6 spells it with one "r"),
wrong JSON type -> TypeConstraintViolation, wrong value (enum, length, date) ->
PropertyConstraintViolation, a payload that is not an object -> FormationViolation.
"""

import json
import sys

CALL = 2
CALLRESULT = 3
CALLERROR = 4

NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
INTERNAL_ERROR = "InternalError"
PROTOCOL_ERROR = "ProtocolError"
SECURITY_ERROR = "SecurityError"
FORMATION_VIOLATION = "FormationViolation"
PROPERTY_VIOLATION = "PropertyConstraintViolation"
OCCURENCE_VIOLATION = "OccurenceConstraintViolation"
TYPE_VIOLATION = "TypeConstraintViolation"
GENERIC_ERROR = "GenericError"


class CallError(Exception):
    """A CALLERROR to send (raised by a handler) or received (from the central system)."""

    def __init__(self, code, description="", details=None):
        super().__init__(code, description)
        self.code = code
        self.description = description
        self.details = details


def check(payload, spec, where=""):
    """Raise CallError if `payload` does not fit `spec` (see the module docstring); the
    validator's code is in ocpp_check, loaded when a CALL of the central system arrives;
    loaded here for an answer's check (idTagInfo), it is dropped again at once."""
    mods = sys.modules
    loaded = "ocpp_check" in mods
    import ocpp_check

    try:
        return ocpp_check.check(payload, spec, where)
    finally:
        if not loaded:
            mods.pop("ocpp_check", None)


def parse(text):
    """(type, id, action_or_None, payload_or_error) of a frame; CallError(ProtocolError or
    FormationViolation) otherwise, with `err.details` = the id of a malformed CALL, to
    answer with CALLERROR; None when the frame is not to be answered: no usable id, a
    malformed CALLRESULT/CALLERROR (answers are not answered) or an unknown message type
    (OCPP-J 1.6 4.1.3: ignored)."""
    try:
        msg = json.loads(text)
    except Exception:  # ValueError; RecursionError (CPython) or MemoryError for deep nesting
        raise CallError(FORMATION_VIOLATION, "not JSON")
    if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str):
        raise CallError(FORMATION_VIOLATION, "not an OCPP-J message")
    kind = msg[0]
    uid = msg[1]
    if kind == CALL:
        if len(msg) != 4 or not isinstance(msg[2], str):
            raise CallError(PROTOCOL_ERROR, "a CALL is [2, id, action, payload]", uid)
        if len(uid) > 36:
            raise CallError(PROTOCOL_ERROR, "message id longer than 36 characters", uid)
        return kind, uid, msg[2], msg[3]
    if kind == CALLRESULT:
        return kind, uid, None, msg[2]
    if kind == CALLERROR:
        if len(msg) < 4:
            raise CallError(PROTOCOL_ERROR, "a CALLERROR is [4, id, code, description, details]")
        return kind, uid, None, (msg[2], msg[3], msg[4] if len(msg) > 4 else {})
    raise CallError(PROTOCOL_ERROR, "unknown message type %r" % (kind,))


def call(uid, action, payload):
    return json.dumps([CALL, uid, action, payload])


def result(uid, payload):
    return json.dumps([CALLRESULT, uid, payload])


def error(uid, code, description="", details=None):
    return json.dumps([CALLERROR, uid, code, description[:255], details or {}])
