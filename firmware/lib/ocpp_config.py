"""OCPP 1.6 configuration keys (read by every part; Get/ChangeConfiguration in ocpp_core).

Configuration: every key the Core profile requires plus the optional ones we implement
and our own. A key is (default, kind, flags): kind "i" integer, "b" boolean, "s" string,
"csl:<allowed>" comma-separated list of allowed values (measurands); flags "r" read-only,
"R" reboot required, "w" write-only (never shown). Changed values are persisted in
`ocpp/config.json` and survive a reboot.
"""

MEASURANDS = ("Energy.Active.Import.Register", "Power.Active.Import", "Current.Import",
              "Current.Offered", "Voltage", "Temperature")
_M = "csl:" + "|".join(MEASURANDS)

KEYS = {
    # Core
    "AllowOfflineTxForUnknownId": (False, "b", ""),
    "AuthorizationCacheEnabled": (True, "b", ""),
    "AuthorizeRemoteTxRequests": (True, "b", ""),
    "ClockAlignedDataInterval": (0, "i", ""),
    "ConnectionTimeOut": (60, "i", ""),
    "ConnectorPhaseRotation": ("0.RST,1.RST", "s", ""),
    "GetConfigurationMaxKeys": (64, "i", "r"),
    "HeartbeatInterval": (300, "i", ""),
    "LocalAuthorizeOffline": (True, "b", ""),
    "LocalPreAuthorize": (False, "b", ""),
    "MeterValuesAlignedData": ("Energy.Active.Import.Register", _M, ""),
    "MeterValuesAlignedDataMaxLength": (6, "i", "r"),
    "MeterValuesSampledData": ("Energy.Active.Import.Register,Power.Active.Import", _M, ""),
    "MeterValuesSampledDataMaxLength": (6, "i", "r"),
    "MeterValueSampleInterval": (60, "i", ""),
    "MinimumStatusDuration": (0, "i", ""),
    "NumberOfConnectors": (1, "i", "r"),
    "ResetRetries": (1, "i", ""),
    "StopTransactionOnEVSideDisconnect": (True, "b", ""),
    "StopTransactionOnInvalidId": (True, "b", ""),
    "StopTxnAlignedData": ("", _M, ""),
    "StopTxnAlignedDataMaxLength": (6, "i", "r"),
    "StopTxnSampledData": ("Energy.Active.Import.Register", _M, ""),
    "StopTxnSampledDataMaxLength": (6, "i", "r"),
    "SupportedFeatureProfiles": (
        "Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger",
        "s", "r"),
    "SupportedFeatureProfilesMaxLength": (6, "i", "r"),
    "TransactionMessageAttempts": (3, "i", ""),
    "TransactionMessageRetryInterval": (30, "i", ""),
    "UnlockConnectorOnEVSideDisconnect": (False, "b", "r"),
    "WebSocketPingInterval": (60, "i", ""),
    # Local Auth List Management
    "LocalAuthListEnabled": (True, "b", ""),
    "LocalAuthListMaxLength": (64, "i", "r"),
    "SendLocalListMaxLength": (32, "i", "r"),
    # Reservation
    "ReserveConnectorZeroSupported": (False, "b", "r"),
    # Smart Charging
    "ChargeProfileMaxStackLevel": (8, "i", "r"),
    "ChargingScheduleAllowedChargingRateUnit": ("Current,Power", "s", "r"),
    "ChargingScheduleMaxPeriods": (24, "i", "r"),
    "MaxChargingProfilesInstalled": (8, "i", "r"),
    "ConnectorSwitch3to1PhaseSupported": (False, "b", "r"),
    # Security whitepaper (profiles 1/2): the Basic-auth password, write-only
    "AuthorizationKey": ("", "s", "wR"),
    # Ours
    "FirmwareTrialTimeout": (300, "i", ""),
    "ReconnectMaxInterval": (60, "i", ""),
}


class Config:
    def __init__(self, flash, ocpp_section, log=print):
        self.flash = flash
        self.log = log
        self.values = {}
        try:
            saved = flash.read_json("ocpp/config.json")
            for key in saved:
                if key in KEYS:
                    self.values[key] = saved[key]
        except (OSError, ValueError):
            pass
        # the config file's ocpp section may preset keys ("keys": {...})
        preset = (ocpp_section or {}).get("keys") or {}
        for key in preset:
            if key in KEYS and key not in self.values:
                self.values[key] = preset[key]
        if "AuthorizationKey" not in self.values and (ocpp_section or {}).get("password"):
            self.values["AuthorizationKey"] = ocpp_section["password"]

    def get(self, key):
        if key in self.values:
            return self.values[key]
        return KEYS[key][0]

    def list(self, key):
        value = self.get(key)
        return [v.strip() for v in value.split(",") if v.strip()] if value else []

    def text(self, key):
        value = self.get(key)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    def parse(self, key, text):
        """The typed value of `text` for `key`; ValueError if it does not fit."""
        kind = KEYS[key][1]
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
        if kind.startswith("csl:"):
            allowed = kind[4:].split("|")
            parts = [v.strip() for v in text.split(",") if v.strip()]
            if len(parts) > 6:
                raise ValueError("too many")
            for p in parts:
                if p not in allowed:
                    raise ValueError("unknown measurand")
            return ",".join(parts)
        if len(text) > 500:
            raise ValueError("too long")
        return text

    def change(self, key, text):
        """ChangeConfiguration status."""
        if key not in KEYS:
            return "NotSupported"
        flags = KEYS[key][2]
        if "r" in flags:
            return "Rejected"
        try:
            value = self.parse(key, text)
        except ValueError:
            return "Rejected"
        if key == "AuthorizationKey" and not (16 <= len(value) <= 40):
            return "Rejected"
        if key == "HeartbeatInterval" and value < 1:
            return "Rejected"
        self.values[key] = value
        self.save()
        return "RebootRequired" if "R" in flags else "Accepted"

    def save(self):
        try:
            self.flash.makedirs("ocpp")
            self.flash.write_json("ocpp/config.json", self.values)
        except OSError as exc:
            self.log("ocpp: cannot save configuration: %s" % exc)

    def entries(self, keys=None, max_keys=64):
        """(configurationKey list, unknownKey list) for GetConfiguration."""
        known = []
        unknown = []
        names = keys if keys else sorted(KEYS)
        for key in names:
            if key not in KEYS or (keys and "w" in KEYS[key][2]):
                if keys:
                    unknown.append(key)
                continue
            if "w" in KEYS[key][2]:
                continue
            if len(known) >= max_keys:
                break
            known.append({"key": key, "readonly": "r" in KEYS[key][2], "value": self.text(key)})
        return known, unknown
