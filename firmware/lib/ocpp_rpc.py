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

import clock as clock_mod

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
    """Raise CallError if `payload` does not fit `spec` (see the module docstring)."""
    if not isinstance(payload, dict):
        raise CallError(FORMATION_VIOLATION, "payload%s is not an object" % where)
    for name in spec:
        kind = spec[name]
        required = kind[0] == "!"
        if required:
            kind = kind[1:]
        if name not in payload:
            if required:
                raise CallError(OCCURENCE_VIOLATION, "%s%s is required" % (where, name))
            continue
        value = payload[name]
        c = kind[0]
        if c == "s" or c == "t" or c == "e":
            if not isinstance(value, str):
                raise CallError(TYPE_VIOLATION, "%s%s must be a string" % (where, name))
            if c == "s" and len(kind) > 1 and len(value) > int(kind[1:]):
                raise CallError(PROPERTY_VIOLATION, "%s%s is longer than %s" % (where, name, kind[1:]))
            if c == "t":
                try:
                    clock_mod.parse_iso(value)
                except ValueError:
                    raise CallError(PROPERTY_VIOLATION, "%s%s is not a date-time" % (where, name))
            if c == "e" and value not in kind[2:].split("|"):
                raise CallError(PROPERTY_VIOLATION, "%s%s: %s is not allowed" % (where, name, value))
        elif c == "i":
            if isinstance(value, bool) or not isinstance(value, int):
                raise CallError(TYPE_VIOLATION, "%s%s must be an integer" % (where, name))
        elif c == "d":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CallError(TYPE_VIOLATION, "%s%s must be a number" % (where, name))
        elif c == "b":
            if not isinstance(value, bool):
                raise CallError(TYPE_VIOLATION, "%s%s must be a boolean" % (where, name))
        elif c == "o":
            if not isinstance(value, dict):
                raise CallError(TYPE_VIOLATION, "%s%s must be an object" % (where, name))
        elif c == "a":
            if not isinstance(value, list):
                raise CallError(TYPE_VIOLATION, "%s%s must be an array" % (where, name))
    return payload


def parse(text):
    """(type, id, action_or_None, payload_or_error) of a frame; CallError(ProtocolError or
    FormationViolation) with the id when known (`err.details` holds the id)."""
    try:
        msg = json.loads(text)
    except ValueError:
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
            raise CallError(PROTOCOL_ERROR, "a CALLERROR is [4, id, code, description, details]", uid)
        return kind, uid, None, (msg[2], msg[3], msg[4] if len(msg) > 4 else {})
    raise CallError(PROTOCOL_ERROR, "unknown message type %r" % (kind,), uid)


def call(uid, action, payload):
    return json.dumps([CALL, uid, action, payload])


def result(uid, payload):
    return json.dumps([CALLRESULT, uid, payload])


def error(uid, code, description="", details=None):
    return json.dumps([CALLERROR, uid, code, description[:255], details or {}])
