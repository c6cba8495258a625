"""Authorization when the central system cannot be reached, and local pre-authorization
(OCPP 1.6 §3.4 Local Authorization & Offline Behavior, §4.8 Start Transaction), against
the independent central system (tests/firmware_ocpp/csms.py, `go_offline()` drops the
connection and refuses new ones).

- LocalAuthorizeOffline: offline, a tag Accepted in the local list or the authorization
  cache starts a transaction; a tag Blocked there, or unknown, is refused (unless
  AllowOfflineTxForUnknownId); back online the journaled messages are delivered in order
  with the central system's transactionIds.
- AllowOfflineTxForUnknownId: an unknown tag starts offline; when the central system
  answers the delivered StartTransaction with Invalid, StopTransactionOnInvalidId stops the
  transaction with reason DeAuthorized (or, switched off, only suspends the energy).
- LocalPreAuthorize: online, a tag Accepted in the list or cache starts without an
  Authorize; any other tag is authorised by the central system first.
"""

import pytest
from cprunner import wait_until
from ocpp.v16 import call
from ocpp_scenarios import calls_of, start, wait_console

CP = "PICO-OFFLINE"


def tap(cp, tag, expect, pilot=None):
    """Present a card and wait for the charge point's verdict on its console."""
    n = cp.console().count(expect)
    if pilot:  # in the same command: the charge point sees both at once
        cp.ev(start=True, tag=tag, pilot=pilot)
    else:
        cp.ev(start=True, tag=tag)
    wait_until(lambda: cp.console().count(expect) > n, 30, "%r after presenting %s" % (expect, tag))


def offline(cs, cp):
    n = cp.console().count("ocpp: disconnected")
    cs.go_offline()
    wait_until(lambda: cp.console().count("ocpp: disconnected") > n, 30, "the charge point offline")


def send_local_list(cs, version, entries):
    return cs.call(CP, call.SendLocalList(list_version=version, update_type="Full", local_authorization_list=[
        {"idTag": tag, "idTagInfo": {"status": status}} for tag, status in entries])).status


@pytest.mark.dual_runtime
def test_offline_local_list_and_cache_authorize_unknown_is_refused_journal_delivered(cs, runtime_name, tmp_path):
    cs.tags["CACHEBAD"] = "Blocked"
    cp = start(cs, runtime_name, tmp_path / "cp", CP, ConnectionTimeOut=2)
    try:
        assert send_local_list(cs, 1, [("LIST1", "Accepted"), ("LISTBAD", "Blocked")]) == "Accepted"
        # the authorization cache learns CACHE1 (Accepted) and CACHEBAD (Blocked) online
        tap(cp, "CACHE1", "CACHE1 authorised but no EV plugged in within ConnectionTimeOut")
        tap(cp, "CACHEBAD", "CACHEBAD not authorised (Blocked)")
        assert [m["id_tag"] for m in cs.of("Authorize", CP)] == ["CACHE1", "CACHEBAD"]
        assert cs.call(CP, call.ChangeConfiguration(key="ConnectionTimeOut", value="60")).status == "Accepted"

        offline(cs, cp)
        tap(cp, "UNKNOWN1", "UNKNOWN1 unknown and offline: refused", pilot="B")
        tap(cp, "LISTBAD", "LISTBAD refused offline (Blocked)")
        tap(cp, "CACHEBAD", "CACHEBAD refused offline (Blocked)")
        tap(cp, "LIST1", "transaction #")
        cp.ev(pilot="C")
        tap(cp, "LIST1", "stopped (Local)")  # the same card ends it
        tap(cp, "CACHE1", "CACHE1 authorised", pilot="A")  # unplugged, card first
        cp.ev(pilot="B")
        wait_console(cp, "started for CACHE1")
        cp.ev(pilot="A")
        wait_console(cp, "stopped (EVDisconnected)")
        assert not cs.transactions  # nothing reached the central system yet

        cs.go_online()
        cs.wait(lambda: len(cs.of("StopTransaction", CP)) == 2, 40, "the journaled transactions delivered")
    finally:
        cp.finish()
    assert [m["id_tag"] for m in cs.of("Authorize", CP)] == ["CACHE1", "CACHEBAD"]  # none offline
    tx_calls = [a for a in calls_of(cs, CP) if a in ("StartTransaction", "StopTransaction")]
    assert tx_calls == ["StartTransaction", "StopTransaction"] * 2
    (t1, tx1), (t2, tx2) = sorted(cs.transactions.items())
    assert (tx1["id_tag"], tx1["reason"], tx2["id_tag"], tx2["reason"]) == ("LIST1", "Local", "CACHE1", "EVDisconnected")
    stops = cs.of("StopTransaction", CP)
    assert [s["transaction_id"] for s in stops] == [t1, t2] and stops[0]["id_tag"] == "LIST1"
    assert not cs.unknown_tx and cs.invalid == [], (cs.unknown_tx, cs.invalid)


@pytest.mark.dual_runtime
def test_offline_unknown_tag_allowed_then_deauthorized_by_the_central_system(cs, runtime_name, tmp_path):
    cp = start(cs, runtime_name, tmp_path / "cp", CP)
    try:
        assert cs.call(CP, call.ChangeConfiguration(key="AllowOfflineTxForUnknownId", value="true")).status == "Accepted"
        offline(cs, cp)
        tap(cp, "STRANGER", "started for STRANGER", pilot="B")
        cp.ev(pilot="C")
        cs.tags["STRANGER"] = "Invalid"
        cs.go_online()
        cs.wait(lambda: cs.of("StopTransaction", CP), 40, "StopTransaction after the Invalid answer")
        (txid, tx), = cs.transactions.items()
        assert tx["id_tag"] == "STRANGER" and tx["reason"] == "DeAuthorized"
        cs.wait(lambda: cs.last_status(CP) == "Finishing", 30, "Finishing (the cable is still in)")
        cp.ev(pilot="A")
        cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available")

        # StopTransactionOnInvalidId off: the transaction stays, only the energy stops
        assert cs.call(CP, call.ChangeConfiguration(key="StopTransactionOnInvalidId", value="false")).status == "Accepted"
        offline(cs, cp)
        # the Invalid answer went into the authorization cache: no longer an unknown tag
        tap(cp, "STRANGER", "STRANGER refused offline (Invalid)", pilot="A")
        tap(cp, "STRANGER2", "started for STRANGER2", pilot="C")
        cs.tags["STRANGER2"] = "Blocked"
        cs.go_online()
        cs.wait(lambda: len(cs.transactions) == 2, 40, "the second StartTransaction")
        cs.wait(lambda: cs.last_status(CP) == "SuspendedEVSE", 30, "SuspendedEVSE")
        second = max(cs.transactions)
        assert cs.transactions[second]["meter_stop"] is None
        cp.ev(pilot="A")
        cs.wait(lambda: cs.transactions[second]["meter_stop"] is not None, 30, "StopTransaction")
    finally:
        cp.finish()
    assert cs.transactions[second]["reason"] == "EVDisconnected"
    assert "Authorize" not in calls_of(cs, CP)
    assert not cs.unknown_tx and cs.invalid == [], (cs.unknown_tx, cs.invalid)


@pytest.mark.dual_runtime
def test_local_pre_authorize_starts_without_authorize_for_listed_and_cached_tags(cs, runtime_name, tmp_path):
    cp = start(cs, runtime_name, tmp_path / "cp", CP, LocalPreAuthorize=True)
    try:
        assert send_local_list(cs, 1, [("LIST1", "Accepted")]) == "Accepted"
        for i, tag in enumerate(("LIST1", "NEW1", "NEW1")):  # NEW1: authorised online once, then cached
            tap(cp, tag, "started for " + tag, pilot="B")
            cs.wait(lambda: len(cs.transactions) > i, 30, "StartTransaction")  # noqa: B023
            cp.ev(pilot="A")
            cs.wait(lambda: cs.transactions[max(cs.transactions)]["meter_stop"] is not None, 30, "StopTransaction")
    finally:
        cp.finish()
    assert [m["id_tag"] for m in cs.of("Authorize", CP)] == ["NEW1"]
    assert [tx["id_tag"] for _, tx in sorted(cs.transactions.items())] == ["LIST1", "NEW1", "NEW1"]
    assert cs.invalid == [], cs.invalid
