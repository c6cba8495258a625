"""The firmware's WebSocket client (firmware/lib/ocpp_ws.py, ocpp_wsopen.py) against raw
servers on 127.0.0.1 (tests/firmware_ocpp/wsserver.py), on CPython and on the MicroPython
Unix port at a Pico W's heap: the opening handshake (subprotocol, Basic auth, refusals), frames
(fragmentation, interleaved control frames, masking, close handshake, maximum size,
protocol errors per RFC 6455) and an event loop that never blocks on a stuck socket.

The client runs in a child process (tests/firmware_ocpp/scripts.py); each test checks what
the client reported and what the server saw on the wire."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from scripts import run_snippet
from wsserver import (
    OP_BIN,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    accept_key,
    close_payload,
    frame_bytes,
)

HEAD = r'''
import asyncio, json, time
import ocpp_ws
URL = %(url)r
out = {}
def report():
    print("RESULT " + json.dumps(out))
ticks = [0]
async def ticker():
    while True:
        await asyncio.sleep_ms(50)
        ticks[0] += 1
'''


def result_of(stdout: str) -> dict:
    return json.loads(stdout.split("RESULT ", 1)[1].splitlines()[0])



def assert_client_frames_masked(conn):
    assert conn.frames, "the client sent no frame"
    for f in conn.frames:
        assert f.masked and f.key is not None and len(f.key) == 4, f


# -- the opening handshake ----------------------------------------------------------------

HANDSHAKE = HEAD + r'''
async def attempt(name, password=None, user="CP-1"):
    ws = ocpp_ws.WebSocket()
    try:
        await ws.connect(URL + "/CP-1", "ocpp1.6", user, password, timeout=10)
        out[name] = ["open", ws.protocol, ws.open]
        await ws.close(1000)
    except ocpp_ws.WSError as exc:
        out[name] = ["WSError", str(exc), ws.open]
async def main():
    await attempt("no-protocol", "pw")
    await attempt("other-protocol", "pw")
    await attempt("unauthorized", "pw")
    await attempt("bad-accept", "pw")
    await attempt("no-upgrade", "pw")
    await attempt("no-connection-upgrade", "pw")
    await attempt("unasked-extension", "pw")
    await attempt("ok-with-password", "s3cr:et")
    await attempt("ok-without-password", None)
    report()
asyncio.run(main())
'''


@pytest.mark.dual_runtime
def test_handshake_requires_the_ocpp16_subprotocol_and_sends_basic_auth(runtime_name, servers, tmp_path):
    """RFC 6455 4.1 and OCPP-J 1.6 3.1/3.2: the request names `ocpp1.6`; a server that
    leaves Sec-WebSocket-Protocol out (it does not agree) or names another one, answers
    other than 101, with a wrong Sec-WebSocket-Accept or without `Upgrade: websocket` is
    refused and the TCP connection dropped, as is an answer without `Connection: Upgrade`
    or with an extension the client did not ask for. Basic auth (security profile 1) is
    `base64(id:password)`, and absent without a password."""

    async def script(conn):
        await conn.read_request()
        i = conn.index
        if i == 0:
            await conn.accept(protocol=None)
        elif i == 1:
            await conn.accept(protocol="ocpp2.0.1")
        elif i == 2:
            await conn.refuse(401, close=False)  # the client must drop the connection
        elif i == 3:
            await conn.accept(key="dGhlIHNhbXBsZSBub25jZQ==")
        elif i in (4, 5, 6):
            key = accept_key(conn.headers["sec-websocket-key"])
            head = {4: "Connection: Upgrade\r\n",
                    5: "Upgrade: websocket\r\n",
                    6: "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Extensions: permessage-deflate\r\n"}[i]
            conn.writer.write(("HTTP/1.1 101 Switching Protocols\r\n%sSec-WebSocket-Accept: %s\r\n"
                               "Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n" % (head, key)).encode())
        else:
            await conn.accept()
            f = await conn.recv_frame()
            assert f is not None and f.op == OP_CLOSE and f.close_code == 1000, f
            await conn.send_frame(OP_CLOSE, close_payload(1000))
        conn.eof = await conn.expect_eof(10)

    server = servers(script)
    res = result_of(run_snippet(runtime_name, HANDSHAKE % {"url": server.url}, tmp_path))
    server.settle()
    assert not server.errors, server.errors
    for name in ("no-protocol", "other-protocol"):
        assert res[name][0] == "WSError" and "did not agree subprotocol ocpp1.6" in res[name][1], res[name]
    assert res["unauthorized"][0] == "WSError" and "401" in res["unauthorized"][1]
    assert res["bad-accept"][0] == "WSError" and "Sec-WebSocket-Accept" in res["bad-accept"][1]
    assert res["no-upgrade"][0] == "WSError" and "upgrade" in res["no-upgrade"][1]
    assert res["no-connection-upgrade"][0] == "WSError" and "upgrade" in res["no-connection-upgrade"][1]
    assert res["unasked-extension"][0] == "WSError" and "extension" in res["unasked-extension"][1]
    assert res["ok-with-password"] == ["open", "ocpp1.6", True]
    assert res["ok-without-password"] == ["open", "ocpp1.6", True]
    assert all(not res[n][2] for n in res if res[n][0] == "WSError")

    conns = server.conns
    assert len(conns) == 9
    for c in conns:
        assert c.request_line == "GET /ocpp/CP-1 HTTP/1.1"
        h = c.headers
        assert h["sec-websocket-protocol"] == "ocpp1.6"
        assert h["upgrade"].lower() == "websocket" and "upgrade" in h["connection"].lower()
        assert h["sec-websocket-version"] == "13"
        assert h["host"] == "127.0.0.1:%d" % server.port
        assert len(base64.b64decode(h["sec-websocket-key"])) == 16
    # refused connections: the client dropped TCP and sent no frame on them
    for c in conns[:7]:
        assert getattr(c, "eof", False) and not c.frames, (c.index, c.frames)
    assert len({c.headers["sec-websocket-key"] for c in conns}) == len(conns)  # a fresh key each time
    expected = "Basic " + base64.b64encode(b"CP-1:s3cr:et").decode()
    assert conns[7].headers["authorization"] == expected
    assert "authorization" not in conns[8].headers


HUGE = HEAD + r'''
import gc
async def main():
    for name in ("endless-status-line", "endless-header-line", "endless-header-lines", "binary-garbage"):
        ws = ocpp_ws.WebSocket()
        try:
            await ws.connect(URL + "/CP-1", "ocpp1.6", timeout=20)
            out[name] = "connected"
        except ocpp_ws.WSError as exc:
            out[name] = "WSError: " + str(exc)
        except Exception as exc:
            out[name] = repr(exc)
        out[name + "-open"] = ws.open
    gc.collect()
    report()
asyncio.run(main())
'''


@pytest.mark.dual_runtime
def test_a_handshake_answer_that_never_ends_is_refused_without_exhausting_the_heap(
        runtime_name, servers, tmp_path):
    """A server that streams a status line or a header line without end, endless header
    lines, or binary garbage instead of HTTP: the client refuses each with WSError after at
    most 1024 bytes per line and 64 lines, instead of buffering until the heap runs out (a
    MemoryError at 192 KiB before the fix, which on a board could hit any other task)."""

    async def script(conn):
        await conn.read_request()
        kind = conn.index
        try:
            if kind == 0:
                await conn.send_raw(b"HTTP/1.1 101 ")
                for _ in range(100):
                    await conn.send_raw(b"s" * 4096)
            elif kind == 1:
                await conn.send_raw(b"HTTP/1.1 101 Switching Protocols\r\nX-Junk: ")
                for _ in range(100):
                    await conn.send_raw(b"j" * 4096)
            elif kind == 2:
                await conn.send_raw(b"HTTP/1.1 101 Switching Protocols\r\n")
                for i in range(20000):
                    await conn.send_raw(b"X-Junk-%d: j\r\n" % i)
            else:
                await conn.send_raw(bytes(range(256)) * 4 + b"\r\n\r\n")
        except (ConnectionError, OSError):
            pass  # the client dropped the connection: what it should do
        await conn.expect_eof(20)

    server = servers(script)
    res = result_of(run_snippet(runtime_name, HUGE % {"url": server.url}, tmp_path, timeout=120))
    server.settle()
    assert not server.errors, server.errors
    assert res["endless-status-line"] == "WSError: header line too long", res
    assert res["endless-header-line"] == "WSError: header line too long", res
    assert res["endless-header-lines"] == "WSError: more than 64 header lines", res
    assert res["binary-garbage"].startswith("WSError: handshake refused"), res
    assert not any(res[k] for k in res if k.endswith("-open"))


# -- frames on an open connection ---------------------------------------------------------

TRAFFIC = HEAD + r'''
async def main():
    ws = ocpp_ws.WebSocket(max_size=4096, frag_size=1024)
    await ws.connect(URL + "/CP-1", "ocpp1.6", timeout=10)
    out["fragmented"] = await ws.recv()
    out["medium"] = await ws.recv()
    await ws.send("x" * 3000)
    await ws.send("short")
    out["after_ping"] = await ws.recv()
    out["binary"] = list(await ws.recv())
    out["end"] = await ws.recv()
    out["close_code"] = ws.close_code
    out["open"] = ws.open
    report()
asyncio.run(main())
'''


@pytest.mark.dual_runtime
def test_fragments_are_reassembled_pings_answered_client_frames_masked_and_close_answered(
        runtime_name, servers, tmp_path):
    """RFC 6455 5.4/5.5: a text message in three fragments, with pings interleaved and a
    UTF-8 character split across two fragments, comes out whole; every ping is answered by
    a pong with the same payload; 5.3: every client frame is masked (a fresh key per frame);
    the client fragments a 3000-byte message at its 1024-byte frame size; 5.5.1: a close
    from the server is answered with a close frame carrying the same code, then TCP ends."""
    seen = {}

    async def script(conn):
        await conn.read_request()
        await conn.accept()
        word = "lo wörld".encode()  # the ö split between two fragments
        await conn.send_frame(OP_TEXT, b"hel", fin=False)
        await conn.send_frame(OP_PING, b"p1")
        await conn.send_frame(OP_CONT, word[:5], fin=False)
        await conn.send_frame(OP_PING, b"")
        await conn.send_frame(OP_CONT, word[5:], fin=True)
        seen["pongs"] = [await conn.recv_frame(), await conn.recv_frame()]
        await conn.send_frame(OP_TEXT, b"y" * 200)  # 16-bit length
        seen["big"] = await conn.recv_message()
        seen["big_frames"] = [(f.op, f.fin, len(f.payload)) for f in conn.frames[2:]]
        seen["short"] = await conn.recv_message()
        await conn.send_frame(OP_PING, b"abc")
        seen["pong3"] = await conn.recv_frame()
        await conn.send_text("after-ping")
        await conn.send_frame(OP_BIN, b"\x00\x01\xff")
        await conn.send_frame(OP_CLOSE, close_payload(1001, "going away"))
        seen["close_reply"] = await conn.recv_frame()
        seen["eof"] = await conn.expect_eof(10)

    server = servers(script)
    res = result_of(run_snippet(runtime_name, TRAFFIC % {"url": server.url}, tmp_path))
    server.settle()
    assert not server.errors, server.errors
    assert res["fragmented"] == "hello wörld"
    assert res["medium"] == "y" * 200
    assert res["after_ping"] == "after-ping"
    assert res["binary"] == [0, 1, 255]
    assert res["end"] is None and res["close_code"] == 1001 and res["open"] is False

    pongs = seen["pongs"]
    assert [(p.op, p.payload) for p in pongs] == [(OP_PONG, b"p1"), (OP_PONG, b"")]
    assert (seen["pong3"].op, seen["pong3"].payload) == (OP_PONG, b"abc")
    assert seen["big"] == (OP_TEXT, b"x" * 3000)
    assert seen["big_frames"] == [(OP_TEXT, False, 1024), (OP_CONT, False, 1024), (OP_CONT, True, 952)]
    assert seen["short"] == (OP_TEXT, b"short")
    reply = seen["close_reply"]
    assert reply.op == OP_CLOSE and reply.close_code == 1001
    assert seen["eof"]
    conn = server.conns[0]
    assert_client_frames_masked(conn)
    keys = [f.key for f in conn.frames]
    assert len(set(keys)) >= len(keys) - 1, "mask keys repeat: %r" % keys


CLIENT_CLOSE = HEAD + r'''
async def main():
    ws = ocpp_ws.WebSocket()
    await ws.connect(URL + "/CP-1", "ocpp1.6", timeout=10)
    await ws.close(1000)
    out["open"] = ws.open
    report()
asyncio.run(main())
'''


@pytest.mark.dual_runtime
def test_a_close_started_by_the_client_sends_exactly_one_close_frame(runtime_name, servers, tmp_path):
    """RFC 6455 5.5.1: after sending a close frame an endpoint sends no further frames;
    the server's answering close ends the handshake (it is not answered again)."""
    seen = {}

    async def script(conn):
        await conn.read_request()
        await conn.accept()
        seen["first"] = await conn.recv_frame()
        await conn.send_frame(OP_CLOSE, close_payload(1000))
        seen["eof"] = await conn.expect_eof(10)

    server = servers(script)
    res = result_of(run_snippet(runtime_name, CLIENT_CLOSE % {"url": server.url}, tmp_path))
    server.settle()
    assert not server.errors, server.errors
    assert res["open"] is False
    assert seen["first"].op == OP_CLOSE and seen["first"].close_code == 1000
    assert seen["eof"]
    assert [f.op for f in server.conns[0].frames] == [OP_CLOSE], server.conns[0].frames


CONCURRENT = HEAD + r'''
async def main():
    ws = ocpp_ws.WebSocket(max_size=4096, frag_size=1024)
    await ws.connect(URL + "/CP-1", "ocpp1.6", timeout=10)
    async def pinger():
        for i in range(6):
            await ws.ping(b"k%%d" %% i)
            await asyncio.sleep_ms(0)
    tasks = [asyncio.create_task(ws.send(c * 5000)) for c in "ab"]
    tasks.append(asyncio.create_task(pinger()))
    tasks.append(asyncio.create_task(ws.send("c" * 10)))
    for t in tasks:
        await t
    out["reply"] = await ws.recv()
    report()
asyncio.run(main())
'''


@pytest.mark.dual_runtime
def test_messages_sent_by_concurrent_tasks_never_interleave_their_fragments(runtime_name, servers, tmp_path):
    """RFC 6455 5.4: the fragments of one message are not interleaved with another data
    message (control frames may be). The charge point's sender and reader tasks both send
    (a CALL and the answer to a central-system CALL), and a message above 1024 bytes goes
    out in several frames, each awaiting the socket."""
    seen = {}

    async def script(conn):
        await conn.read_request()
        await conn.accept()
        msgs = [await conn.recv_message() for _ in range(3)]
        seen["msgs"] = sorted(m[1] for m in msgs)
        await conn.send_text("done")
        await conn.expect_eof(10)

    server = servers(script)
    res = result_of(run_snippet(runtime_name, CONCURRENT % {"url": server.url}, tmp_path))
    server.settle()
    assert not server.errors, server.errors
    assert res["reply"] == "done"
    assert seen["msgs"] == [b"a" * 5000, b"b" * 5000, b"c" * 10]
    assert_client_frames_masked(server.conns[0])


# -- protocol errors: the client fails the connection with the right code, then recovers ----

ERRORS = HEAD + r'''
async def main():
    ws = ocpp_ws.WebSocket(max_size=4096, frag_size=1024)
    await ws.connect(URL + "/CP-1", "ocpp1.6", timeout=10)
    out["got"] = await ws.recv()
    out["close_code"] = ws.close_code
    out["open"] = ws.open
    await ws.connect(URL + "/CP-1", "ocpp1.6", timeout=10)  # the same object, its buffers reused
    out["again"] = await ws.recv()
    await ws.send("still fine")
    out["again2"] = await ws.recv()
    report()
asyncio.run(main())
'''

BAD = {
    # RFC 6455 5.1: a client MUST close the connection on a masked frame (1002)
    "masked-server-frame": (frame_bytes(OP_TEXT, b"hi", mask=b"\x01\x02\x03\x04"), 1002),
    # 5.2: reserved opcodes (3-7 data, 0xB-0xF control) fail the connection
    "reserved-data-opcode-3": (frame_bytes(3, b"x"), 1002),
    "reserved-control-opcode-11": (frame_bytes(0xB, b"x"), 1002),
    # 5.2: RSV bits without a negotiated extension fail the connection
    "rsv1-bit-set": (frame_bytes(OP_TEXT, b"x", rsv=4), 1002),
    # 5.5: control frames are not fragmented and carry at most 125 bytes
    "fragmented-ping": (frame_bytes(OP_PING, b"p", fin=False), 1002),
    "ping-with-126-bytes": (frame_bytes(OP_PING, b"p" * 126), 1002),
    # 5.4: a continuation needs a message to continue; a new message waits for FIN
    "continuation-without-message": (frame_bytes(OP_CONT, b"x"), 1002),
    "text-inside-fragmented-message": (frame_bytes(OP_TEXT, b"a", fin=False) + frame_bytes(OP_TEXT, b"b"), 1002),
    # 5.5.1: a close body is empty or holds a 2-byte code
    "close-with-1-byte-body": (frame_bytes(OP_CLOSE, b"\x03"), 1002),
    # 8.1: text must be UTF-8 (1007)
    "invalid-utf8": (frame_bytes(OP_TEXT, b"ok \xff\xfe"), 1007),
    # 7.4.1: a message above the configured maximum (4096 here) is refused with 1009
    "frame-above-max-size": (frame_bytes(OP_TEXT, b"z" * 5000), 1009),
    "fragments-above-max-size": (frame_bytes(OP_TEXT, b"z" * 3000, fin=False)
                                 + frame_bytes(OP_CONT, b"z" * 3000), 1009),
    "64-bit-length-of-1-TiB": (frame_bytes(OP_TEXT, b"z" * 16, length=1 << 40), 1009),
}


@pytest.mark.dual_runtime
@pytest.mark.parametrize("case", list(BAD))
def test_protocol_errors_fail_the_connection_with_the_rfc_code_and_the_client_recovers(
        case, runtime_name, servers, tmp_path):
    """The client answers a broken frame with a (masked) close frame carrying the RFC 6455
    status code, drops TCP, and `recv` returns None without raising; the same WebSocket
    object then connects again and works."""
    data, code = BAD[case]
    seen = {}

    async def script(conn):
        await conn.read_request()
        await conn.accept()
        if conn.index == 0:
            await conn.send_text("before")  # a good message first: the error is per frame
            await conn.send_raw(data)
            seen["close"] = await conn.recv_frame()
            seen["eof"] = await conn.expect_eof(10)
        else:
            await conn.send_text("ok")
            m = await conn.recv_message()
            await conn.send_text("echo:" + m[1].decode())
            await conn.expect_eof(10)

    server = servers(script)
    snippet = ERRORS.replace('out["got"] = await ws.recv()',
                             'out["before"] = await ws.recv()\n    out["got"] = await ws.recv()')
    res = result_of(run_snippet(runtime_name, snippet % {"url": server.url}, tmp_path))
    server.settle()
    assert not server.errors, server.errors
    assert res["before"] == "before"
    assert res["got"] is None and res["open"] is False
    assert res["close_code"] == code
    close = seen["close"]
    assert close is not None and close.op == OP_CLOSE and close.close_code == code, close
    assert close.masked
    assert seen["eof"]
    assert res["again"] == "ok" and res["again2"] == "echo:still fine"


# -- nothing blocks the event loop ----------------------------------------------------------

STUCK = HEAD + r'''
async def main():
    asyncio.create_task(ticker())
    ws = ocpp_ws.WebSocket(max_size=4096, frag_size=1024)
    # 1. the server accepts TCP and never answers the upgrade
    t0 = ticks[0]
    try:
        await ws.connect(URL + "/CP-1", "ocpp1.6", timeout=2)
        out["upgrade"] = "connected"
    except asyncio.TimeoutError:
        out["upgrade"] = "timeout"
    out["ticks_upgrade"] = ticks[0] - t0
    # 2. the server sends part of a frame and stalls
    await ws.connect(URL + "/CP-1", "ocpp1.6", timeout=10)
    t0 = ticks[0]
    try:
        out["recv"] = await asyncio.wait_for(ws.recv(), 2)
    except asyncio.TimeoutError:
        out["recv"] = "timeout"
    out["ticks_recv"] = ticks[0] - t0
    await ws.abort()
    # 3. the server stops reading: the send buffers fill up
    await ws.connect(URL + "/CP-1", "ocpp1.6", timeout=10)
    t0 = ticks[0]
    chunk = "w" * 4000
    sent = 0
    out["send"] = "all sent"
    while sent < 64 * 1024 * 1024:
        try:
            await asyncio.wait_for(ws.send(chunk), 3)
        except asyncio.TimeoutError:
            out["send"] = "timeout"
            break
        sent += len(chunk)
    out["sent"] = sent
    out["ticks_send"] = ticks[0] - t0
    # dropping the connection does not wait for the unsent bytes to drain
    try:
        await asyncio.wait_for(ws.abort(), 5)
        out["abort"] = "done"
    except asyncio.TimeoutError:
        out["abort"] = "stuck"
    report()
asyncio.run(main())
'''


@pytest.mark.dual_runtime
def test_a_stuck_socket_never_blocks_the_event_loop(runtime_name, servers, tmp_path):
    """While the client waits on a server that never answers the upgrade, that stalls in
    the middle of a frame, or that stops reading (send buffers full), a 50 ms ticker task
    keeps running. Asserted: the wait ended by its own timeout and the ticker made progress
    during it (at least a quarter of its nominal ticks), not a timing figure; and `abort`
    drops a connection whose send buffers are full without waiting for them to drain."""

    async def script(conn):
        await conn.read_request()
        if conn.index == 0:
            await conn.expect_eof(60)  # never answers the upgrade
            return
        await conn.accept()
        if conn.index == 1:
            await conn.send_raw(frame_bytes(OP_TEXT, b"q" * 10, length=100))
            await conn.expect_eof(60)
        else:
            conn.reader.pause_reading()  # never reads again
            await asyncio.sleep(60)

    server = servers(script, rcvbuf=4096)
    res = result_of(run_snippet(runtime_name, STUCK % {"url": server.url}, tmp_path, timeout=120))
    server.wait(lambda: server.conns[0].done and server.conns[1].done, 20, "the first two scripts")
    assert not server.errors, server.errors
    assert res["upgrade"] == "timeout" and res["ticks_upgrade"] >= 10, res
    assert res["recv"] == "timeout" and res["ticks_recv"] >= 10, res
    assert res["send"] == "timeout" and res["ticks_send"] >= 15, res
    assert res["abort"] == "done", res
