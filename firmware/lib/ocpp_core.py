"""OCPP 1.6 Core profile: the operations the central system calls (Reset,
ChangeAvailability, Get/ChangeConfiguration, ClearCache, UnlockConnector, DataTransfer,
Remote Start/Stop). Loaded when the central system first calls one of them; the
charge point's own Core messages live in chargepoint.py and ocpp_tx.py."""

import ocpp_rpc
from ocpp_rpc import CallError


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
        self.cp.request_reset(p["type"])
        return {"status": "Accepted"}

    def change_availability(self, p):
        cid = p["connectorId"]
        if cid not in (0, 1):
            return {"status": "Rejected"}
        return {"status": self.cp.change_availability(p["type"] == "Operative")}

    def get_configuration(self, p):
        keys = p.get("key")
        if keys:
            for k in keys:
                if not isinstance(k, str):
                    raise CallError(ocpp_rpc.TYPE_VIOLATION, "key must hold strings")
        cfg = self.cp.cfg
        known, unknown = cfg.entries(keys, cfg.get("GetConfigurationMaxKeys"))
        out = {"configurationKey": known}
        if unknown:
            out["unknownKey"] = unknown
        return out

    def change_configuration(self, p):
        status = self.cp.cfg.change(p["key"], p["value"])
        if status == "Accepted":
            self.cp.config_changed(p["key"])
        return {"status": status}

    def unlock_connector(self, p):
        if p["connectorId"] != 1:
            return {"status": "NotSupported"}
        self.cp.stop_transaction("UnlockCommand")
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
        profile = p.get("chargingProfile")
        if profile is not None:
            self.cp.smart.validate(profile, 1)
            if profile.get("chargingProfilePurpose") != "TxProfile":
                return {"status": "Rejected"}
        return {"status": self.cp.remote_start(p["idTag"], profile)}

    def remote_stop(self, p):
        return {"status": self.cp.remote_stop(p["transactionId"])}
