"""Bad input stops at the HTTP boundary.

Every ``/api/v1`` request is matched to its operation in the published OpenAPI document
(:func:`server.web.openapi.openapi_document`) and its path parameters, query parameters
and JSON body are validated against the schemas written there, before any view runs; a
violation is a 400 naming the field. JSON bodies everywhere (ThingSpeak-compatible
endpoints too) are capped in size, refuse ``NaN``/``Infinity`` and nesting deeper than
:data:`MAX_JSON_DEPTH`, so no body can exhaust the parser's recursion.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date

from flask import Flask, current_app, g, request
from flask.json.provider import DefaultJSONProvider
from jsonschema import Draft4Validator, Draft202012Validator, FormatChecker
from jsonschema.exceptions import best_match
from jsonschema.validators import validator_for

from server.ocpp.errors import code_for_schema_error
from server.timeutil import parse_time
from server.validation import FastValidator
from server.web.common import error_response
from server.web.openapi import openapi_document

API_PREFIX = "/api/v1"
MAX_JSON_DEPTH = 32
# Requests that stream files have their own cap (http.max_upload_bytes).
UPLOAD_PREFIXES = ("/diagnostics/",)
DRAFT_7 = "http://json-schema.org/draft-07/schema#"


# JSON parsing ---------------------------------------------------------------------
def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _nested_deeper_than(value, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with a parser that fails with ValueError (a 400) on what the
    standard one lets through or crashes on: NaN/Infinity literals, deep nesting."""

    def loads(self, s, **kwargs):
        kwargs.setdefault("parse_constant", _reject_constant)
        try:
            value = json.loads(s, **kwargs)
        except RecursionError:
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
        if isinstance(value, (dict, list)) and _nested_deeper_than(value, MAX_JSON_DEPTH):
            raise ValueError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        return value


# Schema checks -----------------------------------------------------------------------
_formats = FormatChecker(formats=())


@_formats.checks("date-time", raises=(ValueError, TypeError, OverflowError))
def _is_date_time(value) -> bool:
    if not isinstance(value, str):
        return True
    if "T" not in value.upper():
        raise ValueError("not an ISO 8601 date-time")
    parse_time(value)
    return True


@_formats.checks("date", raises=(ValueError, TypeError, OverflowError))
def _is_date(value) -> bool:
    if isinstance(value, str):
        date.fromisoformat(value)
    return True


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[!-~]+")


@_formats.checks("uri", raises=(TypeError,))
def _is_uri(value) -> bool:
    """An absolute URI (RFC 3986: a scheme, then printable ASCII): what a charge point
    needs for UpdateFirmware/GetDiagnostics locations."""
    return not isinstance(value, str) or _URI.fullmatch(value) is not None


def _passes(check):
    def passes(value) -> bool:
        try:
            return check(value)
        except (ValueError, TypeError, OverflowError):
            return False
    return passes


def _validator(schema: dict) -> FastValidator:
    cls = validator_for(schema, default=Draft202012Validator)
    return FastValidator(cls(schema, format_checker=_formats),
                         formats={"date-time": _passes(_is_date_time), "date": _passes(_is_date),
                                  "uri": _passes(_is_uri)},
                         draft=None if cls is Draft4Validator else DRAFT_7)


_INTEGER = re.compile(r"[+-]?[0-9]{1,1000}")
_NUMBER = re.compile(r"[+-]?([0-9]{1,1000}(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,4})?")


def _coerce(value: str, schema: dict):
    """A path or query string as the type its schema declares (left as text when it does
    not look like one, so the type check names the problem)."""
    kind = schema.get("type")
    if kind == "integer" and _INTEGER.fullmatch(value):
        return int(value)
    if kind == "number" and _NUMBER.fullmatch(value):
        return float(value)
    return value


@dataclass
class ParameterSet:
    schemas: dict[str, dict]
    validator: FastValidator

    @classmethod
    def build(cls, parameters: list[dict]) -> ParameterSet | None:
        if not parameters:
            return None
        props = {p["name"]: p["schema"] for p in parameters}
        required = [p["name"] for p in parameters if p.get("required")]
        return cls(props, _validator({"type": "object", "properties": props,
                                      "required": required}))

    def values(self, source) -> dict:
        return {name: _coerce(source[name], schema)
                for name, schema in self.schemas.items() if name in source}


@dataclass
class Operation:
    path: ParameterSet | None
    query: ParameterSet | None
    body: FastValidator | None  # an empty body is validated as {}


@dataclass
class OperationIndex:
    """Path templates of the document as regular expressions, most specific first."""

    routes: list[tuple[re.Pattern, dict[str, Operation]]] = field(default_factory=list)

    @classmethod
    def from_document(cls, document: dict) -> OperationIndex:
        index = cls()
        templates = sorted(document["paths"], key=lambda t: (t.count("{"), -len(t)))
        for template in templates:
            pattern = re.escape(template)
            pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", pattern)
            operations = {}
            for method, op in document["paths"][template].items():
                params = op.get("parameters", [])
                body = op.get("requestBody")
                operations[method.upper()] = Operation(
                    ParameterSet.build([p for p in params if p["in"] == "path"]),
                    ParameterSet.build([p for p in params if p["in"] == "query"]),
                    _validator(body["content"]["application/json"]["schema"]) if body else None)
            index.routes.append((re.compile(pattern), operations))
        return index

    def find(self, method: str, path: str) -> tuple[Operation, dict] | None:
        for pattern, operations in self.routes:
            match = pattern.fullmatch(path)
            if match:
                op = operations.get(method)
                return (op, match.groupdict()) if op else None
        return None


class InvalidRequest(Exception):
    def __init__(self, where: str, field_name: str, reason: str, **extra) -> None:
        super().__init__(reason)
        self.where = where
        self.field = field_name
        self.reason = reason
        self.extra = extra


def _type_words(expected) -> str:
    names = {"string": "a string", "integer": "an integer", "number": "a number",
             "boolean": "true or false", "object": "an object", "array": "an array",
             "null": "null"}
    kinds = expected if isinstance(expected, list) else [expected]
    return " or ".join(names.get(k, k) for k in kinds)


def _explain(error) -> tuple[str, str]:
    """(field path, reason) in words, never echoing the (possibly huge) value."""
    path = [str(p) for p in error.absolute_path]
    keyword, expected = error.validator, error.validator_value
    if keyword == "required" and isinstance(error.instance, dict):
        missing = next((name for name in expected if name not in error.instance), "?")
        return ".".join(path + [missing]), "is required"
    if keyword == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {})
        extra = sorted(str(k) for k in error.instance if k not in known)
        return ".".join(path + extra[:1]), "is not a known field"
    reasons = {
        "type": lambda: f"must be {_type_words(expected)}",
        "maxLength": lambda: f"must be at most {expected} characters long",
        "minLength": lambda: f"must be at least {expected} characters long",
        "maximum": lambda: f"must be at most {expected:g}",
        "minimum": lambda: f"must be at least {expected:g}",
        "exclusiveMinimum": lambda: f"must be greater than {expected:g}",
        "exclusiveMaximum": lambda: f"must be less than {expected:g}",
        "maxItems": lambda: f"must have at most {expected} items",
        "minItems": lambda: f"must have at least {expected} items",
        "enum": lambda: "must be one of " + ", ".join(map(str, expected)),
        "pattern": lambda: "must match " + (expected[:-2] + "$" if expected.endswith("\\Z") else expected),
        "format": lambda: f"must be a {expected}",
    }
    explain = reasons.get(keyword)
    reason = explain() if explain else error.message[:200]
    return ".".join(path), reason


def _check(validator, values, where: str) -> None:
    errors = validator.errors(values)
    if errors:
        error = best_match(errors)
        field_name, reason = _explain(error)
        extra = {}
        if isinstance(validator.validator, Draft4Validator):  # an OCPP 1.6 payload schema
            extra = {"code": code_for_schema_error(error),
                     "details": {"path": "/".join(str(p) for p in error.absolute_path),
                                 "keyword": error.validator}}
        raise InvalidRequest(where, field_name, reason, **extra)


class RequestChecker:
    def __init__(self, max_json_bytes: int) -> None:
        self.max_json_bytes = max_json_bytes
        self.index = OperationIndex.from_document(openapi_document(""))

    def before_request(self):
        if not request.path.startswith(UPLOAD_PREFIXES):
            request.max_content_length = self.max_json_bytes
        if not request.path.startswith(API_PREFIX + "/"):
            return None
        found = self.index.find(request.method, request.path[len(API_PREFIX):])
        if found is None:
            return None  # not a documented operation: routing answers 404/405
        op, path_values = found
        try:
            self._validate(op, path_values)
        except InvalidRequest as exc:
            where = "request body" if exc.where == "body" else f"{exc.where} parameter"
            named = f" {exc.field!r}" if exc.field else ""
            return error_response(400, f"{where}{named} {exc.reason}",
                                  field=exc.field or exc.where, **{"in": exc.where}, **exc.extra)
        return None

    def _validate(self, op: Operation, path_values: dict) -> None:
        if op.path:
            _check(op.path.validator, op.path.values(path_values), "path")
        if op.query:
            for name in op.query.schemas:
                # one value per parameter: `?online=false&online=true` would otherwise be
                # read as its first value
                if len(request.args.getlist(name)) > 1:
                    raise InvalidRequest("query", name, "is given more than once")
            _check(op.query.validator, op.query.values(request.args), "query")
        if op.body is None:
            return
        raw = request.get_data(cache=True)
        if not raw:
            body = {}
        elif not request.is_json:
            raise InvalidRequest("body", "", "must be JSON (Content-Type: application/json)")
        else:
            try:
                body = current_app.json.loads(raw)
            except ValueError as exc:
                raise InvalidRequest("body", "", f"is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise InvalidRequest("body", "", "must be a JSON object")
        _check(op.body, body, "body")
        g.request_body = body


def install(app: Flask, max_json_bytes: int) -> None:
    """Bounded JSON parsing for the whole app, OpenAPI checks for ``/api/v1``."""
    sort_keys = app.json.sort_keys
    app.json = BoundedJSONProvider(app)
    app.json.sort_keys = sort_keys
    app.before_request(RequestChecker(max_json_bytes).before_request)
