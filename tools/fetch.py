"""Fetch and build the pinned third-party pieces the test bench needs.

* ``micropython``: the MicroPython Unix port built as the board's runtime: 32-bit (object
  sizes as on the RP2040) with mbedTLS configured as MicroPython's rp2 port configures it
  (TLS buffers on the MicroPython heap). Sources: Debian's source tarballs of MicroPython
  and of mbedTLS (the ``.orig`` tarballs of the source packages ``micropython`` and
  ``mbedtls``, both hash-pinned); built into the project cache, nothing installed
  system-wide. Needs gcc-multilib (Debian, Ubuntu) for the 32-bit C library.
* ``umqtt``: the upstream ``umqtt.simple`` module from its published distribution on the
  Python package index (hash-pinned), unpacked where MicroPython and the host runner find it.

The download locations come from the machine's own package-manager configuration (apt's
sources, pip's index), so the project never hard-codes a mirror. Every artefact is checked
against its SHA-256 before use; a mismatch stops the build with a clear message.

apt's sources are read in both formats, the one-line ``deb URI SUITE COMPONENT...`` lines of
/etc/apt/sources.list and sources.list.d/*.list, and the deb822 stanzas of
sources.list.d/*.sources (Debian 12's and Ubuntu 24.04's default). The distribution's archives
among them (a URI ending in /debian, /ubuntu or /ubuntu-ports, or a suite named after this
release) are asked for ``pool/<component>/<p>/<package>/<file>``: Debian keeps both packages in
``main``, Ubuntu in ``universe``. Ubuntu's pool has the file only while some Ubuntu release
carries that very upload (an Ubuntu release with other versions does not): then the build
stops and asks for ``PICOCHARGE_DEBIAN_MIRROR``, a Debian archive's URL (the URI of a Debian
machine's apt sources, ending in /debian), which is also the override on any machine.

Usage: python -m tools.fetch {micropython,umqtt,all} [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("PICOCHARGE_CACHE", ROOT / ".cache"))
STAND_INS = ROOT / "tools" / "stubs"

MICROPYTHON_VERSION = "1.25.0"
MICROPYTHON_SOURCE = ("micropython", "micropython_1.25.0+ds.orig.tar.xz")  # (package, file)
MICROPYTHON_SHA256 = "7b25be99a502f070b2de81dafc08da7051d992325d6e67daa9045a918fffdbea"

# mbedTLS of the 3.6 LTS line, whose source file list MicroPython 1.25's extmod.mk names,
# from Debian's source package; unpacked into the MicroPython tree's empty lib/mbedtls.
MBEDTLS_VERSION = "3.6.5"
MBEDTLS_SOURCE = ("mbedtls", "mbedtls_3.6.5.orig.tar.bz2")
MBEDTLS_SHA256 = "4a11f1777bb95bf4ad96721cac945a26e04bf19f57d905f241fe77ebeddf46d8"
# mbedTLS configuration: the rp2 port's (bare metal: allocations on the MicroPython heap).
MBEDTLS_CONFIG = ROOT / "tools" / "micropython" / "mbedtls_config_board.h"
# Python modules a Pico W's firmware image freezes that this source tree lacks (`ssl`).
BOARD_MODULES = [ROOT / "tools" / "micropython" / "ssl.py"]

UMQTT_PROJECT = "micropython-umqtt.simple"
UMQTT_VERSION = "1.3.4"
UMQTT_FILE = "micropython-umqtt.simple-1.3.4.tar.gz"
UMQTT_SHA256 = "b6a2520239e3992c63a7de9370ee9b3d9d27819a90359c521f1c0f7ccab8d12f"

# The Unix port as the board's runtime: Debian's "standard" variant build, minus Berkeley DB
# and libffi (stripped from Debian's source, absent on a Pico W), but 32-bit and with the
# `tls` module on mbedTLS. MICROPY_TRACKED_ALLOC is what the rp2 port turns on with mbedTLS:
# mbedTLS's calloc/free become m_tracked_calloc/free, which take their memory from the
# MicroPython heap, so TLS record buffers and handshake state count in gc.mem_alloc() and
# against -X heapsize exactly as they count against a Pico W's heap.
MAKE_FLAGS = [
    "VARIANT=standard",
    "MICROPY_FORCE_32BIT=1",
    "MICROPY_PY_BTREE=0",
    "MICROPY_PY_FFI=0",
    "MICROPY_PY_SSL=1",
    "MICROPY_SSL_MBEDTLS=1",
    "CFLAGS_EXTRA=-DMICROPY_TRACKED_ALLOC=1",
]


def log(msg: str) -> None:
    print(f"[fetch] {msg}", flush=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ChecksumMismatch(SystemExit):
    """A download whose SHA-256 is not the pinned one (exits unless the caller tries elsewhere)."""


def download(url: str, dest: Path, sha256: str, announce: bool = True) -> Path:
    if dest.exists() and sha256_of(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if announce:
        log(f"downloading {dest.name}")
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=120) as resp, open(tmp, "wb") as out:
        shutil.copyfileobj(resp, out)
    got = sha256_of(tmp)
    if got != sha256:
        tmp.unlink()
        raise ChecksumMismatch(f"[fetch] SHA-256 mismatch for {dest.name}: expected {sha256}, got {got}")
    tmp.rename(dest)
    return dest


MIRROR_VARIABLE = "PICOCHARGE_DEBIAN_MIRROR"
# Archive paths of the distributions' own archives and their mirrors.
ARCHIVE_NAMES = ("debian", "ubuntu", "ubuntu-ports")
# Where Debian (main) and Ubuntu (universe) keep these two packages: tried first.
COMPONENT_ORDER = ("main", "universe")


@dataclass
class AptSource:
    """One entry of apt's sources: a one-line ``deb`` line or a deb822 stanza."""

    types: list[str]
    uris: list[str]
    suites: list[str]
    components: list[str] = field(default_factory=list)
    origin: str = ""  # the file it came from, for messages


def _mirror_list(uri: str) -> list[str]:
    """apt's ``mirror+file:`` method: the URIs listed in that local file (cloud images use it)."""
    path = re.sub(r"^mirror\+file:(//)?", "", uri)
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    return [line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _network_uris(uris: list[str]) -> list[str]:
    """The http(s) URIs (a ``mirror+file:`` list opened), without trailing slashes."""
    out = []
    for uri in uris:
        if uri.startswith("mirror+file:"):
            out += _network_uris(_mirror_list(uri))
        elif re.match(r"https?://", uri):
            out.append(uri.rstrip("/"))
    return out


def parse_one_line(text: str, origin: str = "") -> list[AptSource]:
    """``deb [options] URI SUITE [COMPONENT...]`` lines (sources.list, *.list)."""
    sources = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"(deb|deb-src)\s+(?:\[[^\]]*\]\s*)?(cdrom:\[[^\]]*\]\S*|\S+)\s+(\S+)\s*(.*)$",
                         line)
        if match:
            kind, uri, suite, components = match.groups()
            sources.append(AptSource([kind], [uri], [suite], components.split(), origin))
    return sources


def parse_deb822(text: str, origin: str = "") -> list[AptSource]:
    """deb822 stanzas (sources.list.d/*.sources): blank-line separated ``Field: value`` lines,
    continuation lines indented, ``#`` lines comments; ``Enabled: no`` stanzas skipped."""
    sources = []
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        last = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and last:
                fields[last] += " " + line.strip()
                continue
            key, sep, value = line.partition(":")
            if sep:
                last = key.strip().lower()
                fields[last] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or not fields.get("uris"):
            continue
        sources.append(AptSource(fields.get("types", "deb").split(), fields["uris"].split(),
                                 fields.get("suites", "").split(),
                                 fields.get("components", "").split(), origin))
    return sources


def apt_sources(etc: Path = Path("/etc/apt")) -> list[AptSource]:
    """apt's sources in the order apt reads them: sources.list, then sources.list.d's *.list
    and *.sources files in name order (other names, such as *.save, are ignored, as apt does)."""
    sources: list[AptSource] = []
    files = [etc / "sources.list"] + sorted(
        p for p in (etc / "sources.list.d").glob("*") if p.suffix in (".list", ".sources"))
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        parse = parse_deb822 if path.suffix == ".sources" else parse_one_line
        sources += parse(text, str(path))
    return sources


def release_codename(os_release: Path = Path("/etc/os-release")) -> str:
    try:
        text = os_release.read_text()
    except OSError:
        return ""
    match = re.search(r"^VERSION_CODENAME=\"?([^\"\n]*)", text, re.M)
    return match.group(1).strip() if match else ""


def is_distribution_archive(source: AptSource, uri: str, codename: str = "") -> bool:
    """The distribution's archive (or a mirror of it), not a third party's repository: its path
    ends in /debian, /ubuntu or /ubuntu-ports, or it serves this release (bookworm, noble-updates)."""
    if uri.rsplit("/", 1)[-1] in ARCHIVE_NAMES:
        return True
    return bool(codename) and any(s == codename or s.startswith(codename + "-")
                                  for s in source.suites)


def archive_pools(sources: list[AptSource], codename: str = "") -> list[tuple[str, str]]:
    """(archive URI, component) pairs to look in, best first: the distribution's archives in
    apt's order, ``main`` and ``universe`` before the other components; no duplicates."""
    pairs: list[tuple[str, str]] = []
    for source in sources:
        components = sorted(source.components or ["main"], key=lambda c: (
            COMPONENT_ORDER.index(c) if c in COMPONENT_ORDER else len(COMPONENT_ORDER)))
        for uri in _network_uris(source.uris):
            if not is_distribution_archive(source, uri, codename):
                continue
            pairs += [(uri, c) for c in components if (uri, c) not in pairs]
    # Security archives (debian-security, the security pocket's mirror) have the files only
    # for their own updates: keep them after the main archives.
    return sorted(pairs, key=lambda p: "security" in p[0])


def pool_path(component: str, package: str, filename: str) -> str:
    prefix = package[:4] if package.startswith("lib") else package[0]
    return f"pool/{component}/{prefix}/{package}/{filename}"


def source_urls(package: str, filename: str, sources: list[AptSource] | None = None,
                codename: str | None = None, override: str | None = None) -> list[str]:
    """Where ``filename`` of source package ``package`` may be: $PICOCHARGE_DEBIAN_MIRROR's
    pool alone when set (a Debian archive: component main), else each archive apt uses."""
    if override is None:
        override = os.environ.get(MIRROR_VARIABLE, "")
    if override:
        return [f"{override.rstrip('/')}/{pool_path('main', package, filename)}"]
    if sources is None:
        sources = apt_sources()
    if codename is None:
        codename = release_codename()
    return [f"{uri}/{pool_path(c, package, filename)}" for uri, c in archive_pools(sources, codename)]


def fetch_source(source: tuple[str, str], sha256: str, cache: Path, urls: list[str] | None = None) -> Path:
    """The pinned source tarball, from the first archive that has it (checked by SHA-256);
    when none has it, stop and say what was tried and how to name a Debian archive."""
    package, filename = source
    dest = cache / "downloads" / filename
    if dest.exists() and sha256_of(dest) == sha256:
        return dest
    if urls is None:
        urls = source_urls(package, filename)
    tried = []
    log(f"downloading {filename}")
    for url in urls:
        try:
            return download(url, dest, sha256, announce=False)
        except urllib.error.HTTPError as exc:
            tried.append(f"{url}: HTTP {exc.code}")
        except ChecksumMismatch:
            tried.append(f"{url}: a different file (SHA-256 mismatch)")
        except (urllib.error.URLError, OSError) as exc:
            tried.append(f"{url}: {getattr(exc, 'reason', exc)}")
    if os.environ.get(MIRROR_VARIABLE):
        hint = (f"{MIRROR_VARIABLE} names no Debian archive with it: set it to a Debian "
                "archive's URL (the URI in a Debian machine's apt sources, ending in /debian)")
    elif not urls:
        hint = ("apt's sources (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list and "
                "*.sources) name no Debian or Ubuntu archive: set "
                f"{MIRROR_VARIABLE} to a Debian archive's URL (ending in /debian)")
    else:
        hint = (f"the archives apt uses here do not carry this upload of '{package}' (Ubuntu "
                "carries other versions than the Debian ones pinned in tools/fetch.py): set "
                f"{MIRROR_VARIABLE} to a Debian archive's URL (the URI in a Debian machine's "
                "apt sources, ending in /debian) and run make again")
    sys.exit(f"[fetch] {filename} (SHA-256 {sha256[:16]}...) not found.\n"
             + "".join(f"  tried {t}\n" for t in tried) + f"[fetch] {hint}")


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
    """asyncio and ssl, as on a Pico, plus the hardware stand-ins: frozen code lives in the
    binary, not on the heap, as a board's own drivers do, so the heap is the firmware's."""
    lines = ['include("$(MPY_DIR)/extmod/asyncio")']
    for path in BOARD_MODULES + stand_in_sources():
        lines.append(f"module({path.name!r}, base_path={str(path.parent)!r})")
    return "\n".join(lines) + "\n"


def build_key() -> str:
    """Everything the binary depends on; a change to any of it rebuilds (and a tree built
    with other flags, e.g. the former 64-bit one, is cleaned first)."""
    return json.dumps({
        "version": MICROPYTHON_VERSION,
        "flags": MAKE_FLAGS,
        "mbedtls": [MBEDTLS_VERSION, MBEDTLS_SHA256],
        "mbedtls_config": hashlib.sha256(MBEDTLS_CONFIG.read_bytes()).hexdigest()[:16],
        "board_modules": hashlib.sha256(b"".join(
            p.name.encode() + b"\0" + p.read_bytes() for p in BOARD_MODULES)).hexdigest()[:16],
        "frozen_stand_ins": stand_ins_digest(),
    })


def check_toolchain() -> None:
    for tool in ("gcc", "make"):
        if shutil.which(tool) is None:
            sys.exit(f"[fetch] '{tool}' is missing: install build-essential (apt-get install build-essential)")
    probe = subprocess.run(["gcc", "-m32", "-x", "c", "-", "-o", os.devnull],
                           input="int main(void){return 0;}\n", capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit("[fetch] gcc cannot build 32-bit programs: install gcc-multilib "
                 "(apt-get install gcc-multilib)")


def unpack(tarball: Path, dest: Path) -> None:
    """Unpack a source tarball with tarfile's "data" filter where this Python has it (3.12;
    3.11 from 3.11.4). Debian 12's python3 (3.11.2) lacks it: there the same refusals are made
    here first (no member or link target outside `dest`, no device files) and the
    set-id and group/other write bits are dropped."""
    with tarfile.open(tarball) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, filter="data")
            return
        root = dest.resolve()

        def inside(path: Path) -> bool:
            return path == root or root in path.parents

        members = tar.getmembers()
        for member in members:
            target = (root / member.name).resolve()
            if member.issym():
                link = (target.parent / member.linkname).resolve()
            elif member.islnk():
                link = (root / member.linkname).resolve()
            else:
                link = target
            if not (inside(target) and inside(link)) or member.isdev():
                sys.exit(f"[fetch] {tarball.name}: refusing member {member.name!r}")
            if member.isreg() or member.isdir():
                member.mode &= 0o755
        tar.extractall(dest, members=members)  # nosec B202 - every member checked above


def unpack_mbedtls(cache: Path, src: Path) -> None:
    """Debian's mbedTLS source into the MicroPython tree's (empty) lib/mbedtls."""
    target = src / "lib" / "mbedtls"
    marker = target / ".picocharge-version"
    if marker.exists() and marker.read_text() == MBEDTLS_SHA256:
        return
    tarball = fetch_source(MBEDTLS_SOURCE, MBEDTLS_SHA256, cache)
    log(f"unpacking {tarball.name} into {target.relative_to(cache)}")
    shutil.rmtree(target, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        unpack(tarball, Path(tmp))
        os.replace(Path(tmp) / f"mbedtls-{MBEDTLS_VERSION}", target)
    marker.write_text(MBEDTLS_SHA256)


def build_micropython(cache: Path) -> Path:
    binary = cache / "bin" / "micropython"
    stamp = cache / "bin" / "micropython.stamp"
    wanted = build_key()
    if binary.exists() and stamp.exists() and stamp.read_text() == wanted:
        return binary
    check_toolchain()
    tarball = fetch_source(MICROPYTHON_SOURCE, MICROPYTHON_SHA256, cache)
    src = cache / f"micropython-{MICROPYTHON_VERSION}"
    if not (src / "ports" / "unix").is_dir():
        log(f"unpacking {tarball.name}")
        unpack(tarball, cache)
    unpack_mbedtls(cache, src)
    # Debian's source omits the micropython-lib submodule; the port only checks that the
    # directory is populated, and our manifest freezes nothing from it.
    (src / "lib" / "micropython-lib" / "README.md").touch()
    manifest = cache / "unix-manifest.py"
    manifest.write_text(frozen_manifest())
    port = src / "ports" / "unix"
    build_dir = port / "build-standard"
    built_with = build_dir / "picocharge.key"
    if build_dir.exists() and (not built_with.exists() or built_with.read_text() != wanted):
        # Objects of another configuration (say the former 64-bit build) must not be mixed in.
        log("cleaning a MicroPython build made with other flags")
        shutil.rmtree(build_dir)
    log("building the 32-bit MicroPython Unix port with mbedTLS (about a minute on 2 cores)")
    jobs = f"-j{os.cpu_count() or 2}"
    # mpy-cross first and on its own: the port's make would pass FROZEN_MANIFEST down to it.
    run_make(["make", "-C", str(src / "mpy-cross"), jobs], "mpy-cross")
    cmd = ["make", "-C", str(port), jobs, f"FROZEN_MANIFEST={manifest}",
           # The header's name reaches the C compiler through the shell: keep its quotes escaped.
           f'MBEDTLS_CONFIG_FILE=\\"{MBEDTLS_CONFIG}\\"', *MAKE_FLAGS]
    run_make(cmd, "the MicroPython Unix port")
    built_with.write_text(wanted)
    binary.parent.mkdir(parents=True, exist_ok=True)
    # Replace by rename: a running test may be executing the old binary.
    fresh = binary.with_name("micropython.new")
    shutil.copy2(build_dir / "micropython", fresh)
    os.replace(fresh, binary)
    stamp.write_text(wanted)
    version = subprocess.run(
        [str(binary), "-c", "import sys, tls; print(sys.version, sys.maxsize, tls.MBEDTLS_VERSION)"],
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
