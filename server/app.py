"""The whole central system in one process: store, fleet, OCPP endpoint (asyncio thread),
MQTT broker + ingest, ThingSpeak channels and bridge, operator accounts, and the Flask app
under waitress (cheroot for HTTPS).

``Application(config).start()`` returns once everything listens; ``ports`` then holds the
bound ports (useful with port 0). ``stop()`` shuts down in an order that loses nothing
accepted: stop listening, drain connections, stop the ingest, flush the store.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading

from server.accounts import Accounts
from server.config import Config
from server.files import DiagnosticsInbox, FirmwareLibrary
from server.fleet import Fleet
from server.metrics import Metrics
from server.mqtt.broker import open_embedded_broker
from server.mqtt.credentials import BrokerCredentials
from server.mqtt.ingest import MqttIngest, parse_broker_url
from server.ocpp.central import CentralSystem
from server.ocpp.endpoint import OcppEndpoint
from server.station_keys import StationKeys, load_secret
from server.store import open_store
from server.thingspeak.bridge import ThingSpeakBridge
from server.thingspeak.channels import ChannelService
from server.web import create_app
from server.web.serving import start_http_server

log = logging.getLogger(__name__)


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


class Application:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.ports: dict[str, int] = {}
        self.store = self.fleet = self.central = self.ingest = None
        self.channels = self.bridge = self.firmware = self.diagnostics = None
        self.accounts: Accounts | None = None
        self.metrics: Metrics | None = None  # GET /metrics
        self.broker = None  # the embedded broker (MosquittoBroker or AmqttBroker), if any
        self.endpoint: OcppEndpoint | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._monitor: asyncio.Future | None = None
        self._http = None
        self.public_url = ""
        self.started = False

    # URLs ----------------------------------------------------------------------
    @property
    def dashboard_url(self) -> str:
        scheme = self._http.scheme if self._http else "http"
        return f"{scheme}://{_display_host(self.config.http['host'])}:{self.ports['http']}/"

    @property
    def ocpp_url(self) -> str:
        scheme = self.endpoint.scheme if self.endpoint else "ws"
        return f"{scheme}://{_display_host(self.config.ocpp['host'])}:{self.ports['ocpp']}/ocpp"

    # Lifecycle -----------------------------------------------------------------
    def start(self) -> Application:
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = open_store(config)
        self.fleet = Fleet(self.store, StationKeys(load_secret(config.data_dir / "station-keys.secret")))
        self.central = CentralSystem(config, self.store, self.fleet)
        self.channels = ChannelService(config, self.store)
        self.bridge = ThingSpeakBridge(config, self.store)
        self.firmware = FirmwareLibrary(config.firmware_dir)
        self.diagnostics = DiagnosticsInbox(config.diagnostics_dir, self.store)
        self.accounts = Accounts(self.store, config.auth["session_hours"])
        self.accounts.bootstrap(config.auth["admin_token"], config.auth["first_admin"],
                                sys.stdout)
        self.metrics = Metrics(self)  # reads the parts when scraped (server/metrics.py)
        self.central.on_operation = self.metrics.observe_operation
        self.store.observe_commits(self.metrics.observe_commit)

        try:
            self._start_ocpp()
            self._start_mqtt()
            self._start_http()
        except BaseException:
            # Undo what did start: the embedded Mosquitto outlives the process unless
            # stopped (server/mqtt/mosquitto.py), the store holds accepted writes.
            self.started = True
            self.stop()
            raise
        self.bridge.start()
        self.started = True
        log.info("dashboard %s  OCPP %s/<chargePointId>  MQTT %s:%s", self.dashboard_url,
                 self.ocpp_url, self.ingest.broker["host"], self.ingest.broker["port"])
        return self

    def _start_ocpp(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._run_loop, name="ocpp-loop", daemon=True)
        self._loop_thread.start()
        self.central.loop = self.loop
        self.endpoint = OcppEndpoint(self.central)
        asyncio.run_coroutine_threadsafe(self.endpoint.start(), self.loop).result(30)
        self._monitor = asyncio.run_coroutine_threadsafe(self.central.monitor_silence(), self.loop)
        self.ports["ocpp"] = self.endpoint.port

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def _start_mqtt(self) -> None:
        mqtt = self.config.mqtt
        if mqtt["url"]:
            # External broker: the ingest uses the URL's credentials; identities and ACLs
            # are the operator's to configure there (docs/server.md).
            broker = parse_broker_url(mqtt["url"])
            log.info("MQTT: external broker %s:%s; delivery guarantees are that broker's",
                     broker["host"], broker["port"])
        else:
            credentials = BrokerCredentials(self.config.data_dir / "mqtt", mqtt["client_id"],
                                            mqtt["topic_prefix"])
            credentials.load(self.fleet.all())
            self.fleet.on_key_change(credentials.set_station)
            self.fleet.on_registration_change(
                lambda cp_id, registration: credentials.set_enabled(cp_id, registration == "Accepted"))
            self.broker = open_embedded_broker(self.config, credentials)
            port = self.broker.start()  # on failure, stop() ends what it spawned
            broker = {"host": mqtt["embedded_host"], "port": port, "tls": False,
                      "username": credentials.ingest_user,
                      "password": credentials.ingest_password,
                      "client_id": credentials.ingest_client_id}
            self.ports["mqtt"] = port
            if getattr(self.broker, "tls_port", None):
                self.ports["mqtts"] = self.broker.tls_port
                log.info("MQTT broker: mqtts on %s:%d", mqtt["embedded_host"], self.broker.tls_port)
            (log.info if self.broker.kind == "mosquitto" else log.warning)(
                "MQTT broker guarantee: %s", self.broker.guarantee)
        self.ingest = MqttIngest(self.config, self.store, self.fleet, on_telemetry=self.bridge.feed)
        self.central.telemetry_ingest = self.ingest  # telemetry inside OCPP (DataTransfer)
        self.ingest.start(broker)

    def _start_http(self) -> None:
        self.web_app = create_app(self)  # the Flask app (its limiters, for a test's clock)
        self._http = start_http_server(self.web_app, self.config.http)
        self.ports["http"] = self._http.port
        self.public_url = (self.config.server["public_url"].rstrip("/")
                           or self.dashboard_url.rstrip("/"))

    @staticmethod
    def _stop_part(name: str, stop) -> None:
        try:
            stop()
        except Exception:  # noqa: BLE001 - logged; the other parts still stop
            log.exception("stopping %s failed", name)

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        log.info("shutting down")
        # every part is stopped even when one fails: a broker left running or a store left
        # open would outlive the process's error
        if self._http is not None:
            self._stop_part("the HTTP server", self._http.stop)
        if self._monitor is not None:
            self._monitor.cancel()
        if self.endpoint is not None and self.endpoint.server is not None:
            self._stop_part("the OCPP endpoint", lambda: asyncio.run_coroutine_threadsafe(
                self.endpoint.stop(), self.loop).result(15))
        if self.ingest is not None:
            self._stop_part("the MQTT ingest", self.ingest.stop)
        self._stop_part("the ThingSpeak bridge", self.bridge.stop)
        if self.broker is not None:
            self._stop_part("the MQTT broker", self.broker.stop)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._loop_thread.join(10)
        self.store.close()
        unwritten = getattr(self.store, "unwritten", None)
        if unwritten:
            log.error("stopped; %d accepted writes could not be committed: %s",
                      sum(unwritten.values()), self.store.failure)
        else:
            log.info("stopped; every accepted write is committed")
