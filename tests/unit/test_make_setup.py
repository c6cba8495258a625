"""The Makefile's setup as `make -n` prints it (nothing runs): `make run` and the board tools
get the base install only, `make test` and the developer targets the [dev] extras on top, and
the Python check comes before any venv is made."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.unit,
              pytest.mark.skipif(shutil.which("make") is None, reason="needs make")]

ROOT = Path(__file__).resolve().parents[2]
BASE = "pip install --quiet -e .\n"
DEV = "pip install --quiet -e '.[dev]'"


def dry_run(*goals: str) -> str:
    """What make would run for `goals` from a clean clone (-B: every target out of date)."""
    return subprocess.run(["make", "-n", "-B", "--no-print-directory", *goals], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("goal", ["run", "demo", "deploy", "firmware", "micropython"])
def test_run_and_board_targets_take_the_base_install_only(goal):
    out = dry_run(goal)
    assert BASE in out
    assert DEV not in out


@pytest.mark.parametrize("goal", ["test", "test-fast", "lint", "audit"])
def test_developer_targets_take_the_dev_extras(goal):
    out = dry_run(goal)
    assert BASE in out and DEV in out
    assert out.index(BASE) < out.index(DEV)


def test_python_is_checked_before_the_venv_is_made():
    out = dry_run("run")
    check = out.index("tools/python_check.py --goals \"run\"")
    assert check < out.index("-m venv .venv") < out.index(BASE)
    # python3-venv first, then the versioned package of the Python in use
    assert out.index("for p in python3-venv;") < out.index("--venv-package")
