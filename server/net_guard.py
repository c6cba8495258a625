"""Server-side fetches that cannot be pointed at the server's own network (SSRF guard).

``check_url`` resolves a URL's host and refuses it when any address is loopback,
link-local, private, multicast, reserved or unspecified. ``guarded_opener`` builds a
urllib opener whose connections check the address they actually connect to, so a name
that resolved to a public address when configured and to 127.0.0.1 later (DNS rebinding)
is refused at connect time too; redirects go through the same check, and proxies from
the environment are not used. ``allow_private = True`` (``thingspeak.allow_private_targets``)
lifts the address rule for labs and tests.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import urllib.parse
import urllib.request


class TargetRefused(ValueError):
    """The URL points at an address a server-side fetch must not reach."""


def address_problem(address: str) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for flag in ("is_loopback", "is_link_local", "is_private", "is_multicast", "is_reserved",
                 "is_unspecified"):
        if getattr(ip, flag):
            return f"{address} is {flag[3:].replace('_', '-')}"
    if not ip.is_global:
        return f"{address} is not globally routable"
    return None


def resolve_checked(host: str, port: int, allow_private: bool) -> list[tuple]:
    """getaddrinfo results for host:port, every address checked."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused(f"cannot resolve {host!r}: {exc}") from None
    if not infos:
        raise TargetRefused(f"{host!r} has no address")
    if not allow_private:
        for info in infos:
            problem = address_problem(info[4][0])
            if problem:
                raise TargetRefused(f"{host!r} resolves to a non-public address ({problem}); "
                                    "set thingspeak.allow_private_targets to allow it")
    return infos


def check_url(url: str, allow_private: bool) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused("url must be an http(s) URL such as https://api.thingspeak.com")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TargetRefused("url has an invalid port") from None
    resolve_checked(parts.hostname, port, allow_private)


def _connect(host: str, port: int, timeout, allow_private: bool) -> socket.socket:
    error: OSError | None = None
    for family, kind, proto, _, address in resolve_checked(host, port, allow_private):
        sock = socket.socket(family, kind, proto)
        try:
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"cannot connect to {host}:{port}")


def guarded_opener(allow_private: bool) -> urllib.request.OpenerDirector:
    class GuardedHTTPConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = _connect(self.host, self.port, self.timeout, allow_private)

    class GuardedHTTPSConnection(http.client.HTTPSConnection):
        def connect(self):
            sock = _connect(self.host, self.port, self.timeout, allow_private)
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)

    class GuardedHTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(GuardedHTTPConnection, req)

    class GuardedHTTPSHandler(urllib.request.HTTPSHandler):
        def __init__(self):
            super().__init__(context=ssl.create_default_context())

        def https_open(self, req):
            return self.do_open(GuardedHTTPSConnection, req, context=self._context)

    return urllib.request.build_opener(urllib.request.ProxyHandler({}), GuardedHTTPHandler,
                                       GuardedHTTPSHandler())
