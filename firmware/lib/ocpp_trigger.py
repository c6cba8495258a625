"""OCPP 1.6 Remote Trigger: TriggerMessage for every triggerable message."""

REQUESTABLE = "BootNotification|DiagnosticsStatusNotification|FirmwareStatusNotification|Heartbeat|MeterValues|StatusNotification"


class Trigger:
    HANDLERS = {
        "TriggerMessage": ("trigger", {"requestedMessage": "!e:" + REQUESTABLE, "connectorId": "i"}),
    }

    def __init__(self, cp):
        self.cp = cp

    def trigger(self, p):
        cid = p.get("connectorId")
        if cid is not None and cid not in (0, 1):
            return {"status": "Rejected"}
        what = p["requestedMessage"]
        cp = self.cp
        if what == "BootNotification":
            cp.queue("BootNotification", cp.boot_payload(), cp.on_boot_result)
        elif what == "DiagnosticsStatusNotification":
            cp.queue(what, {"status": cp.fw_state(True)})
        elif what == "FirmwareStatusNotification":
            cp.queue(what, {"status": cp.fw_state()})
        elif what == "Heartbeat":
            cp.queue("Heartbeat", {}, cp.on_heartbeat)
        elif what == "MeterValues":
            cp.queue("MeterValues", cp.meter_values_payload(1 if cid is None else cid, "Trigger"))
        else:
            for c in ((0, 1) if cid is None else (cid,)):
                cp.sent_status.pop(c, None)  # sent again by the control tick
            cp.poke()
        return {"status": "Accepted"}


Feature = Trigger  # what chargepoint.ChargePoint.feature() builds
