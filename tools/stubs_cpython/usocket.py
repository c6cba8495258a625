"""CPython stand-in for MicroPython's `usocket`: sockets that also speak the stream
methods (`read`, `write`, `readinto`, `readline`) MicroPython sockets have, as used by
umqtt.simple."""

import socket as _socket
from socket import (  # noqa: F401
    AF_INET,
    IPPROTO_TCP,
    SO_REUSEADDR,
    SOCK_DGRAM,
    SOCK_STREAM,
    SOL_SOCKET,
    getaddrinfo,  # noqa: F401
)


class socket:  # noqa: N801 - MicroPython's name
    def __init__(self, af=AF_INET, type=SOCK_STREAM, proto=0):
        self._s = _socket.socket(af, type, proto)
        self._blocking = True

    def connect(self, addr):
        self._s.connect(addr)
        if self._s.type == SOCK_STREAM:
            # umqtt.simple writes a PUBLISH in several small writes and then waits for the
            # PUBACK: with Nagle's algorithm each publish waits for a delayed ACK. The host
            # runs thousands of simulated boards on one loop and cannot afford that.
            self._s.setsockopt(IPPROTO_TCP, _socket.TCP_NODELAY, 1)

    def settimeout(self, t):
        self._s.settimeout(t)

    def setblocking(self, flag):
        self._blocking = bool(flag)
        self._s.setblocking(flag)

    def setsockopt(self, *args):
        self._s.setsockopt(*args)

    def fileno(self):
        return self._s.fileno()

    def write(self, buf, n=None):
        data = bytes(buf if n is None else memoryview(buf)[:n])
        self._s.sendall(data)
        return len(data)

    send = write

    def read(self, n=-1):
        if n is None or n < 0:
            chunks = []
            while True:
                chunk = self._s.recv(4096)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        out = bytearray()
        while len(out) < n:
            try:
                chunk = self._s.recv(n - len(out))
            except BlockingIOError:
                if not out:
                    return None
                self._s.setblocking(True)
                continue
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def recv(self, n):
        return self._s.recv(n)

    def readinto(self, buf):
        return self._s.recv_into(buf)

    def readline(self):
        out = bytearray()
        while not out.endswith(b"\n"):
            chunk = self._s.recv(1)
            if not chunk:
                break
            out += chunk
        return bytes(out)

    def close(self):
        self._s.close()
