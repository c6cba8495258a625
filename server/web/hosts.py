"""Which host names the HTTP side answers to, and the Host/Origin checks built on them.

A browser tricked by DNS rebinding sends the attacker's name in ``Host``; a cross-site form
or fetch sends the attacker's origin in ``Origin`` (and ``Sec-Fetch-Site: cross-site``).
Refusing both (403) keeps a web page the operator happens to open from reaching the API.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import psutil

WILDCARDS = ("", "0.0.0.0", "::", "[::]")
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def hostname_of(netloc: str) -> str:
    """``Host`` header / URL netloc → lower-case host name without port or brackets."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        return netloc[1:netloc.find("]")] if "]" in netloc else netloc
    if netloc.count(":") == 1:
        netloc = netloc.split(":", 1)[0]
    return netloc.rstrip(".")


def _interface_addresses() -> set[str]:
    names = set()
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                names.add(address.address.split("%", 1)[0].lower())
    return names


def allowed_hosts(config) -> frozenset[str]:
    """``http.allowed_hosts`` when set; otherwise ``server.public_url``'s host, the bind
    address (with a wildcard bind: this machine's name and interface addresses) and
    localhost."""
    configured = config.http["allowed_hosts"]
    if configured:
        return frozenset(hostname_of(name) for name in configured)
    names = set(LOCAL_NAMES)
    public = config.server["public_url"]
    if public:
        names.add(hostname_of(urlsplit(public).netloc))
    bind = config.http["host"]
    if bind in WILDCARDS:
        hostname = socket.gethostname().lower()
        names.update({hostname, socket.getfqdn().lower()})
        names.update(_interface_addresses())
    else:
        names.add(hostname_of(bind))
    names.discard("")
    return frozenset(names)


def host_allowed(host_header: str | None, allowed: frozenset[str]) -> bool:
    return bool(host_header) and hostname_of(host_header) in allowed


def public_origin(config) -> str | None:
    """``scheme://host[:port]`` of ``server.public_url`` (the origin browsers use when a
    reverse proxy stands in front), or None."""
    parts = urlsplit(config.server["public_url"])
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else None


def cross_site(method: str, headers, host_header: str | None,
               trusted_origin: str | None = None) -> str | None:
    """Why a state-changing request looks cross-site (or None when it does not): its
    ``Origin`` is neither this very server (same host and port as ``Host``) nor the public
    URL's origin, or the browser says ``Sec-Fetch-Site`` is not same-origin. Clients that
    send neither header (curl, scripts) are not browsers on a foreign page and pass; they
    still need a token."""
    if method in ("GET", "HEAD", "OPTIONS"):
        return None
    origin = headers.get("Origin")
    if origin is not None:
        if origin == "null":
            return "Origin is null (sandboxed or opaque page)"
        parts = urlsplit(origin)
        same_server = (parts.netloc.lower() == (host_header or "").lower()
                       and parts.scheme in ("http", "https"))
        if not same_server and origin.lower().rstrip("/") != trusted_origin:
            return f"Origin {origin} is not this server"
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site}"
    return None
