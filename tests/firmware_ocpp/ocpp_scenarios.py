"""Helpers shared by the OCPP behaviour scenarios (test_boot_and_registration,
test_offline_authorization, test_reservation_and_smart_charging, test_transaction_retries,
test_reset_and_full_flash): the charge point's configuration, a started charge point, and
readers for what the central system recorded."""

from __future__ import annotations

import json

from cprunner import ChargePointProcess, wait_until
from ocpp.v16 import call

KEY = "0123456789abcdef"


def config(url: str, cp_id: str, **keys) -> dict:
    """A charge point configuration: fast reconnects, quick heartbeats; `keys` preset OCPP
    configuration keys (persisted values win, as on a board)."""
    base = {"HeartbeatInterval": 30, "MeterValueSampleInterval": 0, "ReconnectMaxInterval": 2}
    base.update(keys)
    return {"cp_id": cp_id, "limits": {"max_current_a": 32},
            "ocpp": {"url": url, "password": KEY, "reconnect_min_s": 0.2, "keys": base}}


def start(cs, runtime: str, workdir, cp_id: str, accepted=True, **kw) -> ChargePointProcess:
    """A charge point process; with accepted=True it is waited for until it is registered
    and has reported its connector."""
    flash_module = kw.pop("flash_module", None)
    cp = ChargePointProcess(runtime, workdir, config(cs.url, cp_id, **kw), flash_module=flash_module)
    try:  # running (a card presented before would not count: the runner skips old taps)
        wait_until(lambda: "ocpp: charge point" in cp.console(), 30, "the charge point running")
    except AssertionError:
        cp.finish()
        raise
    if accepted:
        try:
            cs.wait(lambda: cs.last_status(cp_id) is not None, 40, "registered and a StatusNotification")
        except AssertionError:
            cp.finish()
            raise
    return cp


def summary(cs, cp_id: str) -> dict:
    """The charge point's summary, asked over OCPP (DataTransfer PicoCharge/summary)."""
    res = cs.call(cp_id, call.DataTransfer(vendor_id="PicoCharge", message_id="summary"))
    assert res.status == "Accepted", res
    return json.loads(res.data)


def calls_of(cs, cp_id: str | None = None) -> list[str]:
    """The actions of the CALLs the charge point sent, in order."""
    with cs.lock:
        return [m[1] for m in cs.messages if cp_id is None or m[0] == cp_id]


def sampled(meter_values: list, measurand: str) -> list[dict]:
    """Every sampledValue of `measurand` in a list of meterValue objects (snake_case keys)."""
    return [sv for mv in meter_values for sv in mv["sampled_value"] if sv.get("measurand") == measurand]


def wait_console(cp: ChargePointProcess, text: str, timeout: float = 30) -> None:
    wait_until(lambda: text in cp.console(), timeout, repr(text) + " on the console")
