"""Firmware bundles served for UpdateFirmware, and diagnostics uploads from GetDiagnostics.

A bundle is a directory ``<firmware_dir>/<name>/`` holding ``manifest.json`` and the files
it lists: ``{"version": "...", "files": {"lib/x.py": {"size": n, "sha256": "..."}, ...}}``,
the format the firmware's UpdateFirmware (firmware/lib/ocpp_firmware.py) downloads: the
files are fetched relative to the manifest's URL. The firmware installs only ``main.py``,
``boot.py`` and ``lib/<name>.py|.mpy`` (name: letters, digits, ``_.-``, at most 40
characters) and takes a version of at most 50 characters (BootNotification's
firmwareVersion); ``describe`` reports anything else as a problem. Build a bundle from
``build/firmware/`` (``make firmware``: the modules as .mpy, as a board runs them); one built
from the sources makes a board compile them at import, which costs it heap.

Signed bundles: ``manifest.sig`` beside the manifest (``python -m tools.sign sign``; format
in docs/firmware.md). The board decides what it installs, so an unsigned bundle is still
served; ``describe`` says whether the bundle is signed, by which key, and whether that
signature matches the manifest as it is now (``signature``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import shutil
import threading
import time
from pathlib import Path

from server.store import Store

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# the signed-bundle format (firmware/lib/firmware_trust.py holds the board's copy)
SIGNATURE_FILE = "manifest.sig"
SIGNATURE_FORMAT = "picocharge-sig-1"
MANIFEST_CONTEXT = b"PicoCharge firmware manifest v1\n"
ENDORSE_CONTEXT = b"PicoCharge key endorsement v2\n"  # + key, retire byte, generation


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(65536), b""):
            digest.update(chunk)
    return digest.hexdigest()


FIRMWARE_LIB_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
MAX_VERSION = 50


def firmware_path_problem(relative: str) -> str | None:
    """Why the firmware would refuse to install ``relative``, or None (the rule of
    firmware/lib/ocpp_firmware.py ``path_allowed``)."""
    if relative in ("main.py", "boot.py"):
        return None
    name = relative[4:] if relative.startswith("lib/") else None
    if (name is None or ".." in name or not FIRMWARE_LIB_NAME.match(name)
            or not name.endswith((".py", ".mpy"))):
        return f"{relative}: the firmware installs only main.py, boot.py and lib/<name>.py|.mpy"
    return None


def build_bundle(source: Path, bundle_dir: Path, version: str, security_version: int = 0) -> dict:
    """Copy every file under ``source`` (``__pycache__`` left out) into ``bundle_dir`` and
    write its manifest. ``security_version``: boards that installed a signed bundle of a
    higher one refuse this one (anti-rollback)."""
    source, bundle_dir = Path(source), Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for path in sorted(p for p in source.rglob("*")
                       if p.is_file() and "__pycache__" not in p.relative_to(source).parts):
        relative = path.relative_to(source).as_posix()
        target = bundle_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        files[relative] = {"size": target.stat().st_size, "sha256": sha256_file(target)}
    manifest = {"version": version, "created_at": int(time.time()), "files": files}
    if security_version:
        manifest["security_version"] = int(security_version)
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def signature_info(bundle: Path) -> dict:
    """{"signed": bool, "key": hex or None, "key_rotations": n, "matches_manifest": bool}:
    whether ``manifest.sig`` is there and its signature, by the key it names, holds for
    the manifest's current bytes (whether a board trusts that key is the board's
    business)."""
    path = Path(bundle) / SIGNATURE_FILE
    if not path.is_file():
        return {"signed": False, "key": None, "key_rotations": 0, "matches_manifest": False}
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    info = {"signed": True, "key": None, "key_rotations": 0, "matches_manifest": False}
    try:
        doc = json.loads(path.read_text())
        if not isinstance(doc, dict) or doc.get("format") != SIGNATURE_FORMAT:
            return info
        info["key"] = str(doc.get("key"))[:64]
        endorse = doc.get("endorse", [])
        info["key_rotations"] = len(endorse) if isinstance(endorse, list) else 0
        manifest = (Path(bundle) / "manifest.json").read_bytes()
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(doc["key"])).verify(
            bytes.fromhex(doc["sig"]), MANIFEST_CONTEXT + hashlib.sha256(manifest).digest())
        info["matches_manifest"] = True
    except (OSError, ValueError, TypeError, KeyError, InvalidSignature):
        pass
    return info


class FirmwareLibrary:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def bundle_dir(self, name: str) -> Path | None:
        if not SAFE_NAME.match(name):
            return None
        path = self.root / name
        return path if (path / "manifest.json").is_file() else None

    def describe(self, name: str) -> dict | None:
        """The manifest plus a verification of every listed file's size and sha256."""
        path = self.bundle_dir(name)
        if path is None:
            return None
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except ValueError as exc:
            return {"name": name, "valid": False, "problems": [f"manifest.json: {exc}"],
                    "signature": signature_info(path)}
        problems = []
        files = manifest.get("files")
        if not isinstance(files, dict):
            return {"name": name, "valid": False,
                    "problems": ["manifest.json: files must map paths to {size, sha256}"],
                    "signature": signature_info(path)}
        version = manifest.get("version")
        if not isinstance(version, str) or not 0 < len(version) <= MAX_VERSION:
            problems.append(f"manifest.json: version must be a string of 1 to {MAX_VERSION} "
                            "characters (BootNotification firmwareVersion)")
        for relative, entry in files.items():
            file_path = (path / relative).resolve()
            refused = firmware_path_problem(relative)
            if refused:
                problems.append(refused)
            elif path.resolve() not in file_path.parents:
                problems.append(f"{relative}: outside the bundle")
            elif not file_path.is_file():
                problems.append(f"{relative}: missing")
            elif not isinstance(entry, dict) or sha256_file(file_path) != entry.get("sha256"):
                problems.append(f"{relative}: sha256 mismatch")
            elif entry.get("size") != file_path.stat().st_size:
                problems.append(f"{relative}: size mismatch")
        return {"name": name, "version": manifest.get("version"),
                "files": files, "valid": not problems, "problems": problems,
                "signature": signature_info(path)}

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and (p / "manifest.json").is_file() and SAFE_NAME.match(p.name))


class UploadRefused(Exception):
    """An upload over a station's bounds; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class UploadTokens:
    """One-time tokens the server puts in a GetDiagnostics location, so that a station
    that cannot send Basic auth on its upload can still prove the upload was asked for.
    A token is bound to one charge point, expires, and is spent by a stored upload."""

    MAX_PER_STATION = 4

    def __init__(self, lifetime_seconds: float) -> None:
        self.lifetime = lifetime_seconds
        self._lock = threading.Lock()
        self._tokens: dict[str, list[tuple[str, float]]] = {}  # cp_id → [(digest, expiry)]

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def issue(self, cp_id: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(24)
        with self._lock:
            alive = [t for t in self._tokens.get(cp_id, []) if t[1] > now]
            alive.append((self._digest(token), now + self.lifetime))
            self._tokens[cp_id] = alive[-self.MAX_PER_STATION:]
        return token

    def take(self, cp_id: str, token: str, now: float | None = None) -> float | None:
        """Claim a valid token (so two uploads cannot share it); its expiry, or None."""
        now = time.time() if now is None else now
        digest = self._digest(token)
        with self._lock:
            tokens = self._tokens.get(cp_id, [])
            for entry in tokens:
                if hmac.compare_digest(entry[0], digest) and entry[1] > now:
                    tokens.remove(entry)
                    if not tokens:
                        self._tokens.pop(cp_id, None)
                    return entry[1]
        return None

    def give_back(self, cp_id: str, token: str, expiry: float) -> None:
        """Return a claimed token whose upload was not stored (the station may retry)."""
        with self._lock:
            self._tokens.setdefault(cp_id, []).append((self._digest(token), expiry))


class DiagnosticsInbox:
    """Each station's uploads in a folder of its own, within its quotas. A station id that
    cannot be a folder name gets one named after its hash, never a shared one; the quota
    check and the write run under the station's lock, so two uploads at once cannot both
    pass the same check."""

    def __init__(self, root: Path, store: Store) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = store
        self._locks_guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def folder(self, cp_id: str) -> Path:
        if SAFE_NAME.match(cp_id) and not cp_id.startswith("id-"):
            return self.root / cp_id
        return self.root / ("id-" + hashlib.sha256(cp_id.encode()).hexdigest()[:24])

    def _lock(self, cp_id: str) -> threading.Lock:
        with self._locks_guard:
            if len(self._locks) > 10000:  # bounded: locks of idle stations are dropped
                for key in [k for k, lock in self._locks.items() if not lock.locked()]:
                    del self._locks[key]
            return self._locks.setdefault(cp_id, threading.Lock())

    def receive(self, cp_id: str, files_config: dict, filename: str | None, stream,
                max_bytes: int) -> dict:
        """check_bounds, then save, as one step per station."""
        with self._lock(cp_id):
            self.check_bounds(cp_id, files_config)
            return self.save(cp_id, filename, stream, max_bytes)

    def check_bounds(self, cp_id: str, files_config: dict, now: float | None = None) -> None:
        """Raise UploadRefused when the station used up its uploads per hour or its space."""
        now = time.time() if now is None else now
        folder = self.folder(cp_id)
        if not folder.is_dir():
            return
        stats = [p.stat() for p in folder.iterdir() if p.is_file()]
        per_hour = files_config["diagnostics_uploads_per_hour"]
        if per_hour > 0 and sum(1 for st in stats if now - st.st_mtime < 3600) >= per_hour:
            raise UploadRefused(429, f"at most {per_hour} diagnostics uploads per hour")
        space = files_config["diagnostics_max_bytes_per_station"]
        if space > 0 and sum(st.st_size for st in stats) >= space:
            raise UploadRefused(507, f"the station's diagnostics use their {space} bytes")

    def save(self, cp_id: str, filename: str | None, stream, max_bytes: int) -> dict:
        name = Path(filename or "diagnostics.bin").name
        if not SAFE_NAME.match(name):
            name = "diagnostics.bin"
        folder = self.folder(cp_id)
        folder.mkdir(parents=True, exist_ok=True)
        received_at = time.time()
        stamp = time.strftime('%Y%m%dT%H%M%S', time.gmtime(received_at))
        target, serial = folder / f"{stamp}_{name}", 1
        while True:  # two uploads in one second must not overwrite each other
            try:
                handle = open(target, "xb")
                break
            except FileExistsError:
                serial += 1
                target = folder / f"{stamp}-{serial}_{name}"
        digest, size = hashlib.sha256(), 0
        with handle:
            for chunk in iter(lambda: stream.read(65536), b""):
                size += len(chunk)
                if size > max_bytes:
                    handle.close()
                    target.unlink()
                    raise ValueError(f"upload exceeds {max_bytes} bytes")
                digest.update(chunk)
                handle.write(chunk)
        row = {"cp_id": cp_id, "filename": name, "path": str(target), "size": size,
               "sha256": digest.hexdigest(), "received_at": received_at}
        self.store.add_diagnostics_file(row)
        return row
