"""A small asynchronous HTTP/1.1 client over asyncio streams (MicroPython and CPython).

Never blocks the event loop; every request has one overall timeout. One request per
connection (`Connection: close`), which is what a Pico W can afford.

API
---
    resp = await httpc.request(method, url, body=None, headers=None, timeout=10,
                               sink=None, source=None, source_len=None,
                               max_body=4096, ssl_ctx=None)
    resp = await httpc.get(url, **kw)          # request("GET", url, **kw)
    resp = await httpc.post(url, body, **kw)   # request("POST", url, body, **kw)
    resp = await httpc.put(url, body, **kw)    # request("PUT", url, body, **kw)

- `url`: `http://host[:port]/path?query` or `https://...`; `user:password@host` in the
  URL adds HTTP Basic authorisation.
- `body`: bytes or str (str is sent as UTF-8), or a dict/list (sent as JSON with
  `Content-Type: application/json`). `headers`: dict of extra request headers.
- `source` + `source_len`: stream the request body from a file-like object with
  `read(n)` (e.g. a file opened on flash) instead of `body`; `source_len` bytes are sent.
- `sink`: an object with `write(bytes)` (e.g. a file opened "wb" on flash): the response
  body is streamed into it in small chunks and `resp.body` is None. On MicroPython the
  chunks are memoryviews of one 512-byte buffer reused for the whole body (write them out,
  do not keep them). Without a sink the
  body is kept in memory, at most `max_body` bytes (`HTTPError` beyond).
- Responses with Content-Length, `Transfer-Encoding: chunked`, or neither (read to EOF)
  are handled.
- `timeout`: seconds for the whole exchange (connect, send, receive); `asyncio`'s
  TimeoutError (MicroPython: `asyncio.TimeoutError`) on expiry. The connection is opened
  by netopen, the board's guarded connect: a connect that fails or times out closes its
  socket.
- `ssl_ctx` (https): an SSL context, or an uplink's config section (a dict with
  `ca_file` and/or `insecure`, see `tls_context()`). Without one an https URL is refused:
  TLS is secure by default. `ssl_context(cadata=None, insecure=False)` builds a context
  that checks the server certificate and host name against the given CA (DER bytes);
  without a CA it raises `HTTPError` unless `insecure` is true (then nothing is checked).
  A board or port without an `ssl` module raises `HTTPError("TLS needs the ssl module")`.
- `tls_context(section, flash=None)`: the context an uplink's config section asks for:
  `ca_file` (a DER CA certificate on flash) checked, else `"insecure": true` unchecked,
  else `HTTPError`. `tls_mode(section)` says which: "checked", "insecure" or "no CA".

`Response`: `status` (int), `reason` (str), `headers` (dict, lower-case names, at most
`uplink.MAX_HEADERS` kept; a head line longer than `uplink.MAX_LINE` bytes or more than
`uplink.MAX_HEAD_LINES` header lines is an `HTTPError`, read without ever buffering more than one line), `body` (bytes or None when sunk), `length` (body bytes received).
Errors: `HTTPError` (malformed URL or response, body too large), `OSError` (network),
the timeout error above.

`parse_url`, `basic_auth`, `ssl_context`, `tls_context`, `tls_mode` and `HTTPError` are
uplink.py's (one of each for every uplink), named here too for the callers of httpc.
"""

import asyncio
import json

import paging
from uplink import (  # noqa: F401
    HTTPError,
    basic_auth,
    parse_url,
    read_headers,
    read_line,
    ssl_context,
    tls_context,
    tls_mode,
)

CHUNK = 512


class Response:
    def __init__(self):
        self.status = 0
        self.reason = ""
        self.headers = {}
        self.body = None
        self.length = 0

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Response %d %s, %d bytes>" % (self.status, self.reason, self.length)


async def open_stream(host, port, secure, ssl_ctx=None):
    """(reader, writer) to host:port, TLS if `secure` (`ssl_ctx`: a context or an
    uplink's config section; None refuses, as a TLS URL without a CA must). netopen's
    guarded connect, loaded for the connect only: no socket is left open when it fails
    or the request's timeout cancels it."""
    ctx = None
    if secure:
        ctx = ssl_ctx
        if ssl_ctx is None or isinstance(ssl_ctx, dict):
            ctx = tls_context(ssl_ctx)
    netopen = paging.load("netopen")
    try:
        return await netopen.connect(host, port, ctx)
    finally:
        paging.drop("netopen")


async def close_stream(writer):
    try:
        writer.close()
        await writer.wait_closed()
    except Exception:
        pass


async def read_some(reader, n):
    """Up to n bytes (at least 1); b"" at EOF."""
    return await reader.read(n)


async def _recv(reader, n, buf):
    """Up to n (<= CHUNK) bytes; b"" at EOF. With `buf` (a bytearray(CHUNK), given when
    the body goes to a sink) MicroPython reads into it: no new buffer per chunk, which a
    long download on a fragmented heap cannot afford; the result is a view into `buf`,
    valid until the next read."""
    if buf is None:
        return await reader.read(n)
    while True:
        got = await reader.readinto(memoryview(buf)[:n])
        if got is not None:
            return memoryview(buf)[:got]


async def _read_exact_to(reader, n, out, resp, max_body, buf=None):
    while n > 0:
        data = await _recv(reader, min(n, CHUNK), buf)
        if not data:
            raise HTTPError("connection closed inside the body")
        n -= len(data)
        _deliver(data, out, resp, max_body)


def _deliver(data, out, resp, max_body):
    resp.length += len(data)
    if out is None:
        return
    if isinstance(out, list):
        if resp.length > max_body:
            raise HTTPError("response body larger than %d bytes" % max_body)
        out.append(data)
    else:
        out.write(data)


async def _exchange(method, url, body, headers, sink, source, source_len, max_body, ssl_ctx):
    scheme, host, port, path, userinfo = parse_url(url)
    ctype = None
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        ctype = "application/json"
    elif isinstance(body, str):
        body = body.encode()
    reader, writer = await open_stream(host, port, scheme in ("https", "wss"), ssl_ctx)
    try:
        default_port = 443 if scheme == "https" else 80
        hostline = host if port == default_port else "%s:%d" % (host, port)
        head = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: PicoCharge\r\n" % (
            method, path, hostline)
        extra = headers or {}
        if userinfo is not None and "Authorization" not in extra:
            user, _, password = userinfo.partition(":")
            head += "Authorization: %s\r\n" % basic_auth(user, password)
        if ctype and "Content-Type" not in extra:
            head += "Content-Type: %s\r\n" % ctype
        if source is not None:
            head += "Content-Length: %d\r\n" % source_len
        elif body is not None:
            head += "Content-Length: %d\r\n" % len(body)
        elif method in ("POST", "PUT"):
            head += "Content-Length: 0\r\n"
        for key in extra:
            head += "%s: %s\r\n" % (key, extra[key])
        writer.write((head + "\r\n").encode())
        await writer.drain()
        if source is not None:
            left = source_len
            while left > 0:
                chunk = source.read(min(CHUNK, left))
                if not chunk:
                    raise HTTPError("source ended %d bytes early" % left)
                writer.write(chunk)
                await writer.drain()
                left -= len(chunk)
        elif body:
            writer.write(body)
            await writer.drain()
        resp = Response()
        status = await read_line(reader, HTTPError)
        parts = status.decode().strip().split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise HTTPError("not an HTTP response: %r" % (status[:40],))
        try:
            resp.status = int(parts[1])
        except ValueError:
            raise HTTPError("bad status line")
        resp.reason = parts[2] if len(parts) > 2 else ""
        resp.headers = await read_headers(reader, HTTPError)
        out = sink
        buf = None
        if sink is None:
            out = []
        elif hasattr(reader, "readinto"):  # MicroPython's streams
            buf = bytearray(CHUNK)
        if method == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200:
            pass
        elif resp.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = (await read_line(reader, HTTPError)).decode().strip()
                if not size_line:
                    raise HTTPError("connection closed inside a chunked body")
                try:
                    size = int(size_line.split(";", 1)[0], 16)
                except ValueError:
                    raise HTTPError("bad chunk size %r" % size_line)
                if size == 0:
                    while True:  # trailers up to the blank line
                        line = await read_line(reader, HTTPError)
                        if not line or line in (b"\r\n", b"\n"):
                            break
                    break
                await _read_exact_to(reader, size, out, resp, max_body, buf)
                await read_line(reader, HTTPError)  # the CRLF after each chunk
        elif "content-length" in resp.headers:
            try:
                n = int(resp.headers["content-length"])
            except ValueError:
                raise HTTPError("bad Content-Length")
            await _read_exact_to(reader, n, out, resp, max_body, buf)
        else:
            while True:
                data = await _recv(reader, CHUNK, buf)
                if not data:
                    break
                _deliver(data, out, resp, max_body)
        if sink is None:
            resp.body = b"".join(out)
        return resp
    finally:
        await close_stream(writer)


async def request(method, url, body=None, headers=None, timeout=10, sink=None, source=None,
                  source_len=None, max_body=4096, ssl_ctx=None):
    """One HTTP exchange; see the module docstring."""
    if source is not None and source_len is None:
        raise HTTPError("source needs source_len")
    return await asyncio.wait_for(
        _exchange(method, url, body, headers, sink, source, source_len, max_body, ssl_ctx),
        timeout)


async def get(url, **kw):
    return await request("GET", url, **kw)


async def post(url, body=None, **kw):
    return await request("POST", url, body, **kw)


async def put(url, body=None, **kw):
    return await request("PUT", url, body, **kw)
