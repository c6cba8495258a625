"""OCPP 1.6 Remote Trigger: TriggerMessage for every triggerable message.

Accepted charge point: the message is queued like any other. While the central system
holds the charge point Pending (OCPP 1.6 §4.2: it sends no request unless a TriggerMessage
asks for it) the message is sent at once, outside the outbox, which waits for Accepted; a
triggered BootNotification ends the wait for the retry interval."""

import asyncio

import ocpp_messages

REQUESTABLE = "BootNotification|DiagnosticsStatusNotification|FirmwareStatusNotification|Heartbeat|MeterValues|StatusNotification"


def status_payload(cp, cid):
    cur = cp.connector.status_now.get(cid)
    if cur is None:
        return None
    return ocpp_messages.status_notification(cid, cur, cp.clock.iso())


async def _send_now(cp, action, payloads, on_result=None):
    for p in payloads:
        if p is None:
            continue
        try:
            res = await cp.link.call(action, p, registered=False)
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
        link = cp.link
        if link.registration != "Accepted":  # Pending: sent now (the outbox waits for Accepted)
            if what == "BootNotification":
                import ocpp_boot  # dropped again by the tick (paging.TRANSIENT)

                ocpp_boot.end_wait(link)
                return {"status": "Accepted"}
            on_result = None
            if what == "StatusNotification":
                payloads = [status_payload(cp, c) for c in cids]
            elif what == "MeterValues":
                payloads = [cp.connector.meter_values(1 if cid is None else cid, "Trigger")]
            elif what == "Heartbeat":
                payloads = [{}]
                on_result = link.on_heartbeat
            else:
                payloads = [{"status": cp.fw_state(what[0] == "D")}]
            asyncio.create_task(_send_now(cp, what, payloads, on_result))
            return {"status": "Accepted"}
        add = cp.outbox.add
        if what == "BootNotification":
            import ocpp_boot  # dropped again by the tick (paging.TRANSIENT)

            add("BootNotification", ocpp_boot.payload(cp), lambda res: ocpp_boot.on_result(link, res))
        elif what == "DiagnosticsStatusNotification":
            add(what, {"status": cp.fw_state(True)})
        elif what == "FirmwareStatusNotification":
            add(what, {"status": cp.fw_state()})
        elif what == "Heartbeat":
            add("Heartbeat", {}, link.on_heartbeat)
        elif what == "MeterValues":
            add("MeterValues", cp.connector.meter_values(1 if cid is None else cid, "Trigger"))
        else:
            cp.connector.resend_status(cids)  # sent again by the control tick
        return {"status": "Accepted"}


Feature = Trigger  # what chargepoint.ChargePoint.feature() builds
