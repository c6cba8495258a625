"""The app with an `ocpp` section: the real station under the OCPP charge point
(chargepoint.py), against the independent central system of tests/firmware_ocpp:
statuses from the pilot, a remote start charges at the offered current, the
transaction's meter values come from the station's register, unplugging stops it.

Both runtimes. On the former 64-bit Unix port at 192 KiB the MicroPython board ran out
of heap here (152 KB used / 42 KB free, largest free block ~3.3 KB after boot, and the
board runner's link thread could not allocate its receive buffer); the 32-bit build at a
Pico W's heap runs it."""

import sys
import time
from pathlib import Path

import pytest
from ocpp.v16 import call
from stationkit import assert_energy_within, boot, relay_open_latency, report, wait_world

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "firmware_ocpp"))
from csms import CentralSystem  # noqa: E402


@pytest.fixture
def central():
    cs = CentralSystem(password="s3cret").start()
    yield cs
    cs.stop()


@pytest.mark.dual_runtime
def test_remote_start_charges_and_unplug_stops_the_transaction(board_factory, central,
                                                              runtime_name):
    cfg = {"cp_id": "PICO-0100", "wifi": {"ssid": "workshop", "password": "x"},
           "ocpp": {"url": central.url, "password": "s3cret"},
           "limits": {"max_current_a": 16.0}, "intervals": {"sensors_s": 2}}
    board = boot(board_factory, cfg, world={"ap_ssid": "workshop", "ev_demand_a": 32.0})
    central.wait(lambda: central.booted("PICO-0100"), timeout=60, what="BootNotification")
    central.wait(lambda: central.last_status("PICO-0100") == "Available", timeout=30)
    board.control("plug")
    central.wait(lambda: central.last_status("PICO-0100") == "Preparing", timeout=30)
    central.call("PICO-0100", call.RemoteStartTransaction(id_tag="CARD-1", connector_id=1))
    central.wait(lambda: central.last_status("PICO-0100") == "Charging", timeout=30)
    w = wait_world(board, lambda w: w["relay_closed"] and w["current_a"] > 15, what="charging")
    assert w["pilot"]["offered_a"] == pytest.approx(16.0, abs=0.01)
    wait_world(board, lambda w: w["energy_wh"] > 3, timeout=30, what="3 Wh")
    board.control("unplug")
    w = wait_world(board, lambda w: not w["relay_closed"], timeout=5, what="relay open")
    latency, stall = relay_open_latency(w)  # on the board's clock, from the world's unplug
    assert latency - stall <= 100 and latency <= 1000, (latency, stall)
    central.wait(lambda: central.of("StopTransaction", "PICO-0100"), timeout=30,
                 what="StopTransaction")
    stop = central.of("StopTransaction", "PICO-0100")[0]
    start = central.of("StartTransaction", "PICO-0100")[0]
    delivered = stop["meter_stop"] - start["meter_start"]
    energy = board.world()["energy_wh"]
    # OCPP carries whole Wh (the charge point truncates): 2 % of the meter plus 1 Wh, plus
    # the energy of one meter pass (about 1 Wh at 16 A) when the unplug lands between passes
    # on a loaded machine, plus the power until the contactor opened (the firmware bills
    # the last power up to the opening: it cannot see the unplug sooner; `latency` above,
    # on the board's clock)
    late_wh = 16 * 230 * latency / 3.6e6
    assert_energy_within(board, delivered, energy, 2 + 0.02 * energy + late_wh,
                         (latency, stall))
    central.wait(lambda: central.last_status("PICO-0100") == "Available", timeout=30)
    assert not central.invalid
    assert report(board)["st"] == "Available"


@pytest.mark.dual_runtime
def test_the_ocpp_link_closes_when_wifi_drops_and_is_made_again_as_soon_as_it_returns(
        board_factory, central, runtime_name):
    cfg = {"cp_id": "PICO-0101", "wifi": {"ssid": "workshop", "password": "x"},
           "ocpp": {"url": central.url, "password": "s3cret"}, "intervals": {"sensors_s": 2}}
    board = boot(board_factory, cfg, world={"ap_ssid": "workshop"})
    central.wait(lambda: central.last_status("PICO-0101") == "Available", timeout=60)
    mark = board.console.mark()
    board.control("wifi", up=False)
    board.wait_for(r"^ocpp: Wi-Fi down, closing the link$", 15, start=mark)
    board.wait_for(r"^ocpp: disconnected$", 15, start=mark)
    connects = central.connects
    # no attempt while there is no network (on the host the socket would get through),
    # and none counted as failed: no backoff grows meanwhile
    time.sleep(12)
    assert central.connects == connects
    assert "ocpp: connect failed" not in board.console.text[mark:]
    mark = board.console.mark()
    board.control("wifi", up=True)
    up = board.wait_for(r"^wifi: up ", 30, start=mark)
    board.wait_for(r"^ocpp: connected$", 5, start=up.end())
    central.wait(lambda: central.connects > connects, timeout=5, what="a new session")
