"""Scriptable WebSocket servers on raw asyncio sockets, for the firmware's WebSocket client
and OCPP-J RPC tests: they send what a library server never would (masked frames, reserved
opcodes and bits, oversized or half-sent frames, a refused or unanswered upgrade) and
record every byte of the client's side frame by frame (mask bit, mask key, payload).

    server = RawServer(script).start()      # script: async def script(conn) per connection
    server.url                              # ws://127.0.0.1:PORT/ocpp
    server.conns                            # every TCP connection, in order (Conn)
    server.wait(lambda: ..., timeout, what)
    server.errors                           # exceptions raised by a script (must stay empty)
    server.stop()

A Conn reads the upgrade request (`read_request`), answers it (`accept`, `refuse`), and
exchanges frames (`send_frame`, `recv_frame`, `recv_message`). `Peer(conn)` speaks OCPP-J
over it as a small central system. `ChargePointChild` runs the firmware's ChargePoint in a
child process (CPython or the MicroPython Unix port at a Pico W's heap, the firmware as .mpy) with a
timestamped log and a ticker task that shows whether the event loop kept running.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import struct
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from scripts import start_snippet

from tests.waiting import wait_until

HERE = Path(__file__).resolve().parent
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def frame_bytes(op: int, payload: bytes = b"", fin: bool = True, rsv: int = 0,
                mask: bytes | None = None, length: int | None = None) -> bytes:
    """One frame as the server sends it; `mask` (4 bytes) masks it (a server must not),
    `length` overrides the announced payload length."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv << 4) | op])
    mbit = 0x80 if mask else 0
    if n < 126:
        head.append(mbit | n)
    elif n < 65536:
        head.append(mbit | 126)
        head += struct.pack(">H", n)
    else:
        head.append(mbit | 127)
        head += struct.pack(">Q", n)
    if mask:
        head += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(head) + payload


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack(">H", code) + reason.encode()


class Frame:
    def __init__(self, fin, rsv, op, masked, key, payload, t):
        self.fin = fin
        self.rsv = rsv
        self.op = op
        self.masked = masked
        self.key = key
        self.payload = payload
        self.t = t

    @property
    def close_code(self):
        return struct.unpack(">H", self.payload[:2])[0] if self.op == OP_CLOSE and len(self.payload) >= 2 else None

    def __repr__(self):
        return "<Frame fin=%d op=%d masked=%d len=%d %r>" % (
            self.fin, self.op, self.masked, len(self.payload), self.payload[:40])


class _Stream(asyncio.Protocol):
    """Reader and writer of one accepted connection. Unlike asyncio's StreamReader, bytes
    received before a reset stay readable (a client that closes with unread data in its
    buffer resets the connection right after its last frame)."""

    def __init__(self, server):
        self.server = server
        self.buf = bytearray()
        self.eof = False
        self.more = asyncio.Event()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.server._connected(self)

    def data_received(self, data):
        self.buf += data
        self.more.set()

    def eof_received(self):
        self.eof = True
        self.more.set()
        return False

    def connection_lost(self, exc):
        self.eof = True
        self.more.set()

    async def _fill(self):
        if self.eof:
            raise asyncio.IncompleteReadError(bytes(self.buf), None)
        self.more.clear()
        await self.more.wait()

    async def readexactly(self, n):
        while len(self.buf) < n:
            await self._fill()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def readline(self):
        while b"\n" not in self.buf:
            if self.eof:
                data = bytes(self.buf)
                self.buf.clear()
                return data
            await self._fill()
        i = self.buf.index(b"\n") + 1
        data = bytes(self.buf[:i])
        del self.buf[:i]
        return data

    def pause_reading(self):
        self.transport.pause_reading()

    def write(self, data):
        self.transport.write(data)

    async def drain(self):
        while self.transport.get_write_buffer_size() and not self.transport.is_closing():
            await asyncio.sleep(0.005)

    def close(self):
        self.transport.close()


class Conn:
    """One TCP connection to the server, seen from the server's side."""

    def __init__(self, server, index, reader: _Stream, writer: _Stream):
        self.server = server
        self.index = index
        self.reader = reader
        self.writer = writer
        self.t_open = time.monotonic()
        self.request_line = None
        self.path = None
        self.headers: dict[str, str] = {}
        self.frames: list[Frame] = []  # every frame the client sent, in order
        self.eof_at = None
        self.done = False  # the script for this connection returned

    # -- the opening handshake ---------------------------------------------------------
    async def read_request(self, timeout=10):
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise LeftBeforeRequest()
        self.request_line = line.decode().strip()
        self.path = self.request_line.split(" ")[1]
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            if line in (b"\r\n", b"\n", b""):
                break
            name, value = line.decode().split(":", 1)
            self.headers[name.strip().lower()] = value.strip()
        return self

    async def accept(self, protocol: str | None = "ocpp1.6", key: str | None = None):
        """101 Switching Protocols; `protocol=None` leaves Sec-WebSocket-Protocol out."""
        lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade",
                 "Sec-WebSocket-Accept: " + (key or accept_key(self.headers["sec-websocket-key"]))]
        if protocol is not None:
            lines.append("Sec-WebSocket-Protocol: " + protocol)
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()

    async def refuse(self, status=401, reason="Unauthorized", close=True):
        self.writer.write(("HTTP/1.1 %d %s\r\nWWW-Authenticate: Basic realm=\"ocpp\"\r\n"
                           "Content-Length: 0\r\nConnection: close\r\n\r\n" % (status, reason)).encode())
        await self.writer.drain()
        if close:
            self.close()

    # -- frames ----------------------------------------------------------------------------
    async def send_raw(self, data: bytes):
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(self, op, payload=b"", **kw):
        await self.send_raw(frame_bytes(op, payload, **kw))

    async def send_text(self, text: str):
        await self.send_frame(OP_TEXT, text.encode())

    async def recv_frame(self, timeout=10) -> Frame | None:
        """The client's next frame (unmasked), or None at EOF."""
        r = self.reader
        try:
            b0, b1 = await asyncio.wait_for(r.readexactly(2), timeout)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", await asyncio.wait_for(r.readexactly(2), timeout))[0]
            elif n == 127:
                n = struct.unpack(">Q", await asyncio.wait_for(r.readexactly(8), timeout))[0]
            key = await asyncio.wait_for(r.readexactly(4), timeout) if b1 & 0x80 else None
            data = await asyncio.wait_for(r.readexactly(n), timeout)
        except asyncio.IncompleteReadError:
            self.eof_at = time.monotonic()
            return None
        if key:
            data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
        f = Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, bool(b1 & 0x80), key, data,
                  time.monotonic())
        self.frames.append(f)
        return f

    async def recv_message(self, timeout=10):
        """The client's next data message as (op, bytes), pings answered; ("close", code)
        for a close frame; None at EOF. Fragments must not interleave (AssertionError)."""
        parts = []
        op = None
        while True:
            f = await self.recv_frame(timeout)
            if f is None:
                return None
            if f.op == OP_PING:
                await self.send_frame(OP_PONG, f.payload)
                continue
            if f.op == OP_PONG:
                continue
            if f.op == OP_CLOSE:
                return ("close", f.close_code)
            if f.op == OP_CONT:
                assert op is not None, "continuation frame without a message"
            else:
                assert op is None, "a new data frame inside a fragmented message: %r" % f
                op = f.op
            parts.append(f.payload)
            if f.fin:
                return op, b"".join(parts)

    async def expect_eof(self, timeout=10) -> bool:
        """True once the client closed TCP (frames read meanwhile are recorded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                f = await self.recv_frame(max(0.05, deadline - time.monotonic()))
            except TimeoutError:
                return False
            if f is None:
                return True
        return False

    def close(self):
        try:
            self.writer.close()
        except Exception:
            pass


class LeftBeforeRequest(Exception):
    """The client closed the connection before sending a request line."""


class RawServer:
    """A TCP server on 127.0.0.1 running `script(conn)` for every connection, on its own
    event loop thread. `rcvbuf` shrinks the accepted sockets' receive buffer."""

    def __init__(self, script, rcvbuf: int | None = None):
        self.script = script
        self.rcvbuf = rcvbuf
        self.conns: list[Conn] = []
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.server = None
        self.port = None
        self.tasks: list[asyncio.Task] = []

    def _connected(self, stream):
        with self.lock:
            conn = Conn(self, len(self.conns), stream, stream)
            self.conns.append(conn)
        self.tasks.append(self.loop.create_task(self._run(conn)))

    async def _run(self, conn):
        try:
            await self.script(conn)
        except LeftBeforeRequest:
            pass  # a charge point process that ended (its `seconds` up) just after connecting
        except Exception:  # recorded: the test asserts there were none
            import traceback
            self.errors.append("connection %d: %s" % (conn.index, traceback.format_exc()))
        finally:
            conn.close()
            conn.done = True

    async def _serve(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        self.server = await self.loop.create_server(lambda: _Stream(self), sock=sock)
        self.port = sock.getsockname()[1]

    def start(self) -> RawServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(10)
        self.url = "ws://127.0.0.1:%d/ocpp" % self.port
        return self

    def wait(self, predicate, timeout=30, what="condition"):
        def holds():
            if predicate():
                return True
            if self.errors:
                raise AssertionError("server script failed:\n" + "\n".join(self.errors))
            return False

        wait_until(holds, timeout, what, interval=0.02)

    def settle(self, timeout=20):
        """Wait until the script of every connection so far has returned."""
        self.wait(lambda: all(c.done for c in self.conns), timeout, "the server scripts to finish")

    def stop(self):
        async def shutdown():
            self.server.close()
            for c in self.conns:
                c.close()
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def default_answer(action, payload):
    if action == "BootNotification":
        return {"status": "Accepted", "currentTime": now_iso(), "interval": 300}
    if action == "Heartbeat":
        return {"currentTime": now_iso()}
    if action in ("Authorize", "StartTransaction", "StopTransaction"):
        return {"idTagInfo": {"status": "Accepted"}, "transactionId": 1}
    return {}


class Peer:
    """OCPP-J over a Conn, as a small central system. `calls`: every CALL of the charge
    point (time, id, action, payload); `log`: every message either way, in order."""

    def __init__(self, conn: Conn, answer=default_answer):
        self.conn = conn
        self.answer_for = answer
        self.calls: list[tuple[float, str, str, dict]] = []
        self.log: list[tuple[str, object]] = []
        self.closed = None  # ("close", code) or "eof" once the link ended

    async def message(self, timeout=10):
        """The next message of the charge point (a parsed list), or None when it closed."""
        m = await self.conn.recv_message(timeout)
        if m is None or m[0] == "close":
            self.closed = m or "eof"
            return None
        msg = json.loads(m[1])
        self.log.append(("in", msg))
        if msg[0] == 2:
            self.calls.append((time.monotonic(), msg[1], msg[2], msg[3]))
        return msg

    async def send(self, msg):
        text = msg if isinstance(msg, str) else json.dumps(msg)
        self.log.append(("out", msg))
        await self.conn.send_text(text)

    async def answer(self, msg, payload=None):
        await self.send([3, msg[1], self.answer_for(msg[2], msg[3]) if payload is None else payload])

    async def expect(self, match, timeout=10, auto=True):
        """The next message for which match(msg) is true; CALLs before it are answered
        (auto) with the default answers. AssertionError if the link closes first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no matching message within %ss" % timeout)
            msg = await self.message(left)
            assert msg is not None, "the charge point closed the link (%r)" % (self.closed,)
            if match(msg):
                return msg
            if auto and msg[0] == 2:
                await self.answer(msg)

    async def expect_call(self, action, timeout=10, auto=True):
        return await self.expect(lambda m: m[0] == 2 and m[2] == action, timeout, auto)

    async def call(self, uid, action, payload, timeout=10):
        """Send a CALL and return the charge point's answer (CALLs of its own met while
        waiting are answered)."""
        await self.send([2, uid, action, payload])
        return await self.expect(lambda m: m[0] in (3, 4) and m[1] == uid, timeout)

    async def serve(self, seconds):
        """Answer the charge point's CALLs for a while (returns early if it closes)."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                msg = await self.message(left)
            except TimeoutError:
                return
            if msg is None:
                return
            if msg[0] == 2:
                await self.answer(msg)


CHILD = r'''
import sys
sys.path.append(%(here)r)
import asyncio, json, random, time
SEED = %(seed)r
if SEED is not None:
    random.seed(SEED)
from fakestation import FakeStation
from storage import Flash
from clock import Clock
from chargepoint import ChargePoint
T0 = time.ticks_ms()
def log(text):
    print("LOG %%d %%s" %% (time.ticks_diff(time.ticks_ms(), T0), text))
cp = ChargePoint(json.loads(%(config)r), FakeStation(), Flash("flash"), Clock(), log=log)
ticks = [0]
async def ticker():
    while True:
        await asyncio.sleep_ms(50)
        ticks[0] += 1
def stop_asked():
    try:
        open("stop").close()
        return True
    except OSError:
        return False
async def main():
    asyncio.create_task(ticker())
    asyncio.create_task(cp.run())
    end = time.ticks_add(T0, int(%(seconds)r * 1000))
    while not stop_asked() and time.ticks_diff(end, time.ticks_ms()) > 0:
        await asyncio.sleep_ms(100)
    print("TICKS %%d %%d" %% (ticks[0], time.ticks_diff(time.ticks_ms(), T0)))
    print("STATE " + json.dumps({"conn": cp.link.state, "registration": cp.link.registration,
                                 "calls_in": cp.link.calls_in, "calls_out": cp.link.calls_out,
                                 "tls": cp.summary().get("tls")}))
    if sys.implementation.name == "cpython":
        # MicroPython's asyncio.run returns once main() is done, leaving cp.run() behind;
        # CPython's would cancel it and wait, and a cancellation the link swallows (it
        # awaits its ended reader under `except BaseException`) would hang the process.
        import os
        sys.stdout.flush()
        os._exit(0)
asyncio.run(main())
'''


class ChargePointChild:
    """The firmware's ChargePoint in a child process on the station test double. Its log
    lines carry milliseconds since start (`logs()`); it stops after `seconds` or when
    `stop()` is called, printing how often a 50 ms ticker task ran and its link state."""

    def __init__(self, runtime: str, workdir: Path, config: dict, seconds: float = 40,
                 seed: int | None = None, files: dict[str, bytes] | None = None):
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        for name, data in (files or {}).items():
            path = workdir / "flash" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        code = CHILD % {"here": str(HERE), "config": json.dumps(config), "seconds": seconds,
                        "seed": seed}
        self.proc = start_snippet(runtime, code, workdir, compiled=(runtime == "micropython"))

    def output(self) -> str:
        try:
            return (self.dir / "out.txt").read_text(errors="replace")
        except OSError:
            return ""

    def logs(self) -> list[tuple[int, str]]:
        out = []
        for line in self.output().splitlines():
            if line.startswith("LOG "):
                _, ms, text = line.split(" ", 2)
                out.append((int(ms), text))
        return out

    def logged(self, fragment: str) -> list[tuple[int, str]]:
        return [e for e in self.logs() if fragment in e[1]]

    def stop(self, timeout: float = 30, ask: bool = True) -> dict:
        """Ask the child to finish (or, ask=False, let it run its `seconds`); its final
        report: ticks, elapsed ms, state."""
        if ask:
            (self.dir / "stop").write_text("")
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        out = self.output()
        assert self.proc.returncode == 0, "charge point process failed:\n" + out[-4000:]
        report = {}
        for line in out.splitlines():
            if line.startswith("TICKS "):
                _, ticks, ms = line.split()
                report["ticks"], report["ms"] = int(ticks), int(ms)
            elif line.startswith("STATE "):
                report.update(json.loads(line[6:]))
        assert "ticks" in report and "conn" in report, "no final report:\n" + out[-4000:]
        return report

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def free_port_refusing() -> int:
    """A port on 127.0.0.1 with nothing listening (connections are refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cp_config(url: str, cp_id: str = "PICO-WS", password: str | None = None, **ocpp) -> dict:
    sec = {"url": url, "reconnect_min_s": 0.2, "call_timeout_s": 10,
           "keys": {"WebSocketPingInterval": 0, "HeartbeatInterval": 300}}
    if password is not None:
        sec["password"] = password
    keys = ocpp.pop("keys", {})
    sec["keys"].update(keys)
    sec.update(ocpp)
    return {"cp_id": cp_id, "limits": {"max_current_a": 32}, "ocpp": sec}
