"""Prometheus metrics of a running :class:`server.app.Application`, served at ``/metrics``
(server/web/metrics.py, viewer role or higher).

Most values are read from the parts at scrape time by :class:`PartsCollector`: the
counters the OCPP central system, the MQTT ingest and the store already keep, the fleet's
stations, the embedded broker. Only what needs every single observation is recorded as it
happens: the latency of central-system operations (``CentralSystem.on_operation``) and of
the store's group commits (``observe_commits``). Each application has its own registry (a
process may run several, as the tests do), with the process and platform collectors of
``prometheus_client``.

Names follow the Prometheus conventions: ``picocharge_`` prefix, base units in the name
(``_seconds``), ``_total`` for counters. Labels have bounded values only: registration
states, OCPP actions with a handler, OCPP error codes, HTTP statuses, reasons of a fixed
list; never a station id.
"""

from __future__ import annotations

import psutil
from prometheus_client import (
    CollectorRegistry,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from server.fleet import REGISTRATION_STATES

# An operation waits at most MAX_CALL_TIMEOUT (120 s) for its answer.
OPERATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# A group commit is milliseconds; seconds mean a slow or failing disk.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0)

# central.counters name → reason label of picocharge_ocpp_messages_rejected_total
OCPP_REJECTED = {"malformed": "malformed", "oversized": "oversized",
                 "rate_limited": "rate_limited", "revoked_messages_dropped": "revoked",
                 "unexpected_answers": "unexpected_answer"}
# simple central.counters → counter metrics (name without _total, help)
OCPP_COUNTERS = {
    "messages_in": ("picocharge_ocpp_messages_received", "OCPP frames received from stations"),
    "messages_out": ("picocharge_ocpp_messages_sent", "OCPP frames sent to stations"),
    "calls_answered": ("picocharge_ocpp_calls_answered",
                       "station CALLs answered with a CALLRESULT"),
    "connections_total": ("picocharge_ocpp_connections_opened",
                          "OCPP WebSocket sessions opened"),
    "connections_replaced": ("picocharge_ocpp_connections_replaced",
                             "sessions closed because the station connected again"),
    "handshakes_admitted": ("picocharge_ocpp_handshakes_admitted",
                            "WebSocket handshakes admitted"),
    "handshakes_certificate": ("picocharge_ocpp_handshakes_client_certificate",
                               "handshakes admitted by a client certificate (profile 3)"),
    "silent_offline": ("picocharge_ocpp_silent_offline",
                       "connections marked offline after heartbeat silence"),
    "sessions_revoked": ("picocharge_ocpp_sessions_revoked",
                         "sessions ended because the station's registration changed"),
    "operations": ("picocharge_ocpp_operations", "central-system operations sent (CALLs)"),
    "operations_refused_busy": ("picocharge_ocpp_operations_refused_busy",
                                "operations refused because too many were waiting"),
    "meter_values_stored": ("picocharge_ocpp_meter_values_stored",
                            "meter value samples stored"),
}
INGEST_INVALID = ("size", "json", "schema", "topic", "state")


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(name: str, documentation: str, label: str, values: dict) -> CounterMetricFamily:
    """A counter family with one sample per label value, in a stable order."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value_label, value in sorted(values.items()):
        family.add_metric([value_label], value)
    return family


def _by_prefix(counters: dict, prefix: str) -> dict[str, float]:
    """{suffix: value} of the counters named ``<prefix>.<suffix>``."""
    start = prefix + "."
    return {name[len(start):]: value for name, value in counters.items()
            if name.startswith(start)}


def _process_running(broker) -> bool:
    proc = getattr(broker, "_proc", None)
    pid = getattr(broker, "pid", None) or (proc.pid if proc is not None else None)
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class PartsCollector(Collector):
    """Reads the application's parts when scraped; a part that is not running (yet, or
    any more) contributes nothing."""

    def __init__(self, app) -> None:
        self.app = app

    def collect(self):
        app = self.app
        if app.fleet is not None:
            yield from self._stations(app.fleet)
        if app.central is not None:
            yield from self._ocpp(app.central)
        if app.ingest is not None:
            yield from self._ingest(app.ingest)
        yield from self._broker(app)
        if app.store is not None:
            yield from self._store(app.store)

    @staticmethod
    def _stations(fleet):
        records = fleet.all()
        registered = GaugeMetricFamily(
            "picocharge_stations", "registered stations by registration state",
            labels=["registration"])
        for state in REGISTRATION_STATES:
            registered.add_metric([state], sum(1 for r in records if r.get("registration") == state))
        registered.add_metric(["none"], sum(1 for r in records if r.get("registration") is None))
        yield registered
        online = GaugeMetricFamily(
            "picocharge_stations_online",
            "stations online by channel: an OCPP session that is not silent, MQTT/OCPP telemetry",
            labels=["channel"])
        online.add_metric(["ocpp"], sum(1 for r in records if r.get("ocpp_online")))
        online.add_metric(["telemetry"], sum(1 for r in records if r.get("telemetry_online")))
        yield online
        strangers = fleet.strangers.stats()
        yield _gauge("picocharge_unknown_stations",
                     "unregistered station ids that knocked lately (the listed ones)",
                     strangers["listed"])

    @staticmethod
    def _ocpp(central):
        counters = dict(central.counters)
        yield _gauge("picocharge_ocpp_connections", "open OCPP sessions",
                     len(central.connections))
        for key, (name, documentation) in OCPP_COUNTERS.items():
            yield _counter(name, documentation, counters.get(key, 0))
        yield _labelled("picocharge_ocpp_calls_received",
                        "station CALLs received by action (actions with a handler)", "action",
                        _by_prefix(counters, "calls_received"))
        yield _labelled("picocharge_ocpp_call_errors_sent",
                        "CALLERRORs sent to stations by OCPP error code", "code",
                        _by_prefix(counters, "callerror_sent"))
        rejected = CounterMetricFamily(
            "picocharge_ocpp_messages_rejected",
            "frames not handled: malformed, oversized, over the rate limit, on a revoked "
            "session, answers to no pending call", labels=["reason"])
        for key, reason in OCPP_REJECTED.items():
            rejected.add_metric([reason], counters.get(key, 0))
        yield rejected
        yield _labelled("picocharge_ocpp_handshakes_refused",
                        "WebSocket handshakes refused by HTTP status", "status",
                        _by_prefix(counters, "handshakes_refused"))
        yield _gauge("picocharge_ocpp_open_transactions", "transactions started and not stopped",
                     central.transactions.open_count())

    @staticmethod
    def _ingest(ingest):
        counters = dict(ingest.counters)
        yield _gauge("picocharge_ingest_connected",
                     "1 while the ingest is connected and subscribed to the MQTT broker",
                     1 if ingest.ready.is_set() else 0)
        yield _counter("picocharge_ingest_connects", "connections of the ingest to the broker",
                       counters.get("connects", 0))
        received = CounterMetricFamily(
            "picocharge_ingest_messages_received",
            "messages taken by the telemetry pipeline, by what carried them", labels=["via"])
        via_ocpp = counters.get("received.ocpp", 0)
        received.add_metric(["mqtt"], counters.get("received", 0) - via_ocpp)
        received.add_metric(["ocpp"], via_ocpp)
        yield received
        invalid = CounterMetricFamily("picocharge_ingest_messages_invalid",
                                      "invalid messages by reason (counted, nothing stored)",
                                      labels=["reason"])
        for reason in INGEST_INVALID:
            invalid.add_metric([reason], counters.get(f"invalid.{reason}", 0))
        yield invalid
        yield _counter("picocharge_ingest_telemetry_accepted",
                       "telemetry reports handed to the store", counters.get("telemetry_accepted", 0))
        yield _counter("picocharge_ingest_duplicates",
                       "telemetry reports dropped as redelivered duplicates",
                       counters.get("duplicates", 0))
        yield _counter("picocharge_ingest_errors", "messages whose handling failed",
                       counters.get("errors", 0))
        states = CounterMetricFamily("picocharge_ingest_state_messages",
                                     "station state messages (online, or the last will)",
                                     labels=["state"])
        for state in ("online", "offline"):
            states.add_metric([state], counters.get(f"state.{state}", 0))
        yield states
        stations = list(ingest.stations.values())
        yield _gauge("picocharge_ingest_telemetry_lost_messages",
                     "telemetry reports missing by seq, summed over stations (a late one that "
                     "arrives is no longer missing)", sum(s.lost for s in stations))

    @staticmethod
    def _broker(app):
        broker = app.broker
        info = GaugeMetricFamily("picocharge_mqtt_broker_info",
                                 "the MQTT broker the ingest reads: embedded (mosquitto or "
                                 "amqtt) or external", labels=["kind"])
        info.add_metric([broker.kind if broker is not None else "external"], 1)
        yield info
        if broker is None:
            return
        yield _gauge("picocharge_mqtt_broker_process_up",
                     "1 while the embedded broker's process runs", int(_process_running(broker)))
        if hasattr(broker, "reloads"):
            yield _counter("picocharge_mqtt_broker_credential_reloads",
                           "credential changes applied to the embedded Mosquitto (SIGHUP)",
                           broker.reloads)

    @staticmethod
    def _store(store):
        stats = store.stats()
        # every kind written so far in each family, 0 where none: rate() works from the start
        kinds = sorted({kind for key in ("accepted", "committed", "rejected_writes")
                        for kind in stats[key]})
        for key, name, documentation in (
                ("accepted", "picocharge_store_writes_accepted", "writes queued, by kind"),
                ("committed", "picocharge_store_writes_committed",
                 "writes committed (or superseded by a newer snapshot), by kind"),
                ("rejected_writes", "picocharge_store_writes_rejected",
                 "writes the database refused, by kind")):
            family = CounterMetricFamily(name, documentation, labels=["kind"])
            for kind in kinds:
                family.add_metric([kind], stats[key].get(kind, 0))
            yield family
        yield _counter("picocharge_store_batches", "group commits (transactions) of the writer",
                       stats["batches"])
        yield _gauge("picocharge_store_queue_depth",
                     "writes waiting for the writer, held ones after a failed commit included",
                     stats["queue_depth"])
        yield _gauge("picocharge_store_failing", "1 while the store cannot commit",
                     0 if stats["failure"] is None else 1)


class Metrics:
    """The registry of one application and the histograms recorded as things happen."""

    def __init__(self, app) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.registry.register(PartsCollector(app))
        self.operation_seconds = Histogram(
            "picocharge_ocpp_operation_duration_seconds",
            "central-system operations (server → station CALL) from sending to the answer, "
            "by action and outcome (answered, callerror, invalid_response, timeout, closed, "
            "error)", ["action", "outcome"], buckets=OPERATION_BUCKETS, registry=self.registry)
        self.commit_seconds = Histogram(
            "picocharge_store_commit_duration_seconds",
            "group commits of the store's writer, BEGIN to COMMIT",
            buckets=COMMIT_BUCKETS, registry=self.registry)

    def observe_operation(self, action: str, outcome: str, seconds: float) -> None:
        self.operation_seconds.labels(action, outcome).observe(seconds)

    def observe_commit(self, seconds: float) -> None:
        self.commit_seconds.observe(seconds)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (version 0.0.4)."""
        return generate_latest(self.registry)
