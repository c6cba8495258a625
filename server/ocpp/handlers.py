"""Handlers for every charge-point-initiated OCPP 1.6 message, registered by decorator.

A handler gets the connection (``conn.cp_id``, ``conn.central``) and the schema-valid
payload and returns the response payload, or is a coroutine that does. A handler whose
answer says something was recorded (transactions, meter values, status, data transfer)
awaits the store's commit first; the other writes are queued.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from server.ocpp.errors import INTERNAL_ERROR, SECURITY_ERROR, OcppError
from server.ocpp.transactions import INT64_MAX, committed, require_int, require_store
from server.timeutil import parse_time, to_iso

Handler = Callable[[Any, dict], dict]
HANDLERS: dict[str, Handler] = {}

# OCPP 1.6 SampledValue defaults (§7.45), stored explicitly so queries need no special case.
SAMPLED_VALUE_DEFAULTS = {
    "context": "Sample.Periodic", "format": "Raw", "measurand": "Energy.Active.Import.Register",
    "location": "Outlet", "unit": "Wh",
}


def handles(action: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        HANDLERS[action] = func
        return func
    return register


def _time_or_now(value: str | None, now: float) -> float:
    if not value:
        return now
    try:
        return parse_time(value)
    except ValueError:
        return now


def require_connector(conn, payload: dict) -> None:
    """connectorId within 0..ocpp.max_connectors (PropertyConstraintViolation beyond)."""
    require_int(payload, "connectorId", 0, int(conn.central.config.ocpp["max_connectors"]))


def id_tag_info(central, id_tag: str, now: float) -> dict:
    """IdTagInfo for an idTag from the idTag table (unknown → Invalid)."""
    tag = central.store.get_id_tag(id_tag)
    if tag is None:
        return {"status": "Invalid"}
    status = tag["status"]
    if status == "Accepted" and tag.get("expiry") is not None and tag["expiry"] <= now:
        status = "Expired"
    info = {"status": status}
    if tag.get("expiry") is not None:
        info["expiryDate"] = to_iso(tag["expiry"])
    if tag.get("parent_id_tag"):
        info["parentIdTag"] = tag["parent_id_tag"]
    return info


@handles("BootNotification")
def boot_notification(conn, payload: dict) -> dict:
    central = conn.central
    require_store(central.store)
    now = time.time()
    record = central.fleet.get(conn.cp_id) or {}
    registration = record.get("registration")
    interval = int(central.config.ocpp["heartbeat_interval"])
    if registration is None:
        if not central.config.ocpp["auto_register"]:
            # Nobody registered this id: it gets no fleet record, only a line in the
            # bounded list of strangers that operators see (and can register from).
            registration = central.config.ocpp["unknown_chargepoints"]
            central.fleet.strangers.note(
                conn.cp_id, "ocpp", conn.address, answered=registration,
                vendor=payload["chargePointVendor"][:20], model=payload["chargePointModel"][:20],
                firmware=(payload.get("firmwareVersion") or "")[:50])
            conn.accepted = False
            return {"status": registration, "currentTime": to_iso(now, millis=True),
                    "interval": interval}
        central.fleet.register(conn.cp_id, "Accepted", auth_key=conn.presented_password,
                               by_its_own_session=True)
        # the connection was attached before this record existed: mark it online now
        central.fleet.set_ocpp_online(conn.cp_id, True, "registered at its first BootNotification")
        registration = "Accepted"
    central.fleet.update(
        conn.cp_id,
        vendor=payload["chargePointVendor"], model=payload["chargePointModel"],
        serial_number=payload.get("chargePointSerialNumber"),
        box_serial_number=payload.get("chargeBoxSerialNumber"),
        firmware_version=payload.get("firmwareVersion"), iccid=payload.get("iccid"),
        imsi=payload.get("imsi"), meter_type=payload.get("meterType"),
        meter_serial_number=payload.get("meterSerialNumber"),
        heartbeat_interval=interval, boot_at=now, last_seen=now)
    central.fleet.event(conn.cp_id, "boot", now=now, status=registration,
                        vendor=payload["chargePointVendor"], model=payload["chargePointModel"],
                        firmware=payload.get("firmwareVersion"))
    conn.accepted = registration == "Accepted"
    conn.heartbeat_interval = interval
    return {"status": registration, "currentTime": to_iso(now, millis=True), "interval": interval}


@handles("Heartbeat")
def heartbeat(conn, payload: dict) -> dict:
    return {"currentTime": to_iso(time.time(), millis=True)}


@handles("StatusNotification")
async def status_notification(conn, payload: dict) -> dict:
    central = conn.central
    require_store(central.store)
    require_connector(conn, payload)
    now = time.time()
    written = central.fleet.set_connector_status({
        "cp_id": conn.cp_id, "connector_id": payload["connectorId"], "status": payload["status"],
        "error_code": payload["errorCode"], "info": payload.get("info"),
        "vendor_id": payload.get("vendorId"), "vendor_error_code": payload.get("vendorErrorCode"),
        "ts": _time_or_now(payload.get("timestamp"), now), "received_at": now})
    await committed(written, central.commit_timeout)
    return {}


@handles("Authorize")
def authorize(conn, payload: dict) -> dict:
    return {"idTagInfo": id_tag_info(conn.central, payload["idTag"], time.time())}


@handles("StartTransaction")
async def start_transaction(conn, payload: dict) -> dict:
    central = conn.central
    require_connector(conn, payload)
    require_int(payload, "meterStart", -INT64_MAX, INT64_MAX)
    require_int(payload, "reservationId", -INT64_MAX, INT64_MAX)
    now = time.time()
    info = id_tag_info(central, payload["idTag"], now)
    tx_id, created = await central.transactions.start(
        conn.cp_id, payload["connectorId"], payload["idTag"], payload["meterStart"],
        payload["timestamp"], _time_or_now(payload["timestamp"], now),
        payload.get("reservationId"), info["status"])
    if created:
        central.fleet.event(conn.cp_id, "transaction_started", now=now, transaction_id=tx_id,
                            connector_id=payload["connectorId"], id_tag=payload["idTag"])
    else:
        central.fleet.event(conn.cp_id, "transaction_start_repeated", now=now,
                            transaction_id=tx_id)
    return {"transactionId": tx_id, "idTagInfo": info}


def _meter_rows(conn, connector_id: int, transaction_id: int | None, meter_values: list,
                source: str, now: float) -> list[dict]:
    rows = []
    for meter_value in meter_values:
        ts = _time_or_now(meter_value["timestamp"], now)
        for sampled in meter_value["sampledValue"]:
            row = {key: sampled.get(key, default) for key, default in SAMPLED_VALUE_DEFAULTS.items()}
            row.update(cp_id=conn.cp_id, connector_id=connector_id, transaction_id=transaction_id,
                       ts=ts, value=sampled["value"], phase=sampled.get("phase"), source=source)
            rows.append(row)
    return rows


@handles("StopTransaction")
async def stop_transaction(conn, payload: dict) -> dict:
    central = conn.central
    require_int(payload, "meterStop", -INT64_MAX, INT64_MAX)
    now = time.time()
    tx_id = payload["transactionId"]
    rows = _meter_rows(conn, 0, tx_id, payload.get("transactionData", []), "StopTransaction", now)
    outcome, row = await central.transactions.stop(conn.cp_id, tx_id, {
        "meter_stop": payload["meterStop"], "stop_ts": _time_or_now(payload["timestamp"], now),
        "reason": payload.get("reason", "Local"), "id_tag": payload.get("idTag")}, rows)
    if outcome == "stopped":
        central.fleet.event(conn.cp_id, "transaction_stopped", now=now, transaction_id=tx_id,
                            reason=payload.get("reason", "Local"),
                            energy_wh=payload["meterStop"] - row["meter_start"])
    if "idTag" in payload:
        if outcome in ("stopped", "repeated"):
            return {"idTagInfo": id_tag_info(central, payload["idTag"], now)}
        # OCPP answers every StopTransaction; an idTag for a stop we refused is not accepted.
        return {"idTagInfo": {"status": "Invalid"}}
    return {}


@handles("MeterValues")
async def meter_values(conn, payload: dict) -> dict:
    require_connector(conn, payload)
    rows = _meter_rows(conn, payload["connectorId"], payload.get("transactionId"),
                       payload["meterValue"], "MeterValues", time.time())
    outcome = await conn.central.transactions.meter_values(
        conn.cp_id, payload.get("transactionId"), rows)
    if outcome == "stored":
        conn.central.counters["meter_values_stored"] += len(rows)
    return {}


# A station's telemetry report inside its OCPP session (docs/architecture.md): it goes
# through the MQTT ingest's pipeline, not into data_transfers (one copy of the data).
TELEMETRY_TRANSFER = ("PicoCharge", "telemetry")


async def telemetry_transfer(conn, payload: dict) -> dict:
    """Accepted once the row (or, for a duplicate seq, its first copy) is committed;
    Rejected with the reason when the report is invalid (counted like an invalid MQTT
    message, nothing stored); a store that cannot commit: InternalError, try again."""
    central = conn.central
    require_store(central.store)
    ingest = central.telemetry_ingest
    if ingest is None:
        raise OcppError(INTERNAL_ERROR, "telemetry ingest not running, try again later")
    loop = asyncio.get_running_loop()
    settled = loop.create_future()

    def settle(stored: bool) -> None:
        if not settled.done():
            settled.set_result(stored)

    def acknowledge(stored: bool = True) -> None:  # on the store's writer thread
        try:
            loop.call_soon_threadsafe(settle, stored)
        except RuntimeError:  # the loop has closed: nobody waits for the answer any more
            pass

    # no data at all is an empty report: invalid JSON, counted as such
    invalid = ingest.handle_ocpp(conn.cp_id, payload.get("data", ""), acknowledge)
    if invalid is not None:
        return {"status": "Rejected", "data": invalid}
    try:
        stored = await asyncio.wait_for(settled, central.commit_timeout)
    except TimeoutError:
        raise OcppError(INTERNAL_ERROR, "store did not commit in time, try again later") from None
    if not stored:
        raise OcppError(INTERNAL_ERROR, "the message could not be stored")
    return {"status": "Accepted"}


@handles("DataTransfer")
async def data_transfer(conn, payload: dict) -> dict:
    central = conn.central
    if (payload["vendorId"], payload.get("messageId")) == TELEMETRY_TRANSFER:
        return await telemetry_transfer(conn, payload)
    require_store(central.store)
    written = central.store.add_data_transfer({
        "ts": time.time(), "cp_id": conn.cp_id, "direction": "in",
        "vendor_id": payload["vendorId"], "message_id": payload.get("messageId"),
        "data": payload.get("data") if isinstance(payload.get("data"), str)
        else json.dumps(payload.get("data"))})
    await committed(written, central.commit_timeout)
    if payload["vendorId"] not in central.config.ocpp["data_transfer_vendors"]:
        return {"status": "UnknownVendorId"}
    return {"status": "Accepted"}


@handles("FirmwareStatusNotification")
def firmware_status_notification(conn, payload: dict) -> dict:
    require_store(conn.central.store)
    conn.central.fleet.update(conn.cp_id, firmware_status=payload["status"])
    conn.central.fleet.event(conn.cp_id, "firmware_status", status=payload["status"])
    return {}


@handles("DiagnosticsStatusNotification")
def diagnostics_status_notification(conn, payload: dict) -> dict:
    require_store(conn.central.store)
    conn.central.fleet.update(conn.cp_id, diagnostics_status=payload["status"])
    conn.central.fleet.event(conn.cp_id, "diagnostics_status", status=payload["status"])
    return {}


def require_accepted(conn, action: str) -> None:
    """Before an Accepted BootNotification a charge point may only send BootNotification."""
    if action != "BootNotification" and not conn.accepted:
        raise OcppError(SECURITY_ERROR,
                        f"{action} refused: charge point is not accepted; send BootNotification")
