"""The charge point's outgoing OCPP 1.6 messages that carry more than one field: one
payload builder each, in the order a session sends them (BootNotification,
StatusNotification, StartTransaction, MeterValues with the SampledValues read from the
station, StopTransaction). Plain functions of
plain values: the components decide when a message goes out (the connector, the link,
the outbox, the features), this module only what it says. The one-field payloads are
written where they are sent: Heartbeat `{}`, Authorize `{"idTag": tag}`, the firmware and
diagnostics statuses `{"status": status}`."""


def boot_notification(cp_id, firmware_version):
    return {"chargePointVendor": "PicoCharge", "chargePointModel": "PicoCharge-W",
            "chargePointSerialNumber": cp_id[:25], "firmwareVersion": firmware_version,
            "meterType": "PicoCharge CT+ZMPT"}


def status_notification(cid, status, timestamp):
    """`status`: (ChargePointStatus, ChargePointErrorCode, info or None), as
    connector_state.derive gives it."""
    p = {"connectorId": cid, "status": status[0], "errorCode": status[1], "timestamp": timestamp}
    if status[2]:
        p["info"] = str(status[2])[:50]
    return p






def start_transaction(id_tag, meter_wh, timestamp, reservation_id=None):
    p = {"connectorId": 1, "idTag": id_tag, "meterStart": meter_wh, "timestamp": timestamp}
    if reservation_id is not None:
        p["reservationId"] = reservation_id
    return p




def sampled_values(station, meter_wh, measurands, context):
    """SampledValue dicts of `measurands` read from `station` now (`meter_wh()`: the
    energy register as reported, never lower than before); one that cannot be read is
    left out."""
    out = []
    for m in measurands:
        loc = "Outlet"
        try:
            if m == "Energy.Active.Import.Register":
                v = "%d" % meter_wh()
                u = "Wh"
            else:
                if m == "Power.Active.Import":
                    v = station.power_w()
                    u = "W"
                elif m == "Current.Import":
                    v = station.current_a()
                    u = "A"
                elif m == "Current.Offered":
                    v = station.offered_a()
                    u = "A"
                    loc = None
                elif m == "Voltage":
                    v = station.voltage_v()
                    u = "V"
                else:
                    v = station.temperature_c()
                    u = "Celsius"
                    loc = "Body"
                if v is not None:
                    v = "%.1f" % v
        except Exception:
            v = None
        if v is None:
            continue
        sv = {"value": v, "context": context, "measurand": m, "unit": u}
        if loc:
            sv["location"] = loc
        out.append(sv)
    return out


def meter_values(cid, timestamp, sampled_values, transaction_id=None):
    p = {"connectorId": cid, "meterValue": [{"timestamp": timestamp, "sampledValue": sampled_values}]}
    if transaction_id is not None:
        p["transactionId"] = transaction_id
    return p


def stop_transaction(transaction_id, meter_wh, timestamp, reason, id_tag=None, data=None):
    p = {"transactionId": transaction_id, "meterStop": meter_wh, "timestamp": timestamp,
         "reason": reason}
    if id_tag:
        p["idTag"] = id_tag
    if data:
        p["transactionData"] = data
    return p

