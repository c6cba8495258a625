"""Fetch and build the pinned third-party pieces the test bench needs.

* ``micropython``: the MicroPython Unix port, built from Debian's source tarball of
  MicroPython (hash-pinned) into the project cache. Nothing is installed system-wide.
* ``umqtt``: the upstream ``umqtt.simple`` module from its published distribution on the
  Python package index (hash-pinned), unpacked where MicroPython and the host runner find it.

The download locations come from the machine's own package-manager configuration (apt's
sources, pip's index), so the project never hard-codes a mirror. Every artefact is checked
against its SHA-256 before use; a mismatch stops the build with a clear message.

Usage: python -m tools.fetch {micropython,umqtt,all} [--cache DIR]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("PICOCHARGE_CACHE", ROOT / ".cache"))
STAND_INS = ROOT / "tools" / "stubs"

MICROPYTHON_VERSION = "1.25.0"
MICROPYTHON_SOURCE = "pool/main/m/micropython/micropython_1.25.0+ds.orig.tar.xz"
MICROPYTHON_SHA256 = "7b25be99a502f070b2de81dafc08da7051d992325d6e67daa9045a918fffdbea"

UMQTT_PROJECT = "micropython-umqtt.simple"
UMQTT_VERSION = "1.3.4"
UMQTT_FILE = "micropython-umqtt.simple-1.3.4.tar.gz"
UMQTT_SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"

# The Unix port is built as Debian builds its "standard" variant, minus the pieces Debian
# strips from its source (bundled mbedTLS, Berkeley DB, libffi): so no `ssl` module here.
MAKE_FLAGS = [
    "VARIANT=standard",
    "MICROPY_PY_BTREE=0",
    "MICROPY_PY_SSL=0",
    "MICROPY_PY_FFI=0",
]


def log(msg: str) -> None:
    print(f"[fetch] {msg}", flush=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, sha256: str) -> Path:
    if dest.exists() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log(f"downloading {dest.name}")
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=120) as resp, open(tmp, "wb") as out:
        shutil.copyfileobj(resp, out)
    got = sha256_of(tmp)
    if got != sha256:
        tmp.unlink()
        sys.exit(f"[fetch] SHA-256 mismatch for {dest.name}: expected {sha256}, got {got}")
    tmp.rename(dest)
    return dest


def debian_mirror() -> str:
    """The Debian archive URI apt uses on this machine (or $PICOCHARGE_DEBIAN_MIRROR)."""
    override = os.environ.get("PICOCHARGE_DEBIAN_MIRROR")
    if override:
        return override.rstrip("/")
    candidates = []
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*"))
    for name in files:
        try:
            text = Path(name).read_text()
        except OSError:
            continue
        candidates += re.findall(r"^\s*URIs:\s*(\S+)", text, re.M)
        candidates += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
    for uri in candidates:
        if re.search(r"/debian/?$", uri):
            return uri.rstrip("/")
    sys.exit("[fetch] no Debian archive found in apt's sources; set PICOCHARGE_DEBIAN_MIRROR")


def package_index() -> str:
    """The simple-API base URL pip uses (or $PIP_INDEX_URL)."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        from pip._internal.models.index import PyPI

        url = PyPI.simple_url
    return url.rstrip("/")


def run_make(cmd: list[str], what: str) -> None:
    # GIT_DIR: keep the version stamp from picking up this repository's git metadata.
    env = dict(os.environ, GIT_DIR=os.devnull)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        sys.exit(f"[fetch] building {what} failed")


def stand_in_sources() -> list[Path]:
    return sorted(STAND_INS.glob("*.py"))


def stand_ins_digest() -> str:
    """Hash of the hardware stand-ins frozen into the build (tools.board checks it)."""
    digest = hashlib.sha256()
    for path in stand_in_sources():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def frozen_manifest() -> str:
    """asyncio, as on a Pico, plus the hardware stand-ins: frozen code lives in the binary,
    not on the heap, as a board's own drivers do, so the 192 KiB heap is the firmware's."""
    lines = ['include("$(MPY_DIR)/extmod/asyncio")']
    for path in stand_in_sources():
        lines.append(f"module({path.name!r}, base_path={str(path.parent)!r})")
    return "\n".join(lines) + "\n"


def build_micropython(cache: Path) -> Path:
    binary = cache / "bin" / "micropython"
    stamp = cache / "bin" / "micropython.stamp"
    wanted = json.dumps({"version": MICROPYTHON_VERSION, "flags": MAKE_FLAGS,
                         "frozen_stand_ins": stand_ins_digest()})
    if binary.exists() and stamp.exists() and stamp.read_text() == wanted:
        return binary
    for tool in ("gcc", "make"):
        if shutil.which(tool) is None:
            sys.exit(f"[fetch] '{tool}' is missing: install build-essential (apt-get install build-essential)")
    tarball = download(
        f"{debian_mirror()}/{MICROPYTHON_SOURCE}",
        cache / "downloads" / Path(MICROPYTHON_SOURCE).name,
        MICROPYTHON_SHA256,
    )
    src = cache / f"micropython-{MICROPYTHON_VERSION}"
    if not (src / "ports" / "unix").is_dir():
        log(f"unpacking {tarball.name}")
        with tarfile.open(tarball) as tar:
            tar.extractall(cache, filter="data")
    # Debian's source omits the micropython-lib submodule; the port only checks that the
    # directory is populated, and our manifest freezes nothing from it.
    (src / "lib" / "micropython-lib" / "README.md").touch()
    manifest = cache / "unix-manifest.py"
    manifest.write_text(frozen_manifest())
    log("building the MicroPython Unix port (about a minute on 2 cores)")
    jobs = f"-j{os.cpu_count() or 2}"
    # mpy-cross first and on its own: the port's make would pass FROZEN_MANIFEST down to it.
    run_make(["make", "-C", str(src / "mpy-cross"), jobs], "mpy-cross")
    cmd = ["make", "-C", str(src / "ports" / "unix"), jobs,
           f"FROZEN_MANIFEST={manifest}", *MAKE_FLAGS]
    run_make(cmd, "the MicroPython Unix port")
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Replace by rename: a running test may be executing the old binary.
    fresh = binary.with_name("micropython.new")
    shutil.copy2(src / "ports" / "unix" / "build-standard" / "micropython", fresh)
    os.replace(fresh, binary)
    stamp.write_text(wanted)
    version = subprocess.run([str(binary), "-c", "import sys; print(sys.version)"],
                             capture_output=True, text=True).stdout.strip()
    log(f"MicroPython ready: {binary} ({version})")
    return binary


def fetch_umqtt(cache: Path) -> Path:
    target = cache / "mplib" / "umqtt" / "simple.py"
    stamp = cache / "mplib" / "umqtt.stamp"
    if target.exists() and stamp.exists() and stamp.read_text() == UMQTT_SHA256:
        return target
    index = package_index()
    req = urllib.request.Request(
        f"{index}/{UMQTT_PROJECT}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        listing = json.load(resp)
    entry = next((f for f in listing["files"] if f["filename"] == UMQTT_FILE), None)
    if entry is None:
        sys.exit(f"[fetch] {UMQTT_FILE} is not on the package index")
    if entry["hashes"].get("sha256") != UMQTT_SHA256:
        sys.exit(f"[fetch] the index lists a different SHA-256 for {UMQTT_FILE}")
    archive = download(entry["url"], cache / "downloads" / UMQTT_FILE, UMQTT_SHA256)
    with tarfile.open(archive) as tar:
        member = tar.getmember(f"micropython-umqtt.simple-{UMQTT_VERSION}/umqtt/simple.py")
        code = tar.extractfile(member).read()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        tmp.write(code)
    os.replace(tmp.name, target)
    stamp.write_text(UMQTT_SHA256)
    log(f"umqtt.simple {UMQTT_VERSION} ready: {target}")
    return target


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["micropython", "umqtt", "all"])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    cache = args.cache.resolve()  # make runs in other directories
    if args.what in ("micropython", "all"):
        build_micropython(cache)
    if args.what in ("umqtt", "all"):
        fetch_umqtt(cache)
    return 0


if __name__ == "__main__":
    sys.exit(main())
