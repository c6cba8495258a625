"""The board's one guarded connect: every outgoing TCP or TLS connection (the MQTT link's
mqtt_connect, the OCPP WebSocket's ocpp_wsopen, httpc's requests) is opened here, and its
socket is closed at once when the connect fails, times out or is cancelled.

    reader, writer = await netopen.connect(host, port, ctx=None, server_hostname=None)
    # or in steps (the MQTT link keeps the address and names the stage it waits on):
    ai = netopen.resolve(host, port)            # getaddrinfo's first address
    sock = await netopen.tcp(ai)                # a connected non-blocking socket
    reader, writer = await netopen.stream(sock, ctx, server_hostname)  # streams (+ TLS)

`ctx`: an SSL context for TLS (the server certificate and `server_hostname`, default
`host`, are checked as the context says), or None for plain TCP. The caller bounds the
whole connect with its own timeout (asyncio.wait_for); nothing here waits for ever.
A refused connection raises OSError with errno REFUSED.

Why not asyncio.open_connection(host, port): MicroPython's opens its socket and waits for
it to become writable without a guard; cancelled there by the caller's timeout (a host
that drops SYNs, or a TLS peer that never answers) the socket stays open: on the Unix port
for good (one file descriptor per attempt), on a board until a garbage collection runs
lwIP's finaliser (a TCP PCB held meanwhile, and lwIP has few). Here the connect is
non-blocking and polled every POLL_MS from the event loop, and every way out but success
closes the socket. Once the streams are returned, the caller owns the connection (it
closes the writer; on MicroPython the TLS handshake runs on the first write or read).

getaddrinfo blocks on every port (DNS on a board): the MQTT link resolves once and keeps
the address (again after a refusal); the others resolve at every connection, as
open_connection did. Loaded only while connecting (see paging.py): it keeps no state.
"""

import asyncio
import gc
import select
import socket
import sys

POLL_MS = 20  # how often a pending TCP connect is polled from the event loop
REFUSED = 111  # ECONNREFUSED (Linux and MicroPython's errno alike)
_PENDING = (115, 36, 11)  # EINPROGRESS (Linux, lwIP; BSD), EAGAIN
_MICROPYTHON = sys.implementation.name == "micropython"


def resolve(host, port):
    """The first TCP address of host:port (getaddrinfo's tuple)."""
    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]


async def tcp(ai):
    """A connected non-blocking socket to address `ai` (from resolve), or an exception
    (OSError REFUSED when the peer refuses); never left open on failure or cancellation."""
    sock = socket.socket(ai[0], ai[1], ai[2])
    try:
        sock.setblocking(False)
        try:
            sock.connect(ai[-1])
        except OSError as exc:
            if exc.errno not in _PENDING:
                raise
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        while True:  # until connected, refused, or cancelled by the caller's timeout
            events = poller.poll(0)
            if events:
                if events[0][1] & (select.POLLERR | select.POLLHUP):
                    raise OSError(REFUSED, "connection refused")
                return sock
            await asyncio.sleep_ms(POLL_MS)
    except BaseException:
        sock.close()
        raise


async def stream(sock, ctx=None, server_hostname=None):
    """(reader, writer) over the connected socket `sock`, through TLS when `ctx` is an SSL
    context; `sock` is closed if this fails or is cancelled."""
    try:
        if _MICROPYTHON:  # its open_connection cannot take a connected socket
            if ctx is not None:
                # the session's record buffers (16 + 4 KiB on a board) want holes that the
                # garbage of the moment may split: a collection first (a few ms on a Pico W)
                gc.collect()
                sock = ctx.wrap_socket(sock, server_hostname=server_hostname,
                                       do_handshake_on_connect=False)
                sock.setblocking(False)
            s = asyncio.StreamReader(sock)
            return s, s
        return await asyncio.open_connection(
            sock=sock, ssl=ctx, server_hostname=server_hostname if ctx is not None else None)
    except BaseException:
        sock.close()
        raise


async def connect(host, port, ctx=None, server_hostname=None):
    """(reader, writer) to host:port (resolved now), TLS when `ctx` is given."""
    sock = await tcp(resolve(host, port))
    return await stream(sock, ctx, server_hostname or host)
