"""OCPP 1.6 Remote Trigger: TriggerMessage for every triggerable message.

Accepted charge point: the message is queued like any other. While the central system
holds the charge point Pending (OCPP 1.6 §4.2: it sends no request unless a TriggerMessage
asks for it) the message is sent at once, outside the outbox, which waits for Accepted; a
triggered BootNotification ends the wait for the retry interval."""

import asyncio

REQUESTABLE = "BootNotification|DiagnosticsStatusNotification|FirmwareStatusNotification|Heartbeat|MeterValues|StatusNotification"


def status_payload(cp, cid):
    cur = cp.status_now.get(cid)
    if cur is None:
        return None
    p = {"connectorId": cid, "status": cur[0], "errorCode": cur[1], "timestamp": cp.clock.iso()}
    if cur[2]:
        p["info"] = str(cur[2])[:50]
    return p


async def _send_now(cp, action, payloads, on_result=None):
    for p in payloads:
        if p is None:
            continue
        try:
            res = await cp.call(action, p, registered=False)
            if on_result is not None:
                on_result(res)
        except Exception as exc:
            cp.log("ocpp: triggered %s failed: %r" % (action, exc))


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
        cids = (0, 1) if cid is None else (cid,)
        if cp.registration != "Accepted":  # Pending: sent now (the outbox waits for Accepted)
            if what == "BootNotification":
                wake = getattr(cp, "boot_wake", None)
                if wake is not None:
                    wake.set()
                return {"status": "Accepted"}
            on_result = None
            if what == "StatusNotification":
                payloads = [status_payload(cp, c) for c in cids]
            elif what == "MeterValues":
                payloads = [cp.meter_values_payload(1 if cid is None else cid, "Trigger")]
            elif what == "Heartbeat":
                payloads = [{}]
                on_result = cp.on_heartbeat
            else:
                payloads = [{"status": cp.fw_state(what[0] == "D")}]
            asyncio.create_task(_send_now(cp, what, payloads, on_result))
            return {"status": "Accepted"}
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
            for c in cids:
                cp.sent_status.pop(c, None)  # sent again by the control tick
            cp.poke()
        return {"status": "Accepted"}


Feature = Trigger  # what chargepoint.ChargePoint.feature() builds
