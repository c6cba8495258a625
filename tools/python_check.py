"""Is this Python one the project runs on? The Makefile asks before it creates the venv.

Runs on any python3 from 3.6 on, with no third-party packages and without the project's own
code: it reads ``requires-python`` from pyproject.toml and compares this interpreter with it.

    python3 tools/python_check.py [--goals "run"]   exit 0 when this Python fits, else exit 1
                                                     with what to install and how to run make
    python3 tools/python_check.py --venv-package    the Debian/Ubuntu package that gives this
                                                     Python its ensurepip (python3.12-venv)

The project needs 3.11: the server reads its configuration with ``tomllib`` and its clock
with ``datetime.UTC``, both new in 3.11 (server/config.py, server/timeutil.py). Debian 12 ships 3.11 and Ubuntu 24.04 3.12 as python3; Ubuntu 22.04's is
3.10 (its python3.11 package fits: make PYTHON=python3.11 ...).
"""

import argparse
import os
import re
import shutil
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYPROJECT = os.path.join(ROOT, "pyproject.toml")
OPERATORS = ("===", "~=", "==", "!=", "<=", ">=", "<", ">")


def requires_python(text):
    """The ``requires-python`` string of pyproject.toml's [project] table ("" if none)."""
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
            continue
        if section == "[project]":
            match = re.match(r"""requires-python\s*=\s*(["'])(.*?)\1""", stripped)
            if match:
                return match.group(2).strip()
    return ""


def release(version):
    """"3.11" -> (3, 11); digits only (pre-release and local parts are not used here)."""
    parts = []
    for piece in version.strip().split("."):
        digits = re.match(r"\d+", piece)
        if not digits:
            break
        parts.append(int(digits.group()))
    return tuple(parts)


def padded(a, b):
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def clause_holds(clause, version):
    """One PEP 440 clause (">=3.11", "<3.14", "==3.12.*", "~=3.11") against a version tuple."""
    clause = clause.strip()
    op = next((o for o in OPERATORS if clause.startswith(o)), None)
    if op is None:
        raise ValueError("not a version clause: %r" % clause)
    target = clause[len(op):].strip()
    if op in ("==", "!=") and target.endswith(".*"):
        prefix = release(target[:-2])
        same = version[:len(prefix)] == prefix
        return same if op == "==" else not same
    if op == "~=":
        bound = release(target)
        if len(bound) < 2:
            raise ValueError("~= needs two version parts: %r" % clause)
        return clause_holds(">=" + target, version) and version[:len(bound) - 1] == bound[:-1]
    mine, theirs = padded(tuple(version), release(target))
    return {
        "===": mine == theirs, "==": mine == theirs, "!=": mine != theirs,
        "<=": mine <= theirs, ">=": mine >= theirs, "<": mine < theirs, ">": mine > theirs,
    }[op]


def satisfies(spec, version):
    return all(clause_holds(c, version) for c in spec.split(",") if c.strip())


def minimum(spec):
    """The minor version the spec names as its floor ((3, 11) for ">=3.11,<3.14")."""
    floors = [release(c.strip()[2:]) for c in spec.split(",") if c.strip().startswith((">=", "~="))]
    floors = [f[:2] for f in floors if len(f) >= 2]
    return max(floors) if floors else None


def usable_pythons(spec, search=range(8, 20)):
    """Versioned interpreters on PATH that fit the spec (python3.12, ...), newest first."""
    found = []
    for minor in reversed(search):
        name = "python3.%d" % minor
        if satisfies(spec, (3, minor)) and shutil.which(name):
            found.append(name)
    return found


def os_release(path="/etc/os-release"):
    fields = {}
    try:
        with open(path) as fh:
            for line in fh:
                key, _, value = line.strip().partition("=")
                if key:
                    fields[key] = value.strip().strip('"')
    except OSError:
        pass
    return fields


def advice(spec, version, goals="run", on_path=(), distro=None):
    """What to tell someone whose python3 is `version`; None when it fits."""
    if satisfies(spec, version):
        return None
    distro = distro or {}
    here = ".".join(str(v) for v in version[:3])
    goals = goals.strip() or "run"
    floor = minimum(spec)
    too_old = floor is not None and tuple(version[:2]) < floor
    fitting = [minor for minor in range(6, 30) if satisfies(spec, (3, minor))]
    if too_old:
        head = "Python %d.%d or newer is needed, this is %s" % (floor + (here,))
    else:
        head = "Python %s is newer than this project supports" % here
    lines = [head + " (pyproject.toml: requires-python %s)." % spec]
    if on_path:
        lines.append("%s is installed: run  make PYTHON=%s %s" % (on_path[0], on_path[0], goals))
        return "\n".join(lines)
    name = "%s %s" % (distro.get("NAME", ""), distro.get("VERSION_ID", ""))
    name = name.strip() or "this system"
    if fitting:
        package = "python3.%d" % (fitting[0] if too_old else fitting[-1])
    else:
        package = "python3.X"
    if distro.get("ID") == "ubuntu" and distro.get("VERSION_ID") == "22.04" and too_old:
        lines.append("On %s: sudo apt-get install %s %s-venv, then  make PYTHON=%s %s"
                     % (name, package, package, package, goals))
    else:
        lines.append("On %s: install a Python the spec allows (apt-get install %s %s-venv where "
                     "the distribution carries it; Debian 12 and Ubuntu 24.04 ship one as python3), "
                     "then  make PYTHON=%s %s" % (name, package, package, package, goals))
    return "\n".join(lines)


def main(argv=None, version=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--goals", default="run", help="the make goals, for the advice")
    parser.add_argument("--venv-package", action="store_true",
                        help="print the versioned package with this Python's ensurepip")
    args = parser.parse_args(argv)
    if args.venv_package:
        print("python%d.%d-venv" % sys.version_info[:2])
        return 0
    try:
        with open(PYPROJECT) as fh:
            spec = requires_python(fh.read())
    except OSError:
        spec = ""
    if not spec:
        return 0
    version = tuple(version or sys.version_info[:3])
    message = advice(spec, version, args.goals, usable_pythons(spec), os_release())
    if message is None:
        return 0
    sys.stderr.write("[setup] " + message.replace("\n", "\n[setup] ") + "\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
