"""The test MicroPython is the board's runtime: a 32-bit build (object sizes as on the
RP2040) whose `tls` module is mbedTLS configured as on a Pico W, with every TLS allocation
on the MicroPython heap, and an `ssl` module that behaves as the one a Pico W's firmware
image freezes."""

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tools.board import DEFAULT_HEAP, MICROPYTHON
from tools.fetch import MBEDTLS_VERSION

sys.path.insert(0, str(Path(__file__).resolve().parent / "firmware_ocpp"))
from tlscerts import make_server_cert  # noqa: E402


def run(script: str, cwd: Path | None = None) -> str:
    result = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={DEFAULT_HEAP}", "-c", script],
                            capture_output=True, text=True, timeout=60, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_build_is_32_bit_with_mbedtls_and_a_board_like_ssl_module():
    out = run("import sys, tls, ssl\n"
              "print(sys.maxsize, tls.MBEDTLS_VERSION)\n"
              "c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
              "print(c.verify_mode == ssl.CERT_NONE, ssl.CERT_REQUIRED == tls.CERT_REQUIRED)\n"
              "print(' '.join(c.get_ciphers()))\n").splitlines()
    assert out[0] == "%d Mbed TLS %s" % (2 ** 31 - 1, MBEDTLS_VERSION)
    assert out[1] == "True True"  # a board's ssl.SSLContext starts without the check
    suites = out[2].split()
    # the rp2 configuration: ECDHE with AES-GCM/CBC for ECDSA and RSA certificates
    assert "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256" in suites
    assert "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384" in suites
    assert not [s for s in suites if "CHACHA" in s or "CCM" in s or "PSK" in s]


def test_a_tls_session_takes_its_record_buffers_from_the_micropython_heap(tmp_path):
    """As on a Pico W (mbedTLS routed through m_tracked_calloc), an open TLS client session
    holds its 16 KiB receive and 4 KiB send buffers on the MicroPython heap: they show in
    gc.mem_alloc() and are given back when the session closes."""
    cert = make_server_cert(tmp_path / "pki", "server")
    (tmp_path / "ca.der").write_bytes(cert.ca_der)
    ctx = cert.server_context()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve():
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls_conn:
            tls_conn.sendall(b"hello")
            tls_conn.recv(16)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        out = run("""
import gc, socket, ssl
c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
c.verify_mode = ssl.CERT_REQUIRED
c.load_verify_locations(cadata=open("ca.der", "rb").read())
s = socket.socket()
s.connect(socket.getaddrinfo("127.0.0.1", %d)[0][-1])
gc.collect(); before = gc.mem_alloc()
t = c.wrap_socket(s, server_hostname="127.0.0.1")
greeting = t.read(5)
gc.collect(); held = gc.mem_alloc() - before
t.write(b"bye"); t.close()
gc.collect(); after = gc.mem_alloc() - before
print(greeting.decode(), held, after)
""" % port, cwd=tmp_path).split()
    finally:
        server.join(10)
        listener.close()
    greeting, held, after = out[0], int(out[1]), int(out[2])
    assert greeting == "hello"
    assert held >= 16384 + 4096, held
    assert after < 2048, after
    print("\nTLS client session on the MicroPython heap: %d bytes held, %d after close" % (held, after))


@pytest.mark.parametrize("flag", ["MICROPY_FORCE_32BIT=1", "MICROPY_SSL_MBEDTLS=1",
                                  "CFLAGS_EXTRA=-DMICROPY_TRACKED_ALLOC=1"])
def test_the_build_key_covers_the_flags_so_a_change_rebuilds(flag, monkeypatch):
    from tools import fetch

    key = fetch.build_key()
    monkeypatch.setattr(fetch, "MAKE_FLAGS", [f for f in fetch.MAKE_FLAGS if f != flag])
    assert fetch.build_key() != key
