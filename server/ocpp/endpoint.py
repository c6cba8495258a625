"""The OCPP 1.6-J WebSocket endpoint: ``ws[s]://HOST:PORT/ocpp/<chargePointId>``,
subprotocol ``ocpp1.6`` required.

Who may connect (OCPP 1.6 security whitepaper profiles):
- profile 1 (ws) and 2 (wss): HTTP Basic auth, username = chargePointId, password = the
  charge point's AuthorizationKey, checked against its argon2id hash through the fleet's
  verification cache (the KDF runs in a worker thread, never on the event loop);
- profile 3 (wss with ``ocpp.tls_client_ca``): a client certificate signed by that CA whose
  subject CN equals the chargePointId; no Basic auth needed.
With ``ocpp.require_auth`` (the default) a charge point without a key or certificate is
refused. Every refusal happens at the handshake and writes nothing to the store; the
handshake rate and open connections per address, and the handshakes being verified at
once, are bounded (429 / 503).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import http
import logging
import ssl
from urllib.parse import unquote

from websockets.asyncio.server import serve

from server.ocpp.admission import HandshakeLimiter
from server.ocpp.central import CentralSystem
from server.ocpp.connection import ChargePointConnection
from server.station_keys import key_problem

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"
PATH_PREFIX = "/ocpp/"
MAX_ID_LENGTH = 48
# Frames above max_message_bytes are answered with a CALLERROR; only frames beyond this
# hard cap are refused by the WebSocket layer itself (close code 1009).
HARD_FRAME_CAP = 4 * 1024 * 1024
CHALLENGE = {"WWW-Authenticate": 'Basic realm="OCPP", charset="UTF-8"'}


class _Busy(Exception):
    """Too many handshakes are being verified at once."""


def chargepoint_id_from_path(path: str) -> str | None:
    path = path.split("?", 1)[0]
    if not path.startswith(PATH_PREFIX):
        return None
    cp_id = unquote(path[len(PATH_PREFIX):])
    if not cp_id or "/" in cp_id or len(cp_id) > MAX_ID_LENGTH or not cp_id.isprintable():
        return None
    return cp_id


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def certificate_common_name(connection) -> str | None:
    """The subject CN of the verified client certificate, or None without one."""
    transport = getattr(connection, "transport", None)
    certificate = transport.get_extra_info("peercert") if transport is not None else None
    if not certificate:
        return None
    names = [value for rdn in certificate.get("subject", ()) for key, value in rdn
             if key == "commonName"]
    return names[-1] if names else None


class OcppEndpoint:
    def __init__(self, central: CentralSystem) -> None:
        self.central = central
        self.config = central.config
        self.limiter = HandshakeLimiter(self.config.ocpp)
        self.server = None
        self.port: int | None = None
        self.scheme = "ws"

    def _ssl_context(self) -> ssl.SSLContext | None:
        ocpp = self.config.ocpp
        cert, key, client_ca = ocpp["tls_cert"], ocpp["tls_key"], ocpp["tls_client_ca"]
        if not cert:
            if client_ca:
                raise ValueError("ocpp.tls_client_ca (profile 3) needs ocpp.tls_cert and tls_key")
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key or None)
        if client_ca:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = (ssl.CERT_REQUIRED if ocpp["tls_client_cert_required"]
                                   else ssl.CERT_OPTIONAL)
        return context

    def _refuse(self, connection, status: http.HTTPStatus, reason: str, **headers):
        self.central.counters["handshakes_refused"] += 1
        self.central.counters[f"handshakes_refused.{status.value}"] += 1
        log.info("refused %s: %s", connection.remote_address, reason)
        response = connection.respond(status, reason + "\n")
        for name, value in headers.items():
            response.headers[name] = value
        return response

    async def process_request(self, connection, request):
        address = connection.remote_address[0] if connection.remote_address else "?"
        if not self.limiter.allow_handshake(address):
            return self._refuse(connection, http.HTTPStatus.TOO_MANY_REQUESTS,
                                "too many handshakes from this address", **{"Retry-After": "5"})
        if not self.limiter.allow_connection(address):
            return self._refuse(connection, http.HTTPStatus.TOO_MANY_REQUESTS,
                                "too many connections from this address", **{"Retry-After": "30"})
        self.limiter.track(address, connection)
        cp_id = chargepoint_id_from_path(request.path)
        if cp_id is None:
            return self._refuse(connection, http.HTTPStatus.NOT_FOUND,
                                "OCPP endpoint is /ocpp/<chargePointId>")
        offered = [p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol")
                   for p in value.split(",")]
        if SUBPROTOCOL not in offered:
            return self._refuse(connection, http.HTTPStatus.BAD_REQUEST,
                                f"subprotocol {SUBPROTOCOL} is required")
        try:
            refusal = await self._authenticate(connection, request, cp_id)
        except _Busy:
            return self._refuse(connection, http.HTTPStatus.SERVICE_UNAVAILABLE,
                                "too many handshakes in progress", **{"Retry-After": "5"})
        if refusal is not None:
            status, reason = refusal
            extra = CHALLENGE if status == http.HTTPStatus.UNAUTHORIZED else {}
            return self._refuse(connection, status, reason, **extra)
        self.central.counters["handshakes_admitted"] += 1
        return None

    async def _authenticate(self, connection, request, cp_id: str):
        """None to admit, else (status, reason)."""
        ocpp = self.config.ocpp
        record = self.central.fleet.get(cp_id)
        unregistered = record is None or record.get("registration") is None
        common_name = certificate_common_name(connection)
        if common_name is not None:  # profile 3: the certificate is the credential
            if common_name != cp_id:
                return (http.HTTPStatus.FORBIDDEN,
                        "the client certificate belongs to another charge point")
            if unregistered and ocpp["require_auth"] and not ocpp["auto_register"]:
                return http.HTTPStatus.UNAUTHORIZED, "unknown charge point"
            self.central.counters["handshakes_certificate"] += 1
            return None
        credentials = basic_credentials(request.headers.get("Authorization"))
        if credentials is not None and credentials[0] != cp_id:
            return http.HTTPStatus.UNAUTHORIZED, "Basic auth username must be the charge point id"
        stored = record.get("auth_key_hash") if record else None
        if stored:
            if credentials is None:
                return http.HTTPStatus.UNAUTHORIZED, "credentials required"
            if not await self._verify(cp_id, credentials[1], stored):
                return http.HTTPStatus.UNAUTHORIZED, "invalid credentials"
            request.picocharge_key_checked = True  # checked again once attached (handler)
            return None
        if not ocpp["require_auth"]:
            return None  # lab shortcut: keyless charge points are let in
        if unregistered and ocpp["auto_register"] and credentials is not None:
            problem = key_problem(credentials[1])
            if problem:
                return http.HTTPStatus.UNAUTHORIZED, problem
            return None  # the key is stored at its BootNotification
        if unregistered:
            return http.HTTPStatus.UNAUTHORIZED, "unknown charge point"
        return http.HTTPStatus.UNAUTHORIZED, "charge point has no AuthorizationKey registered"

    async def _off_loop(self, func, *args):
        if not self.limiter.begin_verification():
            raise _Busy()
        try:
            return await asyncio.to_thread(func, *args)
        finally:
            self.limiter.end_verification()

    async def _verify(self, cp_id: str, key: str, stored: str) -> bool:
        keys = self.central.fleet.keys
        if keys.is_current(stored):  # a microsecond: on the loop
            return keys.matches(cp_id, key, stored)
        # a hash of an earlier version (argon2id): checked off the loop, counted against
        # max_unauthenticated_handshakes, then replaced by the current form
        if not await self._off_loop(keys.verify, cp_id, key, stored):
            return False
        self.central.fleet.upgrade_key_hash(cp_id, stored, keys.hash_key(cp_id, key))
        return True

    def warn_about_lab_shortcuts(self) -> None:
        ocpp = self.config.ocpp
        if not ocpp["require_auth"]:
            log.warning("SECURITY: ocpp.require_auth is false: any client can connect as any "
                        "charge point that has no AuthorizationKey. Lab use only.")
        if ocpp["auto_register"]:
            log.warning("SECURITY: ocpp.auto_register is true: any client that presents a "
                        "16-40 character key becomes a registered charge point under the id it "
                        "chooses. Lab use only.")
        if self.scheme == "ws":
            log.warning("OCPP endpoint without TLS (security profile 1): AuthorizationKeys cross "
                        "the network in the clear; configure ocpp.tls_cert for profile 2/3.")

    async def handler(self, ws) -> None:
        cp_id = chargepoint_id_from_path(ws.request.path)
        credentials = basic_credentials(ws.request.headers.get("Authorization"))
        conn = ChargePointConnection(cp_id, ws, self.central,
                                     credentials[1] if credentials else None)
        self.central.attach(conn)
        if getattr(ws.request, "picocharge_key_checked", False):
            # an operator may have changed the key or deleted the station while this
            # handshake was being verified: its revocation found no session to end yet
            record = self.central.fleet.get(cp_id)
            if record is None or not self.central.fleet.keys.matches(
                    cp_id, credentials[1], record.get("auth_key_hash")):
                self.central.revoke(cp_id, "its key changed while it connected")
        try:
            await conn.run()
        finally:
            self.central.detach(conn)

    async def start(self) -> None:
        context = self._ssl_context()
        self.scheme = "wss" if context else "ws"
        ocpp = self.config.ocpp
        self.server = await serve(
            self.handler, ocpp["host"], ocpp["port"],
            subprotocols=[SUBPROTOCOL], process_request=self.process_request,
            max_size=HARD_FRAME_CAP, compression=None, ssl=context,
            ping_interval=ocpp["websocket_ping_interval"] or None,
            ping_timeout=ocpp["websocket_ping_interval"] or None,
            max_queue=16,
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.warn_about_lab_shortcuts()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await asyncio.wait_for(self.server.wait_closed(), 10)
