"""What every uplink of the board shares (HTTP in httpc, the OCPP WebSocket in ocpp_ws,
MQTT in mqtt_link): the one URL parser, the one Basic-authorisation encoder, the one TLS
context builder and the one bounded reader of an HTTP response head.

    parse_url(url, error=HTTPError) -> (scheme, host, port, path, userinfo or None)
    basic_auth(user, password) -> "Basic ..."
    ssl_context(cadata=None, insecure=False); tls_context(section, flash=None); tls_mode(section)
    await read_line(reader, error); await read_headers(reader, error) -> {lower-case name: value}

`error` is the exception class the caller's users expect (httpc.HTTPError, ocpp_ws.WSError,
mqtt_link.MQTTError); this module never decides which layer failed."""

import binascii

PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443, "mqtt": 1883, "mqtts": 8883}
MAX_LINE = 1024  # a head line longer than this is refused
MAX_HEAD_LINES = 64  # header lines read before giving up
MAX_HEADERS = 24  # header lines kept
NO_CA = "TLS without a CA certificate: set ca_file (or \"insecure\": true to skip the check)"


class HTTPError(Exception):
    pass


def parse_url(url, error=HTTPError):
    """(scheme, host, port, path, userinfo) of an http(s), ws(s) or mqtt(s) URL (port: the
    scheme's default unless given; path "/" when empty); `error` if it is not one."""
    if not isinstance(url, str) or "://" not in url:
        raise error("not an absolute URL: %r" % (url,))
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    port = PORTS.get(scheme)
    if port is None:
        raise error("unsupported scheme: %s" % scheme)
    slash = rest.find("/")
    if slash < 0:
        netloc, path = rest, "/"
    else:
        netloc, path = rest[:slash], rest[slash:]
    if "?" in netloc:
        netloc, query = netloc.split("?", 1)
        path = "/?" + query
    userinfo = None
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
    try:
        if netloc.startswith("["):
            end = netloc.find("]")
            host = netloc[1:end]
            if netloc[end + 1:end + 2] == ":":
                port = int(netloc[end + 2:])
        elif ":" in netloc:
            host, p = netloc.rsplit(":", 1)
            port = int(p)
        else:
            host = netloc
    except ValueError:
        raise error("bad port in %r" % (url,))
    if not host:
        raise error("no host in %r" % (url,))
    return scheme, host, port, path, userinfo


def basic_auth(user, password):
    """The value of an `Authorization: Basic` header."""
    return "Basic " + binascii.b2a_base64(("%s:%s" % (user, password)).encode()).decode().strip()


def ssl_context(cadata=None, insecure=False):
    """An SSL client context that checks the server certificate and host name against
    `cadata` (DER bytes of the CA). Without a CA: HTTPError, unless `insecure` (then the
    context checks nothing). HTTPError if there is no ssl module."""
    if not cadata and not insecure:
        raise HTTPError(NO_CA)
    try:
        import ssl
    except ImportError:
        raise HTTPError("TLS needs the ssl module")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cadata:
        # a board's ssl.SSLContext starts at CERT_NONE: ask for the check explicitly
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=cadata)
    else:
        if hasattr(ctx, "check_hostname"):
            ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def tls_mode(section):
    """How an uplink's config section wants TLS: "checked", "insecure" or "no CA"."""
    section = section or {}
    if section.get("ca_file"):
        return "checked"
    return "insecure" if section.get("insecure") is True else "no CA"


def tls_context(section, flash=None):
    """The SSL context an uplink's config section asks for: `ca_file` (a DER CA certificate,
    on `flash` or a local path) checked, else `"insecure": true` unchecked, else HTTPError."""
    section = section or {}
    ca = section.get("ca_file")
    if ca:
        if flash is not None:
            cadata = flash.read_bytes(ca)
        else:
            with open(ca, "rb") as fh:
                cadata = fh.read()
        return ssl_context(cadata)
    return ssl_context(None, section.get("insecure") is True)


async def read_line(reader, error):
    """One line of a response head (status, header, chunk size), at most MAX_LINE bytes.
    Read byte by byte (heads are short): the streams' readline() has no limit on
    MicroPython, so a server that never ends a line would fill the heap first."""
    buf = bytearray()
    while len(buf) < MAX_LINE:
        c = await reader.read(1)
        if not c:
            break
        buf += c
        if c == b"\n":
            break
    else:
        raise error("header line too long")
    return bytes(buf)


async def read_headers(reader, error):
    """The header lines after the status line up to the blank line: {lower-case name:
    value}, at most MAX_HEADERS kept, `error` after MAX_HEAD_LINES lines or at EOF."""
    headers = {}
    for _ in range(MAX_HEAD_LINES):
        line = await read_line(reader, error)
        if not line:
            raise error("connection closed inside the headers")
        if line in (b"\r\n", b"\n"):
            return headers
        text = line.decode()
        if ":" in text and len(headers) < MAX_HEADERS:
            name, value = text.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    raise error("more than %d header lines" % MAX_HEAD_LINES)
