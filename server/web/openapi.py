"""The OpenAPI 3.1 document for ``/api/v1``: the one statement of what each operation takes.

The server checks every request against this same document before a view runs
(:mod:`server.web.request_checks`), so a rule written here is a rule enforced. Operations
that reach a charge point carry the official OCPP 1.6 schemas as their request bodies.
"""

from __future__ import annotations

from server.fleet import REGISTRATION_STATES
from server.ocpp import schemas
from server.ocpp.central import MAX_CALL_TIMEOUT, MIN_CALL_TIMEOUT
from server.timeutil import EARLIEST_TIME, LATEST_TIME

ERROR = {"$ref": "#/components/schemas/Error"}

# Limits stated here are the ones enforced.
MAX_CP_ID = 48  # the OCPP endpoint's limit for the id in the connection URL
MAX_ID_TAG = 20  # OCPP 1.6 IdToken is CiString20Type
MAX_TEXT = 500  # free text an operator types: descriptions, notes
MAX_INT32 = 2**31 - 1  # OCPP 1.6 integers (transactionId, ...) are 32-bit on charge points

CP_ID = {"type": "string", "minLength": 1, "maxLength": MAX_CP_ID, "pattern": "^[^/\\x00-\\x1f\\x7f]+$"}
ID_TAG = {"type": "string", "minLength": 1, "maxLength": MAX_ID_TAG}
TEXT = {"type": "string", "maxLength": MAX_TEXT}
ROW_ID = {"type": "integer", "minimum": 1, "maximum": MAX_INT32}
# A date-time in an ISO 8601 form between 1980 and 2099, or UNIX seconds in range.
ISO_TIME = {"type": "string", "format": "date-time", "maxLength": 40,
            "pattern": "^(19[89][0-9]|20[0-9][0-9])-"}
UNIX_TIME = {"type": "number", "minimum": EARLIEST_TIME, "maximum": LATEST_TIME}
# Query form of a time: UNIX seconds, an ISO 8601 date-time or an ISO 8601 date.
YEARS = "^(19[89][0-9]|20[0-9][0-9])-"
TIME_QUERY = {"anyOf": [
    {"type": "string", "maxLength": 0},  # empty: as if absent (what an empty form field sends)
    {"type": "string", "pattern": "^[0-9]{1,10}(\\.[0-9]{1,6})?$"},
    {"type": "string", "format": "date-time", "maxLength": 40, "pattern": YEARS},
    {"type": "string", "format": "date", "maxLength": 10, "pattern": YEARS}]}
WORD = {"type": "string", "minLength": 1, "maxLength": 64}  # event kinds, measurands
API_KEY = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_-]+$"}

OBJ = {"type": "object"}
ARR = {"type": "array", "items": OBJ}

# What the main resources look like in answers (the properties a client relies on).
STR_OR_NULL = {"type": ["string", "null"]}
INT_OR_NULL = {"type": ["integer", "null"]}


def _shape(properties: dict) -> dict:
    return {"type": "object", "required": list(properties), "properties": properties}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _list_of(name: str) -> dict:
    return {"type": "array", "items": _ref(name)}


RESOURCE_SCHEMAS = {
    "ChargePoint": _shape({
        "id": {"type": "string"}, "registration": {"enum": [*REGISTRATION_STATES, None]},
        "description": STR_OR_NULL, "has_auth_key": {"type": "boolean"},
        "created_at": STR_OR_NULL,
        "ocpp": _shape({"online": {"type": "boolean"}, "connected": {"type": "boolean"},
                        "last_seen": STR_OR_NULL}),
        "telemetry": {"type": "object", "required": ["online", "received", "lost"],
                      "properties": {"online": {"type": "boolean"},
                                     "received": {"type": "integer"},
                                     "lost": {"type": "integer"}}},
        "connectors": ARR}),
    "IdTag": _shape({
        "id_tag": {"type": "string"}, "status": {"type": "string"},
        "effective_status": {"type": "string"}, "expiry": STR_OR_NULL,
        "parent_id_tag": STR_OR_NULL, "note": STR_OR_NULL, "created_at": STR_OR_NULL}),
    "Transaction": _shape({
        "id": {"type": "integer"}, "cp_id": {"type": "string"},
        "connector_id": {"type": "integer"}, "id_tag": STR_OR_NULL, "start": STR_OR_NULL,
        "stop": STR_OR_NULL, "meter_start": INT_OR_NULL, "meter_stop": INT_OR_NULL,
        "active": {"type": "boolean"}}),
    "Channel": _shape({
        "id": {"type": "integer"}, "name": {"type": "string"}, "description": {"type": "string"},
        "public": {"type": "boolean"}, "write_key": {"type": "string"},
        "read_key": {"type": "string"}, "field_names": {"type": "array", "maxItems": 8},
        "last_entry_id": {"type": "integer"}}),
    "Bridge": _shape({
        "cp_id": {"type": "string"}, "url": {"type": "string"}, "channel": {"type": "integer"},
        "enabled": {"type": "boolean"}, "backlog": {"type": "integer"},
        "failures": {"type": "integer"}, "last_error": STR_OR_NULL}),
}


def _resp(description: str, schema: dict | None = None, media: str = "application/json") -> dict:
    body = {"description": description}
    if schema is not None:
        body["content"] = {media: {"schema": schema}}
    return body


ERROR_MEANINGS = {400: "request invalid (query, path or body; `field` names the culprit)",
                  404: "not found", 409: "conflict", 413: "request body too large",
                  502: "the charge point answered with an error",
                  503: "service unavailable", 504: "no answer in time"}


def _errors(*codes: int) -> dict:
    return {str(code): _resp(ERROR_MEANINGS[code], ERROR) for code in codes}


def _param(name: str, where: str = "query", description: str = "", schema: dict | None = None,
           required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path",
            "description": description, "schema": schema or {"type": "string"}}


def _limit(default: int, maximum: int) -> dict:
    return _param("limit", description=f"most rows to return (default {default})",
                  schema={"type": "integer", "minimum": 0, "maximum": maximum})


CP = _param("cp_id", "path", "charge point id", CP_ID)
CP_QUERY = _param("cp_id", description="only this charge point", schema=CP_ID)
TAG = _param("id_tag", "path", "idTag (OCPP IdToken, at most 20 characters)", ID_TAG)
SINCE = _param("since", description="ISO 8601 or UNIX seconds", schema=TIME_QUERY)
UNTIL = _param("until", description="ISO 8601 or UNIX seconds", schema=TIME_QUERY)
KIND = _param("kind", description="event kind", schema=WORD)


def _op(summary: str, parameters=(), responses=None, body: dict | None = None, tag: str = "",
        body_required: bool = True) -> dict:
    parameters = list(parameters)
    responses = dict(responses or {"200": _resp("OK", OBJ)})
    if parameters or body is not None:
        responses.setdefault("400", _errors(400)["400"])
    if body is not None:
        responses.setdefault("413", _errors(413)["413"])
    op = {"summary": summary, "tags": [tag] if tag else [], "parameters": parameters,
          "responses": responses}
    if body is not None:
        op["requestBody"] = {"required": body_required,
                             "content": {"application/json": {"schema": body}}}
    return op


def _object(properties: dict, required: tuple = ()) -> dict:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


# an optional TCP port, 1 to 65535
PORT = ("(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}"
        "|[1-9][0-9]{0,3}))?")

CHARGE_POINT_FIELDS = {
    "registration": {"enum": list(REGISTRATION_STATES)},
    "auth_key": {"type": ["string", "null"], "minLength": 16, "maxLength": 40,
                 "pattern": "^[ -~]*$",  # printable ASCII (OCPP 1.6 security whitepaper)
                 "description": "AuthorizationKey for HTTP Basic auth (null clears it)"},
    "description": TEXT,
}
ID_TAG_FIELDS = {
    "status": {"enum": ["Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"]},  # 1.6 AuthorizationStatus
    "expiry": {"anyOf": [ISO_TIME, UNIX_TIME, {"type": "null"}],
               "description": "ISO 8601 (1980-2099) or UNIX seconds; null: never expires"},
    "parent_id_tag": {"anyOf": [ID_TAG, {"type": "null"}]},
    "note": {"type": ["string", "null"], "maxLength": MAX_TEXT},
}
CHANNEL_INPUT = _object({
    "name": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": TEXT,
    "field_names": {"type": ["array", "null"], "maxItems": 8,
                    "items": {"type": ["string", "null"], "maxLength": 255}},
    "public": {"type": "boolean"},
    "write_key": API_KEY, "read_key": API_KEY,
    "id": ROW_ID,
}, required=("name",))
BRIDGE_INPUT = _object({
    "url": {"type": "string", "maxLength": 2048, "pattern": "^https?://[A-Za-z0-9.-]+" + PORT + "(/[!-~]*)?$",
            "description": "ThingSpeak (or compatible) base URL: http(s), a host name or "
                           "IPv4 address, optional port and path"},
    "channel": ROW_ID,
    "write_key": API_KEY,
    "enabled": {"type": "boolean"},
}, required=("channel", "write_key"))


def openapi_document(server_url: str) -> dict:
    tx_id = _param("tx_id", "path", "transaction id", ROW_ID)
    channel_id = _param("channel_id", "path", "channel id", ROW_ID)
    tag_found = {"200": _resp("OK", _ref("IdTag")), **_errors(404)}
    paths: dict[str, dict] = {
        "/chargepoints": {
            "get": _op("List charge points with presence, connectors and telemetry loss",
                       [_param("online", description="only online (true) or offline (false)",
                               schema={"enum": ["true", "false"]})],
                       {"200": _resp("OK", _list_of("ChargePoint"))}, tag="chargepoints"),
            "post": _op("Register a charge point (200 if it was already registered)",
                        responses={"201": _resp("created", _ref("ChargePoint")),
                                   "200": _resp("updated", _ref("ChargePoint"))},
                        body=_object({"id": CP_ID, **CHARGE_POINT_FIELDS}, required=("id",)),
                        tag="chargepoints"),
        },
        "/chargepoints/{cp_id}": {
            "get": _op("One charge point", [CP],
                       {"200": _resp("OK", _ref("ChargePoint")), **_errors(404)},
                       tag="chargepoints"),
            "patch": _op("Change registration, auth_key (null clears) or description", [CP],
                         {"200": _resp("OK", _ref("ChargePoint")), **_errors(404)},
                         body=_object(CHARGE_POINT_FIELDS), tag="chargepoints"),
            "delete": _op("Forget a charge point", [CP], {"204": _resp("deleted"), **_errors(404)},
                          tag="chargepoints"),
        },
        "/chargepoints/{cp_id}/connectors": {"get": _op(
            "Connectors and their current status", [CP],
            {"200": _resp("OK", ARR), **_errors(404)}, tag="chargepoints")},
        "/chargepoints/{cp_id}/status-history": {"get": _op(
            "StatusNotification history", [CP, SINCE, _limit(100, 10000)],
            {"200": _resp("OK", ARR), **_errors(404)}, tag="chargepoints")},
        "/chargepoints/{cp_id}/events": {"get": _op(
            "Events of one charge point", [CP, SINCE, _limit(100, 10000), KIND],
            {"200": _resp("OK", ARR), **_errors(404)}, tag="events")},
        "/chargepoints/{cp_id}/meter-values": {"get": _op(
            "Sampled values (measurand, unit, phase, context, location)",
            [CP, SINCE, UNTIL, _limit(1000, 100000),
             _param("measurand", description="OCPP measurand", schema=WORD),
             _param("transaction_id", schema=ROW_ID)],
            {"200": _resp("OK", ARR), **_errors(404)}, tag="meter values")},
        "/chargepoints/{cp_id}/telemetry": {"get": _op(
            "MQTT telemetry series, oldest first", [CP, SINCE, UNTIL, _limit(1000, 100000)],
            {"200": _resp("OK", ARR)}, tag="telemetry")},
        "/chargepoints/{cp_id}/transactions": {"get": _op(
            "Transactions of one charge point; format=csv for a CSV export",
            [CP, *_transaction_filters()], _transactions_ok(404), tag="transactions")},
        "/chargepoints/{cp_id}/thingspeak": {
            "get": _op("ThingSpeak bridge state", [CP],
                       {"200": _resp("OK", _ref("Bridge")), **_errors(404)}, tag="thingspeak"),
            "put": _op("Configure the bridge", [CP], {"200": _resp("OK", _ref("Bridge"))},
                       body=BRIDGE_INPUT, tag="thingspeak"),
            "delete": _op("Remove the bridge", [CP], {"204": _resp("deleted"), **_errors(404)},
                          tag="thingspeak"),
        },
        "/events": {"get": _op("Events (presence changes, boots, status, operations)",
                               [CP_QUERY, KIND, SINCE, _limit(100, 10000)],
                               {"200": _resp("OK", ARR)}, tag="events")},
        "/transactions": {"get": _op(
            "Transactions with energy; format=csv for a CSV export",
            [CP_QUERY, *_transaction_filters()], _transactions_ok(), tag="transactions")},
        "/transactions/{tx_id}": {"get": _op("One transaction with its meter values", [tx_id],
                                             {"200": _resp("OK", _ref("Transaction")),
                                              **_errors(404)},
                                             tag="transactions")},
        "/idtags": {"get": _op("idTags", responses={"200": _resp("OK", _list_of("IdTag"))},
                               tag="idtags"),
                    "post": _op("Create (or replace) an idTag",
                                responses={"201": _resp("created", _ref("IdTag"))},
                                body=_object({"id_tag": ID_TAG, **ID_TAG_FIELDS},
                                             required=("id_tag",)), tag="idtags")},
        "/idtags/{id_tag}": {
            "get": _op("One idTag", [TAG], tag_found, tag="idtags"),
            "patch": _op("Change status, expiry, parent or note", [TAG], tag_found,
                         body=_object(ID_TAG_FIELDS), tag="idtags"),
            "delete": _op("Delete", [TAG], {"204": _resp("deleted"), **_errors(404)},
                          tag="idtags"),
        },
        "/idtags/{id_tag}/block": {"post": _op("Block", [TAG], tag_found, tag="idtags")},
        "/idtags/{id_tag}/unblock": {"post": _op("Unblock", [TAG], tag_found, tag="idtags")},
        "/idtags/{id_tag}/expire": {"post": _op("Expire now", [TAG], tag_found, tag="idtags")},
        "/operations": {"get": _op("Central-system operations with their OCPP schemas",
                                   responses={"200": _resp("OK", ARR)}, tag="operations")},
        "/telemetry/stats": {"get": _op("MQTT ingest counters and per-station loss", tag="telemetry")},
        "/thingspeak/channels": {
            "get": _op("ThingSpeak-compatible channels (keys masked)",
                       responses={"200": _resp("OK", _list_of("Channel"))}, tag="thingspeak"),
            "post": _op("Create a channel", responses={"201": _resp("created", _ref("Channel")),
                                                       **_errors(409)},
                        body=CHANNEL_INPUT, tag="thingspeak")},
        "/thingspeak/channels/{channel_id}/regenerate-keys": {
            "post": _op("New random keys (both by default), shown once in this answer",
                        [channel_id], {"200": _resp("OK", _ref("Channel")), **_errors(404)},
                        body=_object({"keys": {"type": "array", "minItems": 1, "maxItems": 2,
                                               "items": {"enum": ["write", "read"]}}}),
                        tag="thingspeak", body_required=False)},
        "/thingspeak/channels/{channel_id}": {
            "get": _op("One channel", [channel_id],
                       {"200": _resp("OK", _ref("Channel")), **_errors(404)}, tag="thingspeak"),
            "delete": _op("Delete", [channel_id], {"204": _resp("deleted"), **_errors(404)},
                          tag="thingspeak")},
        "/thingspeak/bridges": {"get": _op("All bridge states",
                                           responses={"200": _resp("OK", _list_of("Bridge"))},
                                           tag="thingspeak")},
        "/firmware": {"get": _op("Firmware bundles with verified manifests and URLs",
                                 responses={"200": _resp("OK", ARR)}, tag="files")},
        "/diagnostics": {"get": _op("Received diagnostics uploads", [CP_QUERY], tag="files")},
        "/stats": {"get": _op("Counters: telemetry_stored, OCPP, MQTT, store, process", tag="service")},
        "/health": {"get": _op("Liveness; 503 with the reason while the store cannot commit",
                               responses={"200": _resp("OK", _shape({"status": {"const": "ok"}})),
                                          "503": _resp("unavailable", _shape({
                                              "status": {"const": "unavailable"},
                                              "reason": {"type": "string"},
                                              "store": {"type": "object"}}))},
                               tag="service")},
        "/unknown-chargepoints": {"get": _op(
            "Ids nobody registered that tried to connect or publish (bounded list, newest first; "
            "PATCH /chargepoints/{cp_id} admits one)",
            responses={"200": _resp("OK", _shape({
                "stations": ARR, "listed": {"type": "integer"}, "ignored": {"type": "integer"},
                "evicted": {"type": "integer"}}))}, tag="chargepoints")},
        "/openapi.json": {"get": _op("This document", tag="service")},
    }
    timeout = _param("timeout", description=(
        f"seconds to wait for the answer (default: the server's ocpp.call_timeout; "
        f"{MIN_CALL_TIMEOUT:g} to "
        f"{MAX_CALL_TIMEOUT:g})"), schema={"type": "number", "minimum": MIN_CALL_TIMEOUT,
                                                "maximum": MAX_CALL_TIMEOUT})
    for action in schemas.CENTRAL_SYSTEM_ACTIONS:
        body = schemas.schema(action)
        paths[f"/chargepoints/{{cp_id}}/{action}"] = {"post": _op(
            f"OCPP 1.6 {action}: the body is the request payload, the answer the charge point's",
            [CP, timeout],
            {"200": _resp("the charge point's answer", {
                "type": "object", "properties": {
                    "chargepoint": {"type": "string"}, "operation": {"type": "string"},
                    "result": schemas.schema(action, True)}}),
             "400": _resp("payload violates the OCPP schema, or a bad timeout", ERROR),
             "404": _resp("unknown charge point", ERROR),
             "409": _resp("charge point not connected, or it disconnected during the call",
                          ERROR),
             "429": _resp("too many operations already waiting for charge points "
                          "(all HTTP workers but two); retry later", ERROR),
             "502": _resp("CALLERROR or invalid answer (code = OCPP error code)", ERROR),
             "503": _resp("the OCPP endpoint is not running", ERROR),
             "504": _resp("no answer in time", ERROR)},
            body=body, tag="operations", body_required=bool(body.get("required")))}
    from server.web.accounts_api import openapi_paths as account_paths

    paths.update(account_paths())
    paths["/health"]["get"]["security"] = []  # the one route open to anyone
    # what the auth layer answers on any other route (server/web/auth.py, hosts.py)
    for path, item in paths.items():
        for op in item.values():
            if path != "/health":
                op["responses"].setdefault("401", _resp("no valid token or session", ERROR))
                op["responses"].setdefault("403", _resp(
                    "the role does not allow this, or a cross-site request or an unknown "
                    "host name was refused", ERROR))
                op["responses"].setdefault("429", _resp(
                    "too many requests for this token or session; see Retry-After", ERROR))
    return {
        "openapi": "3.1.0",
        "info": {"title": "PicoCharge central system API", "version": "1"},
        "servers": [{"url": f"{server_url}/api/v1"}],
        "paths": paths,
        # roles per route: docs/server.md; /health needs none
        "security": [{"bearerToken": []}, {"sessionCookie": []}],
        "components": {"securitySchemes": {
            "bearerToken": {"type": "http", "scheme": "bearer"},
            "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "picocharge_session"},
        }, "schemas": {
            "Error": {"type": "object", "required": ["error", "reason"], "properties": {
                "error": {"type": "string"}, "reason": {"type": "string"},
                "field": {"type": "string", "description": "the invalid parameter or body field"},
                "in": {"enum": ["path", "query", "body"]},
                "code": {"type": "string", "description": "OCPP 1.6 error code, when there is one"},
                "details": {"type": "object"}}},
            **RESOURCE_SCHEMAS,
        }},
    }


def _transaction_filters() -> list:
    return [_param("id_tag", schema=ID_TAG),
            _param("state", description="active|completed", schema={"enum": ["active", "completed"]}),
            SINCE, UNTIL, _limit(500, 100000),
            _param("format", description="json|csv", schema={"enum": ["json", "csv"]})]


def _transactions_ok(*errors: int) -> dict:
    return {"200": {"description": "OK", "content": {"application/json": {
                                                         "schema": _list_of("Transaction")},
                                                     "text/csv": {"schema": {"type": "string"}}}},
            **_errors(*errors)}
