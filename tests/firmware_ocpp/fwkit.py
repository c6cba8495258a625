"""Helpers for the Firmware Management end-to-end tests (test_firmware_update.py).

- `make_bundle(runtime, dest, version, ...)`: a firmware bundle built from the current
  firmware exactly as a board of that runtime runs it (lib/ as .mpy for MicroPython, as
  source for CPython; boot.py and main.py as source), with `main.py` printing a marker
  line so a test can see which firmware booted, optionally with one module changed, in the
  manifest format of `server/files.py` (`build_bundle` writes it), signed by the maker's
  test key `MAKER` (tools/sign.py) unless told otherwise.
- `MAKER`, `MAKER_PUB` (hex, what a board's `firmware.keys` holds), `OTHER`: fixed test keys.
- `FileServer`: a threaded HTTP server on 127.0.0.1 serving bundle directories, with
  faults per path (404, a body cut short), recording every request with its wall-clock
  time and every upload.
- `firmware_files(flash)`: the firmware files on a board's flash (name -> bytes).
- `firmware_module(name)`: a module of firmware/lib/ imported on CPython for a unit test,
  under a private name and without putting firmware/lib/ on sys.path (its module names,
  `config`, `storage`, `app`..., would shadow others in the test process).
"""

from __future__ import annotations

import importlib.util
import shutil
import socket
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.files import build_bundle
from tools.board import FIRMWARE, compiled
from tools.sign import public_hex, sign_bundle

MARK = "booted firmware bundle"
MAKER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
MAKER_PUB = public_hex(MAKER)
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))


def make_bundle(runtime: str, dest: Path, version: str, edits: dict | None = None,
                mark_all: bool = False, key: Ed25519PrivateKey | None = MAKER,
                endorsements=(), security_version: int = 0) -> dict:
    """Build a complete firmware bundle into `dest` (manifest.json + files).

    `edits` maps a firmware source path ("lib/app.py") to a function text -> text applied
    before compiling; `mark_all` gives every module a `_BUNDLE = version` constant, so
    every file of the bundle differs from the installed firmware. `key` signs it
    (`manifest.sig`, with `endorsements`: key rotations); None leaves it unsigned.
    Returns the manifest."""
    edits = dict(edits or {})
    main = (FIRMWARE / "main.py").read_text()
    edits_main = edits.pop("main.py", None)
    if edits_main is not None:
        main = edits_main(main)
    main = 'print("%s %s")\n' % (MARK, version) + main
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        (tree / "lib").mkdir(parents=True)
        (tree / "main.py").write_text(main)
        shutil.copyfile(FIRMWARE / "boot.py", tree / "boot.py")
        for src in sorted((FIRMWARE / "lib").glob("*.py")):
            rel = "lib/" + src.name
            if rel in edits or mark_all:
                text = src.read_text()
                if rel in edits:
                    text = edits.pop(rel)(text)
                if mark_all:
                    text += '\n_BUNDLE = "%s"\n' % version
                changed = Path(tmp) / src.name
                changed.write_text(text)
                src = changed
            if runtime == "micropython":
                shutil.copyfile(compiled(src), tree / "lib" / (src.stem + ".mpy"))
            else:
                shutil.copyfile(src, tree / "lib" / src.name)
        assert not edits, "no such firmware file: %s" % sorted(edits)
        manifest = build_bundle(tree, dest, version, security_version)
    if key is not None:
        sign_bundle(dest, key, endorsements)
    return manifest


def firmware_module(name: str):
    spec = importlib.util.spec_from_file_location("firmware_lib_" + name,
                                                  FIRMWARE / "lib" / (name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def firmware_files(flash: Path) -> dict[str, bytes]:
    """boot.py, main.py and lib/* (not the board's data: config, logs, ocpp/, fw/)."""
    out = {}
    for name in ("boot.py", "main.py"):
        if (flash / name).exists():
            out[name] = (flash / name).read_bytes()
    for path in sorted((flash / "lib").rglob("*")):
        if path.is_file():
            out[path.relative_to(flash).as_posix()] = path.read_bytes()
    return out


def free_port() -> int:
    """A port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FileServer:
    """Serves `root` (bundle directories) over HTTP/1.1 on 127.0.0.1.

    `faults[path] = "404" | "truncate"` breaks one path: 404, or the body cut in half with
    the connection closed. `requests`: (wall time, method, path); `uploads`: (wall time,
    method, path, headers, body)."""

    def __init__(self, root: Path, tls=None):
        """`tls`: an SSL server context for HTTPS (the handshake in the request's thread)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.faults: dict[str, str] = {}
        self.requests: list[tuple[float, str, str]] = []
        self.uploads: list[tuple[float, str, str, dict, bytes]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, body=b"", close=False):
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if close:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                with owner.lock:
                    owner.requests.append((time.time(), "GET", path))
                    fault = owner.faults.get(path)
                target = (owner.root / path.lstrip("/")).resolve()
                if fault == "404" or owner.root.resolve() not in target.parents or not target.is_file():
                    self._reply(404, b"not found")
                    return
                data = target.read_bytes()
                if fault == "truncate":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(data[:len(data) // 2])
                    self.close_connection = True
                    return
                self._reply(200, data)

            def _upload(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with owner.lock:
                    owner.uploads.append((time.time(), method, self.path, dict(self.headers), body))
                self._reply(201, b"stored %d" % len(body))

            def do_PUT(self):
                self._upload("PUT")

            def do_POST(self):
                self._upload("POST")

        class Server(ThreadingHTTPServer):
            def finish_request(self, request, client_address):
                if tls is not None:
                    try:
                        request = tls.wrap_socket(request, server_side=True)
                    except OSError:
                        return  # a client that refused the certificate
                super().finish_request(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "%s://127.0.0.1:%d" % ("https" if tls is not None else "http",
                                          self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def gets(self, path: str) -> list[float]:
        with self.lock:
            return [t for t, method, p in self.requests if method == "GET" and p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
