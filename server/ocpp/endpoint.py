"""The OCPP 1.6-J WebSocket endpoint: ``ws[s]://HOST:PORT/ocpp/<chargePointId>``,
subprotocol ``ocpp1.6`` required, HTTP Basic auth (security profile 1) and TLS
(profile 2) when a certificate is configured."""

from __future__ import annotations

import asyncio
import base64
import binascii
import http
import logging
import ssl
from urllib.parse import unquote

from websockets.asyncio.server import serve

from server.fleet import check_key
from server.ocpp.central import CentralSystem
from server.ocpp.connection import ChargePointConnection

log = logging.getLogger(__name__)

SUBPROTOCOL = "ocpp1.6"
PATH_PREFIX = "/ocpp/"
MAX_ID_LENGTH = 48
# Frames above max_message_bytes are answered with a CALLERROR; only frames beyond this
# hard cap are refused by the WebSocket layer itself (close code 1009).
HARD_FRAME_CAP = 4 * 1024 * 1024


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


class OcppEndpoint:
    def __init__(self, central: CentralSystem) -> None:
        self.central = central
        self.config = central.config
        self.server = None
        self.port: int | None = None
        self.scheme = "ws"

    def _ssl_context(self) -> ssl.SSLContext | None:
        cert, key = self.config.ocpp["tls_cert"], self.config.ocpp["tls_key"]
        if not cert:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key or None)
        return context

    def _refuse(self, connection, status: http.HTTPStatus, reason: str, **headers):
        self.central.counters["handshakes_refused"] += 1
        log.info("refused %s: %s", connection.remote_address, reason)
        response = connection.respond(status, reason + "\n")
        for name, value in headers.items():
            response.headers[name] = value
        return response

    def process_request(self, connection, request):
        cp_id = chargepoint_id_from_path(request.path)
        if cp_id is None:
            return self._refuse(connection, http.HTTPStatus.NOT_FOUND,
                                "OCPP endpoint is /ocpp/<chargePointId>")
        offered = [p.strip() for value in request.headers.get_all("Sec-WebSocket-Protocol")
                   for p in value.split(",")]
        if SUBPROTOCOL not in offered:
            return self._refuse(connection, http.HTTPStatus.BAD_REQUEST,
                                f"subprotocol {SUBPROTOCOL} is required")
        record = self.central.fleet.get(cp_id)
        credentials = basic_credentials(request.headers.get("Authorization"))
        stored = record.get("auth_key_hash") if record else None
        challenge = {"WWW-Authenticate": 'Basic realm="OCPP", charset="UTF-8"'}
        if stored:
            if (credentials is None or credentials[0] != cp_id
                    or not check_key(credentials[1], stored)):
                return self._refuse(connection, http.HTTPStatus.UNAUTHORIZED,
                                    "invalid or missing credentials", **challenge)
        elif self.config.ocpp["require_auth"]:
            return self._refuse(connection, http.HTTPStatus.UNAUTHORIZED,
                                "charge point has no AuthorizationKey registered", **challenge)
        elif credentials is not None and credentials[0] != cp_id:
            return self._refuse(connection, http.HTTPStatus.UNAUTHORIZED,
                                "Basic auth username must be the charge point id", **challenge)
        return None

    async def handler(self, ws) -> None:
        cp_id = chargepoint_id_from_path(ws.request.path)
        credentials = basic_credentials(ws.request.headers.get("Authorization"))
        conn = ChargePointConnection(cp_id, ws, self.central,
                                     credentials[1] if credentials else None)
        self.central.attach(conn)
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

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await asyncio.wait_for(self.server.wait_closed(), 10)
