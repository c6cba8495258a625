"""A test double of the station interface (docs/firmware.md), for unit-level runs of the
charge point without the station's hardware loop. Scenario tests use the real station."""


class FakeStation:
    def __init__(self):
        self.pilot = "A"
        self.allowed = False
        self.limit = None
        self.wh = 0.0
        self.fault_list = []
        self.amps = 16.0

    def start(self):
        pass

    async def run(self):
        pass

    def pilot_state(self):
        return self.pilot

    def plugged(self):
        return self.pilot in ("B", "C", "D")

    def ev_wants_energy(self):
        return self.pilot in ("C", "D")

    def set_charging_allowed(self, flag):
        self.allowed = flag

    def set_limit_a(self, amps):
        self.limit = amps

    def offered_a(self):
        if not self.allowed:
            return 0
        return self.amps if self.limit is None else min(self.amps, self.limit)

    def relay_closed(self):
        return self.allowed and self.pilot in ("C", "D")

    def faults(self):
        return self.fault_list

    def energy_wh(self):
        return self.wh

    def power_w(self):
        return self.offered_a() * 230.0 if self.relay_closed() else 0.0

    def current_a(self):
        return self.offered_a() if self.relay_closed() else 0.0

    def voltage_v(self):
        return 230.0

    def temperature_c(self):
        return 24.0

    def humidity(self):
        return 40.0

    def mcu_temperature_c(self):
        return 30.0

    def tick(self, seconds):
        if self.relay_closed():
            self.wh += self.power_w() * seconds / 3600.0
