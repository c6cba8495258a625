"""The firmware's HTTP client, on both runtimes, against a local HTTP server."""

import hashlib
import json
import socket
import threading

import pytest
from scripts import run_snippet

SNIPPET = r'''
import asyncio, json, hashlib, binascii
import httpc

BASE = %(base)r

class Sink:
    def __init__(self):
        self.h = hashlib.sha256()
        self.n = 0
    def write(self, data):
        self.h.update(data)
        self.n += len(data)

async def main():
    out = {}
    r = await httpc.get(BASE + "/plain/a.bin", max_body=10000)
    out["plain"] = [r.status, r.length, binascii.hexlify(hashlib.sha256(r.body).digest()).decode()]
    s = Sink()
    r = await httpc.get(BASE + "/chunked/a.bin", sink=s)
    out["chunked"] = [r.status, s.n, binascii.hexlify(s.h.digest()).decode(), r.body is None]
    r = await httpc.get(BASE + "/eof/small.txt")
    out["eof"] = [r.status, r.body.decode()]
    r = await httpc.get(BASE + "/missing")
    out["missing"] = [r.status, r.body.decode()]
    try:
        await httpc.get(BASE + "/plain/a.bin", max_body=100)
        out["too_big"] = "no error"
    except httpc.HTTPError as exc:
        out["too_big"] = "HTTPError"
    r = await httpc.post(BASE + "/up?x=1", {"k": 1}, headers={"X-Test": "yes"})
    out["post"] = [r.status, r.body.decode()]
    with open("upload.bin", "wb") as fh:
        fh.write(b"0123456789" * 300)
    with open("upload.bin", "rb") as fh:
        r = await httpc.put("http://diag:pw@" + BASE[7:] + "/put/log.txt", source=fh, source_len=3000)
    out["put"] = [r.status, r.body.decode()]
    try:
        await httpc.get(BASE + "/slow/x", timeout=0.5)
        out["timeout"] = "no error"
    except asyncio.TimeoutError:
        out["timeout"] = "TimeoutError"
    try:
        await httpc.get("http://127.0.0.1:1/")
        out["refused"] = "no error"
    except OSError:
        out["refused"] = "OSError"
    print("RESULT " + json.dumps(out))

asyncio.run(main())
'''


@pytest.mark.dual_runtime
def test_http_client_reads_every_body_framing_streams_uploads_and_times_out(runtime_name, http_server, tmp_path):
    blob = bytes(range(256)) * 20
    http_server.files["/plain/a.bin"] = blob
    http_server.files["/chunked/a.bin"] = blob
    http_server.files["/eof/small.txt"] = b"read to the end"
    http_server.files["/slow/x"] = b"late"
    out = run_snippet(runtime_name, SNIPPET % {"base": http_server.url}, tmp_path)
    result = json.loads(out.split("RESULT ", 1)[1])
    digest = hashlib.sha256(blob).hexdigest()
    assert result["plain"] == [200, len(blob), digest]
    assert result["chunked"] == [200, len(blob), digest, True]
    assert result["eof"] == [200, "read to the end"]
    assert result["missing"] == [404, "not found"]
    assert result["too_big"] == "HTTPError"
    assert result["post"] == [200, "stored 8"]
    assert result["put"] == [201, "stored 3000"]
    assert result["timeout"] == "TimeoutError"
    assert result["refused"] == "OSError"
    posts = [u for u in http_server.uploads if u[0] == "POST"]
    assert posts[0][1] == "/up?x=1" and json.loads(posts[0][3]) == {"k": 1}
    assert posts[0][2]["Content-Type"] == "application/json" and posts[0][2]["X-Test"] == "yes"
    puts = [u for u in http_server.uploads if u[0] == "PUT"]
    assert puts[0][3] == b"0123456789" * 300
    assert puts[0][2]["Authorization"] == "Basic ZGlhZzpwdw=="


HTTPS_SNIPPET = r'''
import asyncio, json
import httpc

URL = %(url)r

async def fetch(section):
    try:
        r = await httpc.get(URL, max_body=10000, ssl_ctx=section, timeout=20)
        return [r.status, r.length]
    except Exception as exc:
        return [type(exc).__name__, str(exc)]

async def main():
    out = {}
    out["ca"] = await fetch({"ca_file": "ca.der"})
    out["other_ca"] = await fetch({"ca_file": "other.der"})
    out["no_ca"] = await fetch({})
    out["no_section"] = await fetch(None)
    out["insecure"] = await fetch({"insecure": True})
    out["modes"] = [httpc.tls_mode(s) for s in ({"ca_file": "ca.der"}, {"insecure": True}, {})]
    print("RESULT " + json.dumps(out))

asyncio.run(main())
'''


@pytest.mark.dual_runtime
def test_https_checks_the_server_certificate_against_the_configured_ca_and_refuses_without_one(
        runtime_name, tmp_path):
    """HTTPS (a firmware download, a diagnostics upload) against a server whose ECDSA P-256
    certificate is signed by a CA made here: with that CA on flash the download completes;
    with another CA the handshake fails and nothing is requested; without a CA the client
    refuses before connecting; `"insecure": true` connects without a check. On
    MicroPython this is the 32-bit build's mbedTLS, configured as a Pico W's."""
    from httpserver import TestHTTPServer
    from tlscerts import make_server_cert

    cert = make_server_cert(tmp_path / "pki", "server")
    other = make_server_cert(tmp_path / "pki", "other")
    (tmp_path / "ca.der").write_bytes(cert.ca_der)
    (tmp_path / "other.der").write_bytes(other.ca_der)
    server = TestHTTPServer(tls=cert.server_context())
    blob = bytes(range(256)) * 20
    server.files["/fw/a.bin"] = blob
    try:
        out = run_snippet(runtime_name, HTTPS_SNIPPET % {"url": server.url + "/fw/a.bin"}, tmp_path)
    finally:
        server.close()
    result = json.loads(out.split("RESULT ", 1)[1])
    assert result["ca"] == [200, len(blob)]
    assert result["other_ca"][0] in ("OSError", "SSLCertVerificationError", "ValueError"), result
    assert result["no_ca"] == ["HTTPError", "TLS without a CA certificate: set ca_file "
                               "(or \"insecure\": true to skip the check)"]
    assert result["no_section"] == result["no_ca"]
    assert result["insecure"] == [200, len(blob)]
    assert result["modes"] == ["checked", "insecure", "no CA"]
    # two downloads reached the server (the checked one and the insecure one), nothing else
    assert [p for m, p in server.requests] == ["/fw/a.bin", "/fw/a.bin"]
    assert len(server.tls_failures) == 1


class EndlessHead:
    """A raw TCP server whose answer head never ends: `line` sends one header line that
    never ends, `lines` sends short header lines forever (until the client hangs up)."""

    def __init__(self, kind):
        self.kind = kind
        self.sent = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 200 OK\r\n" + (b"X-Long: " if self.kind == "line" else b""))
                chunk = b"a" * 1024 if self.kind == "line" else b"X-A: b\r\n" * 128
                while self.sent < 50_000_000:
                    conn.sendall(chunk)
                    self.sent += len(chunk)
            except OSError:
                pass  # the client hung up: what a bounded reader does

    def close(self):
        self.server.close()


HEAD_SNIPPET = r'''
import asyncio, httpc, time
async def main():
    t0 = time.ticks_ms()
    try:
        await httpc.get("http://127.0.0.1:%(port)d/", timeout=20)
        print("RESULT no error")
    except Exception as exc:
        print("RESULT %%s %%s %%d" %% (type(exc).__name__, exc, time.ticks_diff(time.ticks_ms(), t0)))
asyncio.run(main())
'''


@pytest.mark.dual_runtime
@pytest.mark.parametrize("kind, error", [("line", "header line too long"),
                                         ("lines", "more than 64 header lines")])
def test_a_response_head_that_never_ends_is_refused_after_a_bounded_read(
        runtime_name, kind, error, tmp_path):
    """The head is read one bounded line at a time and at most 64 header lines: a server
    streaming an endless header line or endless header lines is refused at once with an
    HTTPError, with no more than one line (1 KiB) buffered, instead of the client filling
    its heap or waiting for the overall timeout."""
    server = EndlessHead(kind)
    try:
        out = run_snippet(runtime_name, HEAD_SNIPPET % {"port": server.port}, tmp_path)
    finally:
        server.close()
    name, _, rest = out.split("RESULT ", 1)[1].strip().partition(" ")
    assert name == "HTTPError" and rest.startswith(error), out
    elapsed_ms = int(rest.rsplit(" ", 1)[1])
    assert elapsed_ms < 10_000, "refused when the bound was reached, not at the timeout"
