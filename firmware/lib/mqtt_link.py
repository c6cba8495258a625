"""One guarded MQTT 3.1.1 link for the board's publishers (telemetry.py, and thingspeak.py's
MQTT mode): connect (TCP, TLS for mqtts://, CONNECT with credentials and a last will),
publish at QoS 0 or 1, keep alive, reconnect with backoff and jitter. Nothing here ever
blocks the event loop waiting for the network, and nothing needs a reboot to recover.

    link = Link(url, client_id, user=None, password=None, ca_file=None, insecure=False,
                flash=None, will=None, keepalive_s=60, timeout_s=5, max_backoff_s=60,
                log=print, name="mqtt")
    link.due()                       # may a connection attempt start now (backoff over)?
    await link.connect()             # True when connected (else see link.last_error)
    await link.publish(topic, payload, retain=False, qos=1)  # True once the broker has it
    await link.keep_alive()          # PINGREQ/PINGRESP once idle for half the keep-alive
    link.close(topic, payload)       # best effort, no waiting: `payload` retained, DISCONNECT

`url`: `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883, TLS); `user:password@`
in the URL is accepted as well. `will`: (topic, payload, retain, qos). `password` may be a
function (called at each connection attempt: a rotated AuthorizationKey applies at once).

TLS (`mqtts://`): `ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)` (MicroPython's and CPython's
API alike, built in mqtt_connect.py), the server certificate checked against the CA in
`ca_file` (DER, on flash) and the host name given as `server_hostname`. A TLS URL with no
`ca_file` refuses to connect unless `insecure` is true; then it connects unchecked and
`security()` says so. A port without `ssl` fails each attempt with "mqtts needs the ssl
module" (logged, retried with backoff).

Bounds (the loop never waits on the network):
- the TCP connect is netopen's guarded connect (the one every uplink uses): non-blocking,
  readiness polled every 20 ms from the event loop, the socket closed at once when
  `timeout_s` passes (MicroPython's asyncio.open_connection cancelled by a timeout leaves
  its socket open: on the Unix port for good, on a board until a garbage collection runs
  lwIP's finaliser);
- then the socket is wrapped as an asyncio stream (TLS handshake, CONNACK, PUBACK and
  PINGRESP are awaited, each bounded by `timeout_s`): a broker that accepts and never
  answers costs one timeout, not a stalled loop;
- the host name is resolved once and the address kept (getaddrinfo blocks on every port);
  it is resolved again after a refused connection.
A failure closes the socket and schedules the next attempt after min(max_backoff_s,
2^n s) scaled by a random 0.5..1.0 (jitter: a fleet does not reconnect in step).

The connection code (TLS context, TCP connect, CONNECT/CONNACK) is in mqtt_connect.py
(with netopen), loaded for each attempt and dropped again: it is not on the heap while the
link is up.

Why not umqtt.simple's client itself: its connect() opens a blocking socket of its own and
reads the CONNACK without a timeout, and its QoS 1 publish() loops on blocking reads until
the PUBACK; neither can be bounded from outside, and its TLS takes `ussl.wrap_socket`
parameters in 1.3.4 but an SSLContext in later releases. The four packets a publisher needs
are a few lines each, written here (and in mqtt_connect.py) after umqtt.simple's encoding.
"""

import asyncio
import random
import struct
import sys
import time

import paging

MICROPYTHON = sys.implementation.name == "micropython"
MAX_PACKET = 256  # we subscribe to nothing: only CONNACK, PUBACK, PINGRESP come in


class MQTTError(Exception):
    pass


def parse_url(url):
    """mqtt(s)://[user[:password]@]host[:port] -> (secure, host, port, user, password)."""
    try:
        scheme, host, port, _, userinfo = paging.load("uplink").parse_url(url, MQTTError)
    finally:
        paging.drop("uplink")  # needed again only while connecting (mqtt_connect)
    if scheme not in ("mqtt", "mqtts"):
        raise MQTTError("MQTT URLs start with mqtt:// or mqtts://, not %s://" % scheme)
    user = password = None
    if userinfo is not None:
        user, sep, pw = userinfo.partition(":")
        password = pw if sep else None
    return scheme == "mqtts", host, port, user, password


def as_bytes(text):
    return text.encode() if isinstance(text, str) else text


def field(data):
    """A length-prefixed MQTT string or binary field."""
    return struct.pack("!H", len(data)) + data


def packet(first, body):
    """Fixed header (type and flags, remaining length as a varint) + body."""
    head = bytearray([first])
    n = len(body)
    while True:
        if n > 0x7F:
            head.append((n & 0x7F) | 0x80)
            n >>= 7
        else:
            head.append(n)
            break
    return bytes(head) + body


def publish_packet(topic, payload, retain, qos, pid):
    body = field(as_bytes(topic))
    if qos:
        body += struct.pack("!H", pid)
    return packet(0x30 | (qos << 1) | (1 if retain else 0), body + as_bytes(payload))


class Link:
    def __init__(self, url, client_id, user=None, password=None, ca_file=None, insecure=False,
                 flash=None, will=None, keepalive_s=60, timeout_s=5, max_backoff_s=60,
                 log=print, name="mqtt"):
        self.secure, self.host, self.port, url_user, url_password = parse_url(url)
        self.client_id = client_id
        self.user = user if user is not None else url_user
        self.password = password if password is not None else url_password
        self.ca_file = ca_file
        self.insecure = bool(insecure)
        self.flash = flash
        self.will = will
        self.keepalive_s = int(keepalive_s)
        self.timeout_ms = int(timeout_s * 1000)
        self.max_backoff_s = max_backoff_s
        self.log = log
        self.name = name
        self.reader = self.writer = None
        self.up = False  # CONNACK received, not dropped since
        self.addr = None
        self.pid = 0
        self.attempts = 0  # consecutive failed attempts (backoff exponent)
        self.connects = 0
        self.failures = 0
        self.last_error = None
        self.next_ms = time.ticks_ms()
        self.last_tx_ms = None
        self.warned = False
        self.stage = None  # what the current connection attempt waits for
        if self.secure and not ca_file and self.insecure:
            self.log("%s: TLS to %s:%d WITHOUT a certificate check (insecure: true)" % (
                name, self.host, self.port))

    # -- state ----------------------------------------------------------------------------
    def connected(self):
        return self.up

    def due(self):
        return not self.up and time.ticks_diff(time.ticks_ms(), self.next_ms) >= 0

    def security(self):
        """plain | tls | tls-unchecked | refused (mqtts without a CA, not insecure)."""
        if not self.secure:
            return "plain"
        if self.ca_file:
            return "tls"
        return "tls-unchecked" if self.insecure else "refused"

    def summary(self):
        return {"broker": "%s:%d" % (self.host, self.port), "security": self.security(),
                "connected": self.connected(), "connects": self.connects,
                "failures": self.failures, "last_error": self.last_error}

    # -- connecting -----------------------------------------------------------------------
    def _why(self, exc):
        if isinstance(exc, asyncio.TimeoutError):
            return "no answer within %d ms (%s)" % (self.timeout_ms, self.stage)
        if isinstance(exc, OSError) and len(exc.args) > 1:
            return str(exc.args[1])
        text = str(exc).strip()  # mbedTLS's messages come wrapped in newlines
        return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__

    def _fail(self, why):
        """Drop the connection and schedule the next attempt (backoff with jitter)."""
        self.last_error = why
        self.failures += 1
        self._close_socket()
        top = min(int(self.max_backoff_s * 1000), 1000 << min(self.attempts, 10))
        self.attempts += 1
        jittered = top * (512 + random.getrandbits(9)) // 1024  # 0.5 .. 1.0 of top
        self.next_ms = time.ticks_add(time.ticks_ms(), jittered)
        return False

    def _close_socket(self):
        writer = self.writer
        self.reader = self.writer = None
        self.up = False
        if writer is not None:
            try:
                if MICROPYTHON:
                    writer.s.close()  # Stream.close() does nothing there
                else:
                    writer.close()
            except Exception:
                pass

    async def read_packet(self):
        """(first byte, body) of the next packet from the broker."""
        reader = self.reader
        first = (await reader.readexactly(1))[0]
        n = shift = 0
        while True:
            b = (await reader.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("bad remaining length")
        if n > MAX_PACKET:
            raise MQTTError("unexpected %d-byte packet 0x%02x" % (n, first))
        return first, (await reader.readexactly(n)) if n else b""

    async def connect(self):
        """One connection attempt, bounded by timeout_s; True when connected."""
        if self.up:
            return True
        import mqtt_connect  # the connection code, on the heap only while connecting

        try:
            try:
                ctx = mqtt_connect.tls_context(self)
            except MQTTError as exc:
                if not self.warned:  # say it once, then keep retrying quietly
                    self.warned = True
                    self.log("%s: %s" % (self.name, exc))
                return self._fail(str(exc))
            try:
                await asyncio.wait_for(mqtt_connect.handshake(self, ctx), self.timeout_ms / 1000)
            except Exception as exc:
                return self._fail("connect to %s:%d: %s" % (self.host, self.port, self._why(exc)))
        finally:
            del mqtt_connect
            paging.drop("mqtt_connect")
            paging.drop("netopen")
            paging.drop("uplink")
        self.up = True
        self.attempts = 0
        self.connects += 1
        self.pid = 0
        self.last_tx_ms = time.ticks_ms()
        self.log("%s: connected to %s:%d%s" % (self.name, self.host, self.port, {
            "plain": "", "tls": " (TLS, certificate checked)",
            "tls-unchecked": " (TLS, certificate NOT checked)"}[self.security()]))
        return True

    # -- traffic --------------------------------------------------------------------------
    async def _exchange(self, data, ack, pid):
        """Send a packet, then (if `ack`) read until the answer of that type (and packet id)."""
        self.writer.write(data)
        await self.writer.drain()
        self.last_tx_ms = time.ticks_ms()
        while ack is not None:
            got, body = await self.read_packet()
            if got == ack and (pid is None or body[:2] == struct.pack("!H", pid)):
                return

    async def _call(self, what, stage, data, ack=None, pid=None):
        if not self.up:
            return False
        self.stage = stage
        try:
            await asyncio.wait_for(self._exchange(data, ack, pid), self.timeout_ms / 1000)
            return True
        except Exception as exc:
            return self._fail("%s: %s" % (what, self._why(exc)))

    async def publish(self, topic, payload, retain=False, qos=1):
        """True once sent (QoS 0) or acknowledged (QoS 1); False: the link dropped."""
        pid = None
        if qos:
            self.pid = self.pid % 65535 + 1
            pid = self.pid
        return await self._call("publish", "PUBACK" if qos else "sending",
                                publish_packet(topic, payload, retain, qos, pid),
                                0x40 if qos else None, pid)

    async def keep_alive(self):
        """A PINGREQ when nothing was sent for half the keep-alive; False if it failed."""
        if not self.up or self.last_tx_ms is None or not self.keepalive_s:
            return True
        if time.ticks_diff(time.ticks_ms(), self.last_tx_ms) < self.keepalive_s * 500:
            return True
        return await self._call("ping", "PINGRESP", b"\xc0\x00", 0xD0)

    def idle_ms(self):
        """ms until the next keep-alive ping (or the next connection attempt) is due."""
        now = time.ticks_ms()
        if not self.up:
            return time.ticks_diff(self.next_ms, now)
        if self.last_tx_ms is None or not self.keepalive_s:
            return 60000
        return time.ticks_diff(self.last_tx_ms, now) + self.keepalive_s * 500

    def close(self, topic=None, payload=None):
        """Clean shutdown without waiting: `payload` to `topic` retained (the broker drops
        the last will on a DISCONNECT), DISCONNECT, close. For the reboot path."""
        if not self.up:
            self._close_socket()
            return
        try:
            if topic is not None:
                self.writer.write(publish_packet(topic, payload, True, 0, None))
            self.writer.write(b"\xe0\x00")
        except Exception:
            pass
        self._close_socket()
