"""A small threaded HTTP server for firmware tests: fixed files, chunked and unframed
bodies, uploads recorded, a slow path; 127.0.0.1 on a free port; HTTPS when given an
SSL server context."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class TestHTTPServer:
    def __init__(self, tls=None):
        self.files: dict[str, bytes] = {}
        self.uploads: list[tuple[str, str, dict, bytes]] = []
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self):
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def do_GET(self):
                owner.requests.append(("GET", self.path))
                path = self.path.split("?", 1)[0]
                if path.startswith("/slow"):
                    time.sleep(3)
                data = owner.files.get(path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "9")
                    self.end_headers()
                    self.wfile.write(b"not found")
                    return
                if path.startswith("/chunked/"):
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(data), 700):
                        part = data[i:i + 700]
                        self.wfile.write(b"%x;ext=1\r\n" % len(part) + part + b"\r\n")
                    self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
                elif path.startswith("/eof/"):
                    self.send_response(200)
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data)
                    self.close_connection = True
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)

            def _upload(self, method):
                body = self._body()
                owner.uploads.append((method, self.path, dict(self.headers), body))
                reply = b"stored %d" % len(body)
                self.send_response(201 if method == "PUT" else 200)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_POST(self):
                self._upload("POST")

            def do_PUT(self):
                self._upload("PUT")

        class Server(ThreadingHTTPServer):
            def finish_request(self, request, client_address):
                # the TLS handshake in the request's thread: a client that fails it (a
                # certificate it refuses) cannot hold up the others
                if tls is not None:
                    try:
                        request = tls.wrap_socket(request, server_side=True)
                    except OSError as exc:
                        owner.tls_failures.append(repr(exc))
                        return
                super().finish_request(request, client_address)

        self.tls_failures: list[str] = []
        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "%s://127.0.0.1:%d" % ("https" if tls is not None else "http", self.port)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
