"""The HTTP side and the MQTT clients keep working when the process holds more than 1 024
descriptors, as it does with a thousand charge points connected (select() cannot watch
such descriptors; paho's own loop uses it)."""

import os

from conftest import http


def test_api_answers_with_more_than_1024_descriptors_open(start_server):
    pipes = [os.pipe() for _ in range(600)]  # 1 200 descriptors, like 1 000+ stations
    try:
        app = start_server()
        for _ in range(3):
            status, body = http(app, "GET", "/api/v1/health")
            assert status == 200 and body == {"status": "ok"}
        # the ingest and the broker's credentials manager connected on descriptors > 1024
        assert app.ingest.client.socket().fileno() > 1024
        assert app.ingest.ready.is_set()
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
