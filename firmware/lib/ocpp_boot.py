"""Registration: BootNotification until the central system answers Accepted (OCPP 1.6
4.2). Loaded by ocpp_link.Link for a new connection and dropped again (paging.py): its
code is needed once per connection. Pending answers the central system's calls while it
waits for the interval, Rejected answers nothing (ocpp_check); a TriggerMessage
(BootNotification) ends the wait (`end_wait`).

    await register(link, ws)          # returns once Accepted, or when the link closes
    payload(cp); on_result(link, res) # also for a triggered BootNotification (ocpp_trigger)
    end_wait(link)                    # send BootNotification now (TriggerMessage)
"""

import asyncio

import ocpp_messages
from ocpp_rpc import CallError


def payload(cp):
    return ocpp_messages.boot_notification(cp.cp_id, cp.fw_version)


def on_result(link, res):
    """The answer's currentTime sets the clock; an Accepted interval is the heartbeat's."""
    if not res:  # a CALLERROR (the outbox calls back with None)
        return
    link.on_heartbeat(res)
    if res.get("status") == "Accepted" and res.get("interval", 0) > 0:
        link.cp.cfg.values["HeartbeatInterval"] = res["interval"]


def end_wait(link):
    if link.boot_wake is not None:
        link.boot_wake.set()


async def register(link, ws):
    cp = link.cp
    try:
        while ws.open:
            # made before the call: a TriggerMessage(BootNotification) that arrives while the
            # call is on the wire, before the Pending answer, still ends the next wait
            link.boot_wake = wake = asyncio.Event()
            try:
                res = await link.call("BootNotification", payload(cp), registered=False)
            except CallError as exc:
                cp.log("ocpp: BootNotification refused: %s" % exc.code)
                await asyncio.sleep(30)
                continue
            except asyncio.TimeoutError:
                continue
            on_result(link, res)
            link.registration = res["status"]
            cp.log("ocpp: BootNotification %s (interval %s)" % (res["status"], res.get("interval")))
            if link.registration == "Accepted":
                link.accepted_once = True
                fw = cp.features.peek("fw")
                if fw is not None:
                    fw.on_accepted()
                return
            # the retry interval; a TriggerMessage(BootNotification) ends it (ocpp_trigger)
            try:
                await asyncio.wait_for(wake.wait(), max(1, res.get("interval") or 30))
            except asyncio.TimeoutError:
                pass
    finally:
        link.boot_wake = None
