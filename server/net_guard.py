"""Server-side fetches that cannot be pointed at the server's own network (SSRF guard).

``check_url`` resolves a URL's host and refuses it when any address is loopback,
link-local, private, multicast, reserved or unspecified. ``guarded_opener`` builds a
urllib opener whose connections check the address they actually connect to, so a name
that resolved to a public address when configured and to 127.0.0.1 later (DNS rebinding)
is refused at connect time too; redirects go through the same check and may lead only to
http(s) (the opener has no FTP, file or data handler), and proxies from the environment are
not used. IPv6 addresses that carry an IPv4 one (6to4, Teredo, NAT64, mapped) are judged
by the address they carry as well. ``allow_private = True`` (``thingspeak.allow_private_targets``)
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


_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _carried_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to (mapped, 6to4, Teredo, NAT64)."""
    carried = []
    if ip.ipv4_mapped is not None:
        carried.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        carried.append(ip.sixtofour)
    if ip.teredo is not None:
        carried.extend(ip.teredo)
    if ip in _NAT64:
        carried.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return carried


def address_problem(address: str) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    candidates = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.is_site_local:
            return f"{address} is site-local"
        candidates = _carried_ipv4(ip) + candidates
    for candidate in candidates:
        for flag in ("is_loopback", "is_link_local", "is_private", "is_multicast",
                     "is_reserved", "is_unspecified"):
            if getattr(candidate, flag):
                return f"{address} is {flag[3:].replace('_', '-')}"
        if not candidate.is_global:
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

    class HttpOnlyRedirectHandler(urllib.request.HTTPRedirectHandler):
        def http_error_302(self, req, fp, code, msg, headers):
            location = headers.get("location") or headers.get("uri") or ""
            scheme = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, location)).scheme
            if scheme.lower() not in ("http", "https"):
                fp.close()
                raise TargetRefused(f"redirected to a {scheme}: URL; only http(s) is followed")
            return super().http_error_302(req, fp, code, msg, headers)

        http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    # built by hand: build_opener would add FTP, file and data handlers a redirect could use
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.UnknownHandler(), GuardedHTTPHandler(), GuardedHTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), HttpOnlyRedirectHandler(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener
