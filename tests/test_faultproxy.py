"""The soak's fault proxy (tools/faultproxy.py) does what each mode says, against an echo
server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tools.faultproxy import FaultProxy


@pytest.fixture
def echo_proxy():
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn)
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        while True:
            try:
                data = conn.recv(1024)
            except OSError:
                return
            if not data:
                conn.close()
                return
            conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    proxy = FaultProxy("127.0.0.1", server.getsockname()[1]).start()
    yield proxy, accepted
    proxy.stop()
    server.close()


def connect(proxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=2)
    sock.settimeout(1.0)
    return sock


def reset_at_once(proxy) -> bool:
    """A new connection is reset (while connecting or at its first read)."""
    try:
        connect(proxy).recv(10)
    except ConnectionResetError:
        return True
    return False


def silent(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) is None
    except TimeoutError:
        return True


def test_forward_copies_both_ways(echo_proxy):
    proxy, _ = echo_proxy
    sock = connect(proxy)
    sock.sendall(b"hello")
    assert sock.recv(100) == b"hello"


def test_blackhole_holds_open_and_new_connections_silently_then_delivers(echo_proxy):
    proxy, accepted = echo_proxy
    old = connect(proxy)
    old.sendall(b"a")
    assert old.recv(10) == b"a"
    proxy.set_mode("blackhole")
    old.sendall(b"held")
    new = connect(proxy)  # accepted, not refused
    new.sendall(b"new")
    assert silent(old) and silent(new)
    assert len(accepted) == 1  # the new one has no upstream during the outage
    proxy.set_mode("forward")
    assert old.recv(100) == b"held"
    assert new.recv(100) == b"new"


def test_a_connection_closed_during_a_blackhole_is_dropped_with_what_it_held(echo_proxy):
    proxy, _ = echo_proxy
    sock = connect(proxy)
    sock.sendall(b"x")
    assert sock.recv(10) == b"x"
    proxy.set_mode("blackhole")
    sock.sendall(b"never delivered")
    sock.close()
    time.sleep(0.2)
    proxy.set_mode("forward")
    snapshot = proxy.snapshot()
    assert snapshot["counters"]["discarded_closed_in_outage"] == 1
    assert snapshot["open"] == 0
    assert snapshot["counters"]["bytes_up"] == 1  # the held bytes were not delivered


def test_reset_resets_open_and_new_connections(echo_proxy):
    proxy, _ = echo_proxy
    sock = connect(proxy)
    sock.sendall(b"up")
    assert sock.recv(10) == b"up"
    proxy.set_mode("reset")
    with pytest.raises(ConnectionResetError):
        sock.recv(10)
    assert reset_at_once(proxy)


def test_unreachable_holds_open_connections_and_resets_new_ones(echo_proxy):
    proxy, _ = echo_proxy
    old = connect(proxy)
    old.sendall(b"up")
    assert old.recv(10) == b"up"
    proxy.set_mode("unreachable")
    old.sendall(b"later")
    assert silent(old)
    assert reset_at_once(proxy)
    proxy.set_mode("forward")
    assert old.recv(100) == b"later"
