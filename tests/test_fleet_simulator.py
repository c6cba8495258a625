"""The fleet simulator runs real firmware charge points against the real central system:
every station registers, sessions happen, telemetry acknowledged by the broker is stored."""

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from server.app import Application
from server.config import load_config
from tests.server.conftest import ADMIN_TOKEN
from tools.sim import ID_TAGS

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture
def central(tmp_path):
    config = load_config(None, environ={}, overrides={
        "server.data_dir": str(tmp_path / "var"), "ocpp.host": "127.0.0.1", "ocpp.port": 0,
        "http.host": "127.0.0.1", "http.port": 0, "mqtt.embedded_port": 0, "ocpp.auto_register": True,
        "auth.admin_token": ADMIN_TOKEN})
    app = Application(config).start()
    for tag in ID_TAGS:
        app.store.save_id_tag({"id_tag": tag, "status": "Accepted"})
    yield app
    app.stop()


def get(app, path):
    request = urllib.request.Request(f"http://127.0.0.1:{app.ports['http']}/api/v1{path}",
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


@pytest.mark.slow(seconds=25)
def test_simulated_fleet_registers_charges_and_loses_no_telemetry(central, tmp_path):
    cmd = [sys.executable, "-m", "tools.sim", "--schedule", "3,6", "--hold", "12", "--json",
           "--server", "ws://127.0.0.1:%d/ocpp" % central.ports["ocpp"],
           "--mqtt", "mqtt://127.0.0.1:%d" % central.ports["mqtt"],
           "--telemetry-interval", "2", "--meter-interval", "5", "--session-min", "5",
           "--session-max", "10", "--idle-mean", "3", "--arrival-spread", "2",
           "--id-prefix", "FLEET-", "--flash-root", str(tmp_path / "flash"),
           # every station registered with its own key: the broker admits no one else
           "--key-secret", "fleet-test", "--api", "http://127.0.0.1:%d/api/v1" % central.ports["http"],
           "--api-token", ADMIN_TOKEN]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    starts = [e for e in events if e["event"] == "step_start"]
    ends = [e for e in events if e["event"] == "step_end"]
    assert [e["stations"] for e in starts] == [3, 6]
    assert all(e["connected"] == e["stations"] for e in starts)
    assert all(e["ocpp"]["errors"] == 0 and e["ocpp"]["timeouts"] == 0 for e in ends)
    assert ends[-1]["ocpp"]["calls"] > 0 and ends[-1]["ocpp"]["p99_ms"] is not None
    acked = ends[-1]["telemetry"]["acked"]
    assert acked > 0
    deadline = time.monotonic() + 15
    while get(central, "/stats")["telemetry_stored"] < acked and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get(central, "/stats")["telemetry_stored"] >= acked  # nothing the broker took is lost
    stations = [cp for cp in get(central, "/chargepoints") if cp["id"].startswith("FLEET-")]
    assert len(stations) == 6
    assert ends[-1]["transactions"]["sessions"] > 0
    assert get(central, "/transactions")  # the simulated drivers' sessions reached the server
