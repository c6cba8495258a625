"""The embedded broker delivers retained messages only to sessions that subscribed: a board
that subscribes to nothing (umqtt.simple) must never receive other stations' presence."""

import time

import paho.mqtt.client as mqtt
from conftest import mqtt_publisher, publish, register, wait_until


def test_a_new_client_without_subscriptions_receives_no_retained_messages(start_server):
    app = start_server()
    port = app.ports["mqtt"]
    for cp_id in ("board-1", "board-2"):
        register(app, cp_id)
    first = mqtt_publisher(port, client_id="board-1")
    publish(first, "picocharge/board-1/state", "online")
    first.publish("picocharge/board-1/state", "online", qos=1, retain=True).wait_for_publish(5)

    received = []
    second = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="board-2")
    second.on_message = lambda client, userdata, msg: received.append(msg.topic)
    second.connect("127.0.0.1", port)
    second.loop_start()
    try:
        publish(second, "picocharge/board-2/state", "online")
        time.sleep(1.0)  # what a broken broker pushes arrives right after CONNECT
        assert received == []
        # the ingest, which did subscribe, still sees both stations online
        wait_until(lambda: all(app.fleet.get(cp) and app.fleet.get(cp).get("telemetry_online")
                               for cp in ("board-1", "board-2")), timeout=10)
    finally:
        second.loop_stop()
        first.loop_stop()
