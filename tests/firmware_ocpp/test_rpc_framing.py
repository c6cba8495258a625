"""OCPP-J 1.6 RPC framing of the charge point (ocpp_rpc, ocpp_link), the whole ChargePoint
in a child process on CPython and on the MicroPython Unix port at a Pico W's heap, against a raw
central system on 127.0.0.1 (tests/firmware_ocpp/wsserver.py) that can hold answers back,
answer late or with unknown ids, and send malformed frames:

- one outstanding CALL at a time; a CALL never answered times out and the link stays usable;
- the central system's CALLs are answered while the charge point waits for its own answer;
- message ids are unique and at most 36 characters (OCPP-J 1.6 4.1.1);
- a CALLRESULT or CALLERROR with an unknown id is ignored;
- malformed frames get the CALLERROR 1.6 defines when they are CALLs with a usable id, and
  are ignored otherwise (no id to answer, an unknown message type: OCPP-J 1.6 4.1.3), and
  never stop the charge point."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from wsserver import OP_PING, Peer, cp_config

KEY = "AUTH-KEY-0123456789abcdef"
CP = "PICO-RPC"


class CheckedPeer(Peer):
    """A Peer that checks the charge point never has two CALLs outstanding: a CALL of the
    charge point may only arrive once the previous one was answered (or, `timed_out`,
    given up by the charge point after its call timeout)."""

    def __init__(self, conn):
        super().__init__(conn)
        self.outstanding: set[str] = set()
        self.violations: list[str] = []
        self.timed_out: set[str] = set()

    async def message(self, timeout=10):
        msg = await super().message(timeout)
        if msg is not None and msg[0] == 2:
            if self.outstanding - self.timed_out:
                self.violations.append("%s %s arrived while %s outstanding" % (
                    msg[2], msg[1], sorted(self.outstanding)))
            self.outstanding.add(msg[1])
        return msg

    async def send(self, msg):
        if isinstance(msg, list) and msg[0] in (3, 4):
            self.outstanding.discard(msg[1])
        await super().send(msg)




def echo(data, uid=None):
    return {"vendorId": "PicoCharge", "messageId": "echo", "data": data}


@pytest.mark.dual_runtime
def test_a_call_never_answered_times_out_and_the_link_stays_usable(runtime_name, servers, children, tmp_path):
    """The central system never answers the first BootNotification: after the call timeout
    (3 s here) the charge point sends a new one with a new message id, and nothing else
    meanwhile; that one is answered and the session proceeds. A late CALLRESULT for the
    abandoned id (saying Rejected) is ignored: the registration stays Accepted and the
    charge point answers the next CALL. The central system pings every second while it holds
    the answer back: the link is alive, so the unanswered CALL does not drop it (a CALL
    unanswered on a link silent since it went out does: test_transaction_retries)."""
    seen = {}

    async def script(conn):
        await conn.read_request()
        await conn.accept()
        cs = CheckedPeer(conn)
        first = await cs.expect_call("BootNotification", 30)
        cs.timed_out.add(first[1])

        async def keep_alive():
            for _ in range(8):
                await asyncio.sleep(1)
                await conn.send_frame(OP_PING, b"alive")

        pinger = asyncio.ensure_future(keep_alive())
        second = await cs.expect(lambda m: m[0] == 2, 30, auto=False)
        pinger.cancel()
        await cs.answer(second)
        await cs.expect_call("StatusNotification", 30)
        await cs.send([3, first[1], {"status": "Rejected", "currentTime": "2030-01-01T00:00:00Z",
                                     "interval": 600}])
        seen["after"] = await cs.call("dt-1", "DataTransfer", echo("still here"))
        await cs.serve(1)
        seen["cs"] = cs
        await cs.serve(60)  # until the charge point process ends

    server = servers(script)
    cfg = cp_config(server.url, CP, KEY, call_timeout_s=3)
    child = children(runtime_name, tmp_path / "cp", cfg, seconds=50)
    server.wait(lambda: "cs" in seen, 45, "the session after the timeout")
    report = child.stop()
    assert not server.errors, server.errors
    cs = seen["cs"]
    calls = cs.calls
    assert [c[2] for c in calls[:2]] == ["BootNotification", "BootNotification"]
    assert calls[0][1] != calls[1][1]
    assert calls[1][0] - calls[0][0] >= 3 - 0.3, "the second BootNotification came before the timeout"
    assert not cs.violations, cs.violations
    assert seen["after"][0] == 3 and seen["after"][2] == {"status": "Accepted", "data": "still here"}
    assert report["registration"] == "Accepted" and report["conn"] == "connected"
    assert any("answer to an unknown call %s ignored" % calls[0][1] in t for _, t in child.logs())


@pytest.mark.dual_runtime
def test_one_call_at_a_time_and_central_system_calls_are_answered_meanwhile(
        runtime_name, servers, children, tmp_path):
    """The central system holds the answer to the charge point's first StatusNotification
    for 3 s while the charge point has more to send (a second StatusNotification,
    heartbeats every second, the interval of the BootNotification answer): no other CALL arrives meanwhile, while the central system's
    own CALL is answered and a CALLRESULT and a CALLERROR with unknown ids are ignored
    (the held CALL stays pending: its real answer releases the next CALL). Every CALL id
    of the session is unique and at most 36 characters."""
    seen = {}

    async def script(conn):
        await conn.read_request()
        await conn.accept()
        cs = CheckedPeer(conn)
        boot = await cs.expect_call("BootNotification", 30)
        await cs.answer(boot, {"status": "Accepted", "currentTime": "2030-01-01T00:00:00Z", "interval": 1})
        held = await cs.expect_call("StatusNotification", 30)
        t0 = time.monotonic()
        seen["dt"] = await cs.call("cs-1", "DataTransfer", echo("while waiting"))
        await cs.send([3, "no-such-call", {"status": "Accepted"}])
        await cs.send([4, "no-such-call-2", "GenericError", "", {}])
        during = []
        while time.monotonic() - t0 < 3:
            try:
                during.append(await cs.message(max(0.05, 3 - (time.monotonic() - t0))))
            except TimeoutError:
                break
        seen["during"] = during
        await cs.answer(held)
        nxt = await cs.expect(lambda m: m[0] == 2, 15, auto=False)
        seen["next"] = nxt
        await cs.answer(nxt)
        await cs.serve(4)  # heartbeats and the rest, one at a time
        seen["cs"] = cs
        await cs.serve(60)  # until the charge point process ends

    server = servers(script)
    cfg = cp_config(server.url, CP, KEY)
    child = children(runtime_name, tmp_path / "cp", cfg, seconds=50)
    server.wait(lambda: "cs" in seen, 45, "the end of the session")
    report = child.stop()
    assert not server.errors, server.errors
    cs = seen["cs"]
    assert seen["dt"][0] == 3 and seen["dt"][2] == {"status": "Accepted", "data": "while waiting"}
    assert seen["during"] == [], "messages while the CALL was held: %r" % seen["during"]
    assert seen["next"][2] in ("StatusNotification", "Heartbeat")
    assert not cs.violations, cs.violations
    ids = [c[1] for c in cs.calls]
    assert len(ids) >= 4 and len(set(ids)) == len(ids), ids
    assert all(isinstance(i, str) and 0 < len(i) <= 36 for i in ids), ids
    assert "Heartbeat" in [c[2] for c in cs.calls]
    assert report["conn"] == "connected" and report["calls_in"] == 1


# (frame as sent, expected answer: None = ignored, else the CALLERROR code)
MALFORMED = [
    ("not json {", None),                                   # no id to answer
    ('{"a": 1}', None),                                      # not an array
    ("[]", None),
    ('"text"', None),
    ("[3]", None),
    ("[" * 1500 + "]" * 1500, None),                         # deeper than CPython's json recursion
    ('[2, 17, "DataTransfer", {}]', None),                   # the id is not a string
    ('[5, "t5", {}]', None),                                 # unknown type: ignored (4.1.3)
    ('[3, "nobody", {"status": "Accepted"}]', None),         # a CALLRESULT for no pending CALL
    ('[4, "nobody", "GenericError", "", {}]', None),         # a CALLERROR for no pending CALL
    ('[4, "short", "GenericError"]', None),                  # a malformed answer is not answered
    ('[2, "m1", "DataTransfer"]', "ProtocolError"),          # a CALL without its payload
    ('[2, "m2", 42, {}]', "ProtocolError"),                  # the action is not a string
    (json.dumps([2, "i" * 37, "DataTransfer", echo("x")]), "ProtocolError"),  # id > 36 characters
    ('[2, "m3", "DataTransfer", "not an object"]', "FormationViolation"),
    ('[2, "m4", "DataTransfer", {"vendorId": 5}]', "TypeConstraintViolation"),
    ('[2, "m5", "DataTransfer", {}]', "OccurenceConstraintViolation"),
    ('[2, "m6", "FlyToTheMoon", {}]', "NotImplemented"),
]


@pytest.mark.dual_runtime
def test_malformed_frames_get_the_16_answer_or_are_ignored_and_never_stop_the_charge_point(
        runtime_name, servers, children, tmp_path):
    """Each malformed frame is followed by a well-formed probe CALL: the next thing the
    charge point sends about the central system's messages is either the expected
    CALLERROR (for the malformed CALL) and then the probe's answer, or directly the
    probe's answer (the malformed frame was ignored, nothing was sent for it)."""
    seen = {"answers": []}

    async def script(conn):
        await conn.read_request()
        await conn.accept()
        cs = CheckedPeer(conn)
        await cs.answer(await cs.expect_call("BootNotification", 30))
        await cs.expect_call("StatusNotification", 30)
        for k, (text, _code) in enumerate(MALFORMED):
            await cs.send(text)
            probe = "probe-%d" % k
            await cs.send([2, probe, "DataTransfer", echo(str(k))])
            first = await cs.expect(lambda m: m[0] in (3, 4), 15)
            if first[1] == probe:
                second = None
            else:
                second = await cs.expect(lambda m: m[0] in (3, 4), 15)
            seen["answers"].append((first, second))
        seen["final"] = await cs.call("last", "DataTransfer", echo("alive"))
        seen["cs"] = cs
        await cs.serve(60)  # until the charge point process ends

    server = servers(script)
    child = children(runtime_name, tmp_path / "cp", cp_config(server.url, CP, KEY), seconds=55)
    server.wait(lambda: "cs" in seen, 50, "every malformed frame and its probe")
    report = child.stop()
    assert not server.errors, server.errors
    problems = []
    for k, ((text, code), (first, second)) in enumerate(zip(MALFORMED, seen["answers"])):
        probe = "probe-%d" % k
        if code is None:
            if not (first[0] == 3 and first[1] == probe and first[2]["data"] == str(k)):
                problems.append("%s: answered %r instead of being ignored" % (text, first))
        else:
            ok = first[0] == 4 and first[2] == code and second is not None and second[1] == probe
            if not ok:
                problems.append("%s: expected %s, got %r then %r" % (text, code, first, second))
    assert not problems, "\n".join(problems)
    assert seen["final"][2] == {"status": "Accepted", "data": "alive"}
    assert report["conn"] == "connected" and report["registration"] == "Accepted"
    assert not seen["cs"].violations
