"""Send requests to a host board's control socket (`python -m tools.board` prints its
address) and print the replies, one JSON object per line each way.

    python -m tools.board_control 127.0.0.1:7000 '{"cmd": "plug", "demand_a": 16}' \
        '{"cmd": "console", "line": "import ev"}' '{"cmd": "console", "line": "ev.start(\\"CARD\\")"}'

Exits 1 if a request was refused (`{"ok": false, ...}`).
"""

from __future__ import annotations

import json
import socket
import sys


def send(address: str, requests: list[str], timeout: float = 30.0) -> list[dict]:
    host, _, port = address.rpartition(":")
    replies = []
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout) as sock:
        stream = sock.makefile("rw", encoding="utf-8")
        for request in requests:
            stream.write(json.dumps(json.loads(request)) + "\n")
            stream.flush()
            replies.append(json.loads(stream.readline()))
    return replies


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        replies = send(args[0], args[1:])
    except (OSError, ValueError) as error:
        print(f"board_control: {error}", file=sys.stderr)
        return 1
    for reply in replies:
        print(json.dumps(reply))
    return 0 if all(reply.get("ok") for reply in replies) else 1


if __name__ == "__main__":
    sys.exit(main())
