"""The connector state machine: what OCPP 1.6 calls ChargePointStatus and
ChargePointErrorCode, derived from the pilot, the contactor, the transaction, the
availability, the reservation and the active faults.

`derive(...)` is a pure function, so the charge point (OCPP) and the app's local mode use
the same precedence a mature charge point uses:

    Faulted > Unavailable > (transaction) Charging / SuspendedEV / SuspendedEVSE /
    Finishing > Reserved > Preparing > Finishing (cable still in after a transaction) >
    Available

Arguments:
  pilot         "A".."F" (debounced pilot state)
  relay_closed  the contactor is closed
  tx_active     a transaction is running on the connector
  tx_stopping   the transaction is being stopped or has ended while the cable is still in
                (OCPP "Finishing" until the EV is unplugged)
  authorized    a user has been authorised (card, remote start, `ev.start`) but no
                transaction runs yet
  available     the connector is operative (ChangeAvailability)
  reserved      a reservation holds the connector
  faults        list of (ChargePointErrorCode, info) active now, worst first
  offered_a     the current the pilot offers (0: nothing offered)

Returns (status, error_code, info); error_code is "NoError" unless Faulted.
"""

STATUS_CODES = {
    "Available": 0,
    "Preparing": 1,
    "Charging": 2,
    "SuspendedEVSE": 3,
    "SuspendedEV": 4,
    "Finishing": 5,
    "Reserved": 6,
    "Unavailable": 7,
    "Faulted": 8,
}

def plugged(pilot):
    return pilot in ("B", "C", "D")


def derive(pilot, relay_closed, tx_active, tx_stopping, authorized, available, reserved,
           faults, offered_a):
    if faults:
        code, info = faults[0]
        return "Faulted", code, info
    if pilot == "E":
        return "Faulted", "EVCommunicationError", "pilot short (state E)"
    if pilot == "F":
        return "Faulted", "InternalError", "pilot stuck low (state F)"
    if not available and not tx_active:
        return "Unavailable", "NoError", None
    is_plugged = plugged(pilot)
    if tx_active:
        if tx_stopping or not is_plugged:
            return "Finishing", "NoError", None
        if not offered_a or offered_a <= 0:
            return "SuspendedEVSE", "NoError", None
        if pilot in ("C", "D"):
            # the EV asks and the EVSE offers: the contactor is closed, or closing within
            # one station cycle (a contactor that cannot close is reported as a fault)
            return "Charging", "NoError", None
        return "SuspendedEV", "NoError", None
    if tx_stopping and is_plugged:
        return "Finishing", "NoError", None
    if reserved:
        return ("Preparing" if is_plugged and authorized else "Reserved"), "NoError", None
    if is_plugged or authorized:
        return "Preparing", "NoError", None
    return "Available", "NoError", None


def code(status):
    """ThingSpeak field7 number of a status (contract: docs/architecture.md)."""
    return STATUS_CODES.get(status, 8)
