"""The HTTP side and the MQTT clients keep working when the process holds more than 1 024
descriptors, as it does with a thousand charge points connected (select() cannot watch
such descriptors; paho's own loop uses it).

The server runs in a process of its own, made for the check: in a pytest worker, another
test's leftover thread can close a descriptor below 1 024 while the server starts, and the
ingest then connected on it (fd 111 in a fresh-clone CI run), so the check proved nothing.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.server.conftest import http, make_config
from server.app import Application

pipes = [os.pipe() for _ in range(600)]  # 1 200 descriptors, like 1 000+ stations
assert min(min(p) for p in pipes[-10:]) > 1024, "the descriptors below 1 024 are not all taken"
app = Application(make_config(Path(sys.argv[2]))).start()
try:
    answers = [http(app, "GET", "/api/v1/health") for _ in range(3)]
    app.ingest.ready.wait(30)
    print(json.dumps({"answers": answers, "ingest_fd": app.ingest.client.socket().fileno(),
                      "ingest_ready": app.ingest.ready.is_set()}))
finally:
    app.stop()
"""


def test_api_answers_with_more_than_1024_descriptors_open(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT), str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["answers"] == [[200, {"status": "ok"}]] * 3, seen
    # the ingest connected on a descriptor above 1 024, and works there
    assert seen["ingest_fd"] > 1024 and seen["ingest_ready"], seen
