"""firmware/lib/connector_state.py: the OCPP 1.6 ChargePointStatus / ChargePointErrorCode
of the connector, derived from the pilot, the transaction, availability, reservation and
faults with the precedence of the module docstring:

    Faulted > Unavailable > (transaction) Charging / SuspendedEV / SuspendedEVSE /
    Finishing > Reserved > Preparing > Finishing (cable still in after a transaction) >
    Available
"""

from __future__ import annotations

import itertools

import pytest

from tests.unit.fwimport import load

pytestmark = pytest.mark.unit

cs = load("connector_state")

NO_ERROR = "NoError"


def derive(pilot="A", relay_closed=False, tx_active=False, tx_stopping=False, authorized=False,
           available=True, reserved=False, faults=(), offered_a=16.0):
    return cs.derive(pilot, relay_closed, tx_active, tx_stopping, authorized, available,
                     reserved, list(faults), offered_a)


def test_an_idle_connector_without_a_car_is_available():
    assert derive() == ("Available", NO_ERROR, None)
    assert derive(offered_a=0) == ("Available", NO_ERROR, None)


@pytest.mark.parametrize("pilot", ["B", "C", "D"])
def test_a_plugged_car_without_a_transaction_is_preparing(pilot):
    assert cs.plugged(pilot)
    assert derive(pilot) == ("Preparing", NO_ERROR, None)


@pytest.mark.parametrize("pilot", ["A", "E", "F", None, ""])
def test_only_b_c_and_d_are_plugged(pilot):
    assert not cs.plugged(pilot)


def test_an_authorisation_without_a_car_is_preparing_too():
    assert derive("A", authorized=True) == ("Preparing", NO_ERROR, None)


def test_a_charging_transaction_by_pilot_state():
    assert derive("C", relay_closed=True, tx_active=True) == ("Charging", NO_ERROR, None)
    assert derive("D", relay_closed=True, tx_active=True) == ("Charging", NO_ERROR, None)
    # the EV asks and the EVSE offers: Charging even before the contactor has closed
    assert derive("C", relay_closed=False, tx_active=True) == ("Charging", NO_ERROR, None)
    # the EV does not ask (state B)
    assert derive("B", relay_closed=False, tx_active=True) == ("SuspendedEV", NO_ERROR, None)


@pytest.mark.parametrize("offered", [0, 0.0, None, -6])
def test_a_transaction_with_nothing_offered_is_suspended_by_the_evse(offered):
    for pilot in "BCD":
        assert derive(pilot, tx_active=True, offered_a=offered) == ("SuspendedEVSE", NO_ERROR, None)


def test_a_transaction_that_is_stopping_or_unplugged_is_finishing():
    assert derive("C", tx_active=True, tx_stopping=True) == ("Finishing", NO_ERROR, None)
    assert derive("A", tx_active=True) == ("Finishing", NO_ERROR, None)
    # finishing wins over "nothing offered"
    assert derive("A", tx_active=True, offered_a=0) == ("Finishing", NO_ERROR, None)


def test_after_a_transaction_the_cable_still_in_is_finishing_until_unplugged():
    assert derive("B", tx_stopping=True) == ("Finishing", NO_ERROR, None)
    assert derive("C", tx_stopping=True, authorized=True) == ("Finishing", NO_ERROR, None)
    assert derive("A", tx_stopping=True) == ("Available", NO_ERROR, None)
    # over a reservation too (the reserved user's car is not the one plugged)
    assert derive("B", tx_stopping=True, reserved=True) == ("Finishing", NO_ERROR, None)


def test_a_reserved_connector_is_reserved_until_its_user_is_authorised_with_a_car():
    assert derive("A", reserved=True) == ("Reserved", NO_ERROR, None)
    assert derive("B", reserved=True) == ("Reserved", NO_ERROR, None)
    assert derive("A", reserved=True, authorized=True) == ("Reserved", NO_ERROR, None)
    assert derive("B", reserved=True, authorized=True) == ("Preparing", NO_ERROR, None)
    # a transaction under a reservation shows the transaction
    assert derive("C", reserved=True, tx_active=True) == ("Charging", NO_ERROR, None)


def test_an_inoperative_connector_is_unavailable_unless_a_transaction_runs():
    assert derive("A", available=False) == ("Unavailable", NO_ERROR, None)
    assert derive("B", available=False, authorized=True, reserved=True, tx_stopping=True) == (
        "Unavailable", NO_ERROR, None)
    # ChangeAvailability during a transaction is Scheduled: the transaction goes on
    assert derive("C", available=False, tx_active=True) == ("Charging", NO_ERROR, None)


def test_the_worst_active_fault_wins_over_everything():
    faults = [("GroundFailure", "RCD tripped"), ("HighTemperature", "62 C")]
    for pilot, tx, available in itertools.product("ABCDEF", (False, True), (False, True)):
        assert derive(pilot, tx_active=tx, available=available, reserved=True, faults=faults) == (
            "Faulted", "GroundFailure", "RCD tripped")


@pytest.mark.parametrize("tx_active", [False, True])
def test_pilot_states_e_and_f_are_faults(tx_active):
    assert derive("E", tx_active=tx_active) == (
        "Faulted", "EVCommunicationError", "pilot short (state E)")
    assert derive("F", tx_active=tx_active, available=False) == (
        "Faulted", "InternalError", "pilot stuck low (state F)")


def test_an_empty_fault_list_is_no_fault():
    assert derive("C", tx_active=True, faults=[]) == ("Charging", NO_ERROR, None)


def test_only_faulted_carries_an_error_code():
    for args in itertools.product("ABCD", (False, True), (False, True), (False, True),
                                  (False, True), (False, True), (0, 16)):
        pilot, tx, stopping, auth, available, reserved, offered = args
        status, code, info = derive(pilot, tx_active=tx, tx_stopping=stopping, authorized=auth,
                                    available=available, reserved=reserved, offered_a=offered)
        assert status in cs.STATUS_CODES and status != "Faulted", args
        assert (code, info) == (NO_ERROR, None), args


def test_thingspeak_status_numbers_follow_the_documented_contract():
    assert [cs.code(s) for s in ("Available", "Preparing", "Charging", "SuspendedEVSE",
                                 "SuspendedEV", "Finishing", "Reserved", "Unavailable",
                                 "Faulted")] == list(range(9))
    assert cs.code("NoSuchStatus") == 8  # unknown reads as Faulted
    assert cs.code(None) == 8
