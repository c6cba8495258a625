"""Who may call what on the HTTP side, checked before every request (``install(app)``).

In order: the Host check (403), the cross-site check of state-changing requests (403),
authentication by ``Authorization: Bearer <token>`` or the dashboard's session cookie (401,
or a redirect to the login page for pages), the route's least role (403), the per-token
/ per-session rate limit (429 with Retry-After), the CSRF token of a cookie-authenticated
state-changing request (403). Every response then gets the security headers.

Routes are classified by endpoint in :data:`ROUTE_ROLES`; an endpoint nobody classified
needs admin (secure by default) and the test suite fails until it is classified.
Station-facing routes (ThingSpeak-compatible API, firmware bundles, diagnostics uploads) are
not operator routes: they authenticate as their protocol does (ThingSpeak API keys; firmware
bundles are public and signed; diagnostics uploads: see server/web/files.py).
"""

from __future__ import annotations

import hmac
import logging
from urllib.parse import quote

from flask import Flask, current_app, g, jsonify, redirect, request

from server.accounts import ROLES, role_allows
from server.web.hosts import allowed_hosts, cross_site, host_allowed, public_origin
from server.web.ratelimit import RateLimiter

log = logging.getLogger(__name__)

SESSION_COOKIE = "picocharge_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")

OPEN = "open"  # no credentials: health, the login page, the dashboard's CSS/JS
STATION = "station"  # the station's own protocol authenticates (see the module docstring)

# endpoint → least role. Reads are viewer; operations, idTags, reservations operator;
# stations and their keys, channels and bridges (they hold keys), accounts, firmware admin.
ROUTE_ROLES: dict[str, str] = {
    "api.health": OPEN,
    "static": OPEN,
    "dashboard.static": OPEN,
    "login.login_page": OPEN,
    "login.login_submit": OPEN,  # checks its own double-submit CSRF token and rate limit
    "login.logout": "viewer",
    "dashboard.overview": "viewer",
    "dashboard.station": "viewer",
    # reads
    "api.list_chargepoints": "viewer",
    "api.list_unknown_chargepoints": "viewer",
    "api.get_chargepoint": "viewer",
    "api.connectors": "viewer",
    "api.status_history": "viewer",
    "api.chargepoint_events": "viewer",
    "api.events": "viewer",
    "api.meter_values": "viewer",
    "api.telemetry": "viewer",
    "api.telemetry_stats": "viewer",
    "api.operations": "viewer",
    "api.transactions": "viewer",
    "api.chargepoint_transactions": "viewer",
    "api.transaction": "viewer",
    "api.list_id_tags": "viewer",
    "api.get_id_tag": "viewer",
    "api.firmware_bundles": "viewer",
    "api.diagnostics_files": "viewer",
    "api.stats": "viewer",
    "api.openapi": "viewer",
    "accounts_api.me": "viewer",
    "metrics.exposition": "viewer",  # Prometheus scrapes with a viewer token
    # operations on stations (see OPERATION_ROLES for the admin ones), idTags
    "api.run_operation": "operator",
    "api.create_id_tag": "operator",
    "api.patch_id_tag": "operator",
    "api.block_id_tag": "operator",
    "api.unblock_id_tag": "operator",
    "api.expire_id_tag": "operator",
    "api.delete_id_tag": "operator",
    # stations and their keys, ThingSpeak channels and bridges (their keys), accounts
    "api.create_chargepoint": "admin",
    "api.patch_chargepoint": "admin",
    "api.delete_chargepoint": "admin",
    "api.ts_channels": "admin",
    "api.ts_create_channel": "admin",
    "api.ts_channel": "admin",
    "api.ts_delete_channel": "admin",
    "api.ts_regenerate_keys": "admin",
    "api.ts_bridges": "admin",
    "api.ts_bridge": "admin",
    "api.ts_put_bridge": "admin",
    "api.ts_delete_bridge": "admin",
    "accounts_api.list_users": "admin",
    "accounts_api.create_user": "admin",
    "accounts_api.update_user": "admin",
    "accounts_api.delete_user": "admin",
    "accounts_api.list_tokens": "admin",
    "accounts_api.create_token": "admin",
    "accounts_api.revoke_token": "admin",
    # station-facing
    "thingspeak.update": STATION,
    "thingspeak.update_json": STATION,
    "thingspeak.bulk_update": STATION,
    "thingspeak.feeds": STATION,
    "thingspeak.field_feed": STATION,
    "thingspeak.last_entry": STATION,
    "files.firmware_file": STATION,  # bundles are public; their manifest is signed
    "files.upload_diagnostics": STATION,
    "files.upload_diagnostics_named": STATION,
    "files.upload_diagnostics_with_token": STATION,
    "files.upload_diagnostics_named_with_token": STATION,
}

# OCPP operations that change a station's security or code: admin, not operator.
# ChangeConfiguration can set AuthorizationKey (locks the station out), UpdateFirmware
# reflashes it, GetDiagnostics makes it upload its logs wherever the caller says.
OPERATION_ROLES = {"ChangeConfiguration": "admin", "UpdateFirmware": "admin",
                   "GetDiagnostics": "admin"}


def required_role(endpoint: str | None, view_args: dict | None) -> str:
    if endpoint is None:  # no route matched: 404/405 only for those allowed to read
        return "viewer"
    role = ROUTE_ROLES.get(endpoint)
    if role is None:
        log.error("endpoint %s has no role in ROUTE_ROLES: admin only", endpoint)
        return "admin"
    if endpoint == "api.run_operation":
        return OPERATION_ROLES.get((view_args or {}).get("operation"), role)
    return role


def _is_page() -> bool:
    # /metrics is for Prometheus: a 401 it can report, never a redirect to the login page
    return not request.path.startswith("/api/") and request.path != "/metrics"


def _refuse(status: int, reason: str, **headers):
    if _is_page():
        response = current_app.response_class(f"{reason}\n", status=status, mimetype="text/plain")
    else:
        names = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests"}
        response = jsonify(error=names.get(status, "Error"), reason=reason)
        response.status_code = status
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


def authenticate(accounts):
    """The caller as {kind, key, role, name, csrf} or None; ``False`` when a Bearer token
    was presented and is not valid (no fallback to the cookie then)."""
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer":
            return False
        token = accounts.token_role(secret.strip())
        if token is None:
            return False
        return {"kind": "token", "key": "token:" + token["id"], "role": token["role"],
                "name": "token:" + token["id"], "csrf": None}
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        session = accounts.session(cookie)
        if session is not None:
            return {"kind": "session", "key": "session:" + session["id_hash"],
                    "role": session["role"], "name": session["username"],
                    "csrf": session["csrf_token"]}
    return None


def _csrf_ok(principal: dict) -> bool:
    presented = request.headers.get(CSRF_HEADER)
    if presented is None and request.mimetype in ("application/x-www-form-urlencoded",
                                                   "multipart/form-data"):
        presented = request.form.get(CSRF_FIELD)
    return bool(presented) and hmac.compare_digest(presented.encode(), principal["csrf"].encode())


def install(app: Flask, services) -> None:
    config = services.config
    hosts = allowed_hosts(config)
    trusted_origin = public_origin(config)
    rate = config.auth["rate_limit_per_second"]
    limiter = RateLimiter(rate, config.auth["rate_limit_burst"]) if rate > 0 else None  # 0: off
    # Password guesses per client address: a burst of 10, then one every 2 seconds (argon2
    # makes each guess cost ~0.1 s of CPU anyway; this keeps one address from taking every
    # thread). Used by server/web/login.py.
    login_limiter = RateLimiter(0.5, 10)
    # Station credentials on the HTTP side (diagnostics uploads): per address a burst of
    # 10 wrong keys (or checks of an earlier version's argon2id hash, ~20 ms and 19 MiB
    # each), then one a second; a station's own upload with its right key is not counted
    station_limiter = RateLimiter(1.0, 10)
    # every request to a station route, per address: they skip the operator limiter
    station_rate = config.http["station_rate_per_address"]
    station_routes = (RateLimiter(station_rate, config.http["station_burst_per_address"])
                      if station_rate > 0 else None)
    app.extensions["picocharge_auth"] = {"allowed_hosts": hosts, "limiter": limiter,
                                         "login_limiter": login_limiter,
                                         "station_limiter": station_limiter}
    log.info("HTTP side answers to host names: %s", ", ".join(sorted(hosts)))

    @app.before_request
    def guard():
        g.principal = None
        role = required_role(request.endpoint, request.view_args)
        if role == STATION:
            wait = station_routes.take(request.remote_addr or "?") if station_routes else 0
            if wait:
                return _refuse(429, "too many requests from this address",
                               Retry_After=station_routes.retry_after_header(wait))
            return None
        host = request.headers.get("Host")
        if not host_allowed(host, hosts):
            return _refuse(403, f"host {host!r} is not one this server answers to "
                                "(http.allowed_hosts)")
        why = cross_site(request.method, request.headers, host, trusted_origin)
        if why:
            return _refuse(403, f"cross-site request refused: {why}")
        if role == OPEN:
            return None
        principal = authenticate(services.accounts)
        if not principal:
            wait = limiter.take("addr:" + (request.remote_addr or "?")) if limiter else 0
            if wait:
                return _refuse(429, "too many requests", Retry_After=limiter.retry_after_header(wait))
            if principal is None and _is_page() and request.method == "GET":
                return redirect("/login?next=" + quote(request.full_path.rstrip("?"), safe="/"))
            return _refuse(401, "invalid or revoked token" if principal is False
                           else "authentication required: Authorization: Bearer <token> or log in",
                           WWW_Authenticate='Bearer realm="PicoCharge"')
        if not role_allows(principal["role"], role):
            return _refuse(403, f"needs role {role}; {principal['name']} has {principal['role']}")
        wait = limiter.take(principal["key"]) if limiter else 0
        if wait:
            return _refuse(429, "too many requests for this token/session",
                           Retry_After=limiter.retry_after_header(wait))
        if principal["kind"] == "session" and request.method in UNSAFE and not _csrf_ok(principal):
            return _refuse(403, f"CSRF token missing or wrong (send the {CSRF_HEADER} header)")
        g.principal = principal
        return None

    @app.context_processor
    def principal_in_templates():
        principal = g.get("principal")
        return {"principal": principal, "csrf_token": principal["csrf"] if principal else None,
                "roles": ROLES}

    @app.after_request
    def security_headers(response):
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on
        # the page's own form POSTs, which the cross-site check must refuse
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        # the browsers' old XSS filter could be abused to cut scripts out of a page; the
        # CSP is the protection (OWASP: set it to 0)
        headers.setdefault("X-XSS-Protection", "0")
        headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if request.is_secure:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if g.get("principal") is not None or request.path.startswith("/api/"):
            headers.setdefault("Cache-Control", "no-store")
        return response


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
