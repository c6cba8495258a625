"""`python -m tools.board_control`: requests reach a host board's control socket one JSON
line each, replies are printed, and a refused request makes it exit 1."""

import json
import socket
import threading

from tools import board_control


def control_socket(answer):
    """A listening socket that answers each JSON line with answer(request)."""
    server = socket.create_server(("127.0.0.1", 0))
    seen = []

    def serve():
        conn, _ = server.accept()
        with conn, conn.makefile("rw") as stream:
            for line in stream:
                request = json.loads(line)
                seen.append(request)
                stream.write(json.dumps(answer(request)) + "\n")
                stream.flush()

    threading.Thread(target=serve, daemon=True).start()
    return server, seen


def test_requests_reach_the_board_in_order_and_replies_are_printed(capsys):
    server, seen = control_socket(lambda r: {"ok": True, "result": r["cmd"]})
    address = "127.0.0.1:%d" % server.getsockname()[1]
    code = board_control.main([address, '{"cmd": "plug", "demand_a": 16}',
                               '{"cmd": "console", "line": "import ev"}'])
    assert code == 0
    assert seen == [{"cmd": "plug", "demand_a": 16}, {"cmd": "console", "line": "import ev"}]
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == [{"ok": True, "result": "plug"}, {"ok": True, "result": "console"}]
    server.close()


def test_a_refused_request_or_no_board_exits_1(capsys):
    server, _ = control_socket(lambda r: {"ok": False, "error": "unknown command"})
    address = "127.0.0.1:%d" % server.getsockname()[1]
    assert board_control.main([address, '{"cmd": "fly"}']) == 1
    server.close()
    assert board_control.main([address, '{"cmd": "state"}']) == 1
    assert "board_control:" in capsys.readouterr().err
