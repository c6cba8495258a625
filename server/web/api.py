"""REST API ``/api/v1``: charge points, connectors, events, transactions (CSV too),
meter values, telemetry, idTags, operations, ThingSpeak channels/bridges, files, stats.

Views receive requests already checked against the OpenAPI document
(:mod:`server.web.request_checks`): types, lengths and ranges hold here."""

from __future__ import annotations

import csv
import io
import os
import time

import psutil
from flask import Blueprint, Response, jsonify, request

from server.ocpp import schemas
from server.ocpp.central import OperationError
from server.station_keys import key_problem
from server.timeutil import parse_time, to_iso
from server.web.common import (
    ApiError,
    error_response,
    int_arg,
    iso_fields,
    json_body,
    services,
    time_arg,
)
from server.web.openapi import openapi_document

api = Blueprint("api", __name__, url_prefix="/api/v1")
_STARTED = time.time()


@api.errorhandler(ApiError)
def api_error(exc: ApiError):
    return error_response(exc.status, exc.reason, **exc.extra)


@api.errorhandler(OperationError)
def operation_error(exc: OperationError):
    extra = {}
    if exc.code:
        extra["code"] = exc.code
    if exc.details:
        extra["details"] = exc.details
    return error_response(exc.status, exc.reason, **extra)


def _fresh():
    """Make every write accepted so far visible to the reads that follow; after a write,
    this is also what makes the answer wait for its commit (503 if it cannot)."""
    store = services().store
    if request.method == "GET" and store.failure is not None:
        return  # reads serve what is committed while the database cannot commit
    store.sync()


# Charge points -----------------------------------------------------------------
def chargepoint_json(record: dict) -> dict:
    svc = services()
    cp_id = record["id"]
    stats = svc.ingest.stations.get(cp_id) if svc.ingest else None
    connectors = [iso_fields(c, "status_ts", "updated_at") for c in svc.fleet.connectors(cp_id)]
    for c in connectors:
        c.pop("cp_id", None)
    return {
        "id": cp_id,
        "registration": record.get("registration"),
        "description": record.get("description"),
        "has_auth_key": bool(record.get("auth_key_hash")),
        "vendor": record.get("vendor"), "model": record.get("model"),
        "serial_number": record.get("serial_number"),
        "firmware_version": record.get("firmware_version"),
        "meter_type": record.get("meter_type"),
        "heartbeat_interval": record.get("heartbeat_interval"),
        "boot_at": to_iso(record.get("boot_at"), millis=True),
        "firmware_status": record.get("firmware_status"),
        "diagnostics_status": record.get("diagnostics_status"),
        "created_at": to_iso(record.get("created_at"), millis=True),
        "ocpp": {"online": bool(record.get("ocpp_online")),
                 "connected": cp_id in svc.central.connections,
                 "last_seen": to_iso(record.get("last_seen"), millis=True)},
        "telemetry": {"online": bool(record.get("telemetry_online")),
                      "last_seen": to_iso(record.get("telemetry_last_seen"), millis=True),
                      "received": stats.received if stats else 0,
                      "lost": stats.lost if stats else 0,
                      "duplicates": stats.duplicates if stats else 0,
                      "reboots": stats.reboots if stats else 0,
                      "invalid": stats.invalid if stats else 0},
        "connectors": connectors,
    }


def _record_or_404(cp_id: str) -> dict:
    record = services().fleet.get(cp_id)
    if record is None:
        raise ApiError(404, f"unknown charge point {cp_id!r}")
    return record


@api.get("/chargepoints")
def list_chargepoints():
    records = services().fleet.all()
    online = request.args.get("online")
    if online in ("true", "false"):
        records = [r for r in records if bool(r.get("ocpp_online")) == (online == "true")]
    return jsonify([chargepoint_json(r) for r in records])


@api.post("/chargepoints")
def create_chargepoint():
    body = json_body()
    cp_id = body["id"]
    registration = body.get("registration", "Accepted")
    auth_key = body.get("auth_key")
    if auth_key is not None and key_problem(auth_key):
        raise ApiError(400, f"auth_key: {key_problem(auth_key)}")
    existed = services().fleet.is_registered(cp_id)
    record = services().fleet.register(cp_id, registration, auth_key=auth_key,
                                       description=body.get("description"))
    _fresh()
    return jsonify(chargepoint_json(record)), 200 if existed else 201


@api.get("/chargepoints/<cp_id>")
def get_chargepoint(cp_id: str):
    return jsonify(chargepoint_json(_record_or_404(cp_id)))


@api.get("/unknown-chargepoints")
def list_unknown_chargepoints():
    """Ids nobody registered that knocked (bounded, newest first); no fleet records."""
    fleet = services().fleet
    rows = [iso_fields(row, "first_seen", "last_seen") for row in fleet.strangers.all()]
    return jsonify({"stations": rows, **fleet.strangers.stats()})


@api.patch("/chargepoints/<cp_id>")
def patch_chargepoint(cp_id: str):
    fleet = services().fleet
    # an operator may admit a station straight from the list of unknown ones
    record = fleet.get(cp_id) if fleet.strangers.get(cp_id) else _record_or_404(cp_id)
    record = record or {"id": cp_id}
    body = json_body()
    registration = body.get("registration", record.get("registration") or "Accepted")
    clear = "auth_key" in body and body["auth_key"] is None
    auth_key = body.get("auth_key")
    if auth_key is not None and key_problem(auth_key):
        raise ApiError(400, f"auth_key: {key_problem(auth_key)} (or null to remove it)")
    record = services().fleet.register(cp_id, registration, auth_key=auth_key,
                                       description=body.get("description"), clear_auth_key=clear)
    _fresh()
    return jsonify(chargepoint_json(record))


@api.delete("/chargepoints/<cp_id>")
def delete_chargepoint(cp_id: str):
    if not services().fleet.delete(cp_id):
        raise ApiError(404, f"unknown charge point {cp_id!r}")
    _fresh()
    return "", 204


@api.get("/chargepoints/<cp_id>/connectors")
def connectors(cp_id: str):
    _record_or_404(cp_id)
    return jsonify(chargepoint_json(services().fleet.get(cp_id))["connectors"])


@api.get("/chargepoints/<cp_id>/status-history")
def status_history(cp_id: str):
    _record_or_404(cp_id)
    _fresh()
    rows = services().store.status_history(cp_id, int_arg("limit", 100, 10000), time_arg("since"))
    return jsonify([iso_fields(r, "ts", "received_at") for r in rows])


@api.get("/chargepoints/<cp_id>/events")
def chargepoint_events(cp_id: str):
    _record_or_404(cp_id)
    return _events(cp_id)


@api.get("/events")
def events():
    return _events(request.args.get("cp_id"))


def _events(cp_id: str | None):
    _fresh()
    rows = services().store.list_events(cp_id=cp_id, kind=request.args.get("kind"),
                                        since=time_arg("since"), limit=int_arg("limit", 100, 10000))
    return jsonify([iso_fields(r, "ts") for r in rows])


@api.get("/chargepoints/<cp_id>/meter-values")
def meter_values(cp_id: str):
    _record_or_404(cp_id)
    _fresh()
    rows = services().store.list_meter_values(
        cp_id=cp_id, transaction_id=int_arg("transaction_id"),
        measurand=request.args.get("measurand"), since=time_arg("since"),
        until=time_arg("until"), limit=int_arg("limit", 1000, 100000))
    return jsonify([iso_fields(r, "ts") for r in rows])


@api.get("/chargepoints/<cp_id>/telemetry")
def telemetry(cp_id: str):
    _fresh()
    rows = services().store.list_telemetry(cp_id, since=time_arg("since"), until=time_arg("until"),
                                           limit=int_arg("limit", 1000, 100000))
    for row in rows:
        row["time"] = to_iso(row["ts"], millis=True)
        row.pop("id", None)
    return jsonify(rows)


@api.get("/telemetry/stats")
def telemetry_stats():
    return jsonify(services().ingest.stats() if services().ingest else {})


# Operations --------------------------------------------------------------------
@api.get("/operations")
def operations():
    return jsonify([{"operation": name, "request_schema": schemas.schema(name),
                     "response_schema": schemas.schema(name, True)}
                    for name in schemas.CENTRAL_SYSTEM_ACTIONS])


@api.post("/chargepoints/<cp_id>/<operation>")
def run_operation(cp_id: str, operation: str):
    payload = json_body()
    timeout = request.args.get("timeout", type=float)  # (0, MAX_CALL_TIMEOUT] when documented
    result = services().central.call_threadsafe(cp_id, operation, payload, timeout)
    return jsonify(chargepoint=cp_id, operation=operation, result=result)


# Transactions --------------------------------------------------------------------
CSV_COLUMNS = ("id", "cp_id", "connector_id", "id_tag", "id_tag_status", "start", "stop",
               "meter_start", "meter_stop", "energy_wh", "stop_reason", "reservation_id")


def transaction_json(row: dict) -> dict:
    return {"id": row["id"], "cp_id": row["cp_id"], "connector_id": row["connector_id"],
            "id_tag": row["id_tag"], "id_tag_status": row["id_tag_status"],
            "start": to_iso(row["start_ts"], millis=True), "stop": to_iso(row["stop_ts"], millis=True),
            "meter_start": row["meter_start"], "meter_stop": row["meter_stop"],
            "energy_wh": row["energy_wh"], "stop_reason": row["stop_reason"],
            "stop_id_tag": row["stop_id_tag"], "reservation_id": row["reservation_id"],
            "active": row["stop_ts"] is None}


@api.get("/transactions")
def transactions():
    return _transactions(request.args.get("cp_id"))


@api.get("/chargepoints/<cp_id>/transactions")
def chargepoint_transactions(cp_id: str):
    _record_or_404(cp_id)
    return _transactions(cp_id)


def spreadsheet_safe(value):
    """A text cell a spreadsheet would run as a formula (=, +, -, @, tab, CR first: an idTag
    chosen by a station can be `=HYPERLINK(...)`) gets a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _transactions(cp_id: str | None):
    state = request.args.get("state")
    if state not in (None, "active", "completed"):
        raise ApiError(400, "state must be active or completed")
    _fresh()
    rows = [transaction_json(r) for r in services().store.list_transactions(
        cp_id=cp_id, id_tag=request.args.get("id_tag"), state=state, since=time_arg("since"),
        until=time_arg("until"), limit=int_arg("limit", 500, 100000))]
    if request.args.get("format") == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: spreadsheet_safe(v) for k, v in row.items()} for row in rows)
        return Response(buffer.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=transactions.csv"})
    return jsonify(rows)


@api.get("/transactions/<int:tx_id>")
def transaction(tx_id: int):
    _fresh()
    row = services().store.get_transaction(tx_id)
    if row is None:
        raise ApiError(404, f"unknown transaction {tx_id}")
    body = transaction_json(row)
    body["meter_values"] = [iso_fields(r, "ts") for r in
                            services().store.list_meter_values(transaction_id=tx_id, limit=100000)]
    return jsonify(body)


# idTags ----------------------------------------------------------------------------
def id_tag_json(row: dict) -> dict:
    expired = row.get("expiry") is not None and row["expiry"] <= time.time()
    return {"id_tag": row["id_tag"], "status": row["status"],
            "effective_status": "Expired" if expired and row["status"] == "Accepted" else row["status"],
            "expiry": to_iso(row.get("expiry")), "parent_id_tag": row.get("parent_id_tag"),
            "note": row.get("note"), "created_at": to_iso(row.get("created_at"))}


def _tag_fields(body: dict, base: dict) -> dict:
    tag = dict(base)
    if "status" in body:
        tag["status"] = body["status"]
    if "expiry" in body:
        tag["expiry"] = parse_time(body["expiry"]) if body["expiry"] is not None else None
    if "parent_id_tag" in body:
        tag["parent_id_tag"] = body["parent_id_tag"]
    if "note" in body:
        tag["note"] = body["note"]
    return tag


def _tag_or_404(id_tag: str) -> dict:
    _fresh()
    row = services().store.get_id_tag(id_tag)
    if row is None:
        raise ApiError(404, f"unknown idTag {id_tag!r}")
    return row


@api.get("/idtags")
def list_id_tags():
    _fresh()
    return jsonify([id_tag_json(r) for r in services().store.list_id_tags()])


@api.post("/idtags")
def create_id_tag():
    body = json_body()
    id_tag = body["id_tag"]
    tag = _tag_fields(body, {"id_tag": id_tag, "status": "Accepted", "created_at": time.time()})
    services().store.save_id_tag(tag)
    _fresh()
    return jsonify(id_tag_json(services().store.get_id_tag(id_tag))), 201


@api.get("/idtags/<id_tag>")
def get_id_tag(id_tag: str):
    return jsonify(id_tag_json(_tag_or_404(id_tag)))


@api.patch("/idtags/<id_tag>")
def patch_id_tag(id_tag: str):
    tag = _tag_fields(json_body(), _tag_or_404(id_tag))
    services().store.save_id_tag(tag)
    return jsonify(id_tag_json(_tag_or_404(id_tag)))


@api.post("/idtags/<id_tag>/block")
def block_id_tag(id_tag: str):
    services().store.save_id_tag(dict(_tag_or_404(id_tag), status="Blocked"))
    return jsonify(id_tag_json(_tag_or_404(id_tag)))


@api.post("/idtags/<id_tag>/unblock")
def unblock_id_tag(id_tag: str):
    services().store.save_id_tag(dict(_tag_or_404(id_tag), status="Accepted"))
    return jsonify(id_tag_json(_tag_or_404(id_tag)))


@api.post("/idtags/<id_tag>/expire")
def expire_id_tag(id_tag: str):
    services().store.save_id_tag(dict(_tag_or_404(id_tag), expiry=time.time()))
    return jsonify(id_tag_json(_tag_or_404(id_tag)))


@api.delete("/idtags/<id_tag>")
def delete_id_tag(id_tag: str):
    _tag_or_404(id_tag)
    services().store.delete_id_tag(id_tag)
    _fresh()
    return "", 204


# ThingSpeak channels and bridges ---------------------------------------------------
def mask_key(key: str | None) -> str | None:
    """A key as listings show it: only its last 4 characters."""
    if not key:
        return key
    return "*" * max(0, len(key) - 4) + key[-4:]


def channel_admin_json(channel: dict, reveal_keys: bool = False) -> dict:
    """A channel for the API; keys in full only in the answer that created them."""
    show = (lambda k: k) if reveal_keys else mask_key
    return {"id": channel["id"], "name": channel["name"], "description": channel["description"],
            "public": channel["public"], "write_key": show(channel["write_key"]),
            "read_key": show(channel["read_key"]), "keys_masked": not reveal_keys,
            "field_names": channel["field_names"],
            "last_entry_id": channel["last_entry_id"],
            "created_at": to_iso(channel["created_at"]), "updated_at": to_iso(channel["updated_at"])}


@api.get("/thingspeak/channels")
def ts_channels():
    return jsonify([channel_admin_json(c) for c in services().channels.all()])


@api.post("/thingspeak/channels")
def ts_create_channel():
    body = json_body()
    try:
        channel = services().channels.create(
            body["name"], body.get("description", ""), body.get("field_names"),
            body.get("public", False),
            body.get("write_key"), body.get("read_key"),
            channel_id=int(body["id"]) if "id" in body else None)
    except ValueError as exc:
        raise ApiError(409, str(exc)) from None
    _fresh()
    return jsonify(channel_admin_json(channel, reveal_keys=True)), 201


@api.post("/thingspeak/channels/<int:channel_id>/regenerate-keys")
def ts_regenerate_keys(channel_id: int):
    """New random keys (``{"keys": ["write", "read"]}``, both by default), shown once."""
    which = json_body().get("keys", ["write", "read"])
    if (not isinstance(which, list) or not which
            or any(k not in ("write", "read") for k in which)):
        raise ApiError(400, 'keys must be a non-empty list of "write" and/or "read"')
    channel = services().channels.regenerate_keys(channel_id, set(which))
    if channel is None:
        raise ApiError(404, f"unknown channel {channel_id}")
    _fresh()
    return jsonify(channel_admin_json(channel, reveal_keys=True))


@api.get("/thingspeak/channels/<int:channel_id>")
def ts_channel(channel_id: int):
    channel = services().channels.get(channel_id)
    if channel is None:
        raise ApiError(404, f"unknown channel {channel_id}")
    return jsonify(channel_admin_json(channel))


@api.delete("/thingspeak/channels/<int:channel_id>")
def ts_delete_channel(channel_id: int):
    if not services().channels.delete(channel_id):
        raise ApiError(404, f"unknown channel {channel_id}")
    return "", 204


@api.get("/thingspeak/bridges")
def ts_bridges():
    return jsonify(services().bridge.targets())


@api.get("/chargepoints/<cp_id>/thingspeak")
def ts_bridge(cp_id: str):
    target = services().bridge.target(cp_id)
    if target is None:
        raise ApiError(404, f"no ThingSpeak bridge for {cp_id!r}")
    return jsonify(target)


@api.put("/chargepoints/<cp_id>/thingspeak")
def ts_put_bridge(cp_id: str):
    body = json_body()
    try:
        target = services().bridge.configure(cp_id, body.get("url", "https://api.thingspeak.com"),
                                             int(body["channel"]), body["write_key"],
                                             body.get("enabled", True))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return jsonify(target)


@api.delete("/chargepoints/<cp_id>/thingspeak")
def ts_delete_bridge(cp_id: str):
    if not services().bridge.remove(cp_id):
        raise ApiError(404, f"no ThingSpeak bridge for {cp_id!r}")
    return "", 204


# Files ------------------------------------------------------------------------------
@api.get("/firmware")
def firmware_bundles():
    svc = services()
    out = []
    for name in svc.firmware.names():
        info = svc.firmware.describe(name)
        info["manifest_url"] = f"{svc.public_url}/firmware/{name}/manifest.json"
        out.append(info)
    return jsonify(out)


@api.get("/diagnostics")
def diagnostics_files():
    _fresh()
    svc = services()
    rows = svc.store.list_diagnostics_files(request.args.get("cp_id"))
    # the server's own file path stays on the server: a file is named by station and name
    files = [iso_fields({k: v for k, v in r.items() if k != "path"}, "received_at") for r in rows]
    return jsonify({"upload_url": f"{svc.public_url}/diagnostics/<chargePointId>",
                    "files": files})


# Service ------------------------------------------------------------------------------
@api.get("/stats")
def stats():
    svc = services()
    store_stats = svc.store.stats()
    process = psutil.Process(os.getpid())
    ingest = svc.ingest.stats() if svc.ingest else {}
    ingest.pop("stations", None)
    records = svc.fleet.all()
    return jsonify({
        "uptime_s": round(time.time() - _STARTED, 1),
        "telemetry_stored": store_stats["committed"].get("telemetry", 0),
        "telemetry_accepted": svc.ingest.counters.get("telemetry_accepted", 0) if svc.ingest else 0,
        "chargepoints": {"total": len(records),
                         "ocpp_online": sum(1 for r in records if r.get("ocpp_online")),
                         "telemetry_online": sum(1 for r in records if r.get("telemetry_online"))},
        "ocpp": svc.central.stats(),
        "mqtt": ingest,
        "store": store_stats,
        "process": {"rss_bytes": process.memory_info().rss,
                    "cpu_seconds": round(sum(process.cpu_times()[:2]), 3),
                    "threads": process.num_threads()},
        "ports": svc.ports,
    })


@api.get("/health")
def health():
    store = services().store.health()
    if not store["ok"]:
        return jsonify(status="unavailable", reason=store["reason"], store=store), 503
    return jsonify(status="ok")


@api.get("/openapi.json")
def openapi():
    return jsonify(openapi_document(services().public_url))
