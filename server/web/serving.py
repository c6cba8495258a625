"""The WSGI server under the Flask app: waitress for plain HTTP, cheroot for HTTPS.

waitress has no TLS of its own (and an ssl-wrapped listening socket is not supported by
it), so with ``http.tls_cert``/``http.tls_key`` set the same app runs under cheroot (the
CherryPy server) with its built-in ``ssl`` adapter; both poll with something other than
select(), so a process holding thousands of OCPP sockets is fine.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


def body_limit(path: str, http: dict) -> int:
    """The largest body a request to ``path`` may send: uploads have their own cap, every
    other route the JSON one (request_checks applies the same rule inside the app)."""
    from server.web.request_checks import UPLOAD_PREFIXES

    if path.startswith(UPLOAD_PREFIXES):
        return int(http["max_upload_bytes"])
    return int(http["max_json_bytes"]) + 1


class _BodyLimit:
    """waitress's settings with this request's own body limit."""

    def __init__(self, adj, limit: int) -> None:
        self._adj = adj
        self.max_request_body_size = limit

    def __getattr__(self, name):
        return getattr(self._adj, name)


def _route_limited_channel(http: dict):
    """A waitress channel whose parser holds each request to its route's body limit as soon
    as the headers are read: waitress reads (and spools) a whole body before the app runs,
    so without this an anonymous client could send max_upload_bytes to any route before
    being answered 401 or 413."""
    from waitress.channel import HTTPChannel
    from waitress.parser import HTTPRequestParser

    class RouteLimitedParser(HTTPRequestParser):
        def parse_header(self, header_plus):
            super().parse_header(header_plus)
            self.adj = _BodyLimit(self.adj, min(self.adj.max_request_body_size,
                                                body_limit(self.path or "", http)))

    class RouteLimitedChannel(HTTPChannel):
        parser_class = RouteLimitedParser

    return RouteLimitedChannel


class _Waitress:
    scheme = "http"

    def __init__(self, app, http: dict) -> None:
        from waitress.server import create_server

        # asyncore_use_poll: waitress's default select() fails once the process holds more
        # than 1 024 file descriptors, i.e. past ~1 000 connected charge points.
        self._server = create_server(app, host=http["host"], port=http["port"],
                                     threads=http["threads"], ident="PicoCharge",
                                     max_request_body_size=http["max_upload_bytes"],
                                     asyncore_use_poll=True)
        self._server.channel_class = _route_limited_channel(http)
        self.port = int(self._server.effective_port)
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the listener and every channel from inside waitress's own loop thread
        (closing sockets under a running poll from elsewhere races); the loop ends when its
        map is empty. Requests in progress finish first."""
        server = self._server
        server.task_dispatcher.shutdown(timeout=10)

        def close_everything() -> None:
            for channel in list(server._map.values()):
                if channel is not server.trigger:
                    channel.close()
            server.trigger.close()

        try:
            server.trigger.pull_trigger(close_everything)
        except OSError as exc:
            # the wake-up pipe is gone (seen once, EBADF, in a parallel test run): the loop
            # cannot be asked, so close from here; its poll then ends with errors
            log.error("HTTP server: cannot wake its loop (%s); closing its sockets directly", exc)
            for channel in list(server._map.values()):
                try:
                    channel.close()
                except OSError:
                    pass
        self._thread.join(10)


class _CherootTls:
    scheme = "https"

    def __init__(self, app, http: dict) -> None:
        from cheroot import wsgi
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        server = wsgi.Server((http["host"], http["port"]), app, numthreads=http["threads"],
                             server_name="PicoCharge")
        server.max_request_body_size = http["max_upload_bytes"]
        server.ssl_adapter = BuiltinSSLAdapter(http["tls_cert"], http["tls_key"])
        server.prepare()  # binds and listens: the port is known from here on
        self._server = server
        self.port = int(server.bind_addr[1])
        self._thread = threading.Thread(target=server.serve, name="https", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.stop()
        self._thread.join(10)


def start_http_server(app, http: dict):
    """Listen and serve ``app`` on a thread; the result has ``port``, ``scheme``, ``stop()``."""
    if bool(http["tls_cert"]) != bool(http["tls_key"]):
        raise ValueError("http.tls_cert and http.tls_key go together")
    server = _CherootTls(app, http) if http["tls_cert"] else _Waitress(app, http)
    if http["host"] in ("127.0.0.1", "::1", "localhost"):
        log.info("HTTP side (%s) listens on %s:%d only: set http.host to reach it from other "
                 "machines", server.scheme, http["host"], server.port)
    else:
        log.info("HTTP side (%s) listens on %s:%d", server.scheme, http["host"], server.port)
    return server
