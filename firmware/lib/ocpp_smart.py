"""OCPP 1.6 Smart Charging: Set/ClearChargingProfile, GetCompositeSchedule and the
effective current limit (-> station.set_limit_a, the pilot PWM duty).

Profiles are stored compactly (persisted in `ocpp/profiles.json`):
  {"id", "cid" connector, "tx" transactionId, "sl" stackLevel, "pu" purpose, "k" kind,
   "rk" recurrencyKind, "vf"/"vt" validity (unix s or None), "ss" startSchedule (unix s or
   None), "dur" duration (s or None), "u" unit "A"/"W", "per" [[startPeriod, limit*10,
   numberPhases]]}
Limits are kept as integer tenths (no boxed floats in long-lived lists).

The limit at a time t: per purpose, the valid profile with the highest stack level whose
schedule covers t gives the value (a profile whose schedule has ended lets the next lower
stack level apply); TxProfile overrides TxDefaultProfile; ChargePointMaxProfile caps the
result. Absolute schedules start at startSchedule, Relative ones at the transaction
start (at the request time when there is none), Recurring ones repeat daily or weekly
from startSchedule. Power limits are converted with 230 V per phase over the phases the
charge point can use: numberPhases (3 when absent, as OCPP 1.6 says), at most the
station's one phase (docs/hardware.md), so 2 300 W is 10 A here whatever numberPhases
says; a composite schedule in W reports A x 230 with numberPhases 1.
"""

import clock as clock_mod
import ocpp_rpc
from ocpp_rpc import CallError

VOLTS = 230
STATION_PHASES = 1  # one current transformer, one voltage sensor: a single-phase EVSE
PROFILE_SPEC = {"chargingProfileId": "!i", "transactionId": "i", "stackLevel": "!i",
                "chargingProfilePurpose": "!e:ChargePointMaxProfile|TxDefaultProfile|TxProfile",
                "chargingProfileKind": "!e:Absolute|Recurring|Relative",
                "recurrencyKind": "e:Daily|Weekly", "validFrom": "t", "validTo": "t",
                "chargingSchedule": "!o"}
SCHEDULE_SPEC = {"duration": "i", "startSchedule": "t", "chargingRateUnit": "!e:A|W",
                 "chargingSchedulePeriod": "!a", "minChargingRate": "d"}
PERIOD_SPEC = {"startPeriod": "!i", "limit": "!d", "numberPhases": "i"}


def _t(text):
    return int(clock_mod.parse_iso(text)) if text else None


class SmartCharging:
    HANDLERS = {
        "SetChargingProfile": ("set_profile", {"connectorId": "!i", "csChargingProfiles": "!o"}),
        "ClearChargingProfile": ("clear_profile", {"id": "i", "connectorId": "i",
                                                   "chargingProfilePurpose": "e:ChargePointMaxProfile|TxDefaultProfile|TxProfile",
                                                   "stackLevel": "i"}),
        "GetCompositeSchedule": ("composite", {"connectorId": "!i", "duration": "!i",
                                               "chargingRateUnit": "e:A|W"}),
    }

    def __init__(self, cp):
        self.cp = cp
        self.profiles = []
        try:
            self.profiles = cp.flash.read_json("ocpp/profiles.json")
        except (OSError, ValueError):
            pass

    def _save(self):
        try:
            self.cp.flash.makedirs("ocpp")
            self.cp.flash.write_json("ocpp/profiles.json", self.profiles)
        except OSError as exc:
            self.cp.log("ocpp: cannot save charging profiles: %s" % exc)

    def validate(self, p, cid):
        """The compact form of a csChargingProfiles object; CallError if malformed."""
        ocpp_rpc.check(p, PROFILE_SPEC, "csChargingProfiles.")
        s = p["chargingSchedule"]
        ocpp_rpc.check(s, SCHEDULE_SPEC, "chargingSchedule.")
        per = []
        last = -1
        for item in s["chargingSchedulePeriod"]:
            ocpp_rpc.check(item, PERIOD_SPEC, "chargingSchedulePeriod.")
            if item["startPeriod"] <= last or item["limit"] < 0:
                raise CallError(ocpp_rpc.PROPERTY_VIOLATION, "periods must start in order with limits >= 0")
            last = item["startPeriod"]
            per.append([item["startPeriod"], int(item["limit"] * 10 + 0.5), item.get("numberPhases", 3)])
        if not per or per[0][0] != 0:
            raise CallError(ocpp_rpc.PROPERTY_VIOLATION, "the first period must start at 0")
        kind = p["chargingProfileKind"]
        if kind == "Recurring" and ("recurrencyKind" not in p or "startSchedule" not in s):
            raise CallError(ocpp_rpc.OCCURENCE_VIOLATION, "a recurring profile needs recurrencyKind and startSchedule")
        return {"id": p["chargingProfileId"], "cid": cid, "tx": p.get("transactionId"),
                "sl": p["stackLevel"], "pu": p["chargingProfilePurpose"], "k": kind,
                "rk": p.get("recurrencyKind"), "vf": _t(p.get("validFrom")), "vt": _t(p.get("validTo")),
                "ss": _t(s.get("startSchedule")), "dur": s.get("duration"), "u": s["chargingRateUnit"],
                "per": per}

    def install(self, pr):
        """Install a validated profile; the status for SetChargingProfile."""
        cfg = self.cp.cfg
        if pr["sl"] > cfg.get("ChargeProfileMaxStackLevel") or pr["sl"] < 0:
            return "Rejected"
        if len(pr["per"]) > cfg.get("ChargingScheduleMaxPeriods"):
            return "Rejected"
        keep = []
        for old in self.profiles:
            if old["id"] == pr["id"]:
                continue
            if old["sl"] == pr["sl"] and old["pu"] == pr["pu"] and old["cid"] == pr["cid"]:
                continue
            keep.append(old)
        if len(keep) >= cfg.get("MaxChargingProfilesInstalled"):
            return "Rejected"
        keep.append(pr)
        self.profiles = keep
        self._save()
        self.cp.poke()
        return "Accepted"

    def set_profile(self, p):
        cid = p["connectorId"]
        pr = self.validate(p["csChargingProfiles"], cid)
        if cid not in (0, 1):
            return {"status": "Rejected"}
        if pr["pu"] == "ChargePointMaxProfile" and cid != 0:
            return {"status": "Rejected"}
        if pr["pu"] == "TxProfile":
            tx = self.cp.connector.tx
            if cid != 1 or tx is None:
                return {"status": "Rejected"}
            txid = tx.get("txid")
            if pr["tx"] is not None and txid is not None and pr["tx"] != txid:
                return {"status": "Rejected"}
            pr["tx"] = txid if txid is not None else pr["tx"]
        return {"status": self.install(pr)}

    def clear_profile(self, p):
        keep = []
        removed = 0
        for pr in self.profiles:
            if "id" in p:
                match = pr["id"] == p["id"]
            else:
                match = (("connectorId" not in p or pr["cid"] == p["connectorId"])
                         and ("chargingProfilePurpose" not in p or pr["pu"] == p["chargingProfilePurpose"])
                         and ("stackLevel" not in p or pr["sl"] == p["stackLevel"]))
            if match:
                removed += 1
            else:
                keep.append(pr)
        if not removed:
            return {"status": "Unknown"}
        self.profiles = keep
        self._save()
        self.cp.poke()
        return {"status": "Accepted"}

    def end_transaction(self):
        """TxProfiles end with their transaction."""
        keep = [pr for pr in self.profiles if pr["pu"] != "TxProfile"]
        if len(keep) != len(self.profiles):
            self.profiles = keep
            self._save()

    # -- evaluation ----------------------------------------------------------------------
    def _start(self, pr, t, tx_start):
        k = pr["k"]
        if k == "Relative":
            return tx_start if tx_start is not None else t
        if k == "Absolute":
            return pr["ss"] if pr["ss"] is not None else (pr["vf"] or 0)
        period = 604800 if pr["rk"] == "Weekly" else 86400
        base = pr["ss"]
        if t < base:
            return base  # not started yet: the first recurrence begins at startSchedule
        return base + ((t - base) // period) * period

    def _value(self, pr, t, tx_start):
        """Limit in A*10 of one profile at t, or None."""
        if (pr["vf"] is not None and t < pr["vf"]) or (pr["vt"] is not None and t >= pr["vt"]):
            return None
        s = self._start(pr, t, tx_start)
        off = t - s
        if off < 0 or (pr["dur"] and off >= pr["dur"]):
            return None
        val = None
        for start, lim, phases in pr["per"]:
            if start > off:
                break
            val = lim if pr["u"] == "A" else lim // (VOLTS * min(phases or 3, STATION_PHASES))
        return val

    def _best(self, purpose, t, cid, tx_start, txid):
        best = None
        best_sl = -1
        for pr in self.profiles:
            if pr["pu"] != purpose or pr["sl"] <= best_sl:
                continue
            if purpose == "TxProfile" and (txid is None or (pr["tx"] is not None and pr["tx"] != txid)):
                continue
            if purpose == "TxDefaultProfile" and pr["cid"] not in (0, cid):
                continue
            v = self._value(pr, t, tx_start)
            if v is not None:
                best = v
                best_sl = pr["sl"]
        return best

    def limit10(self, t, cid=1, tx_start=None, txid=None, in_tx=False):
        """The effective limit in tenths of an ampere at t, None for no limit."""
        cap = self._best("ChargePointMaxProfile", t, 0, tx_start, txid)
        val = None
        if in_tx:
            val = self._best("TxProfile", t, cid, tx_start, txid)
        if val is None:
            val = self._best("TxDefaultProfile", t, cid, tx_start, txid)
        if cap is not None and (val is None or cap < val):
            val = cap
        return val

    def limit_now(self):
        tx = self.cp.connector.tx
        t = int(self.cp.clock.now())
        if tx is None:
            v = self.limit10(t)
        else:
            v = self.limit10(t, 1, tx["start"], tx.get("txid"), True)
        return None if v is None else v / 10

    def _breaks(self, t0, t1, tx_start):
        pts = [t0]
        for pr in self.profiles:
            for edge in (pr["vf"], pr["vt"]):
                if edge is not None and t0 < edge < t1:
                    pts.append(edge)
            if pr["k"] == "Recurring":
                period = 604800 if pr["rk"] == "Weekly" else 86400
                starts = []
                s = self._start(pr, t0, tx_start)
                while s < t1 and len(starts) < 8:
                    starts.append(s)
                    s += period
            else:
                starts = [self._start(pr, t0, tx_start)]
            for s in starts:
                for per in pr["per"]:
                    if t0 < s + per[0] < t1:
                        pts.append(s + per[0])
                if pr["dur"] and t0 < s + pr["dur"] < t1:
                    pts.append(s + pr["dur"])
            if len(pts) > 96:
                break
        pts.sort()
        return pts

    def composite(self, p):
        cid = p["connectorId"]
        if cid not in (0, 1) or p["duration"] <= 0:
            return {"status": "Rejected"}
        unit = p.get("chargingRateUnit", "A")
        t0 = int(self.cp.clock.now())
        t1 = t0 + p["duration"]
        tx = self.cp.connector.tx if cid == 1 else None
        tx_start = tx["start"] if tx else None
        txid = tx.get("txid") if tx else None
        max10 = int(float(self.cp.config.get("limits", {}).get("max_current_a", 32)) * 10)
        periods = []
        last = None
        for b in self._breaks(t0, t1, tx_start):
            v = self.limit10(b, max(cid, 1), tx_start, txid, tx is not None) if cid else \
                self._best("ChargePointMaxProfile", b, 0, None, None)
            if v is None or v > max10:
                v = max10
            if v == last:
                continue
            last = v
            limit = v / 10 if unit == "A" else v * VOLTS * STATION_PHASES // 10
            periods.append({"startPeriod": b - t0, "limit": limit, "numberPhases": STATION_PHASES})
            if len(periods) >= self.cp.cfg.get("ChargingScheduleMaxPeriods"):
                break
        return {"status": "Accepted", "connectorId": cid, "scheduleStart": clock_mod.iso(t0),
                "chargingSchedule": {"duration": p["duration"], "startSchedule": clock_mod.iso(t0),
                                     "chargingRateUnit": unit, "chargingSchedulePeriod": periods}}


Feature = SmartCharging  # what chargepoint.ChargePoint.feature() builds
