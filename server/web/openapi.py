"""The OpenAPI 3.1 document for ``/api/v1`` (operations carry the official OCPP schemas)."""

from __future__ import annotations

from server.ocpp import schemas

ERROR = {"$ref": "#/components/schemas/Error"}


def _resp(description: str, schema: dict | None = None, media: str = "application/json") -> dict:
    body = {"description": description}
    if schema is not None:
        body["content"] = {media: {"schema": schema}}
    return body


def _errors(*codes: int) -> dict:
    return {str(code): _resp("error", ERROR) for code in codes}


def _param(name: str, where: str = "query", description: str = "", type_: str = "string",
           required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path",
            "description": description, "schema": {"type": type_}}


CP = _param("cp_id", "path", "charge point id")
SINCE = _param("since", description="ISO 8601 or UNIX seconds")
UNTIL = _param("until", description="ISO 8601 or UNIX seconds")
LIMIT = _param("limit", type_="integer")
OBJ = {"type": "object"}
ARR = {"type": "array", "items": OBJ}


def _op(summary: str, parameters=(), responses=None, body: dict | None = None, tag: str = "") -> dict:
    op = {"summary": summary, "tags": [tag] if tag else [], "parameters": list(parameters),
          "responses": responses or {"200": _resp("OK", OBJ)}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def openapi_document(server_url: str) -> dict:
    paths: dict[str, dict] = {
        "/chargepoints": {
            "get": _op("List charge points with presence, connectors and telemetry loss",
                       [_param("online", description="true|false")], {"200": _resp("OK", ARR)},
                       tag="chargepoints"),
            "post": _op("Register a charge point (id, registration, auth_key, description)",
                        responses={"201": _resp("created", OBJ), **_errors(400)},
                        body={"$ref": "#/components/schemas/ChargePointInput"}, tag="chargepoints"),
        },
        "/unknown-chargepoints": {
            "get": _op("Ids nobody registered that tried to connect or publish (bounded list; "
                       "PATCH /chargepoints/{cp_id} admits one)", tag="chargepoints"),
        },
        "/chargepoints/{cp_id}": {
            "get": _op("One charge point", [CP], {"200": _resp("OK", OBJ), **_errors(404)},
                       tag="chargepoints"),
            "patch": _op("Change registration, auth_key (null clears) or description", [CP],
                         {"200": _resp("OK", OBJ), **_errors(400, 404)},
                         body={"$ref": "#/components/schemas/ChargePointInput"}, tag="chargepoints"),
            "delete": _op("Forget a charge point", [CP], {"204": _resp("deleted"), **_errors(404)},
                          tag="chargepoints"),
        },
        "/chargepoints/{cp_id}/connectors": {"get": _op("Connectors and their current status", [CP],
                                                         {"200": _resp("OK", ARR)}, tag="chargepoints")},
        "/chargepoints/{cp_id}/status-history": {"get": _op("StatusNotification history",
                                                             [CP, SINCE, LIMIT], tag="chargepoints")},
        "/chargepoints/{cp_id}/events": {"get": _op("Events of one charge point",
                                                     [CP, SINCE, LIMIT, _param("kind")], tag="events")},
        "/chargepoints/{cp_id}/meter-values": {"get": _op(
            "Sampled values (measurand, unit, phase, context, location)",
            [CP, SINCE, UNTIL, LIMIT, _param("measurand"), _param("transaction_id", type_="integer")],
            tag="meter values")},
        "/chargepoints/{cp_id}/telemetry": {"get": _op("MQTT telemetry series, oldest first",
                                                        [CP, SINCE, UNTIL, LIMIT], tag="telemetry")},
        "/chargepoints/{cp_id}/transactions": {"get": _op("Transactions of one charge point",
                                                           [CP, SINCE, UNTIL, LIMIT], tag="transactions")},
        "/chargepoints/{cp_id}/thingspeak": {
            "get": _op("ThingSpeak bridge state", [CP], tag="thingspeak"),
            "put": _op("Configure the bridge {url, channel, write_key, enabled}", [CP],
                       body={"type": "object", "required": ["channel", "write_key"]}, tag="thingspeak"),
            "delete": _op("Remove the bridge", [CP], {"204": _resp("deleted")}, tag="thingspeak"),
        },
        "/events": {"get": _op("Events (presence changes, boots, status, operations)",
                               [_param("cp_id"), _param("kind"), SINCE, LIMIT], tag="events")},
        "/transactions": {"get": _op(
            "Transactions with energy; format=csv for a CSV export",
            [_param("cp_id"), _param("id_tag"), _param("state", description="active|completed"),
             SINCE, UNTIL, LIMIT, _param("format", description="json|csv")],
            {"200": {"description": "OK", "content": {"application/json": {"schema": ARR},
                                                       "text/csv": {"schema": {"type": "string"}}}}},
            tag="transactions")},
        "/transactions/{tx_id}": {"get": _op("One transaction with its meter values",
                                             [_param("tx_id", "path", type_="integer")],
                                             {"200": _resp("OK", OBJ), **_errors(404)},
                                             tag="transactions")},
        "/idtags": {"get": _op("idTags", tag="idtags"),
                    "post": _op("Create an idTag {id_tag, status, expiry, parent_id_tag, note}",
                                responses={"201": _resp("created", OBJ), **_errors(400)},
                                body={"type": "object", "required": ["id_tag"]}, tag="idtags")},
        "/idtags/{id_tag}": {
            "get": _op("One idTag", [_param("id_tag", "path")], tag="idtags"),
            "patch": _op("Change status, expiry, parent", [_param("id_tag", "path")], body=OBJ,
                         tag="idtags"),
            "delete": _op("Delete", [_param("id_tag", "path")], {"204": _resp("deleted")},
                          tag="idtags"),
        },
        "/idtags/{id_tag}/block": {"post": _op("Block", [_param("id_tag", "path")], tag="idtags")},
        "/idtags/{id_tag}/unblock": {"post": _op("Unblock", [_param("id_tag", "path")], tag="idtags")},
        "/idtags/{id_tag}/expire": {"post": _op("Expire now", [_param("id_tag", "path")], tag="idtags")},
        "/operations": {"get": _op("Central-system operations with their OCPP schemas",
                                   tag="operations")},
        "/telemetry/stats": {"get": _op("MQTT ingest counters and per-station loss", tag="telemetry")},
        "/thingspeak/channels": {"get": _op("ThingSpeak-compatible channels (keys masked)",
                                            tag="thingspeak"),
                                 "post": _op("Create a channel {name, field_names, public}",
                                             body={"type": "object", "required": ["name"]},
                                             tag="thingspeak")},
        "/thingspeak/channels/{channel_id}": {
            "get": _op("One channel", [_param("channel_id", "path", type_="integer")], tag="thingspeak"),
            "delete": _op("Delete", [_param("channel_id", "path", type_="integer")], tag="thingspeak")},
        "/thingspeak/channels/{channel_id}/regenerate-keys": {
            "post": _op("New random keys {keys: [write, read]}, shown once in this answer",
                        [_param("channel_id", "path", type_="integer")],
                        body={"type": "object", "properties": {"keys": {
                            "type": "array", "items": {"enum": ["write", "read"]}}}},
                        tag="thingspeak")},
        "/thingspeak/bridges": {"get": _op("All bridge states", tag="thingspeak")},
        "/firmware": {"get": _op("Firmware bundles with verified manifests and URLs", tag="files")},
        "/diagnostics": {"get": _op("Received diagnostics uploads", [_param("cp_id")], tag="files")},
        "/stats": {"get": _op("Counters: telemetry_stored, OCPP, MQTT, store, process", tag="service")},
        "/health": {"get": _op("Liveness", tag="service")},
        "/openapi.json": {"get": _op("This document", tag="service")},
    }
    for action in schemas.CENTRAL_SYSTEM_ACTIONS:
        paths[f"/chargepoints/{{cp_id}}/{action}"] = {"post": _op(
            f"OCPP 1.6 {action}: the body is the request payload, the answer the charge point's",
            [CP, _param("timeout", type_="number", description="seconds")],
            {"200": _resp("the charge point's answer", {
                "type": "object", "properties": {
                    "chargepoint": {"type": "string"}, "operation": {"type": "string"},
                    "result": schemas.schema(action, True)}}),
             "400": _resp("payload violates the OCPP schema", ERROR),
             "404": _resp("unknown charge point", ERROR),
             "409": _resp("charge point offline", ERROR),
             "502": _resp("CALLERROR or invalid answer (code = OCPP error code)", ERROR),
             "504": _resp("no answer in time", ERROR)},
            body=schemas.schema(action), tag="operations")}
    from server.web.accounts_api import openapi_paths as account_paths

    paths.update(account_paths())
    paths["/health"]["get"]["security"] = []  # the one route open to anyone
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
                "code": {"type": "string", "description": "OCPP 1.6 error code, when there is one"},
                "details": {"type": "object"}}},
            "ChargePointInput": {"type": "object", "properties": {
                "id": {"type": "string", "maxLength": 48},
                "registration": {"enum": ["Accepted", "Pending", "Rejected"]},
                "auth_key": {"type": ["string", "null"], "minLength": 16, "maxLength": 40},
                "description": {"type": "string"}}},
        }},
    }
