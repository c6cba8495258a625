"""OCPP 1.6 Core profile: the operations the central system calls (Reset,
ChangeAvailability, Get/ChangeConfiguration, UnlockConnector, DataTransfer,
Remote Start/Stop), and checking a new configuration value. Loaded when the central
system first calls one of them; the charge point's own Core messages are built in
ocpp_messages.py and sent by the connector (ocpp_tx.py) and the link (ocpp_link.py)."""

import asyncio

import ocpp_config
import ocpp_rpc
from ocpp_rpc import CallError

MEASURANDS = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import",
              "Current.Offered", "Voltage", "Temperature")


def parse_value(kind, text):
    """The typed value of `text` for a key of `kind`; ValueError if it does not fit."""
    if kind == "b":
        low = text.lower()
        if low not in ("true", "false"):
            raise ValueError("boolean")
        return low == "true"
    if kind == "i":
        value = int(text)
        if value < 0:
            raise ValueError("negative")
        return value
    if kind == "m":
        parts = [v.strip() for v in text.split(",") if v.strip()]
        if len(parts) > 6:
            raise ValueError("too many")
        for p in parts:
            if p not in MEASURANDS:
                raise ValueError("unknown measurand")
        return ",".join(parts)
    if len(text) > 500:
        raise ValueError("too long")
    return text


def change(cfg, key, text):
    """ChangeConfiguration status."""
    r = ocpp_config.row(key)
    if r is None:
        return "NotSupported"
    flags = r[2]
    if "r" in flags:
        return "Rejected"
    try:
        value = parse_value(r[1], text)
    except ValueError:
        return "Rejected"
    if key == "AuthorizationKey" and not (16 <= len(value) <= 40):
        return "Rejected"
    if key == "HeartbeatInterval" and value < 1:
        return "Rejected"
    cfg.values[key] = value
    cfg.save()
    return "RebootRequired" if "R" in flags else "Accepted"


def text_of(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def entries(cfg, keys=None, max_keys=64):
    """(configurationKey list, unknownKey list) for GetConfiguration."""
    known = []
    unknown = []
    names = keys if keys else sorted(line.split("|")[0] for line in ocpp_config.TABLE.split("\n") if line)
    for key in names:
        r = ocpp_config.row(key)
        if r is None or "w" in r[2]:
            if keys:
                unknown.append(key)
            continue
        if len(known) >= max_keys:
            break
        known.append({"key": key, "readonly": "r" in r[2], "value": text_of(cfg.get(key))})
    return known, unknown


class Core:
    """The Core operations the central system calls."""

    HANDLERS = {
        "Reset": ("reset", {"type": "!e:Hard|Soft"}),
        "ChangeAvailability": ("change_availability", {"connectorId": "!i", "type": "!e:Inoperative|Operative"}),
        "GetConfiguration": ("get_configuration", {"key": "a"}),
        "ChangeConfiguration": ("change_configuration", {"key": "!s50", "value": "!s500"}),
        "UnlockConnector": ("unlock_connector", {"connectorId": "!i"}),
        "DataTransfer": ("data_transfer", {"vendorId": "!s255", "messageId": "s50", "data": "s"}),
        "RemoteStartTransaction": ("remote_start", {"connectorId": "i", "idTag": "!s20", "chargingProfile": "o"}),
        "RemoteStopTransaction": ("remote_stop", {"transactionId": "!i"}),
    }

    def __init__(self, cp):
        self.cp = cp

    def reset(self, p):
        kind = p["type"]
        if self.cp.connector.begin_reset(kind):
            asyncio.create_task(_reset(self.cp, kind))
        return {"status": "Accepted"}

    def change_availability(self, p):
        cid = p["connectorId"]
        if cid not in (0, 1):
            return {"status": "Rejected"}
        return {"status": self.cp.connector.set_availability(p["type"] == "Operative")}

    def get_configuration(self, p):
        keys = p.get("key")
        if keys:
            for k in keys:
                if not isinstance(k, str):
                    raise CallError(ocpp_rpc.TYPE_VIOLATION, "key must hold strings")
        cfg = self.cp.cfg
        known, unknown = entries(cfg, keys, cfg.get("GetConfigurationMaxKeys"))
        out = {"configurationKey": known}
        if unknown:
            out["unknownKey"] = unknown
        return out

    def change_configuration(self, p):
        cp = self.cp
        key = p["key"]
        status = change(cp.cfg, key, p["value"])
        if status == "Accepted":
            cp.connector.reschedule(key)
        return {"status": status}

    def unlock_connector(self, p):
        if p["connectorId"] != 1:
            return {"status": "NotSupported"}
        self.cp.connector.stop_transaction("UnlockCommand")
        return {"status": "Unlocked"}

    def data_transfer(self, p):
        if p["vendorId"] != "PicoCharge":
            return {"status": "UnknownVendorId"}
        if p.get("messageId") == "echo":
            return {"status": "Accepted", "data": p.get("data", "")}
        if p.get("messageId") == "summary":
            import json
            return {"status": "Accepted", "data": json.dumps(self.cp.summary())}
        return {"status": "UnknownMessageId"}

    def remote_start(self, p):
        cid = p.get("connectorId", 1)
        if cid != 1:
            return {"status": "Rejected"}
        cp = self.cp
        profile = p.get("chargingProfile")
        if profile is not None:
            cp.feature("smart").validate(profile, 1)
            if profile.get("chargingProfilePurpose") != "TxProfile":
                return {"status": "Rejected"}
        tag = p["idTag"]
        con = cp.connector
        if con.tx is not None or not con.available or con.status() in ("Faulted", "Unavailable") \
                or not cp.resv_matches(tag):
            return {"status": "Rejected"}
        con.remote_start(profile)
        if cp.cfg.get("AuthorizeRemoteTxRequests"):
            asyncio.create_task(cp.feature("auth").authorize(tag))
        else:
            con.arm(tag, None)
        return {"status": "Accepted"}

    def remote_stop(self, p):
        con = self.cp.connector
        tx = con.tx
        if tx is None or tx.get("txid") != p["transactionId"]:
            return {"status": "Rejected"}
        con.stop_transaction("Remote")
        return {"status": "Accepted"}


async def _reset(cp, kind):
    await asyncio.sleep_ms(200)  # the answer to Reset goes out first
    con = cp.connector
    if con.tx is not None:
        con.stop_transaction("HardReset" if kind == "Hard" else "SoftReset")
    for _ in range(100 if kind == "Soft" else 30):
        if not len(cp.journal) and not cp.outbox.items:
            break
        await asyncio.sleep_ms(100)
    con.reboot(kind)


Feature = Core  # what chargepoint.ChargePoint.feature() builds
