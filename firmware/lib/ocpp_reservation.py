"""OCPP 1.6 Reservation: ReserveNow / CancelReservation, expiry, parentIdTag.

One reservation at a time (one connector; connector 0 only when
ReserveConnectorZeroSupported). Persisted in `ocpp/reservation.json`.
"""

import clock as clock_mod


class Reservation:
    HANDLERS = {
        "ReserveNow": ("reserve_now", {"connectorId": "!i", "expiryDate": "!t", "idTag": "!s20",
                                       "parentIdTag": "s20", "reservationId": "!i"}),
        "CancelReservation": ("cancel_reservation", {"reservationId": "!i"}),
    }

    def __init__(self, cp):
        self.cp = cp
        self.current = None  # {"id", "tag", "parent", "expiry"}
        try:
            self.current = cp.flash.read_json("ocpp/reservation.json") or None
        except (OSError, ValueError):
            pass

    def _save(self):
        try:
            self.cp.flash.makedirs("ocpp")
            if self.current is None:
                self.cp.flash.remove("ocpp/reservation.json")
            else:
                self.cp.flash.write_json("ocpp/reservation.json", self.current)
        except OSError:
            pass

    def active(self):
        r = self.current
        if r is not None and self.cp.clock.now() >= r["expiry"]:
            self.cp.log("ocpp: reservation %d expired" % r["id"])
            self.current = None
            self._save()
            return None
        return r

    def matches(self, tag, parent=None):
        r = self.active()
        if r is None:
            return True
        return tag == r["tag"] or (r["parent"] is not None and parent == r["parent"])

    def end(self, why):
        """The connector became Faulted or Unavailable: the reservation ends (§5.13)."""
        r = self.current
        if r is not None:
            self.cp.log("ocpp: reservation %d ended: connector %s" % (r["id"], why))
            self.current = None
            self._save()

    def consume(self):
        """The reservation id a starting transaction takes over (and ends), or None."""
        r = self.active()
        if r is None:
            return None
        self.current = None
        self._save()
        return r["id"]

    def reserve_now(self, p):
        cid = p["connectorId"]
        if cid == 0 and not self.cp.cfg.get("ReserveConnectorZeroSupported"):
            return {"status": "Rejected"}
        if cid not in (0, 1):
            return {"status": "Rejected"}
        status = self.cp.connector_status()
        if status == "Faulted":
            return {"status": "Faulted"}
        if status == "Unavailable":
            return {"status": "Unavailable"}
        r = self.active()
        if r is not None and r["id"] != p["reservationId"]:
            return {"status": "Occupied"}
        if self.cp.connector.tx is not None or status in ("Preparing", "Charging", "SuspendedEV",
                                                 "SuspendedEVSE", "Finishing"):
            return {"status": "Occupied"}
        self.current = {"id": p["reservationId"], "tag": p["idTag"],
                        "parent": p.get("parentIdTag"),
                        "expiry": int(clock_mod.parse_iso(p["expiryDate"]))}
        self._save()
        self.cp.poke()
        return {"status": "Accepted"}

    def cancel_reservation(self, p):
        r = self.active()
        if r is None or r["id"] != p["reservationId"]:
            return {"status": "Rejected"}
        self.current = None
        self._save()
        self.cp.poke()
        return {"status": "Accepted"}


Feature = Reservation  # what chargepoint.ChargePoint.feature() builds
