"""The board application: read the config, bring up the hardware and the uplinks, run.

Built as an object from a flash directory and the hardware modules, so one process can
hold many boards (fleet simulator). `main.py` builds one and calls `run()`.
"""

import asyncio
import gc
import json

import config as config_mod
from storage import Flash

WIFI_STATUS_TEXT = {
    0: "down",
    1: "joining",
    2: "no IP yet",
    3: "up",
    -1: "failed",
    -2: "no such network",
    -3: "wrong password",
}


class Board:
    def __init__(self, flash=None, machine=None, dht=None, network=None, console=print):
        if machine is None:
            import machine
        if dht is None:
            import dht
        if network is None:
            import network
        self.machine = machine
        self.dht_mod = dht
        self.network = network
        self.flash = flash or Flash("")
        self.say = console
        self.config, error = config_mod.load(self.flash)
        if error:
            self.say("config: " + error)
        pins = self.config["pins"]
        self.dht = dht.DHT11(machine.Pin(pins["dht"]))
        self.adc_temp = machine.ADC(4)
        self.wlan = None
        self.reports = 0

    def read_sensors(self):
        """One reading of every sensor; a sensor that fails is left out, never fatal."""
        out = {}
        try:
            self.dht.measure()
            out["t"] = self.dht.temperature() + self.config["calibration"]["dht_offset_c"]
            out["rh"] = self.dht.humidity()
        except Exception as exc:  # OSError timeout or the driver's checksum Exception
            out["dht_error"] = str(exc) or type(exc).__name__
        volts = self.adc_temp.read_u16() * 3.3 / 65535
        out["tmcu"] = round(27 - (volts - 0.706) / 0.001721, 1)
        if hasattr(gc, "mem_free"):
            out["heap"] = gc.mem_free()
        return out

    async def join_wifi(self, timeout_s=15):
        wifi = self.config["wifi"]
        if wifi is None:
            self.say("wifi: no wifi section in config.json, staying offline")
            return False
        self.wlan = self.network.WLAN(self.network.STA_IF)
        self.wlan.active(True)
        self.wlan.connect(wifi["ssid"], wifi.get("password", ""))
        self.say("wifi: joining " + wifi["ssid"])
        status = None
        for _ in range(timeout_s * 10):
            status = self.wlan.status()
            if status == 3 or status < 0:
                break
            await asyncio.sleep(0.1)
        text = WIFI_STATUS_TEXT.get(status, str(status))
        if status == 3:
            self.say("wifi: up %s rssi %d" % (self.wlan.ifconfig()[0], self.wlan.status("rssi")))
            return True
        self.say("wifi: not connected (status %s: %s)" % (status, text))
        return False

    async def main(self, reports=None):
        self.say("PicoCharge %s booting" % self.config["cp_id"])
        await self.join_wifi()
        period = self.config["intervals"]["sensors_s"]
        while reports is None or self.reports < reports:
            gc.collect()
            self.say("sensors " + json.dumps(self.read_sensors()))
            self.reports += 1
            await asyncio.sleep(period)

    def run(self, reports=None):
        asyncio.run(self.main(reports))
