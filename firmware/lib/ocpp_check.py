"""Answering a CALL of the central system: the table of which feature handles which
action, the payload validator of ocpp_rpc (specs are described there) and the dispatch.
Loaded when a CALL arrives and dropped again when idle (code paging)."""

import sys

import clock as clock_mod
import ocpp_rpc

# CALLs of the central system -> the feature that handles them (loaded on demand), and
# ("-") the actions OCPP 1.6 knows that this charge point does not take as a CALL. One
# string, not a dict: it is searched for the one action asked.
ROUTES = """ Reset=core ChangeAvailability=core GetConfiguration=core ChangeConfiguration=core
 ClearCache=auth UnlockConnector=core DataTransfer=core RemoteStartTransaction=core
 RemoteStopTransaction=core SendLocalList=auth GetLocalListVersion=auth ReserveNow=resv
 CancelReservation=resv SetChargingProfile=smart ClearChargingProfile=smart
 GetCompositeSchedule=smart TriggerMessage=trigger UpdateFirmware=fw GetDiagnostics=fw
 Authorize=- BootNotification=- DiagnosticsStatusNotification=- FirmwareStatusNotification=-
 Heartbeat=- MeterValues=- StartTransaction=- StatusNotification=- StopTransaction=-
 CertificateSigned=- DeleteCertificate=- ExtendedTriggerMessage=- GetInstalledCertificateIds=-
 GetLog=- InstallCertificate=- SignedUpdateFirmware=-
"""


def route(action):
    """The feature name handling `action`, "-" for a known action not taken, or None."""
    i = ROUTES.find(" %s=" % action)
    if i < 0 or " " in action or "=" in action:
        return None
    i += len(action) + 2
    j = i
    while ROUTES[j] > " ":
        j += 1
    return ROUTES[i:j]


def check(payload, spec, where=""):
    """Raise CallError if `payload` does not fit `spec` (see the module docstring)."""
    if not isinstance(payload, dict):
        raise ocpp_rpc.CallError(ocpp_rpc.FORMATION_VIOLATION, "payload%s is not an object" % where)
    for name in spec:
        kind = spec[name]
        required = kind[0] == "!"
        if required:
            kind = kind[1:]
        if name not in payload:
            if required:
                raise ocpp_rpc.CallError(ocpp_rpc.OCCURENCE_VIOLATION, "%s%s is required" % (where, name))
            continue
        value = payload[name]
        c = kind[0]
        if c == "s" or c == "t" or c == "e":
            if not isinstance(value, str):
                raise ocpp_rpc.CallError(ocpp_rpc.TYPE_VIOLATION, "%s%s must be a string" % (where, name))
            if c == "s" and len(kind) > 1 and len(value) > int(kind[1:]):
                raise ocpp_rpc.CallError(ocpp_rpc.PROPERTY_VIOLATION, "%s%s is longer than %s" % (where, name, kind[1:]))
            if c == "t":
                try:
                    clock_mod.parse_iso(value)
                except ValueError:
                    raise ocpp_rpc.CallError(ocpp_rpc.PROPERTY_VIOLATION, "%s%s is not a date-time" % (where, name))
            if c == "e" and value not in kind[2:].split("|"):
                raise ocpp_rpc.CallError(ocpp_rpc.PROPERTY_VIOLATION, "%s%s: %s is not allowed" % (where, name, value))
        elif c == "i":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ocpp_rpc.CallError(ocpp_rpc.TYPE_VIOLATION, "%s%s must be an integer" % (where, name))
        elif c == "d":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ocpp_rpc.CallError(ocpp_rpc.TYPE_VIOLATION, "%s%s must be a number" % (where, name))
        elif c == "b":
            if not isinstance(value, bool):
                raise ocpp_rpc.CallError(ocpp_rpc.TYPE_VIOLATION, "%s%s must be a boolean" % (where, name))
        elif c == "o":
            if not isinstance(value, dict):
                raise ocpp_rpc.CallError(ocpp_rpc.TYPE_VIOLATION, "%s%s must be an object" % (where, name))
        elif c == "a":
            if not isinstance(value, list):
                raise ocpp_rpc.CallError(ocpp_rpc.TYPE_VIOLATION, "%s%s must be an array" % (where, name))
    return payload


async def dispatch(cp, ws, uid, action, body):
    if cp.link.registration == "Rejected":
        return  # a rejected charge point does not answer the central system
    name = route(action) if isinstance(action, str) else None
    if name and name != "-":
        feature = cp.feature(name)
    else:
        code = ocpp_rpc.NOT_SUPPORTED if name else ocpp_rpc.NOT_IMPLEMENTED
        await cp.link.send(ws, ocpp_rpc.error(uid, code, "%s is not handled here" % action))
        return
    meth, spec = feature.HANDLERS[action]
    try:
        check(body, spec)
        res = getattr(feature, meth)(body)
        text = ocpp_rpc.result(uid, res)
    except ocpp_rpc.CallError as exc:
        text = ocpp_rpc.error(uid, exc.code, exc.description)
    except Exception as exc:
        cp.log("ocpp: %s failed: %r" % (action, exc))
        sys.print_exception(exc)
        text = ocpp_rpc.error(uid, ocpp_rpc.INTERNAL_ERROR, "%s failed" % action)
    feature = None  # paging's rule: not held across the await
    cp.log("ocpp: %s -> %s" % (action, text[:80]))
    await cp.link.send(ws, text)
    cp.poke()
