"""The charge point's link to the central system (ocpp_link over ocpp_ws) against servers
on 127.0.0.1, the whole ChargePoint running in a child process (CPython, or the MicroPython
Unix port, 32-bit with mbedTLS, at a Pico W's heap, with the firmware as .mpy; tests/firmware_ocpp/wsserver.py):
refused upgrades and 401 retried with backoff, a close from the central system answered
and followed by a new session, a message above the maximum size closed with 1009 and
recovered from, reconnect delays that grow exponentially with jitter up to the configured
maximum, wss:// with a CA certificate on flash, and an event loop that keeps running while
the upgrade is never answered.

Timing assertions are about order and shape (ratios, bounds with generous slack), never
about speed: the machine is shared and noisy."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import ssl
import threading
import time

import pytest
import websockets
from cprunner import wait_until
from tlscerts import make_server_cert
from wsserver import (
    OP_CLOSE,
    OP_TEXT,
    Peer,
    close_payload,
    cp_config,
    frame_bytes,
    free_port_refusing,
)

KEY = "AUTH-KEY-0123456789abcdef"
CP = "PICO-WS"
# 2 x ping interval + this with nothing received ends a link (firmware default 10 s)
PING_GRACE_S = 3
RETRY = re.compile(r"connect failed \((.*)\), retry in ([0-9.]+)s")




def retries(child) -> list[tuple[int, str, float]]:
    """(ms since start, error, planned delay s) of every failed connection attempt."""
    out = []
    for ms, text in child.logs():
        m = RETRY.search(text)
        if m:
            out.append((ms, m.group(1), float(m.group(2))))
    return out


@pytest.mark.dual_runtime
def test_refused_upgrades_and_a_401_are_retried_with_backoff_until_a_session_boots(
        runtime_name, servers, children, tmp_path):
    """OCPP-J 1.6 3.1/3.2 and the security profile 1 of the OCPP 1.6 security whitepaper:
    every upgrade request asks for `ocpp1.6` on /ocpp/<chargePointId> with Basic auth
    chargePointId:AuthorizationKey. A 101 without Sec-WebSocket-Protocol (the central
    system does not agree), a 101 naming another subprotocol and a 401 are each refused
    (TCP dropped, no frame sent), logged, and retried after a growing delay; the fourth
    attempt is accepted and the charge point boots."""
    sessions = {}

    async def script(conn):
        await conn.read_request()
        if conn.index == 0:
            await conn.accept(protocol=None)
        elif conn.index == 1:
            await conn.accept(protocol="ocpp2.0.1")
        elif conn.index == 2:
            await conn.refuse(401, close=False)
        else:
            await conn.accept()
            cs = Peer(conn)
            await cs.answer(await cs.expect_call("BootNotification", 30))
            await cs.expect_call("StatusNotification", 30)
            sessions[conn.index] = cs
            await cs.serve(60)
            return
        conn.eof = await conn.expect_eof(20)

    server = servers(script)
    child = children(runtime_name, tmp_path / "cp", cp_config(server.url, CP, KEY), seconds=50)
    server.wait(lambda: 3 in sessions, 45, "the fourth connection to boot")
    report = child.stop()
    assert not server.errors, server.errors
    assert report["registration"] == "Accepted" and report["conn"] == "connected", report

    conns = server.conns
    auth = "Basic " + base64.b64encode(("%s:%s" % (CP, KEY)).encode()).decode()
    for c in conns[:4]:
        assert c.request_line == "GET /ocpp/%s HTTP/1.1" % CP
        assert c.headers["sec-websocket-protocol"] == "ocpp1.6"
        assert c.headers["authorization"] == auth
        assert c.headers["sec-websocket-version"] == "13"
    for c in conns[:3]:
        assert getattr(c, "eof", False) and not c.frames, "refused connection %d" % c.index
    assert sessions[3].calls[0][2] == "BootNotification"

    tries = retries(child)
    assert len(tries) >= 3, child.output()
    first3 = tries[:3]
    assert "did not agree subprotocol ocpp1.6 (got None)" in first3[0][1]
    assert "did not agree subprotocol ocpp1.6 (got ocpp2.0.1)" in first3[1][1]
    assert "401" in first3[2][1]
    delays = [d for _, _, d in first3]
    # 0.2 s base: [0.2,0.4) [0.4,0.8) [0.8,1.6), logged to 0.1 s (neighbours may round equal)
    assert delays[0] <= delays[1] <= delays[2] and delays[2] > delays[0], delays
    # the next attempt waited at least the planned delay, on the charge point's own clock
    # (ms of its log lines): each failure is logged before its pause, the fourth attempt
    # logs "connected" after it (a delay logged to 0.1 s may be 0.05 s shorter)
    ends = [ms for ms, _, _ in first3] + [child.logged("ocpp: connected")[0][0]]
    for k in range(3):
        gap = (ends[k + 1] - ends[k]) / 1000
        assert gap >= delays[k] - 0.051, (k, gap, delays)


@pytest.mark.dual_runtime
def test_a_close_from_the_central_system_is_answered_and_the_charge_point_reconnects(
        runtime_name, servers, children, tmp_path):
    """RFC 6455 5.5.1: the charge point answers the central system's close frame with a
    close frame carrying the same code, drops TCP, and connects again; the new session
    works (status reported again, a central-system CALL answered)."""
    seen = {}

    async def script(conn):
        await conn.read_request()
        await conn.accept()
        cs = Peer(conn)
        if conn.index == 0:
            await cs.answer(await cs.expect_call("BootNotification", 30))
            await cs.expect_call("StatusNotification", 30)
            await cs.serve(0.5)
            await conn.send_frame(OP_CLOSE, close_payload(1001, "restarting"))
            seen["reply"] = await conn.recv_frame(10)
            seen["eof"] = await conn.expect_eof(10)
        else:
            await cs.expect_call("StatusNotification", 30)
            seen["answer"] = await cs.call("dt-1", "DataTransfer",
                                           {"vendorId": "PicoCharge", "messageId": "echo", "data": "again"})
            seen["second"] = cs
            await cs.serve(60)

    server = servers(script)
    child = children(runtime_name, tmp_path / "cp", cp_config(server.url, CP, KEY), seconds=50)
    server.wait(lambda: "second" in seen, 45, "the second session")
    report = child.stop()
    assert not server.errors, server.errors
    reply = seen["reply"]
    assert reply is not None and reply.op == OP_CLOSE and reply.close_code == 1001 and reply.masked
    assert seen["eof"]
    assert seen["answer"][0] == 3 and seen["answer"][2] == {"status": "Accepted", "data": "again"}
    assert report["conn"] == "connected" and len(server.conns) == 2
    texts = [t for _, t in child.logs()]
    assert texts.count("ocpp: connected") == 2 and "ocpp: disconnected" in texts


@pytest.mark.dual_runtime
def test_a_message_above_the_maximum_size_closes_with_1009_and_the_next_session_works(
        runtime_name, servers, children, tmp_path):
    """RFC 6455 7.4.1: with `ocpp.max_message` 1024, a 3000-byte CALL of the central system
    makes the charge point close with 1009 (message too big) without reading it into
    memory; it reconnects and answers the next, smaller CALL."""
    seen = {}

    async def script(conn):
        await conn.read_request()
        await conn.accept()
        cs = Peer(conn)
        if conn.index == 0:
            await cs.answer(await cs.expect_call("BootNotification", 30))
            await cs.expect_call("StatusNotification", 30)
            await cs.send([2, "big", "DataTransfer", {"vendorId": "PicoCharge", "messageId": "echo",
                                                      "data": "x" * 3000}])
            while True:
                f = await conn.recv_frame(10)
                if f is None or f.op == OP_CLOSE:
                    break
            seen["close"] = f
            seen["eof"] = await conn.expect_eof(10)
        else:
            seen["answer"] = await cs.call("small", "DataTransfer",
                                           {"vendorId": "PicoCharge", "messageId": "echo", "data": "y" * 100})
            await cs.serve(60)

    server = servers(script)
    cfg = cp_config(server.url, CP, KEY, max_message=1024)
    child = children(runtime_name, tmp_path / "cp", cfg, seconds=50)
    server.wait(lambda: "answer" in seen, 45, "the answer in the second session")
    report = child.stop()
    assert not server.errors, server.errors
    assert seen["close"] is not None and seen["close"].close_code == 1009, seen["close"]
    assert seen["eof"]
    assert seen["answer"][2] == {"status": "Accepted", "data": "y" * 100}
    assert report["conn"] == "connected"


@pytest.mark.dual_runtime
def test_reconnect_delays_grow_exponentially_with_jitter_and_stay_within_the_maximum(
        runtime_name, children, tmp_path):
    """Against a port that refuses connections (reconnect_min_s 0.25, ReconnectMaxInterval
    4 s): the planned delays double per failure with jitter in [0.5, 1) of the step (base
    0.25 s: [0.25,0.5) [0.5,1) [1,2) [2,4) [2,4) ...), never exceed the maximum, and the
    attempts really are that far apart. Three charge points run at once: two with the same
    random seed plan the same delays, one with another seed plans different ones (the
    jitter spreads a fleet's reconnects)."""
    name = runtime_name
    port = free_port_refusing()
    url = "ws://127.0.0.1:%d/ocpp" % port
    cfg = cp_config(url, CP, KEY, reconnect_min_s=0.25, keys={"ReconnectMaxInterval": 4})
    kids = [children(name, tmp_path / ("cp%d" % i), cfg, seconds=16, seed=seed)
            for i, seed in enumerate((1, 2, 1))]
    for k in kids:
        k.stop(60, ask=False)
    plans = []
    for k in kids:
        tries = retries(k)
        assert len(tries) >= 5, k.output()
        delays = [d for _, _, d in tries]
        plans.append(delays)
        assert all("ECONNREFUSED" in e or "111" in e for _, e, _ in tries), tries[0]
        # the planned delays: growing steps until the cap, never above it
        assert all(0 < d <= 4.0 for d in delays), delays
        assert delays[0] <= delays[1] <= delays[2] <= delays[3], delays
        assert delays[3] >= 2 * delays[0], delays
        assert all(d >= 1.9 for d in delays[3:]), delays  # capped steps: [2, 4)
        # the attempts: each waited at least its delay, the capped ones not much more
        times = [ms / 1000 for ms, _, _ in tries]
        gaps = [b - a for a, b in zip(times, times[1:])]
        for gap, d in zip(gaps, delays):
            assert gap >= d - 0.06, (gaps, delays)
        assert all(g <= 4.0 + 1.5 for g in gaps[3:]), gaps
        capped = gaps[3:]
        assert sum(capped) / len(capped) >= 2.5 * gaps[0], gaps
    assert plans[0][:5] == plans[2][:5], plans  # same seed, same plan
    assert plans[0][:5] != plans[1][:5], plans  # another seed, another plan


@pytest.mark.dual_runtime
def test_the_event_loop_keeps_running_while_the_upgrade_is_never_answered(
        runtime_name, servers, children, tmp_path):
    """The central system accepts TCP and never answers the upgrade: while the charge point
    waits (its handshake timeout is 15 s), a 50 ms ticker task in the same process keeps
    running (asserted: at least a quarter of its nominal ticks happened)."""

    async def script(conn):
        await conn.read_request()
        await conn.expect_eof(60)

    server = servers(script)
    child = children(runtime_name, tmp_path / "cp", cp_config(server.url, CP, KEY), seconds=6)
    server.wait(lambda: server.conns and server.conns[0].request_line, 30, "the upgrade request")
    report = child.stop(60, ask=False)  # it runs its 6 s
    assert report["ms"] >= 5000, report
    assert report["conn"] == "connecting", report
    assert report["ticks"] >= report["ms"] / 50 / 4, report
    assert "ocpp: connected" not in [t for _, t in child.logs()]


# -- wss:// ---------------------------------------------------------------------------------

class WssCentralSystem:
    """A `websockets` server over TLS that answers BootNotification (and the other CALLs
    with their default answers) and records the upgrade requests and CALLs."""

    def __init__(self, ctx: ssl.SSLContext):
        self.ctx = ctx
        self.requests: list[tuple[str, object]] = []
        self.calls: list[tuple[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _process_request(self, connection, request):
        self.requests.append((request.path, request.headers))

    async def _handler(self, ws):
        from wsserver import default_answer
        try:
            async for text in ws:
                msg = json.loads(text)
                if msg[0] == 2:
                    self.calls.append((ws.request.path, msg[2]))
                    await ws.send(json.dumps([3, msg[1], default_answer(msg[2], msg[3])]))
        except websockets.ConnectionClosed:
            pass  # the charge point process ended

    async def _serve(self):
        self.server = await websockets.serve(self._handler, "127.0.0.1", 0, ssl=self.ctx,
                                             subprotocols=["ocpp1.6"],
                                             process_request=self._process_request,
                                             ping_interval=None)
        self.url = "wss://127.0.0.1:%d/ocpp" % self.server.sockets[0].getsockname()[1]

    def start(self):
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        return self

    def stop(self):
        async def shutdown():
            self.server.close()
            await self.server.wait_closed()
        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def wss(tmp_path):
    """A central system over TLS with an ECDSA P-256 certificate for 127.0.0.1 signed by a CA
    made here; (server, that CA as DER, another CA as DER)."""
    cert = make_server_cert(tmp_path / "pki", "server")
    other = make_server_cert(tmp_path / "pki", "other")
    cs = WssCentralSystem(cert.server_context()).start()
    yield cs, cert.ca_der, other.ca_der
    cs.stop()


@pytest.mark.dual_runtime
def test_wss_with_the_configured_ca_boots_with_basic_auth_over_tls(
        runtime_name, wss, children, tmp_path):
    """Security profile 2 (Basic auth over TLS): with `ocpp.ca_file` naming the CA that
    signed the server's certificate (DER, on flash) the charge point checks the certificate
    and the host (127.0.0.1 in subjectAltName), connects over wss:// and completes a
    BootNotification. On MicroPython this is the 32-bit build's mbedTLS configured as a
    Pico W's, its buffers on the MicroPython heap."""
    cs, der, _ = wss
    cfg = cp_config(cs.url, CP, KEY, ca_file="ca.der")
    child = children(runtime_name, tmp_path / "cp", cfg, seconds=60, files={"ca.der": der})
    wait_until(lambda: ("/ocpp/" + CP, "StatusNotification") in cs.calls, 45, "a session over wss")
    report = child.stop()
    assert cs.calls[0] == ("/ocpp/" + CP, "BootNotification")
    assert report["registration"] == "Accepted" and report["conn"] == "connected"
    assert report["tls"] == "checked"
    path, headers = cs.requests[0]
    assert path == "/ocpp/" + CP
    assert headers["Sec-WebSocket-Protocol"] == "ocpp1.6"
    assert headers["Authorization"] == "Basic " + base64.b64encode(("%s:%s" % (CP, KEY)).encode()).decode()
    assert not child.logged("NOT checked")


@pytest.mark.dual_runtime
def test_wss_with_another_ca_is_refused_and_retried(runtime_name, wss, children, tmp_path):
    """With `ocpp.ca_file` naming a different CA, the TLS handshake fails on the
    certificate check: no upgrade request ever reaches the server, the failure is logged
    and retried with backoff, and the charge point never registers."""
    cs, _, other = wss
    cfg = cp_config(cs.url, CP, KEY, ca_file="ca.der")
    child = children(runtime_name, tmp_path / "cp", cfg, seconds=60, files={"ca.der": other})
    wait_until(lambda: len(retries(child)) >= 3, 45, "three refused attempts")
    report = child.stop()
    assert cs.requests == [] and cs.calls == []
    assert report["registration"] is None and report["conn"] != "connected"
    verify_failed = ("CERTIFICATE_VERIFY_FAILED" if runtime_name == "cpython" else
                     "The certificate is not correctly signed by the trusted CA")  # mbedTLS
    assert all(verify_failed in e for _, e, _ in retries(child)), retries(child)


@pytest.mark.dual_runtime
def test_wss_without_a_ca_is_refused_before_connecting_unless_insecure_is_set(
        runtime_name, wss, children, tmp_path):
    """Secure by default: a wss:// URL without `ocpp.ca_file` is refused before any TCP
    connection (a clear console line at start, each attempt logged and retried), nothing
    reaches the server. With `"insecure": true` the charge point connects without checking
    the certificate, says so on the console, and its summary (ev.status) shows it."""
    cs, _, _ = wss
    refused = children(runtime_name, tmp_path / "refused", cp_config(cs.url, CP, KEY), seconds=60)
    wait_until(lambda: len(retries(refused)) >= 2, 45, "two refused attempts")
    report = refused.stop()
    assert cs.requests == [] and report["conn"] != "connected" and report["tls"] == "no CA"
    assert refused.logged("wss:// without ocpp.ca_file: refusing to connect")
    assert all("TLS without a CA certificate" in e for _, e, _ in retries(refused)), retries(refused)

    insecure = children(runtime_name, tmp_path / "insecure",
                        cp_config(cs.url, CP, KEY, insecure=True), seconds=60)
    wait_until(lambda: ("/ocpp/" + CP, "StatusNotification") in cs.calls, 45, "a session over wss")
    report = insecure.stop()
    assert report["registration"] == "Accepted" and report["tls"] == "insecure"
    assert insecure.logged("WARNING TLS certificate NOT checked")


@pytest.mark.dual_runtime
def test_a_central_system_that_accepts_and_closes_at_once_sees_growing_reconnect_delays(
        runtime_name, servers, children, tmp_path):
    """A central system that completes the upgrade and closes at once (here with 1008, as
    some do for an unknown charge point) must not be hammered: the delay before each new
    attempt still grows (reconnect_min_s 0.25, ReconnectMaxInterval 4) until a session
    gets through; asserted on the sessions' starts on the charge point's own clock (order
    and ratio only)."""

    async def script(conn):
        await conn.read_request()
        await conn.accept()
        await conn.send_frame(OP_CLOSE, close_payload(1008, "unknown charge point"))
        while True:  # (its BootNotification may come first)
            conn.reply = await conn.recv_frame(10)
            if conn.reply is None or conn.reply.op == OP_CLOSE:
                break
        await conn.expect_eof(10)

    server = servers(script)
    cfg = cp_config(server.url, CP, KEY, reconnect_min_s=0.25, keys={"ReconnectMaxInterval": 4})
    child = children(runtime_name, tmp_path / "cp", cfg, seconds=12)
    report = child.stop(60, ask=False)
    server.settle()
    assert not server.errors, server.errors
    # each session's start on the charge point's own clock (ms of its log lines)
    opens = [ms / 1000 for ms, _ in child.logged("ocpp: connected")]
    gaps = [b - a for a, b in zip(opens, opens[1:])]
    assert 4 <= len(opens) <= 10, gaps  # growing delays: ~6 attempts in 12 s, not dozens
    assert all(c.reply is not None and c.reply.close_code == 1008 for c in server.conns[:-1])
    assert gaps[2] > gaps[0] and max(gaps) >= 3 * gaps[0], gaps
    assert all(g <= 4.0 + 1.5 for g in gaps), gaps
    assert report["registration"] is None


@pytest.mark.dual_runtime
def test_a_central_system_that_stops_reading_and_answering_is_left_after_unanswered_pings(
        runtime_name, servers, children, tmp_path):
    """After the session is up, the central system stops reading and sends nothing more
    (WebSocketPingInterval 1 s, ping_grace_s 3): the charge point's pings go unanswered, it
    gives the link up once nothing arrived for 2 x interval + grace, and connects again; its
    event loop ran throughout (ticker)."""
    seen = {}

    async def script(conn):
        await conn.read_request()
        await conn.accept()
        cs = Peer(conn)
        if conn.index == 0:
            await cs.answer(await cs.expect_call("BootNotification", 30))
            await cs.expect_call("StatusNotification", 30)
            conn.reader.pause_reading()
            await asyncio.sleep(40)
        else:
            await cs.expect_call("StatusNotification", 30)
            seen["status"] = True
            await cs.serve(60)

    server = servers(script)
    # the unanswered StatusNotification's timeout (which would drop the silent link
    # itself) past the ping check, which this test is about
    cfg = cp_config(server.url, CP, KEY, call_timeout_s=30, ping_grace_s=PING_GRACE_S,
                    keys={"WebSocketPingInterval": 1})
    child = children(runtime_name, tmp_path / "cp", cfg, seconds=50)
    server.wait(lambda: "status" in seen, 45, "a new session after the silent one")
    report = child.stop()
    assert not server.errors, server.errors
    # on the charge point's clock: the silence began after it connected (the last frame it
    # got is the BootNotification's answer), so it may not give up earlier than
    # 2 x WebSocketPingInterval + the ping grace later
    connected = child.logged("ocpp: connected")
    gave_up = child.logged("no answer to pings")
    assert gave_up and gave_up[0][0] - connected[0][0] >= (2 * 1 + PING_GRACE_S) * 1000, (
        connected, gave_up)
    assert report["conn"] == "connected"
    assert report["ticks"] >= report["ms"] / 50 / 4, report


@pytest.mark.dual_runtime
def test_a_central_system_that_stops_reading_while_the_charge_point_sends_is_left(
        runtime_name, servers, children, tmp_path):
    """The central system stops reading and floods the charge point with CALLs whose answers
    are 3000 bytes each, then falls silent: the charge point's send buffers fill, so its
    answer (and any ping) cannot be written. It must still notice the dead link (ping
    interval 1 s, ping_grace_s 3) and connect again instead of waiting forever; its event loop ran
    throughout (ticker). The flood (9 MB of answers) is more than the kernel's socket
    buffers take with Linux defaults (about 4 MB here): the charge point's answer blocks."""
    seen = {}

    async def script(conn):
        await conn.read_request()
        await conn.accept()
        cs = Peer(conn)
        if conn.index == 0:
            await cs.answer(await cs.expect_call("BootNotification", 30))
            await cs.expect_call("StatusNotification", 30)
            conn.reader.pause_reading()
            payload = {"vendorId": "PicoCharge", "messageId": "echo", "data": "f" * 3000}
            t = conn.writer.transport
            for k in range(3000):  # ~9 MB of answers asked for, more than the buffers hold
                text = json.dumps([2, "flood-%d" % k, "DataTransfer", payload])
                t.write(frame_bytes(OP_TEXT, text.encode()))  # not waiting for the writes
                if k % 50 == 0:
                    await asyncio.sleep(0.01)
            seen["flooded"] = time.monotonic()
            await asyncio.sleep(60)
        else:
            seen["again"] = time.monotonic()
            await cs.expect_call("StatusNotification", 30)
            seen["status"] = True
            await cs.serve(60)

    server = servers(script)
    cfg = cp_config(server.url, CP, KEY, ping_grace_s=PING_GRACE_S, keys={"WebSocketPingInterval": 1})
    child = children(runtime_name, tmp_path / "cp", cfg, seconds=55)
    server.wait(lambda: "status" in seen, 50, "a new session after the stuck one")
    report = child.stop()
    assert not server.errors, server.errors
    texts = [t for _, t in child.logs()]
    assert "ocpp: ping not sent, reconnecting" in texts, texts[-10:]
    assert report["conn"] == "connected" and report["calls_in"] >= 100, report
    assert report["ticks"] >= report["ms"] / 50 / 4, report
