"""Wi-Fi (CYW43 station interface): join with the driver's real status codes, back off
on failure, rejoin when the link drops.

`network.WLAN(STA_IF).status()` on a Pico W: 0 down (idle), 1 joining, 2 joined but no IP
yet, 3 up, -1 failed, -2 no such network, -3 wrong password.
"""

import asyncio
import time

STATUS_TEXT = {
    0: "down",
    1: "joining",
    2: "no IP yet",
    3: "up",
    -1: "failed",
    -2: "no such network",
    -3: "wrong password",
}


def status_text(code):
    return STATUS_TEXT.get(code, str(code))


class Wifi:
    # A join attempt costs a Pico W little: retrying at most every 15 s (not 60) brings a
    # charger back within seconds of its access point.
    def __init__(self, network, section, log=print, join_timeout_s=15, max_backoff_s=15):
        self.network = network
        self.section = section
        self.log = log
        self.join_timeout_s = join_timeout_s
        self.max_backoff_s = max_backoff_s
        self.wlan = None
        self.joins = 0
        self.failures = 0
        self.last_status = 0
        self.up_since = None
        self.event = asyncio.Event()  # set while the link is up

    def is_up(self):
        return self.wlan is not None and self.wlan.status() == 3

    def status(self):
        return self.wlan.status() if self.wlan is not None else 0

    def rssi(self):
        try:
            return self.wlan.status("rssi") if self.is_up() else None
        except (OSError, ValueError):
            return None

    def ip(self):
        return self.wlan.ifconfig()[0] if self.is_up() else None

    def summary(self):
        code = self.status()
        return {"ssid": self.section.get("ssid"), "status": code, "text": status_text(code),
                "ip": self.ip(), "rssi": self.rssi(), "joins": self.joins,
                "failures": self.failures}

    async def join(self):
        """One join attempt; True when the link is up."""
        if self.wlan is None:
            self.wlan = self.network.WLAN(self.network.STA_IF)
        self.wlan.active(True)
        ssid = self.section["ssid"]
        self.wlan.connect(ssid, self.section.get("password", ""))
        self.log("wifi: joining " + ssid)
        status = None
        deadline = time.ticks_add(time.ticks_ms(), self.join_timeout_s * 1000)
        while time.ticks_diff(deadline, time.ticks_ms()) > 0:
            status = self.wlan.status()
            if status == 3 or status < 0:
                break
            await asyncio.sleep_ms(100)
        self.last_status = status
        if status == 3:
            self.joins += 1
            self.up_since = time.ticks_ms()
            self.log("wifi: up %s rssi %d" % (self.wlan.ifconfig()[0], self.wlan.status("rssi")))
            self.event.set()
            return True
        self.failures += 1
        self.log("wifi: not connected (status %s: %s)" % (status, status_text(status)))
        try:
            self.wlan.disconnect()
        except OSError:
            pass
        return False

    async def run(self):
        backoff = 2
        while True:
            if await self.join():
                backoff = 2
                while self.is_up():
                    await asyncio.sleep_ms(1000)
                self.event.clear()
                self.up_since = None
                code = self.status()
                self.log("wifi: link lost (status %s: %s)" % (code, status_text(code)))
                continue
            await asyncio.sleep(backoff)
            backoff = min(self.max_backoff_s, backoff * 2)
