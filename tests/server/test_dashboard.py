"""The dashboard in headless Chromium (playwright, Debian's chromium): an operator logs in,
the fleet overview and a station page update live without reload, the page runs under its
CSP without a violation, logging out ends the session; a screenshot is kept under
build/artifacts/."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from pathlib import Path

import pytest
from ocpp.v16 import call
from playwright.sync_api import expect, sync_playwright

from tests.server.conftest import (
    charge_point,
    http,
    mqtt_station,
    now_iso,
    publish,
    register,
)

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser_page(tmp_path):
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=ARGS, viewport={"width": 1400, "height": 1500})
        page = context.pages[0] if context.pages else context.new_page()
        external, violations = [], []
        page.on("request", lambda r: external.append(r.url)
                if not r.url.startswith(("http://127.0.0.1", "data:", "about:")) else None)
        page.on("console", lambda m: violations.append(m.text)
                if "Content Security Policy" in m.text else None)
        yield page
        context.close()
        assert external == [], f"the dashboard fetched something from elsewhere: {external}"
        assert violations == [], f"the dashboard broke its own CSP: {violations}"


def shows(page, selector: str, text: str, timeout: float = 10000) -> None:
    """Wait until the element shows the text (a locator assertion: the page's CSP forbids
    the eval that page.wait_for_function would need)."""
    expect(page.locator(selector)).to_contain_text(text, timeout=timeout)


def log_in(page, app, username: str = "olga", role: str = "operator") -> str:
    """Create an account through the API (as the admin token) and log in through the form;
    returns the dashboard's base URL."""
    password = "a password for the browser"
    status, data = http(app, "POST", "/api/v1/users",
                        {"username": username, "role": role, "password": password})
    assert status == 201, data
    base = f"http://127.0.0.1:{app.ports['http']}"
    page.goto(base + "/")
    assert "/login" in page.url  # no session: the login page
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')
    page.wait_for_url(base + "/")
    return base


class BackgroundChargePoint:
    """An OCPP client on its own thread and loop, so the test thread can drive playwright
    (whose sync API owns the test thread's event loop)."""

    def __init__(self, app, cp_id: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._context = charge_point(app, cp_id)  # with the station's own key
        self.cp = self._run(self._context.__aenter__())

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def call(self, payload):
        return self._run(self.cp.call(payload))

    def close(self) -> None:
        self._run(self._context.__aexit__(None, None, None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _populate(app) -> BackgroundChargePoint:
    """A charging station with telemetry, transactions and events; another one offline."""
    register(app, "PICO-0002")
    http(app, "POST", "/api/v1/idtags", {"id_tag": "DRIVER1"})
    board = mqtt_station(app, "PICO-0001")  # registers it with its key
    start = time.time() - 600
    for i in range(40):
        phase = i / 6
        publish(board, "picocharge/PICO-0001/telemetry", {
            "ts": start + i * 15, "seq": i + 1, "t": round(24 + 2 * math.sin(phase), 1),
            "rh": round(45 + 5 * math.cos(phase), 1), "v": round(230 + 3 * math.sin(phase * 2), 1),
            "a": round(15 + math.sin(phase), 2), "w": round(3450 + 200 * math.sin(phase)),
            "wh": 1000 + i * 14, "st": "Charging", "cp": "C", "tmcu": 31.0})
    board.loop_stop()
    BackgroundChargePoint(app, "PICO-0002").close()
    station = BackgroundChargePoint(app, "PICO-0001")
    station.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
    first = station.call(call.StartTransaction(connector_id=1, id_tag="DRIVER1", meter_start=1000,
                                               timestamp=now_iso()))
    station.call(call.StopTransaction(meter_stop=1380, timestamp=now_iso(),
                                      transaction_id=first.transaction_id))
    station.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
    station.call(call.StartTransaction(connector_id=1, id_tag="DRIVER1", meter_start=1380,
                                       timestamp=now_iso()))
    return station


def test_overview_and_station_page_update_live_and_operations_work(server, browser_page):
    page = browser_page
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = log_in(page, server)
    page.wait_for_selector("#fleet tbody td.muted")  # the empty-fleet message
    station = _populate(server)
    try:
        # Live: the overview shows the stations without a reload.
        shows(page, 'tr[data-cp-id="PICO-0001"]', "Charging")
        row = page.inner_text('tr[data-cp-id="PICO-0001"]')
        assert "online" in row and "Charging" in row
        assert "offline" in page.inner_text('tr[data-cp-id="PICO-0002"]')
        assert "OCPP ONLINE" in page.inner_text("#counts").upper()
        page.screenshot(path=str(ARTIFACTS / "dashboard-overview.png"), full_page=True)

        page.goto(base + "/stations/PICO-0001")
        shows(page, "#transactions", "DRIVER1")
        assert "380" in page.inner_text("#transactions")
        # An operation button round-trips to the charge point and shows its answer.
        page.click('button[data-op="UnlockConnector"]')
        shows(page, "#op-result", "Unlocked")
        assert station.cp.received[-1][0] == "UnlockConnector"
        page.wait_for_timeout(2500)  # a polling round so the charts are drawn
        page.screenshot(path=str(ARTIFACTS / "dashboard-station.png"), full_page=True)
        # Live: a status change appears without a reload.
        station.call(call.StatusNotification(connector_id=1, error_code="GroundFailure",
                                             status="Faulted"))
        shows(page, "#summary", "Faulted")
    finally:
        station.close()
    assert (ARTIFACTS / "dashboard-station.png").stat().st_size > 10000
    # Logging out ends the session: the API refuses the page's calls, pages lead to login.
    page.click("form.logout button")
    page.wait_for_url(base + "/login")
    assert page.evaluate("fetch('/api/v1/chargepoints').then(r => r.status)") == 401
    page.goto(base + "/stations/PICO-0001")
    assert "/login" in page.url


def test_a_viewer_sees_the_fleet_but_operations_are_refused(server, browser_page):
    page = browser_page
    register(server, "PICO-0003")
    base = log_in(page, server, "vera", "viewer")
    page.wait_for_selector('tr[data-cp-id="PICO-0003"]')
    page.goto(base + "/stations/PICO-0003")
    page.click('button[data-op="UnlockConnector"]')
    shows(page, "#op-result", "403")
    assert "needs role operator" in page.inner_text("#op-result")
