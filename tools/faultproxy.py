"""A fault-injecting TCP proxy for 127.0.0.1: put it between a board and a server and switch
what the network does, without root or network namespaces.

    proxy = FaultProxy("127.0.0.1", server_port).start()   # listens on proxy.port
    proxy.set_mode("blackhole")   # ... later
    proxy.set_mode("forward")
    proxy.stop()

    python -m tools.faultproxy --target 127.0.0.1:9000 --listen 127.0.0.1:9100
        (then type a mode name and Enter on stdin to switch)

Modes, and what each one models:

- ``forward``: bytes are copied both ways as they come; a close on one side closes the
  other. A working network.
- ``reset``: every open connection is reset at once (RST to both ends: SO_LINGER 0), and
  every new connection is accepted and reset straight away. A NAT or firewall that
  forgot its connection table, a router or access point that rebooted, a server host
  that rebooted (its kernel answers every segment with RST).
- ``blackhole``: nothing is forwarded and nothing is refused. Open connections stay open
  but their bytes are held (up to ``HOLD_LIMIT`` per direction, then the proxy stops
  reading, so the sender's buffers fill); new connections are accepted (the TCP handshake
  succeeds, as with a proxying router or a half-open path) and held without an upstream.
  Neither end ever hears anything. A router without an uplink, a path dropping packets,
  a firewall that silently drops, a peer that froze. It does NOT model a SYN that goes
  unanswered: on 127.0.0.1 the kernel completes the handshake, so a client's *connect*
  succeeds at once and only its later timeouts are exercised.
- ``unreachable``: open connections are held as in ``blackhole``; new connections are
  reset at once (the client's connect fails fast). The board's own Wi-Fi gone: nothing
  passes, and lwIP fails new connections at once for lack of a route.

When the mode goes back to ``forward`` after ``blackhole``/``unreachable``, a held
connection that neither end closed in the meantime resumes: what was held is delivered
(as TCP retransmission would deliver it once the path returns) and connections accepted
in the outage open their upstream connection then. A held connection that one end closed
during the outage is reset at both ends and what was held for it is discarded (that
end's RST reaches the other side first).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys
import threading
import time

MODES = ("forward", "reset", "blackhole", "unreachable")
HOLD_LIMIT = 1 << 20
CHUNK = 65536


def _linger_zero(writer: asyncio.StreamWriter | None) -> None:
    """Make the next close of this connection send RST instead of FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass


def _reset(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    _linger_zero(writer)
    try:
        writer.transport.abort()
    except Exception:
        pass


class _Pair:
    """One client connection and its upstream connection (None until opened)."""

    def __init__(self, proxy: FaultProxy, reader, writer) -> None:
        self.proxy = proxy
        self.c_reader, self.c_writer = reader, writer
        self.u_reader = self.u_writer = None
        self.held = {"up": bytearray(), "down": bytearray()}
        self.closed_in_outage = False
        self.opening = False
        self.done = False
        self.tasks: list[asyncio.Task] = []

    def reset(self) -> None:
        if self.done:
            return
        self.done = True
        _reset(self.c_writer)
        _reset(self.u_writer)
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.proxy.pairs.discard(self)

    def close(self) -> None:
        if self.done:
            return
        self.done = True
        for writer in (self.c_writer, self.u_writer):
            if writer is not None:
                try:
                    writer.close()
                except Exception:
                    pass
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.proxy.pairs.discard(self)

    async def open_upstream(self) -> None:
        try:
            self.u_reader, self.u_writer = await asyncio.wait_for(
                asyncio.open_connection(self.proxy.target_host, self.proxy.target_port), 10)
        except (OSError, TimeoutError):
            # the server is down: the client sees what it would see without a proxy
            self.proxy.count("upstream_refused")
            self.reset()
            return
        if self.done:
            _reset(self.u_writer)
            return
        if not self.proxy.flowing():  # the outage began while connecting
            self.tasks.append(asyncio.create_task(self.pump("down")))
            return
        self.flush()
        self.tasks.append(asyncio.create_task(self.pump("down")))

    def flush(self) -> None:
        """Deliver what was held (mode back to forward)."""
        for direction, writer in (("up", self.u_writer), ("down", self.c_writer)):
            data = self.held[direction]
            if data and writer is not None:
                writer.write(bytes(data))
                self.proxy.count("bytes_" + direction, len(data))
            data.clear()

    async def pump(self, direction: str) -> None:
        reader = self.c_reader if direction == "up" else self.u_reader
        proxy = self.proxy
        try:
            while not self.done:
                if len(self.held[direction]) >= HOLD_LIMIT:
                    await proxy.flow.wait()
                    continue
                try:
                    data = await reader.read(CHUNK)
                except (OSError, asyncio.IncompleteReadError):
                    data = b""
                if self.done:
                    return
                if not data:
                    if proxy.flowing():
                        self.close()
                    else:
                        self.closed_in_outage = True
                    return
                writer = self.u_writer if direction == "up" else self.c_writer
                if proxy.flowing() and writer is not None and not self.held[direction]:
                    writer.write(data)
                    proxy.count("bytes_" + direction, len(data))
                    try:
                        await writer.drain()
                    except (OSError, ConnectionError):
                        self.close()
                        return
                else:
                    self.held[direction] += data
        except asyncio.CancelledError:
            pass


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1",
                 listen_port: int = 0, name: str = "proxy") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.name = name
        self.mode = "forward"
        self.pairs: set[_Pair] = set()
        self.counters: dict[str, int] = {}
        self.history: list[tuple[float, str]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.port: int | None = None
        self.flow: asyncio.Event | None = None

    # -- life -----------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self._serve_start())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self._shutdown())
            self.loop.close()

        self.thread = threading.Thread(target=run, name=f"faultproxy-{self.name}", daemon=True)
        self.thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    async def _serve_start(self) -> None:
        self.flow = asyncio.Event()
        self.flow.set()
        self.server = await asyncio.start_server(self._accept, self.listen_host,
                                                 self.listen_port)
        self.port = self.server.sockets[0].getsockname()[1]
        self.history.append((time.monotonic(), "forward"))

    async def _shutdown(self) -> None:
        self.server.close()
        for pair in list(self.pairs):
            pair.reset()
        await asyncio.sleep(0)

    def stop(self) -> None:
        if self.loop is not None and self.thread is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    # -- modes ------------------------------------------------------------------------------
    def flowing(self) -> bool:
        return self.mode == "forward"

    def count(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n

    def set_mode(self, mode: str) -> None:
        """Switch mode (thread-safe; returns once the switch has happened)."""
        if mode not in MODES:
            raise ValueError(f"mode is one of {', '.join(MODES)}")
        done = threading.Event()

        def switch() -> None:
            try:
                self._switch(mode)
            finally:
                done.set()

        self.loop.call_soon_threadsafe(switch)
        if not done.wait(10):
            raise RuntimeError("the proxy's loop did not answer")

    def _switch(self, mode: str) -> None:
        previous, self.mode = self.mode, mode
        self.history.append((time.monotonic(), mode))
        if mode == "forward":
            self.flow.set()
        else:
            self.flow.clear()
        if mode == "reset":
            for pair in list(self.pairs):
                self.count("reset_open")
                pair.reset()
        elif mode == "forward" and previous in ("blackhole", "unreachable"):
            for pair in list(self.pairs):
                if pair.closed_in_outage:
                    self.count("discarded_closed_in_outage")
                    pair.reset()
                elif pair.u_writer is None:
                    if not pair.opening:
                        pair.opening = True
                        pair.tasks.append(asyncio.ensure_future(pair.open_upstream()))
                else:
                    pair.flush()

    # -- connections --------------------------------------------------------------------------
    async def _accept(self, reader, writer) -> None:
        self.count("accepted")
        mode = self.mode
        if mode in ("reset", "unreachable"):
            self.count("reset_new")
            _reset(writer)
            return
        pair = _Pair(self, reader, writer)
        self.pairs.add(pair)
        pair.tasks.append(asyncio.current_task())
        if mode == "blackhole":
            self.count("held_new")
            # read (and hold) the client's bytes so a close in the outage is seen; the
            # upstream is opened when the mode goes back to forward
            up = asyncio.create_task(pair.pump("up"))
            pair.tasks.append(up)
            return
        pair.opening = True
        await pair.open_upstream()
        if not pair.done:
            pair.tasks.append(asyncio.create_task(pair.pump("up")))

    def snapshot(self) -> dict:
        return {"name": self.name, "mode": self.mode, "open": len(self.pairs),
                "counters": dict(self.counters)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the server")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on")
    args = parser.parse_args(argv)
    t_host, _, t_port = args.target.rpartition(":")
    l_host, _, l_port = args.listen.rpartition(":")
    proxy = FaultProxy(t_host or "127.0.0.1", int(t_port), l_host or "127.0.0.1",
                       int(l_port)).start()
    print(f"faultproxy 127.0.0.1:{proxy.port} -> {args.target}; modes: {' '.join(MODES)}",
          flush=True)
    try:
        for line in sys.stdin:
            mode = line.strip()
            if not mode:
                continue
            try:
                proxy.set_mode(mode)
                print(f"mode {mode}", flush=True)
            except ValueError as exc:
                print(exc, flush=True)
    except KeyboardInterrupt:
        pass
    proxy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
