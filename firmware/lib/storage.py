"""The board's flash filesystem, seen through one object rooted at a directory.

On a board the root is "" (the flash root, the working directory at boot); the fleet
simulator gives every charge point its own directory. Writes are atomic: a temporary file
is written, then renamed over the old one, so a power cut leaves either the old or the new
content, never half of it. A full flash raises `FlashFull`, never a half-written file.
"""

import json
import os

ENOSPC = 28


class FlashFull(OSError):
    pass


def complete_json(text):
    """True if every bracket opened outside a string is closed (and the text is not empty)."""
    depth = 0
    in_string = False
    escaped = False
    seen = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            seen = True
        elif ch in "{[":
            depth += 1
            seen = True
        elif ch in "}]":
            depth -= 1
            if depth < 0:
                return False
        elif ch not in " \t\r\n":
            seen = True
    return seen and depth == 0 and not in_string


class Flash:
    def __init__(self, root=""):
        if root and not root.endswith("/"):
            root += "/"
        self.root = root
        if root:
            self.makedirs("")

    def path(self, name):
        return self.root + name

    def exists(self, name):
        try:
            os.stat(self.path(name))
            return True
        except OSError:
            return False

    def size(self, name):
        try:
            return os.stat(self.path(name))[6]
        except OSError:
            return 0

    def makedirs(self, name):
        parts = (self.root + name).rstrip("/").split("/")
        path = ""
        for part in parts:
            if not part:
                path += "/"
                continue
            path = path + part if path.endswith("/") or not path else path + "/" + part
            try:
                os.mkdir(path)
            except OSError:
                pass

    def listdir(self, name=""):
        try:
            return sorted(os.listdir(self.path(name) or "."))
        except OSError:
            return []

    def read_bytes(self, name):
        with open(self.path(name), "rb") as fh:
            return fh.read()

    def read_text(self, name):
        with open(self.path(name)) as fh:
            return fh.read()

    def read_json(self, name):
        """Parse a JSON file; ValueError if it is malformed or cut short (MicroPython's
        parser accepts a truncated document, so the nesting is checked here)."""
        text = self.read_text(name)
        if not complete_json(text):
            raise ValueError("truncated JSON")
        return json.loads(text)

    def write_bytes(self, name, data):
        """Atomically replace `name` with `data`."""
        final = self.path(name)
        tmp = final + ".tmp"
        try:
            with open(tmp, "wb") as fh:
                written = fh.write(data)
            if written is not None and written != len(data):
                raise OSError(ENOSPC)
        except OSError as exc:
            self._discard(tmp)
            if exc.args and exc.args[0] == ENOSPC:
                raise FlashFull(ENOSPC, "flash full writing " + name)
            raise
        os.rename(tmp, final)

    def write_text(self, name, text):
        self.write_bytes(name, text.encode())

    def write_json(self, name, obj):
        self.write_bytes(name, json.dumps(obj).encode())

    def append(self, name, data):
        """Append bytes (not atomic by nature; callers frame records themselves)."""
        try:
            with open(self.path(name), "ab") as fh:
                fh.write(data)
        except OSError as exc:
            if exc.args and exc.args[0] == ENOSPC:
                raise FlashFull(ENOSPC, "flash full appending " + name)
            raise

    def remove(self, name):
        self._discard(self.path(name))

    def rename(self, old, new):
        os.rename(self.path(old), self.path(new))

    def free_bytes(self):
        try:
            st = os.statvfs(self.root or ".")
            return st[0] * st[3]
        except (OSError, AttributeError):
            return -1

    def _discard(self, path):
        try:
            os.remove(path)
        except OSError:
            pass
