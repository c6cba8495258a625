"""The connection code of mqtt_link.Link (loaded by `Link.connect` for one attempt and
dropped again, like ocpp_wsopen for the WebSocket): the TLS context, the TCP connect and
the asyncio streams (netopen's guarded connect, the broker's address kept), CONNECT and its
CONNACK. See mqtt_link.py for the bounds."""

import struct

import netopen
from mqtt_link import MQTTError, as_bytes, field, packet

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
    """A connected non-blocking socket (netopen.tcp: never left open on failure), to the
    address resolved once and kept; resolved again after a refusal (the name may point
    elsewhere now)."""
    if link.addr is None:
        link.addr = netopen.resolve(link.host, link.port)
    try:
        return await netopen.tcp(link.addr)
    except OSError as exc:
        if exc.errno == netopen.REFUSED:
            link.addr = None
        raise


async def handshake(link, ctx):
    """TCP (+ TLS) then CONNECT/CONNACK; link.reader/writer set; cancelled by the caller's
    timeout (link.stage says what was awaited)."""
    link.stage = "TCP connect"
    sock = await tcp(link)
    link.stage = "TLS handshake" if ctx is not None else "CONNACK"
    link.reader, link.writer = await netopen.stream(sock, ctx, link.host)
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
