"""A size-bounded rotating log on flash.

`Log(flash)` is callable: `log("text")` prints the line on the console and appends it,
time-stamped, to `log.txt`. When the file passes `max_bytes` it is renamed to `log.1.txt`
(the previous `log.1.txt` is dropped), so the log never holds more than twice
`max_bytes`. `tail(n)` returns the last n lines (read from the end, bounded). A full flash
or a failing write never raises: the console still gets the line.
"""

import time


class Log:
    def __init__(self, flash, name="log.txt", max_bytes=16384, echo=print, clock=None):
        self.flash = flash
        self.name = name
        self.old = name.replace(".txt", ".1.txt")
        self.max_bytes = max_bytes
        self.echo = echo
        self.clock = clock
        self.size = flash.size(name)
        self.start_ms = time.ticks_ms()
        self.lines = 0
        self.write_errors = 0

    def stamp(self):
        clock = self.clock
        if clock is not None and clock.synced:
            return clock.iso()
        return "+%ds" % (time.ticks_diff(time.ticks_ms(), self.start_ms) // 1000)

    def __call__(self, text):
        if self.echo is not None:
            self.echo(text)
        line = "%s %s\n" % (self.stamp(), text)
        data = line.encode()
        try:
            if self.size + len(data) > self.max_bytes:
                self.rotate()
            self.flash.append(self.name, data)
            self.size += len(data)
            self.lines += 1
        except OSError:
            self.write_errors += 1

    def rotate(self):
        self.flash.remove(self.old)
        if self.flash.exists(self.name):
            self.flash.rename(self.name, self.old)
        self.size = 0

    def tail(self, n=20, max_read=4096):
        """The last `n` lines (from the current file, then the rotated one)."""
        out = self._tail_of(self.name, n, max_read)
        if len(out) < n:
            out = self._tail_of(self.old, n - len(out), max_read) + out
        return out

    def _tail_of(self, name, n, max_read):
        size = self.flash.size(name)
        if size <= 0:
            return []
        try:
            with open(self.flash.path(name), "rb") as fh:
                start = size - max_read if size > max_read else 0
                fh.seek(start)
                data = fh.read()
        except OSError:
            return []
        lines = data.decode("utf-8", "replace").split("\n") if hasattr(data, "decode") else []
        if start > 0:
            lines = lines[1:]  # the first one is cut
        lines = [ln for ln in lines if ln]
        return lines[-n:]
