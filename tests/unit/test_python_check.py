"""tools/python_check.py: the Makefile's first step, before any venv exists. It must run on
an old python3 (3.6 on), so it is checked here for its grammar as well as for its answers."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tools import python_check as pc

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SPEC = ">=3.11,<3.14"
UBUNTU_2204 = {"ID": "ubuntu", "VERSION_ID": "22.04", "NAME": "Ubuntu"}
DEBIAN_11 = {"ID": "debian", "VERSION_ID": "11", "NAME": "Debian GNU/Linux"}


def test_reads_requires_python_of_the_project_table():
    text = (ROOT / "pyproject.toml").read_text()
    assert pc.requires_python(text) == SPEC
    other_table = '[tool.x]\nrequires-python = ">=2.7"\n[project]\nname = "p"\nrequires-python = \'>=3.9\'\n'
    assert pc.requires_python(other_table) == ">=3.9"
    assert pc.requires_python('[project]\nname = "p"\n') == ""


@pytest.mark.parametrize("version, fits", [
    ((3, 10, 12), False), ((3, 11, 0), True), ((3, 11, 2), True), ((3, 12, 3), True),
    ((3, 13, 9), True), ((3, 14, 0), False), ((2, 7, 18), False),
])
def test_the_project_spec(version, fits):
    assert pc.satisfies(SPEC, version) is fits


@pytest.mark.parametrize("spec, version, fits", [
    ("==3.12.*", (3, 12, 1), True), ("==3.12.*", (3, 11, 9), False),
    ("!=3.12.*", (3, 12, 1), False), ("~=3.11", (3, 13, 0), True), ("~=3.11", (4, 0, 0), False),
    (">3.11", (3, 11, 1), True), ("<=3.12", (3, 12, 0), True), ("", (3, 6, 0), True),
])
def test_specifier_clauses(spec, version, fits):
    assert pc.satisfies(spec, version) is fits


def test_too_old_on_ubuntu_2204_names_the_package_and_the_make_line():
    msg = pc.advice(SPEC, (3, 10, 12), "run", [], UBUNTU_2204)
    assert msg.startswith("Python 3.11 or newer is needed, this is 3.10.12")
    assert "sudo apt-get install python3.11 python3.11-venv" in msg
    assert "make PYTHON=python3.11 run" in msg


def test_too_old_elsewhere_names_the_minimum_and_the_make_line():
    msg = pc.advice(SPEC, (3, 9, 2), "test", [], DEBIAN_11)
    assert "Python 3.11 or newer is needed, this is 3.9.2" in msg
    assert "make PYTHON=python3.11 test" in msg


def test_too_new_suggests_the_newest_allowed():
    msg = pc.advice(SPEC, (3, 14, 0), "run", [], DEBIAN_11)
    assert "Python 3.14.0 is newer than this project supports" in msg
    assert "make PYTHON=python3.13 run" in msg


def test_an_installed_fitting_interpreter_is_suggested_first():
    msg = pc.advice(SPEC, (3, 10, 12), "run test", ["python3.12"], UBUNTU_2204)
    assert "python3.12 is installed: run  make PYTHON=python3.12 run test" in msg


def test_fitting_python_gets_no_advice():
    assert pc.advice(SPEC, (3, 12, 3), "run", [], {}) is None


def test_main_exit_codes_and_message(capsys):
    assert pc.main(["--goals", "run"], version=(3, 11, 2)) == 0
    assert pc.main(["--goals", "run"], version=(3, 10, 12)) == 1
    assert "[setup] Python 3.11 or newer is needed, this is 3.10.12" in capsys.readouterr().err


def test_script_runs_standalone_and_names_the_venv_package():
    script = ROOT / "tools" / "python_check.py"
    assert subprocess.run([sys.executable, str(script)], cwd="/").returncode == 0
    out = subprocess.run([sys.executable, str(script), "--venv-package"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "python%d.%d-venv" % sys.version_info[:2]


def test_grammar_of_python_36_and_no_third_party_imports():
    source = (ROOT / "tools" / "python_check.py").read_text()
    tree = ast.parse(source, feature_version=(3, 6))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"argparse", "os", "re", "shutil", "sys"}
    with pytest.raises(SyntaxError):  # the check above does reject newer grammar
        ast.parse("(x := 1)", feature_version=(3, 6))
