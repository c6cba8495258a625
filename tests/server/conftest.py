"""Fixtures for the server tests: an in-process server on ephemeral ports, an HTTP helper,
and an independent OCPP 1.6 charge point built on the published ``ocpp`` package."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import socket
import urllib.error
import urllib.request
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

from server.app import Application
from server.config import load_config
from tests.waiting import wait_until  # noqa: F401 - the server tests import it from here

# The admin API token every test server is seeded with; http() sends it unless told otherwise.
ADMIN_TOKEN = "test-admin-token-0123456789abcdef0123456789"
ANONYMOUS = None


def make_config(tmp_path, overrides: dict | None = None):
    values = {
        "auth.admin_token": ADMIN_TOKEN,
        "server.data_dir": str(tmp_path / "var"),
        "ocpp.host": "127.0.0.1", "ocpp.port": 0,
        "http.host": "127.0.0.1", "http.port": 0,
        "mqtt.embedded_port": 0,
        "ocpp.call_timeout": 5.0,
        "ocpp.websocket_ping_interval": 0.0,
        "thingspeak.bridge_tick": 0.1,
    }
    values.update(overrides or {})
    return load_config(None, environ={}, overrides=values)


@pytest.fixture
def start_server(tmp_path):
    apps: list[Application] = []

    def start(overrides: dict | None = None) -> Application:
        app = Application(make_config(tmp_path, overrides)).start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


@pytest.fixture
def server(start_server) -> Application:
    return start_server()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(app, method: str, path: str, body: Any = None, raw: bytes | None = None,
         headers: dict | None = None, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
    """(status, parsed JSON or text) for a request to the server's HTTP side, as the admin
    token unless ``token`` says otherwise (``ANONYMOUS`` for none)."""
    url = f"http://127.0.0.1:{app.ports['http']}{path}"
    headers = dict(headers or {})
    if token:
        headers.setdefault("Authorization", f"Bearer {token}")
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, content, ctype = response.status, response.read(), response.headers.get(
                "Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, content, ctype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    text = content.decode()
    if "json" in ctype and text:
        return status, json.loads(text)
    return status, text


async def ahttp(app, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """The same from a coroutine, off the event loop that runs the charge point."""
    return await asyncio.to_thread(http, app, method, path, body)


DEFAULT_KEY = object()  # "the station's own test key" (see station_key)


def station_key(cp_id: str) -> str:
    """The AuthorizationKey the test helpers give a station: 24 characters, per id."""
    return "k" + hashlib.sha256(cp_id.encode()).hexdigest()[:23]


def register(app, cp_id: str, auth_key=DEFAULT_KEY, registration: str = "Accepted"):
    """Register cp_id with its station_key (auth_key=None: without a key)."""
    if auth_key is DEFAULT_KEY:
        auth_key = station_key(cp_id)
    body = {"id": cp_id, "registration": registration}
    if auth_key:
        body["auth_key"] = auth_key
    status, data = http(app, "POST", "/api/v1/chargepoints", body)
    assert status in (200, 201), data
    return data


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class ChargePointClient(OcppChargePoint):
    """An OCPP 1.6 charge point that answers every central-system operation validly and
    records what it was asked."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[tuple[str, dict]] = []

    def _got(self, action: str, kwargs: dict) -> None:
        self.received.append((action, kwargs))

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, **kw):
        self._got("CancelReservation", kw)
        return call_result.CancelReservation(status="Accepted")

    @on(Action.change_availability)
    def on_change_availability(self, **kw):
        self._got("ChangeAvailability", kw)
        return call_result.ChangeAvailability(status="Accepted")

    @on(Action.change_configuration)
    def on_change_configuration(self, **kw):
        self._got("ChangeConfiguration", kw)
        return call_result.ChangeConfiguration(status="Accepted")

    @on(Action.clear_cache)
    def on_clear_cache(self, **kw):
        self._got("ClearCache", kw)
        return call_result.ClearCache(status="Accepted")

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(self, **kw):
        self._got("ClearChargingProfile", kw)
        return call_result.ClearChargingProfile(status="Accepted")

    @on(Action.data_transfer)
    def on_data_transfer(self, **kw):
        self._got("DataTransfer", kw)
        return call_result.DataTransfer(status="Accepted", data="pong")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(self, **kw):
        self._got("GetCompositeSchedule", kw)
        return call_result.GetCompositeSchedule(
            status="Accepted", connector_id=kw["connector_id"], schedule_start=now_iso(),
            charging_schedule={"charging_rate_unit": "A",
                               "charging_schedule_period": [{"start_period": 0, "limit": 16.0}]})

    @on(Action.get_configuration)
    def on_get_configuration(self, **kw):
        self._got("GetConfiguration", kw)
        return call_result.GetConfiguration(configuration_key=[
            {"key": "HeartbeatInterval", "readonly": False, "value": "60"}])

    @on(Action.get_diagnostics)
    def on_get_diagnostics(self, **kw):
        self._got("GetDiagnostics", kw)
        return call_result.GetDiagnostics(file_name="diag.log")

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **kw):
        self._got("GetLocalListVersion", kw)
        return call_result.GetLocalListVersion(list_version=3)

    @on(Action.remote_start_transaction)
    def on_remote_start(self, **kw):
        self._got("RemoteStartTransaction", kw)
        return call_result.RemoteStartTransaction(status="Accepted")

    @on(Action.remote_stop_transaction)
    def on_remote_stop(self, **kw):
        self._got("RemoteStopTransaction", kw)
        return call_result.RemoteStopTransaction(status="Accepted")

    @on(Action.reserve_now)
    def on_reserve_now(self, **kw):
        self._got("ReserveNow", kw)
        return call_result.ReserveNow(status="Accepted")

    @on(Action.reset)
    def on_reset(self, **kw):
        self._got("Reset", kw)
        return call_result.Reset(status="Accepted")

    @on(Action.send_local_list)
    def on_send_local_list(self, **kw):
        self._got("SendLocalList", kw)
        return call_result.SendLocalList(status="Accepted")

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, **kw):
        self._got("SetChargingProfile", kw)
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.trigger_message)
    def on_trigger_message(self, **kw):
        self._got("TriggerMessage", kw)
        return call_result.TriggerMessage(status="Accepted")

    @on(Action.unlock_connector)
    def on_unlock_connector(self, **kw):
        self._got("UnlockConnector", kw)
        return call_result.UnlockConnector(status="Unlocked")

    @on(Action.update_firmware)
    def on_update_firmware(self, **kw):
        self._got("UpdateFirmware", kw)
        return call_result.UpdateFirmware()


def ocpp_url(app, cp_id: str) -> str:
    return f"ws://127.0.0.1:{app.ports['ocpp']}/ocpp/{cp_id}"


def basic_auth(cp_id: str, password: str) -> dict:
    token = base64.b64encode(f"{cp_id}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _auth_headers(cp_id: str, password) -> dict:
    if password is DEFAULT_KEY:
        password = station_key(cp_id)
    return basic_auth(cp_id, password) if password else {}


@asynccontextmanager
async def charge_point(app, cp_id: str, password=DEFAULT_KEY, boot: bool = True,
                       cls=ChargePointClient):
    """A connected charge point sending Basic auth with its station_key (password=None:
    without credentials)."""
    headers = _auth_headers(cp_id, password)
    ws = await websockets.connect(ocpp_url(app, cp_id), subprotocols=["ocpp1.6"],
                                  additional_headers=headers, ping_interval=None)
    cp = cls(cp_id, ws, response_timeout=10)
    task = asyncio.create_task(cp.start())
    try:
        if boot:
            answer = await cp.call(call.BootNotification(charge_point_model="PicoW",
                                                         charge_point_vendor="PicoCharge",
                                                         firmware_version="0.1.0"))
            cp.boot_answer = answer
        yield cp
    finally:
        task.cancel()
        await ws.close()


@asynccontextmanager
async def raw_socket(app, cp_id: str, password=DEFAULT_KEY):
    """A bare OCPP WebSocket for hand-made frames, with the station's Basic auth."""
    ws = await websockets.connect(ocpp_url(app, cp_id), subprotocols=["ocpp1.6"],
                                  additional_headers=_auth_headers(cp_id, password),
                                  ping_interval=None, max_size=None)
    try:
        yield ws
    finally:
        await ws.close()


async def exchange(ws, frame) -> list:
    await ws.send(frame if isinstance(frame, str) else json.dumps(frame))
    return json.loads(await asyncio.wait_for(ws.recv(), 5))


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture
def mosquitto(tmp_path):
    """A real Mosquitto broker on a free 127.0.0.1 port, stopped by PID afterwards."""
    import shutil
    import subprocess

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)

    def accepting() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_until(accepting, timeout=10)
        yield {"url": f"mqtt://127.0.0.1:{port}", "port": port, "pid": process.pid}
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def mqtt_publisher(port: int, client_id: str = "test-board", username: str | None = None,
                   password: str | None = None, ca_file: str | None = None):
    """A paho client connected (in the background, reconnecting) to 127.0.0.1:port; with
    `ca_file`, over TLS with the server certificate checked against it."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    if ca_file is not None:
        client.tls_set(ca_certs=ca_file)
    if username is not None:
        client.username_pw_set(username, password)
    # a station registered a moment ago may be refused until the broker has its key
    client.reconnect_delay_set(0.1, 2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def mqtt_station(app, cp_id: str, registered: bool = True):
    """A station on the server's embedded broker with its own credentials (username =
    chargePointId, password = its AuthorizationKey), registered with that key first."""
    if registered:
        register(app, cp_id, station_key(cp_id))
    return mqtt_publisher(app.ports["mqtt"], cp_id, cp_id, station_key(cp_id))


def publish(client, topic: str, payload, qos: int = 1) -> None:
    if not isinstance(payload, (str, bytes)):
        payload = json.dumps(payload)
    wait_until(client.is_connected, timeout=10)
    client.publish(topic, payload, qos=qos).wait_for_publish(5)
