"""The TLS room (firmware/lib/tls_room.py) on the board's MicroPython build (32-bit,
mbedTLS configured as on a Pico W, its buffers on the MicroPython heap): on a heap
fragmented by the board's objects, with far more free in total than a TLS session needs
but no hole for mbedTLS's 16 KiB receive buffer, a plain wrap_socket fails with ENOMEM,
while a session wrapped through the room gets the hole the room kept from the start, again
and again, with objects made during each session staying on the heap."""

import subprocess
from pathlib import Path

from tools.board import DEFAULT_HEAP, MICROPYTHON

LIB = Path(__file__).resolve().parents[2] / "firmware" / "lib"

SCRIPT = """
import sys
sys.path.insert(0, %r)
import gc, ssl, socket
from tls_room import Room

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.verify_mode = ssl.CERT_NONE
room = Room(log=print)  # at "boot": low in a clean heap
keep = [None] * 200
drop = [None] * 200
n = 0
try:  # the board's objects: the rest of the heap in 2000-byte pieces, every other one freed
    while n < 200:
        keep[n] = bytearray(2000)
        drop[n] = bytearray(2000)
        n += 1
except MemoryError:
    pass
drop = None
gc.collect()
print("free", gc.mem_free())


def session(c):
    return c.wrap_socket(socket.socket(), server_hostname="x", do_handshake_on_connect=False)


try:
    session(ctx).close()
    print("plain ok")
except OSError as exc:
    print("plain errno", exc.args[0])
survivors = []
for i in range(20):
    w = session(room.wrap(ctx))  # mbedtls_ssl_setup callocs its buffers here
    survivors.append(bytes(40 + i))  # made during the session, kept after it
    w.close()
    w = None
    room.reserve()
print("room", room.sessions, room.misses, room.held())
"""


def test_a_tls_session_wrapped_through_the_room_finds_its_hole_on_a_fragmented_heap():
    result = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={DEFAULT_HEAP}", "-c", SCRIPT % str(LIB)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    # three sessions' worth free in total, yet no hole for one session's buffers
    assert int(lines["free"]) > 3 * 21 * 1024
    assert lines["plain"] == "errno 12"  # ENOMEM
    # 20 sessions in the room, the placeholders taken again after each one
    assert lines["room"] == "20 0 True"
