"""OCPP 1.6 configuration keys (read by every part; Get/ChangeConfiguration in ocpp_core).

Configuration: every key the Core profile requires plus the optional ones we implement
and our own. `TABLE` holds one line per key, `name|kind|flags|default` (one string, not a
dict of tuples: it is parsed for the one key asked, which keeps it small on the heap):
kind "i" integer, "b" boolean (default 1/0), "s" string, "m" comma-separated list of
measurands (`ocpp_core.MEASURANDS`); flags "r" read-only, "R" reboot required, "w"
write-only (never shown). Changed values are persisted in `ocpp/config.json` and survive
a reboot; parsing and checking a new value lives in ocpp_core (loaded when the central
system changes a key).
"""

TABLE = """
AllowOfflineTxForUnknownId|b||0
AuthorizationCacheEnabled|b||1
AuthorizeRemoteTxRequests|b||1
ClockAlignedDataInterval|i||0
ConnectionTimeOut|i||60
ConnectorPhaseRotation|s||0.RST,1.RST
GetConfigurationMaxKeys|i|r|64
HeartbeatInterval|i||300
LocalAuthorizeOffline|b||1
LocalPreAuthorize|b||0
MeterValuesAlignedData|m||Energy.Active.Import.Register
MeterValuesAlignedDataMaxLength|i|r|6
MeterValuesSampledData|m||Energy.Active.Import.Register,Power.Active.Import
MeterValuesSampledDataMaxLength|i|r|6
MeterValueSampleInterval|i||60
MinimumStatusDuration|i||0
NumberOfConnectors|i|r|1
ResetRetries|i||1
StopTransactionOnEVSideDisconnect|b||1
StopTransactionOnInvalidId|b||1
StopTxnAlignedData|m||
StopTxnAlignedDataMaxLength|i|r|6
StopTxnSampledData|m||Energy.Active.Import.Register
StopTxnSampledDataMaxLength|i|r|6
SupportedFeatureProfiles|s|r|Core,FirmwareManagement,LocalAuthListManagement,Reservation,SmartCharging,RemoteTrigger
SupportedFeatureProfilesMaxLength|i|r|6
TransactionMessageAttempts|i||3
TransactionMessageRetryInterval|i||30
UnlockConnectorOnEVSideDisconnect|b|r|0
WebSocketPingInterval|i||60
LocalAuthListEnabled|b||1
LocalAuthListMaxLength|i|r|64
SendLocalListMaxLength|i|r|32
ReserveConnectorZeroSupported|b|r|0
ChargeProfileMaxStackLevel|i|r|8
ChargingScheduleAllowedChargingRateUnit|s|r|Current,Power
ChargingScheduleMaxPeriods|i|r|24
MaxChargingProfilesInstalled|i|r|8
ConnectorSwitch3to1PhaseSupported|b|r|0
AuthorizationKey|s|wR|
FirmwareTrialTimeout|i||300
ReconnectMaxInterval|i||60
"""


def row(key):
    """[name, kind, flags, default text] of a key, or None if there is no such key.

    Only the whole name matches: a key holding the table's separators ("|" or a line
    break) could otherwise find a line ("HeartbeatInterval|i" that of HeartbeatInterval)."""
    i = TABLE.find("\n%s|" % key)
    if i < 0:
        return None
    r = TABLE[i + 1:TABLE.find("\n", i + 1)].split("|")
    return r if r[0] == key else None


class Config:
    def __init__(self, flash, ocpp_section, log=print):
        self.flash = flash
        self.log = log
        v = self.values = {}
        sec = ocpp_section or {}
        try:
            saved = flash.read_json("ocpp/config.json")
        except (OSError, ValueError):
            saved = {}
        # the config file's ocpp section may preset keys ("keys": {...})
        for src in (saved, sec.get("keys") or {}):
            for key in src:
                if key not in v and row(key):
                    v[key] = src[key]
        if "AuthorizationKey" not in v and sec.get("password"):
            v["AuthorizationKey"] = sec["password"]

    def get(self, key):
        if key in self.values:
            return self.values[key]
        r = row(key)
        if r is None:
            raise KeyError(key)
        k = r[1]
        if k == "i":
            return int(r[3])
        if k == "b":
            return r[3] == "1"
        return r[3]

    def list(self, key):
        value = self.get(key)
        return [v.strip() for v in value.split(",") if v.strip()] if value else []

    def save(self):
        try:
            self.flash.makedirs("ocpp")
            self.flash.write_json("ocpp/config.json", self.values)
        except OSError as exc:
            self.log("ocpp: cannot save configuration: %s" % exc)
