"""Uplinks into a network that is up but does not answer, on both runtimes: the telemetry
broker, ThingSpeak's MQTT broker and ThingSpeak's REST endpoint black-holed at once
(stationkit.BlackHoles says what each kind models). The board keeps its event loop
running (the longest gap, measured by the board's own loop probe, stays under the bound),
the watchdog never resets it, every link keeps retrying, and once real servers answer on
those ports again every uplink comes back by itself, without a reboot."""

import json
import socket
import threading

import pytest
from stationkit import (
    BlackHoles,
    Broker,
    Subscriber,
    ThingSpeakRecorder,
    assert_loop_gap_within,
    boot,
    report,
    wait_until,
)

# The bound this firmware promises for one uninterrupted stretch of the event loop (see
# docs/firmware.md, "Event loop"); the probe wakes every 20 ms here, so its figure is at
# most 20 ms above the longest stretch.
LOOP_GAP_BOUND_MS = 300
WORLD = {"ap_ssid": "workshop"}


def summary(board, expr):
    mark = board.console.mark()
    board.control("console", line="import json; print('sum ' + json.dumps(%s))" % expr)
    return json.loads(board.wait_for(r"^sum (.*)$", start=mark).group(1))


@pytest.fixture
def holes():
    h = BlackHoles()
    yield h
    h.close_all()


@pytest.mark.dual_runtime
def test_black_holed_brokers_and_thingspeak_never_stall_the_loop_and_every_link_recovers(
        board_factory, holes, tmp_path, runtime_name):
    telemetry_port = holes.silent()      # accepts, never answers (no CONNACK)
    ts_mqtt_port = holes.unreachable()   # never accepts (SYNs dropped)
    ts_rest_port = holes.silent()        # accepts the POST, never answers
    cfg = {"cp_id": "PICO-0051", "wifi": {"ssid": "workshop", "password": "x"},
           "mqtt": {"url": f"mqtt://127.0.0.1:{telemetry_port}", "timeout_s": 1,
                    "max_backoff_s": 2},
           "thingspeak": {"url": f"http://127.0.0.1:{ts_rest_port}", "channel": 4242,
                          "write_key": "K", "interval_s": 2, "min_interval_s": 2,
                          "timeout_s": 2,
                          "mqtt": {"url": f"mqtt://127.0.0.1:{ts_mqtt_port}", "client_id": "ts",
                                   "user": "ts", "password": "p", "timeout_s": 1,
                                   "max_backoff_s": 2}},
           "intervals": {"sensors_s": 2, "telemetry_s": 1},
           "app": {"loop_probe_ms": 20}}
    board = boot(board_factory, cfg, world=WORLD)
    board.control("plug", demand_a=16)  # a charging session runs meanwhile

    def failing():
        t = summary(board, "app.telemetry.summary()")
        ts = summary(board, "app.thingspeak.summary()")
        mq = ts["mqtt"] or {}
        # one MQTT attempt fails, then the slots go to the REST bulk endpoint (backlog)
        ok = t["failures"] >= 4 and mq.get("failures", 0) >= 1 and ts["net_errors"] >= 4
        return (t, ts) if ok else None

    t, ts = wait_until(failing, timeout=90, interval=1, what="repeated failed attempts")
    assert t["last_error"].endswith("no answer within 1000 ms (CONNACK)"), t
    assert ts["mqtt"]["last_error"].endswith("no answer within 1000 ms (TCP connect)"), ts
    assert not t["connected"] and t["buffered"] > 0
    r = report(board)
    assert r["st"] == "Charging" and r["relay"], "the charging session ran on meanwhile"
    assert_loop_gap_within(board, r, LOOP_GAP_BOUND_MS)
    assert board.board.boots == 1 and board.board.resets == [], board.board.resets

    # the network answers again: real servers take the ports
    for port in (telemetry_port, ts_mqtt_port, ts_rest_port):
        holes.close(port)
    broker = Broker(tmp_path, port=telemetry_port).start()
    ts_broker = Broker(tmp_path, port=ts_mqtt_port).start()
    rest = ThingSpeakRecorder(port=ts_rest_port)
    sub = Subscriber(telemetry_port, ["picocharge/PICO-0051/telemetry"])
    ts_sub = Subscriber(ts_mqtt_port, ["channels/4242/publish"])
    try:
        sub.wait(lambda m: True, timeout=30, what="telemetry after the outage")
        # the backlog goes out over REST first, then the slots use MQTT again
        wait_until(lambda: any(r["path"].endswith("bulk_update.json") for r in rest.snapshot()),
                   timeout=30, what="the ThingSpeak backlog after the outage")
        ts_sub.wait(lambda m: True, timeout=30, what="a ThingSpeak channel publish after the outage")
    finally:
        sub.stop()
        ts_sub.stop()
        broker.stop()
        ts_broker.stop()
        rest.stop()
    r = report(board)
    assert_loop_gap_within(board, r, LOOP_GAP_BOUND_MS)
    assert board.board.boots == 1 and board.board.resets == []
    print("max loop gap on %s: %d ms" % (runtime_name, r["loop_gap_ms"]))


LEAK_SNIPPET = r'''
import asyncio, os
import httpc, mqtt_link, ocpp_ws

def open_fds():
    n = 0
    for i in range(1024):
        try:
            os.stat("/proc/self/fd/%%d" %% i)
            n += 1
        except OSError:
            pass
    return n

async def timed_out(coro):
    try:
        await coro
    except asyncio.TimeoutError:
        return 1
    return 0

def mqtt_attempts(port):
    link = mqtt_link.Link("mqtt://127.0.0.1:%%d" %% port, "PICO-LEAK", timeout_s=0.05,
                          log=lambda *a: None)

    async def attempt():
        await link.connect()  # connect() does not wait for the backoff
        return link.failures, link.last_error
    return attempt

def ws_attempts(port):
    ws = ocpp_ws.WebSocket(max_size=256, frag_size=64)
    box = [0]

    async def attempt():
        box[0] += await timed_out(ws.connect("ws://127.0.0.1:%%d/ocpp/PICO-LEAK" %% port,
                                             user="PICO-LEAK", password="k", timeout=0.05))
        return box[0], "timed out"
    return attempt

def http_attempts(port):
    box = [0]

    async def attempt():
        box[0] += await timed_out(httpc.get("http://127.0.0.1:%%d/status" %% port, timeout=0.05))
        return box[0], "timed out"
    return attempt

async def main():
    for kind, hole, port in %(cases)r:
        attempt = {"mqtt": mqtt_attempts, "ws": ws_attempts, "http": http_attempts}[kind](port)
        await attempt()  # the first attempt may load modules that open files
        before = open_fds()
        for _ in range(40):
            count, error = await attempt()
        print("RESULT %%s %%s %%d %%d %%d %%s" %% (kind, hole, before, open_fds(), count, error))

asyncio.run(main())
'''


@pytest.mark.dual_runtime
def test_timed_out_connection_attempts_leave_no_socket_open(runtime_name, holes, tmp_path):
    """Every outgoing connection of the board (the MQTT link, the OCPP WebSocket, an httpc
    request) closes its socket when an attempt towards a black hole times out: 40 attempts
    each, against a server that accepts and never answers and a host that drops SYNs.
    MicroPython's asyncio.open_connection, cancelled by a timeout, would leave one open per
    attempt; netopen's guarded connect does not."""
    from firmware_ocpp.scripts import run_snippet

    # a silent hole per client: each attempt stays in its accept queue
    cases = [(kind, hole, holes.silent() if hole == "silent" else holes.unreachable())
             for kind in ("mqtt", "ws", "http") for hole in ("silent", "unreachable")]
    out = run_snippet(runtime_name, LEAK_SNIPPET % {"cases": cases}, tmp_path, timeout=240)
    results = [line.split(" ", 6)[1:] for line in out.splitlines() if line.startswith("RESULT ")]
    assert [r[:2] for r in results] == [[kind, hole] for kind, hole, _ in cases], out
    mqtt_stage = {"silent": "CONNACK", "unreachable": "TCP connect"}
    for kind, hole, before, after, count, error in results:
        if kind == "mqtt":
            assert int(count) == 41 and error.endswith("(%s)" % mqtt_stage[hole]), (kind, hole, error)
        else:
            assert int(count) == 41, f"{kind} towards the {hole} hole: {count} of 41 timed out"
        assert int(after) == int(before), \
            f"{kind} towards the {hole} hole: {int(after) - int(before)} sockets left open"


@pytest.mark.dual_runtime
def test_a_broker_that_freezes_mid_session_costs_one_timeout_and_the_link_comes_back(
        board_factory, tmp_path, runtime_name):
    """Mosquitto stopped with SIGSTOP while the board publishes: the kernel still accepts
    connections for it but nothing answers, the half-open path of the field. The PUBACK
    wait times out, the link drops and keeps retrying (CONNACK timeouts) with the loop
    running; after SIGCONT the buffered reports go out without a reboot."""
    import os
    import signal

    broker = Broker(tmp_path).start()
    sub = Subscriber(broker.port, ["picocharge/PICO-0052/telemetry"])
    frozen = False
    try:
        cfg = {"cp_id": "PICO-0052", "wifi": {"ssid": "workshop", "password": "x"},
               "mqtt": {"url": f"mqtt://127.0.0.1:{broker.port}", "timeout_s": 1,
                        "max_backoff_s": 2},
               "intervals": {"sensors_s": 2, "telemetry_s": 1},
               "app": {"loop_probe_ms": 20}}
        board = boot(board_factory, cfg, world=WORLD)
        sub.wait(lambda m: True, what="first reports")
        os.kill(broker.proc.pid, signal.SIGSTOP)
        frozen = True
        mark = board.console.mark()
        board.wait_for(r"^mqtt: connection lost \(publish: no answer within 1000 ms \(PUBACK\)\)",
                       start=mark, timeout=30)
        wait_until(lambda: summary(board, "app.telemetry.summary()")["failures"] >= 4,
                   timeout=40, interval=1, what="reconnection attempts while frozen")
        t = summary(board, "app.telemetry.summary()")
        assert t["last_error"].endswith("no answer within 1000 ms (CONNACK)"), t
        seen = len(sub.messages)
        os.kill(broker.proc.pid, signal.SIGCONT)
        frozen = False
        board.wait_for(r"^mqtt: connected to 127\.0\.0\.1", start=mark, timeout=30)
        sub.wait(lambda m: len(sub.messages) > seen + 3, what="reports after the freeze")
        r = report(board)
        assert_loop_gap_within(board, r, LOOP_GAP_BOUND_MS)
        assert board.board.boots == 1 and board.board.resets == []
        print("max loop gap on %s (frozen broker): %d ms" % (runtime_name, r["loop_gap_ms"]))
    finally:
        if frozen:
            os.kill(broker.proc.pid, signal.SIGCONT)
        sub.stop()
        broker.stop()


class ConnackThenSilent:
    """A fake broker: answers the CONNECT with CONNACK (accepted), then reads and never
    answers again (a broker that hangs mid-session)."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.conns.append(conn)
            conn.recv(1024)
            conn.sendall(b"\x20\x02\x00\x00")

    def close(self):
        self.server.close()
        for conn in self.conns:
            conn.close()


KEEPALIVE_SNIPPET = r'''
import asyncio, time
import mqtt_link

async def ping(port):
    link = mqtt_link.Link("mqtt://127.0.0.1:%%d" %% port, "PICO-PING", keepalive_s=2,
                          timeout_s=1, log=lambda *a: None)
    out = [await link.connect(), await link.keep_alive()]  # traffic just now: no ping
    link.last_tx_ms = time.ticks_add(time.ticks_ms(), -1500)  # idle past half of 2 s
    out += [await link.keep_alive(), link.connected(), link.last_error]
    return out

async def main():
    print("RESULT %%r %%r" %% (await ping(%(broker)d), await ping(%(silent)d)))

asyncio.run(main())
'''


@pytest.mark.dual_runtime
def test_keep_alive_pings_an_idle_link_and_drops_it_when_no_pingresp_comes(
        runtime_name, tmp_path):
    from firmware_ocpp.scripts import run_snippet

    broker = Broker(tmp_path).start()
    silent = ConnackThenSilent()
    try:
        out = run_snippet(runtime_name, KEEPALIVE_SNIPPET % {"broker": broker.port,
                                                            "silent": silent.port}, tmp_path)
    finally:
        silent.close()
        broker.stop()
    answered, unanswered = out.split("RESULT ", 1)[1].strip().split("] [")
    assert answered == "[True, True, True, True, None", out
    assert unanswered == "True, True, False, False, 'ping: no answer within 1000 ms (PINGRESP)']", out
