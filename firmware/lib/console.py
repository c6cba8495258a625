"""The serial console while the app runs: an asyncio task that reads lines typed on the
board's USB serial (stdin) and evaluates them, so a technician can `import ev` and call
`ev.status()` without stopping the charger. Ctrl-C still stops the app and gives the
plain REPL.

Lines run in `__main__`'s namespace (where `app` lives). An expression's value is
printed as the REPL would; errors are printed and never end the task. A line runs inside
the event loop: a long command delays the loop, never the safety timer.
"""

import asyncio
import sys

MAX_LINE = 256


class Console:
    def __init__(self, namespace=None, out=print, poll_ms=50):
        if namespace is None:
            import __main__

            namespace = __main__.__dict__
        self.ns = namespace
        self.out = out
        self.poll_ms = poll_ms
        self.buf = ""
        self.lines = 0
        self.poller = None
        self.micropython = sys.implementation.name == "micropython"
        try:
            import select

            self.poller = select.poll()
            self.poller.register(sys.stdin, select.POLLIN)
        except Exception:
            self.poller = None  # no console input (a fleet simulator's boards)

    def _read_ready(self):
        """Characters available now, without blocking ("" if none)."""
        got = ""
        while self.poller.poll(0):
            if self.micropython:
                ch = sys.stdin.read(1)
            else:
                import os

                ch = os.read(sys.stdin.fileno(), 256).decode("utf-8", "replace")
            if not ch:
                break
            got += ch
            if "\n" in ch or len(got) > MAX_LINE:
                break
        return got

    def execute(self, line):
        line = line.strip()
        if not line:
            return
        self.lines += 1
        self.out(">>> " + line)
        try:
            try:
                code = compile(line, "<console>", "eval")
            except SyntaxError:
                code = None
            if code is not None:
                value = eval(code, self.ns)
                if value is not None:
                    self.out(repr(value))
            else:
                exec(compile(line, "<console>", "exec"), self.ns)
        except Exception as exc:
            self.out("%s: %s" % (type(exc).__name__, exc))

    async def run(self):
        if self.poller is None:
            return
        while True:
            chunk = self._read_ready()
            if chunk:
                self.buf += chunk
                while "\n" in self.buf:
                    line, self.buf = self.buf.split("\n", 1)
                    self.execute(line)
                if len(self.buf) > MAX_LINE:
                    self.buf = ""
            await asyncio.sleep_ms(self.poll_ms)
