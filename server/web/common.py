"""Helpers shared by the blueprints."""

from __future__ import annotations

from flask import current_app, g, jsonify, request

from server.timeutil import parse_time, to_iso


class ApiError(Exception):
    def __init__(self, status: int, reason: str, **extra) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


def services():
    return current_app.extensions["picocharge"]


def error_response(status: int, reason: str, **extra):
    return jsonify(error=_ERROR_NAMES.get(status, "Error"), reason=reason, **extra), status


_ERROR_NAMES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict",
                413: "Payload Too Large", 422: "Unprocessable Entity", 429: "Too Many Requests", 502: "Bad Gateway",
                503: "Service Unavailable", 504: "Gateway Timeout"}


def time_arg(name: str) -> float | None:
    value = request.args.get(name)
    if value in (None, ""):
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise ApiError(400, f"{name} must be ISO 8601 or UNIX seconds, got {value!r}") from None


def int_arg(name: str, default: int | None = None, maximum: int | None = None) -> int | None:
    value = request.args.get(name)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if number < 0:
        raise ApiError(400, f"{name} must not be negative")
    return min(number, maximum) if maximum else number


def json_body() -> dict:
    """The request's JSON object: as checked against the OpenAPI document when the route
    is a documented operation (server.web.request_checks), else parsed here."""
    if "request_body" in g:
        return g.request_body
    data = request.get_json(silent=True)
    if data is None:
        if not request.get_data():
            return {}
        raise ApiError(400, "request body must be JSON")
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    return data


def iso_fields(row: dict, *names: str) -> dict:
    for name in names:
        if name in row:
            row[name] = to_iso(row[name], millis=True)
    return row
