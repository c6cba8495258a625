"""The technician's REPL helpers (`import ev`, firmware/lib/ev.py) on MicroPython: `ev.help()`
lists every helper with one line each, a mistyped helper says so and points at `ev.help()`,
and the names ev.py accepts are exactly the `ev_<name>` functions diag.py holds."""

import re

import pytest
from harness import run_script

MICROPYTHON = "micropython"


def helpers_on_micropython() -> list[str]:
    return run_script(MICROPYTHON, "import ev\nprint(' '.join(ev._HELPERS))").split()


def test_ev_help_prints_one_line_per_helper_without_a_running_app():
    out = run_script(MICROPYTHON, "import ev\nev.help()\nimport sys\nprint('diag' in sys.modules)")
    lines = out.splitlines()
    assert lines[-1] == "False"  # diag is dropped again after the call (off the heap)
    listed = [re.match(r"ev\.(\w+)\(", line).group(1) for line in lines[:-1]]
    assert sorted(listed) == sorted(helpers_on_micropython() + ["report"])
    assert len(listed) == len(set(listed))  # one line each
    assert all(len(line.split(None, 1)) == 2 for line in lines[:-1]), out  # with what it does


def test_mistyped_helper_is_an_attribute_error_naming_it_and_ev_help():
    out = run_script(MICROPYTHON, (
        "import ev\n"
        "try:\n"
        "    ev.stauts()\n"
        "except AttributeError as exc:\n"
        "    print('refused:', exc)\n"
        "print(hasattr(ev, 'stauts'), hasattr(ev, 'status'), hasattr(ev, 'help'))\n"))
    assert "refused: ev has no helper 'stauts': ev.help() lists them" in out
    assert out.splitlines()[-1] == "False True True"


def test_every_helper_ev_accepts_is_a_diag_function_and_every_diag_helper_is_accepted():
    out = run_script(MICROPYTHON, (
        "import diag\n"
        "print(' '.join(sorted(n[3:] for n in dir(diag) if n.startswith('ev_'))))\n"))
    assert sorted(helpers_on_micropython()) == out.split()


@pytest.mark.parametrize("runtime", ["micropython-picow"])
def test_ev_help_and_a_typo_answer_at_the_console_of_a_running_board(board_factory, runtime):
    board = board_factory({"cp_id": "PICO-0042", "intervals": {"sensors_s": 1}})
    board.wait_for(r"^ready: ")
    board.control("console", line="import ev; ev.help()")
    board.wait_for(r"^ev\.status\(\) +connector status")
    board.wait_for(r"^ev\.app\(\) +the running application")
    board.control("console", line="ev.stauts()")
    board.wait_for(r"^AttributeError: ev has no helper 'stauts': ev\.help\(\) lists them$")
    board.control("console", line="ev.report()")  # the helpers still work after both
    board.wait_for(r"^report \{")
