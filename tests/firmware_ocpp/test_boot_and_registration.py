"""Registration (OCPP 1.6 §4.2 BootNotification): a charge point the central system holds
Pending or Rejected, against the independent central system (tests/firmware_ocpp/csms.py).

- Pending: the charge point sends nothing but BootNotification (not even the transaction
  messages journaled before the boot), answers the central system's calls (GetConfiguration,
  ChangeConfiguration), sends what a TriggerMessage asks for, retries BootNotification after
  `interval`; once Accepted its StatusNotifications and the journaled transaction follow.
- Rejected: the charge point sends nothing but BootNotification, answers nothing the
  central system sends, retries after `interval`; once Accepted it reports its connector.
"""

import pytest
from ocpp.v16 import call
from ocpp_scenarios import calls_of, start, wait_console

CP = "PICO-BOOT"
INTERVAL = 3  # BootNotification.conf interval (s): the retry interval while not Accepted


# the `cs` fixture's heartbeat interval (tests/firmware_ocpp/conftest.py)
CS_HEARTBEAT_S = INTERVAL


def boot_times(cs):
    with cs.lock:
        return [m[3] for m in cs.messages if m[0] == CP and m[1] == "BootNotification"]


@pytest.mark.dual_runtime
def test_pending_answers_calls_and_sends_only_boot_notifications_until_accepted(cs, runtime_name, tmp_path):
    # a transaction recorded while the central system was unreachable: its journal records
    # are "cached messages still present from before" when the charge point boots again
    cs.offline = True
    cp = start(cs, runtime_name, tmp_path / "cp", CP, accepted=False, AllowOfflineTxForUnknownId=True)
    try:
        cp.ev(pilot="B", start=True, tag="OFFLINE1")
        wait_console(cp, "transaction #", 30)
        cp.ev(pilot="A")
        wait_console(cp, "stopped (EVDisconnected)", 30)
    finally:
        cp.finish()
    assert calls_of(cs, CP) == []

    # the next boot: the central system holds the charge point Pending
    cs.boot_policy[CP] = "Pending"
    cs.go_online()
    cp = start(cs, runtime_name, tmp_path / "cp", CP, accepted=False)
    try:
        cs.wait(lambda: len(boot_times(cs)) >= 1, 30, "a BootNotification")
        cp.ev(pilot="B")  # a connector change while Pending is not reported yet
        conf = cs.call(CP, call.GetConfiguration(key=["HeartbeatInterval", "MeterValueSampleInterval"]))
        assert {k["key"] for k in conf.configuration_key} == {"HeartbeatInterval", "MeterValueSampleInterval"}
        assert cs.call(CP, call.ChangeConfiguration(key="MeterValueSampleInterval", value="7")).status == "Accepted"
        conf = cs.call(CP, call.GetConfiguration(key=["MeterValueSampleInterval"]))
        assert conf.configuration_key[0]["value"] == "7"
        cs.wait(lambda: len(boot_times(cs)) >= 3, 30, "BootNotification retried twice")
        times = boot_times(cs)
        for a, b in zip(times, times[1:]):
            assert b - a >= INTERVAL - 0.5, ("BootNotification retried before the interval", times)
        # only BootNotifications so far, and the connector was not reported
        assert set(calls_of(cs, CP)) == {"BootNotification"}, calls_of(cs, CP)

        # a TriggerMessage while Pending: the charge point sends what was asked for now
        assert cs.call(CP, call.TriggerMessage(requested_message="StatusNotification",
                                               connector_id=1)).status == "Accepted"
        cs.wait(lambda: cs.of("StatusNotification", CP), 20, "the triggered StatusNotification")
        assert cs.statuses(CP) == ["Preparing"]
        assert set(calls_of(cs, CP)) == {"BootNotification", "StatusNotification"}

        # a long retry interval, then the central system accepts the charge point and asks
        # for a BootNotification: it comes at once, not after the interval
        cs.heartbeat_s = 600
        n = len(boot_times(cs))
        cs.wait(lambda: len(boot_times(cs)) > n, 30, "a Pending answer with a 600 s interval")
        n = len(boot_times(cs))
        cs.boot_policy[CP] = "Accepted"
        assert cs.call(CP, call.TriggerMessage(requested_message="BootNotification")).status == "Accepted"
        cs.wait(lambda: len(boot_times(cs)) > n, 60, "the triggered BootNotification")
        cs.wait(lambda: cs.of("StopTransaction", CP), 30, "the journaled transaction delivered")
        cs.wait(lambda: len(cs.statuses(CP, 0)) >= 1, 30, "connector 0 reported")
        conf = cs.call(CP, call.GetConfiguration(key=["HeartbeatInterval", "MeterValueSampleInterval"]))
        values = {k["key"]: k["value"] for k in conf.configuration_key}
    finally:
        cp.finish()
    actions = calls_of(cs, CP)
    first_other = next(i for i, a in enumerate(actions) if a not in ("BootNotification", "StatusNotification"))
    assert actions.index("StartTransaction") == first_other
    assert actions.index("StartTransaction") < actions.index("StopTransaction")
    # what the central system changed while Pending stays; the accepted interval is the heartbeat
    assert values == {"HeartbeatInterval": "600", "MeterValueSampleInterval": "7"}
    (txid, tx), = cs.transactions.items()
    assert (tx["id_tag"], tx["reason"]) == ("OFFLINE1", "EVDisconnected")
    assert not cs.unknown_tx and cs.invalid == [], (cs.unknown_tx, cs.invalid)


def boot_attempts(cs):
    with cs.lock:
        return sum(1 for a in cs.attempts if a[0] == "BootNotification")


@pytest.mark.dual_runtime
def test_boot_notification_triggered_while_the_pending_answer_is_on_its_way_is_sent_at_once(
        cs, runtime_name, tmp_path):
    # the first answer is Pending with a 600 s retry interval and is held back for 3 s; the
    # TriggerMessage(BootNotification) reaches the charge point while its call is on the wire
    cs.heartbeat_s = 600
    cs.delay["BootNotification"] = 3.0
    cs.boot_next[CP] = ["Pending"]
    cs.boot_policy[CP] = "Accepted"
    cp = start(cs, runtime_name, tmp_path / "cp", CP, accepted=False)
    try:
        cs.wait(lambda: boot_attempts(cs) >= 1, 30, "the first BootNotification on the wire")
        assert cs.call(CP, call.TriggerMessage(requested_message="BootNotification")).status == "Accepted"
        wait_console(cp, "BootNotification Pending (interval 600)", 30)
        # not after the 600 s interval: the trigger that came before the answer still counts
        wait_console(cp, "BootNotification Accepted", 30)
    finally:
        cp.finish()
    assert len(boot_times(cs)) == 2, boot_times(cs)


@pytest.mark.dual_runtime
def test_rejected_stays_silent_answers_nothing_and_retries_after_the_interval(cs, runtime_name, tmp_path):
    cs.boot_policy[CP] = "Rejected"
    cp = start(cs, runtime_name, tmp_path / "cp", CP, accepted=False)
    try:
        cs.wait(lambda: len(boot_times(cs)) >= 1, 30, "a BootNotification")
        # the answer has reached the charge point (the test's calls below could otherwise
        # overtake it on the central system's side: it notes the BootNotification first)
        wait_console(cp, "BootNotification Rejected", 30)
        cp.ev(pilot="B", start=True, tag="CARD1")  # a card while Rejected: no Authorize
        # calls of the central system are not answered while Rejected
        for frame in ([2, "r1", "GetConfiguration", {}], [2, "r2", "TriggerMessage",
                                                          {"requestedMessage": "StatusNotification"}]):
            with pytest.raises(TimeoutError):
                cs.raw(CP, frame, timeout=3)
        cs.wait(lambda: len(boot_times(cs)) >= 3, 30, "BootNotification retried twice")
        times = boot_times(cs)
        for a, b in zip(times, times[1:]):
            assert b - a >= INTERVAL - 0.5, ("BootNotification retried before the interval", times)
        assert set(calls_of(cs, CP)) == {"BootNotification"}, calls_of(cs, CP)
        # unanswered calls were not answered late either
        assert not [raw for _, raw in cs.frames if raw.startswith(("[3,", "[4,"))], cs.frames

        cs.boot_policy[CP] = "Accepted"
        cs.wait(lambda: cs.last_status(CP) is not None, INTERVAL * 3 + 10, "StatusNotification after Accepted")
        assert cs.call(CP, call.GetConfiguration(key=["HeartbeatInterval"])).configuration_key[0]["value"] == str(INTERVAL)
    finally:
        cp.finish()
    actions = calls_of(cs, CP)
    accepted_at = len(boot_times(cs))
    assert actions[:accepted_at] == ["BootNotification"] * accepted_at
    assert "Authorize" not in actions
    assert cs.invalid == [], cs.invalid


@pytest.mark.dual_runtime
def test_a_heartbeat_answered_with_callerror_leaves_the_sender_running(cs, runtime_name, tmp_path):
    """A CALLERROR answer to a Heartbeat is logged and the charge point goes on sending:
    the status change after it and the next heartbeats reach the central system (the
    answer callback gets None for a CALLERROR; it once raised inside the sender task,
    which then sent nothing more until a reboot)."""
    cs.fail_next["Heartbeat"] = 1
    cp = start(cs, runtime_name, tmp_path / "cp", CP)
    try:
        cs.wait(lambda: cs.failed, 30, "a Heartbeat answered with CALLERROR")
        before = len(cs.statuses(CP))
        cp.ev(pilot="B")
        cs.wait(lambda: len(cs.statuses(CP)) > before, 30, "the StatusNotification after the CALLERROR")
        cs.wait(lambda: cs.of("Heartbeat", CP), 30, "a Heartbeat after the failed one")
    finally:
        cp.finish()
    assert cs.failed[0][0] == "Heartbeat"
    assert "ocpp: Heartbeat answered InternalError" in cp.console()
