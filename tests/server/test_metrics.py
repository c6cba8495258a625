"""``GET /metrics``: the Prometheus exposition parses, needs a viewer (or higher) token,
its counters follow what stations do over OCPP and MQTT, and the Grafana dashboard in
docs/grafana/ asks only for metrics and labels that a real scrape has."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
import websockets
from ocpp.v16 import call
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import (
    ANONYMOUS,
    ahttp,
    basic_auth,
    charge_point,
    exchange,
    http,
    mqtt_station,
    ocpp_url,
    publish,
    raw_socket,
    register,
    run,
    wait_until,
)
from tests.server.test_operator_auth import make_token

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "picocharge.json"
METRIC_NAME = re.compile(r"\b(?:picocharge|process)_[a-z0-9_]+")
# labels Prometheus adds when it scrapes (they are not in the exposition)
TARGET_LABELS = {"instance", "job"}


def scrape(app, token=None) -> list:
    """The parsed metric families of one scrape (as the admin token unless told)."""
    kwargs = {} if token is None else {"token": token}
    status, text = http(app, "GET", "/metrics", **kwargs)
    assert status == 200, text
    return list(text_string_to_metric_families(text))


def samples(families) -> dict[tuple, float]:
    """{(sample name, frozenset of label items): value}"""
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in families for s in family.samples}


def value(families, name: str, **labels) -> float:
    return samples(families).get((name, frozenset(labels.items())), 0.0)


def _telemetry(seq: int) -> dict:
    return {"ts": int(time.time()), "seq": seq, "t": 21.5, "rh": 40, "v": 230.2, "a": 15.8,
            "w": 3637, "wh": 1200 + seq, "cp": "C", "st": "Charging", "lim": 16, "rssi": -60,
            "heap": 150000, "up": 100 + seq, "tmcu": 30.1}


def exercise(app) -> dict:
    """A station connects over OCPP (boot, heartbeat, a Reset it answers), another is
    refused once (wrong key) and then sends an unknown action, a third publishes telemetry
    over MQTT (three good reports, one that is not JSON). Returns the scrapes before,
    while the first is connected, and after."""
    register(app, "CP-MET")
    register(app, "CP-RAW")
    scrapes = {"before": scrape(app)}

    async def ocpp_session():
        async with charge_point(app, "CP-MET") as cp:
            await cp.call(call.Heartbeat())
            status, answer = await ahttp(app, "POST", "/api/v1/chargepoints/CP-MET/Reset",
                                         {"type": "Soft"})
            assert status == 200, answer
            with pytest.raises(websockets.InvalidStatus):  # a wrong key: 401
                await websockets.connect(ocpp_url(app, "CP-RAW"), subprotocols=["ocpp1.6"],
                                         additional_headers=basic_auth("CP-RAW", "wrong-key"))
            async with raw_socket(app, "CP-RAW") as ws:
                error = await exchange(ws, [2, "u1", "NoSuchAction", {}])
                assert error[0] == 4 and error[2] == "NotImplemented", error
            scrapes["connected"] = await asyncio.to_thread(scrape, app)

    run(ocpp_session())
    board = mqtt_station(app, "CP-MQTT")
    try:
        for seq in (1, 2, 3):
            publish(board, "picocharge/CP-MQTT/telemetry", _telemetry(seq))
        publish(board, "picocharge/CP-MQTT/telemetry", b"{not json")
        wait_until(lambda: value(scrape(app), "picocharge_ingest_telemetry_accepted_total") == 3
                   and value(scrape(app), "picocharge_ingest_messages_invalid_total",
                             reason="json") == 1, what="telemetry counted")
        app.store.sync()
        scrapes["after"] = scrape(app)
    finally:
        board.disconnect()
    return scrapes


def test_metrics_need_a_viewer_token_and_parse_as_prometheus_text(server):
    status, body = http(server, "GET", "/metrics", token=ANONYMOUS)
    assert status == 401, body
    assert http(server, "GET", "/metrics", token="not-a-token")[0] == 401
    viewer = make_token(server, "viewer", "prometheus")["token"]
    status, text = http(server, "GET", "/metrics", token=viewer)
    assert status == 200 and "# TYPE picocharge_stations gauge" in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # counters lose _total in the family name; units are in the names
    assert families["picocharge_ocpp_messages_received"].type == "counter"
    assert families["picocharge_ocpp_operation_duration_seconds"].type == "histogram"
    assert families["picocharge_store_commit_duration_seconds"].type == "histogram"
    assert families["picocharge_store_queue_depth"].type == "gauge"
    assert "process_resident_memory_bytes" in families
    assert all(name.startswith(("picocharge_", "process_", "python_")) for name in families)
    # a revoked token is refused on the next scrape
    status, tokens = http(server, "GET", "/api/v1/tokens")
    token_id = next(t["id"] for t in tokens if t["name"] == "prometheus")
    assert http(server, "DELETE", f"/api/v1/tokens/{token_id}")[0] == 204
    assert http(server, "GET", "/metrics", token=viewer)[0] == 401


def test_each_server_has_its_own_registry(start_server):
    first, second = start_server(), start_server()
    register(first, "CP-ONE")
    assert value(scrape(first), "picocharge_stations", registration="Accepted") == 1
    assert value(scrape(second), "picocharge_stations", registration="Accepted") == 0


def test_counters_follow_ocpp_sessions_operations_and_telemetry(server):
    scrapes = exercise(server)
    before, connected, after = scrapes["before"], scrapes["connected"], scrapes["after"]

    def moved(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert value(before, "picocharge_stations", registration="Accepted") == 2
    assert value(after, "picocharge_stations", registration="Accepted") == 3
    assert value(connected, "picocharge_stations_online", channel="ocpp") >= 1
    assert value(connected, "picocharge_ocpp_connections") == 1  # CP-RAW has left
    assert value(after, "picocharge_ocpp_connections") == 0
    assert value(after, "picocharge_stations_online", channel="telemetry") == 1

    assert moved("picocharge_ocpp_handshakes_admitted_total") == 2
    assert value(after, "picocharge_ocpp_handshakes_refused_total", status="401") == 1
    assert moved("picocharge_ocpp_connections_opened_total") == 2
    assert value(after, "picocharge_ocpp_calls_received_total", action="BootNotification") == 1
    assert value(after, "picocharge_ocpp_calls_received_total", action="Heartbeat") == 1
    assert moved("picocharge_ocpp_messages_received_total") >= 4  # boot, heartbeat, Reset answer, unknown
    assert moved("picocharge_ocpp_messages_sent_total") >= 4
    assert value(after, "picocharge_ocpp_call_errors_sent_total", code="NotImplemented") == 1
    assert moved("picocharge_ocpp_operations_total") == 1
    assert value(after, "picocharge_ocpp_operation_duration_seconds_count",
                 action="Reset", outcome="answered") == 1
    assert 0 < value(after, "picocharge_ocpp_operation_duration_seconds_sum",
                     action="Reset", outcome="answered") < 5

    assert moved("picocharge_ingest_messages_received_total", via="mqtt") >= 4
    assert moved("picocharge_ingest_telemetry_accepted_total") == 3
    assert moved("picocharge_ingest_messages_invalid_total", reason="json") == 1
    assert value(after, "picocharge_ingest_connected") == 1
    assert value(after, "picocharge_mqtt_broker_process_up") == 1
    assert value(after, "picocharge_store_writes_committed_total", kind="telemetry") == 3
    assert moved("picocharge_store_batches_total") >= 1
    assert moved("picocharge_store_commit_duration_seconds_count") >= 1
    assert value(after, "picocharge_store_failing") == 0
    assert value(after, "picocharge_store_queue_depth") >= 0


def _label_uses(expr: str):
    """(metric name, label) pairs an expression selects on or aggregates by."""
    for name, matchers in re.findall(r"((?:picocharge|process)_\w+)\{([^}]*)\}", expr):
        for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
            yield name, label
    for labels, name in re.findall(r"by \(([^)]*)\)\s*\(.*?((?:picocharge|process)_\w+)", expr):
        for label in labels.split(","):
            yield name, label.strip()


def test_the_grafana_dashboard_uses_only_metrics_and_labels_of_a_real_scrape(server):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "picocharge" and dashboard["panels"]
    scraped = exercise(server)["after"]
    labels_of: dict[str, set] = {}
    for family in scraped:
        for sample in family.samples:
            labels_of.setdefault(sample.name, set()).update(sample.labels)
    used = set(METRIC_NAME.findall(DASHBOARD.read_text()))
    assert len(used) >= 30, used
    assert used - set(labels_of) == set(), sorted(used - set(labels_of))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs and all(METRIC_NAME.search(expr) for expr in exprs)
    wrong = {(name, label) for expr in exprs for name, label in _label_uses(expr)
             if label not in TARGET_LABELS and label not in labels_of[name]}
    assert wrong == set()
