"""OCPP 1.6-J CALLERROR codes, spelled exactly as the OCPP-J 1.6 specification (§4.2.3)
spells them — including the specification's own "Occurence" — and the mapping from a
JSON-schema violation to the code that names it."""

from __future__ import annotations

NOT_IMPLEMENTED = "NotImplemented"  # requested Action is not known by receiver
NOT_SUPPORTED = "NotSupported"  # requested Action is recognized but not supported
INTERNAL_ERROR = "InternalError"
PROTOCOL_ERROR = "ProtocolError"  # payload for Action is incomplete
SECURITY_ERROR = "SecurityError"
FORMATION_VIOLATION = "FormationViolation"  # syntactically incorrect / not the PDU structure
PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"  # a field has an invalid value
OCCURENCE_CONSTRAINT_VIOLATION = "OccurenceConstraintViolation"  # sic: the 1.6 spelling
TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"  # a field has the wrong data type
GENERIC_ERROR = "GenericError"

ERROR_CODES = (
    NOT_IMPLEMENTED, NOT_SUPPORTED, INTERNAL_ERROR, PROTOCOL_ERROR, SECURITY_ERROR,
    FORMATION_VIOLATION, PROPERTY_CONSTRAINT_VIOLATION, OCCURENCE_CONSTRAINT_VIOLATION,
    TYPE_CONSTRAINT_VIOLATION, GENERIC_ERROR,
)

# jsonschema keyword → 1.6 error code.
_KEYWORD_CODES = {
    "type": TYPE_CONSTRAINT_VIOLATION,
    "required": OCCURENCE_CONSTRAINT_VIOLATION,
    "minItems": OCCURENCE_CONSTRAINT_VIOLATION,
    "maxItems": OCCURENCE_CONSTRAINT_VIOLATION,
    "additionalProperties": FORMATION_VIOLATION,
    "enum": PROPERTY_CONSTRAINT_VIOLATION,
    "maxLength": PROPERTY_CONSTRAINT_VIOLATION,
    "minLength": PROPERTY_CONSTRAINT_VIOLATION,
    "minimum": PROPERTY_CONSTRAINT_VIOLATION,
    "maximum": PROPERTY_CONSTRAINT_VIOLATION,
    "multipleOf": PROPERTY_CONSTRAINT_VIOLATION,
    "pattern": PROPERTY_CONSTRAINT_VIOLATION,
    "format": PROPERTY_CONSTRAINT_VIOLATION,
}


class OcppError(Exception):
    """An error to be answered with a CALLERROR."""

    def __init__(self, code: str, description: str = "", details: dict | None = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description[:255]
        self.details = details or {}


def code_for_schema_error(error) -> str:
    """The 1.6 code for a jsonschema ValidationError."""
    if error.validator == "type" and not error.absolute_path:
        return FORMATION_VIOLATION  # the payload itself is not a JSON object
    return _KEYWORD_CODES.get(error.validator, FORMATION_VIOLATION)


def describe_schema_error(error) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "payload"
    return f"{where}: {error.message}"
