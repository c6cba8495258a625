"""Host stand-in for MicroPython's `network` module on a Pico W (CYW43 Wi-Fi).

`WLAN(STA_IF)` joins the simulated access point with the CYW43 link states the real
driver reports through `status()`: 1 joining, 2 no IP yet, 3 up, -1 failed, -2 no such
network, -3 wrong password, 0 down. Cutting Wi-Fi in the world drops the link.
"""

import simworld
from simworld import ticks_diff, ticks_ms

STA_IF = 0
AP_IF = 1
STAT_IDLE = simworld.LINK_DOWN
STAT_CONNECTING = simworld.LINK_JOIN
STAT_GOT_IP = simworld.LINK_UP
STAT_CONNECT_FAIL = simworld.LINK_FAIL
STAT_NO_AP_FOUND = simworld.LINK_NONET
STAT_WRONG_PASSWORD = simworld.LINK_BADAUTH

_hostname = ["PicoW"]
_country = ["XX"]


def hostname(name=None):
    if name is None:
        return _hostname[0]
    _hostname[0] = name


def country(code=None):
    if code is None:
        return _country[0]
    _country[0] = code


class WLAN:
    _world = None
    PM_NONE = 0x10
    PM_PERFORMANCE = 0xA11142
    PM_POWERSAVE = 0x111022

    def __init__(self, interface=STA_IF):
        self.interface = interface
        self._active = False
        self._ssid = None
        self._key = None
        self._started = None
        self._config = {"pm": self.PM_PERFORMANCE}

    def _w(self):
        return self._world or simworld.current()

    def active(self, value=None):
        if value is None:
            return self._active
        self._active = bool(value)
        if not value:
            self._started = None

    def connect(self, ssid=None, key=None, bssid=None):
        if not self._active:
            raise OSError("WLAN not active")
        self._ssid = ssid
        self._key = key
        self._started = ticks_ms()

    def disconnect(self):
        self._started = None

    def status(self, param=None):
        w = self._w()
        if param == "rssi":
            if self.status() != STAT_GOT_IP:
                raise OSError("not connected")
            return w.rssi
        if param is not None:
            raise ValueError("unknown status param")
        if not self._active or self._started is None:
            return STAT_IDLE
        if not w.wifi_up or (w.ap_ssid is not None and self._ssid != w.ap_ssid):
            if ticks_diff(ticks_ms(), self._started) < w.wifi_join_ms:
                return STAT_CONNECTING
            return STAT_NO_AP_FOUND
        if w.ap_password is not None and self._key != w.ap_password:
            if ticks_diff(ticks_ms(), self._started) < w.wifi_join_ms:
                return STAT_CONNECTING
            return STAT_WRONG_PASSWORD
        elapsed = ticks_diff(ticks_ms(), self._started)
        if elapsed < w.wifi_join_ms // 2:
            return STAT_CONNECTING
        if elapsed < w.wifi_join_ms:
            return simworld.LINK_NOIP
        return STAT_GOT_IP

    def isconnected(self):
        return self.status() == STAT_GOT_IP

    def ifconfig(self, value=None):
        if value is not None:
            return None
        if self.isconnected():
            return ("192.168.4.23", "255.255.255.0", "192.168.4.1", "192.168.4.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kwargs):
        if kwargs:
            self._config.update(kwargs)
            return None
        key = args[0]
        if key == "mac":
            uid = self._w().name.encode()
            mac = bytearray(b"\x28\xcd\xc1\x00\x00\x00")
            for i, b in enumerate(uid):
                mac[3 + i % 3] = (mac[3 + i % 3] * 31 + b) & 0xFF
            return bytes(mac)
        if key == "ssid":
            return self._ssid
        if key in self._config:
            return self._config[key]
        raise ValueError("unknown config param")

    def scan(self):
        w = self._w()
        if not self._active or not w.wifi_up:
            return []
        ssid = (w.ap_ssid or "picocharge-sim").encode()
        return [(ssid, b"\x00\x11\x22\x33\x44\x55", 6, w.rssi, 3, 0)]


def bind(world):
    """A `network`-like namespace whose WLAN belongs to `world` (fleet simulator)."""

    class Namespace:
        pass

    ns = Namespace()
    ns.WLAN = type("WLAN", (WLAN,), {"_world": world})
    for name in ("STA_IF", "AP_IF", "STAT_IDLE", "STAT_CONNECTING", "STAT_GOT_IP",
                 "STAT_CONNECT_FAIL", "STAT_NO_AP_FOUND", "STAT_WRONG_PASSWORD"):
        setattr(ns, name, globals()[name])
    ns.hostname = hostname
    ns.country = country
    return ns
