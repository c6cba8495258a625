"""The README's quick start, word for word: every command in its fenced blocks is taken from
README.md (not copied here) and run in a fresh copy of the repository as a user would, and
each must do what the README says it does."""

from __future__ import annotations

import re
import signal
import urllib.request
from pathlib import Path

from tests.fresh_copy import ROOT, Terminal, api, fresh_copy, stop_leftovers


def quick_start_commands(readme: str) -> list[str]:
    """The commands of the fenced shell blocks between '## Quick start' and the next '## '."""
    section = readme.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", section, re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def check_make_demo(clone: Path, command: str) -> None:
    run = Terminal(clone, command.split())
    try:
        base = run.wait_for(r"Dashboard:\s+(http://127\.0\.0\.1:\d+)/", 300).group(1)
        running = [tx for tx in api(base, "/chargepoints/DEMO-1/transactions") if not tx.get("stop")]
        assert running and running[0]["id_tag"] == "DEMO-CARD"
        run.wait_for(r"\[demo\] transaction \d+: \d+ Wh", 60)
        assert run.ctrl_c() in (0, -signal.SIGINT), run.text
    finally:
        leftovers = stop_leftovers(clone)
    assert "stopped the board, the server and its broker" in run.text
    assert leftovers == []


def check_make_run(clone: Path, command: str) -> None:
    # the README's ports are the defaults; any free ones here (other tests run beside)
    # (and no admin token: a first start without one prints a one-time admin password)
    run = Terminal(clone, command.split(), env={
        "PICOCHARGE_OCPP_PORT": "0", "PICOCHARGE_HTTP_PORT": "0",
        "PICOCHARGE_MQTT_EMBEDDED_PORT": "0", "PICOCHARGE_ADMIN_TOKEN": ""})
    try:
        http = int(run.wait_for(r"PORTS ocpp=\d+ http=(\d+)", 300).group(1))
        run.wait_for(r"created the operator account 'admin' \(admin\) with the password", 10)
        run.wait_for(r"\.venv/bin/python -m server users passwd admin", 10)
        # what a board on the LAN needs, said at start (the defaults listen on loopback)
        run.wait_for(r"Boards on your network cannot reach this server yet: --http-host, "
                     r"--mqtt-host listen on this machine only", 10)
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/api/v1/health",
                                    timeout=10) as answer:
            assert answer.status == 200
        assert run.ctrl_c() in (0, -signal.SIGINT), run.text
    finally:
        leftovers = stop_leftovers(clone)
    assert leftovers == []  # the server stopped its Mosquitto


def check_make_test(clone: Path, command: str) -> None:
    # word for word, but the suite inside is its fast part: the whole suite would run this
    # test again, and is what runs it
    run = Terminal(clone, command.split(), env={"PYTEST_ADDOPTS": "-m unit -p no:randomly",
                                                "PICOCHARGE_TEST_WORKERS": "2"})
    try:
        code = run.proc.wait(600)
    finally:
        stop_leftovers(clone)
    summary = re.search(r"=+ (\d+) passed.* =+", run.text)
    assert code == 0 and summary and int(summary.group(1)) > 100, run.text[-3000:]


CHECKS = {"make demo": check_make_demo, "make run": check_make_run, "make test": check_make_test}


def test_the_readme_quick_start_commands_run_word_for_word_on_a_fresh_copy(tmp_path):
    commands = quick_start_commands((ROOT / "README.md").read_text())
    assert commands, "the README's quick start shows no command"
    unknown = [command for command in commands if command not in CHECKS]
    assert not unknown, f"the quick start shows commands this test does not check: {unknown}"
    clone = fresh_copy(tmp_path / "picocharge", cache=True)
    for command in commands:
        CHECKS[command](clone, command)


def test_the_quick_start_is_short_and_every_doc_it_links_exists():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    for target in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)(?:#[\w-]+)?\)", readme):
        assert (ROOT / target).exists(), target
