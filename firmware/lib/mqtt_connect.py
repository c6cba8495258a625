"""The connection code of mqtt_link.Link (loaded by `Link.connect` for one attempt and
dropped again, like ocpp_wsopen for the WebSocket): the TLS context, the non-blocking TCP
connect, the asyncio streams, CONNECT and its CONNACK. See mqtt_link.py for the bounds."""

import asyncio
import select
import socket
import struct

from mqtt_link import MICROPYTHON, MQTTError, as_bytes, field, packet

POLL_MS = 20  # how often a pending TCP connect is polled from the event loop
REFUSED = ("", "unacceptable protocol version", "client id rejected", "server unavailable",
           "bad user name or password", "not authorised")


def connect_packet(client_id, user, password, keepalive_s, will):
    flags = 0x02  # clean session
    payload = field(as_bytes(client_id))
    if will is not None:
        topic, msg, retain, qos = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += field(as_bytes(topic)) + field(as_bytes(msg))
    if user is not None:
        flags |= 0x80
        payload += field(as_bytes(user))
        if password is not None:
            flags |= 0x40
            payload += field(as_bytes(password))
    return packet(0x10, b"\x00\x04MQTT\x04" + bytes([flags]) + struct.pack("!H", keepalive_s)
                   + payload)


def tls_context(link):
    """None for mqtt://. For mqtts:// the context of uplink.ssl_context (the one every
    uplink uses): the broker's certificate and host name checked against the CA in ca_file
    (DER, on flash), or nothing checked when `insecure`; MQTTError without either."""
    if not link.secure:
        return None
    if not link.ca_file and not link.insecure:
        raise MQTTError("mqtts without mqtt.ca_file: refusing to connect unchecked "
                        "(set \"insecure\": true to allow it)")
    import uplink

    try:
        return uplink.tls_context({"ca_file": link.ca_file, "insecure": link.insecure}, link.flash)
    except OSError:
        raise MQTTError("CA file %s is not on flash" % link.ca_file)
    except uplink.HTTPError as exc:
        raise MQTTError(str(exc))


async def tcp(link):
    """A connected non-blocking socket, or an exception; never left open on failure."""
    if link.addr is None:
        link.addr = socket.getaddrinfo(link.host, link.port, 0, socket.SOCK_STREAM)[0]
    ai = link.addr
    sock = socket.socket(ai[0], ai[1], ai[2])
    try:
        sock.setblocking(False)
        try:
            sock.connect(ai[-1])
        except OSError as exc:
            if exc.errno not in (115, 36, 11):  # EINPROGRESS (Linux, lwIP), EAGAIN
                raise
        poller = select.poll()
        poller.register(sock, select.POLLOUT)
        while True:  # until connected, refused, or cancelled by connect()'s timeout
            events = poller.poll(0)
            if events:
                if events[0][1] & (select.POLLERR | select.POLLHUP):
                    link.addr = None  # refused: the name may point elsewhere now
                    raise OSError(111, "connection refused")
                return sock
            await asyncio.sleep_ms(POLL_MS)
    except BaseException:
        sock.close()
        raise


async def handshake(link, ctx):
    """TCP (+ TLS) then CONNECT/CONNACK; link.reader/writer set; cancelled by the caller's
    timeout (link.stage says what was awaited)."""
    link.stage = "TCP connect"
    sock = await tcp(link)
    link.stage = "TLS handshake" if ctx is not None else "CONNACK"
    try:
        if MICROPYTHON:  # its open_connection cannot take a connected socket
            if ctx is not None:
                sock = ctx.wrap_socket(sock, server_hostname=link.host,
                                       do_handshake_on_connect=False)
                sock.setblocking(False)
            link.reader = link.writer = asyncio.StreamReader(sock)
        else:
            link.reader, link.writer = await asyncio.open_connection(
                sock=sock, ssl=ctx, server_hostname=link.host if ctx else None)
    except BaseException:
        sock.close()
        raise
    password = link.password() if callable(link.password) else link.password
    link.writer.write(connect_packet(link.client_id, link.user, password,
                                     link.keepalive_s, link.will))
    await link.writer.drain()
    link.stage = "CONNACK"
    first, body = await link.read_packet()
    if first != 0x20 or len(body) != 2:
        raise MQTTError("no CONNACK (packet 0x%02x)" % first)
    if body[1]:
        text = REFUSED[body[1]] if body[1] < len(REFUSED) else "code %d" % body[1]
        raise MQTTError("broker refused the connection: %s" % text)
