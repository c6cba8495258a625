"""The station's identity and TLS on its MQTT link, against a real Mosquitto that refuses
anonymous clients: user name and client id = cp_id, password = the AuthorizationKey
(`mqtt.password` wins when set), wrong credentials refused; `mqtts://` with the broker's
certificate checked against the CA on flash, a foreign CA refused, no CA refused unless
`"insecure": true` (which the board then says)."""

import json
import subprocess

import pytest
from certs import make_cert
from stationkit import Broker, Subscriber, boot, report, wait_until

from tools.board import MICROPYTHON

CP = "PICO-0042"
KEY = "Station-Key-0042-abcdef"  # an AuthorizationKey: 16-40 characters
WORLD = {"ap_ssid": "workshop"}
# mqtts runs where the runtime has an `ssl` module. The MicroPython Unix build of the test
# suite has none yet; once the 32-bit TLS build (branch mpytls) is merged, add its
# MicroPython runtime id from tests/conftest.py's RUNTIMES here ("micropython-picow" on that
# branch). A build without ssl then FAILS these tests with a message; it never skips them.
TLS_RUNTIMES = ["cpython", "micropython-picow"]


# what each runtime's TLS says when the broker's certificate is not signed by the CA
FOREIGN_CA = {"cpython": "CERTIFICATE_VERIFY_FAILED",
              "micropython": "The certificate is not correctly signed by the trusted CA"}
LOOP_GAP_BOUND_MS = 300  # docs/firmware.md, "The event loop's bound"


def config(url, ocpp_password=KEY, **mqtt):
    section = {"url": url, "max_backoff_s": 2, "timeout_s": 2}
    section.update(mqtt)
    return {"cp_id": CP, "wifi": {"ssid": "workshop", "password": "x"},
            # an OCPP section with no central system behind it: the key's source
            "ocpp": {"url": "ws://127.0.0.1:9/ocpp", "password": ocpp_password},
            "mqtt": section, "intervals": {"sensors_s": 2, "telemetry_s": 1},
            "app": {"loop_probe_ms": 20}}


def telemetry_link(board):
    mark = board.console.mark()
    board.control("console", line="import json; print('link ' + json.dumps(app.telemetry.summary()))")
    return json.loads(board.wait_for(r"^link (.*)$", start=mark).group(1))


def refused(board, text):
    """Wait until the telemetry link has failed at least twice with `text` in its error."""
    return wait_until(lambda: (lambda s: s if s["failures"] >= 2 and text in (s["last_error"] or "")
                               else None)(telemetry_link(board)),
                      timeout=30, interval=0.5, what="refused attempts (%s)" % text)


def require_ssl(runtime_name):
    if runtime_name == "micropython":
        probe = subprocess.run([str(MICROPYTHON), "-c", "import ssl"], capture_output=True)
        if probe.returncode != 0:
            pytest.fail("this MicroPython build has no ssl module: mqtts cannot run on it")


@pytest.mark.dual_runtime
def test_the_station_connects_as_its_id_with_its_authorization_key(board_factory, tmp_path):
    broker = Broker(tmp_path, users={CP: KEY}).start()
    sub = Subscriber(broker.sub_port, ["picocharge/%s/#" % CP])
    try:
        boot(board_factory, config("mqtt://127.0.0.1:%d" % broker.port), world=WORLD)
        sub.wait(lambda m: m[0].endswith("/telemetry"), what="telemetry from the station")
        sub.wait(lambda m: m[0].endswith("/state") and m[1] == b"online", what="presence")
    finally:
        sub.stop()
        broker.stop()


@pytest.mark.dual_runtime
def test_mqtt_password_wins_over_the_authorization_key_and_wrong_credentials_are_refused(
        board_factory, tmp_path):
    broker = Broker(tmp_path, users={CP: "Broker-Only-Password-42"}).start()
    sub = Subscriber(broker.sub_port, ["picocharge/%s/#" % CP])
    try:
        # the AuthorizationKey is not the broker's password: refused, said, retried
        board = boot(board_factory, config("mqtt://127.0.0.1:%d" % broker.port), world=WORLD,
                     flash=tmp_path / "refused")
        s = refused(board, "broker refused the connection: not authorised")
        assert not s["connected"] and s["connects"] == 0
        assert sub.messages == [], "nothing was published with wrong credentials"
        board.control("power_off")
        # mqtt.password set: it is sent instead of the AuthorizationKey
        boot(board_factory, config("mqtt://127.0.0.1:%d" % broker.port,
                                   password="Broker-Only-Password-42"),
             world=WORLD, flash=tmp_path / "accepted")
        sub.wait(lambda m: m[0].endswith("/telemetry"), what="telemetry with mqtt.password")
    finally:
        sub.stop()
        broker.stop()


@pytest.mark.dual_runtime
def test_a_rotated_authorization_key_is_the_mqtt_password(board_factory, tmp_path):
    """The key the charge point holds now (rotated over OCPP and saved in its OCPP
    configuration on flash) is sent, not the first one in config.json's ocpp.password."""
    rotated = "Rotated-Key-0042-xyz987"
    broker = Broker(tmp_path, users={CP: rotated}).start()
    sub = Subscriber(broker.sub_port, ["picocharge/%s/telemetry" % CP])
    try:
        saved = json.dumps({"AuthorizationKey": rotated}).encode()
        boot(board_factory, config("mqtt://127.0.0.1:%d" % broker.port), world=WORLD,
             flash=tmp_path / "board", files={"ocpp/config.json": saved})
        sub.wait(lambda m: True, what="telemetry with the rotated key")
    finally:
        sub.stop()
        broker.stop()


@pytest.fixture
def tls_broker(tmp_path):
    crt, key, der = make_cert(tmp_path, "broker")
    _, _, other = make_cert(tmp_path, "other")
    broker = Broker(tmp_path, tls=(crt, key), users={CP: KEY}).start()
    yield broker, der, other
    broker.stop()


@pytest.mark.parametrize("runtime", TLS_RUNTIMES)
def test_mqtts_checks_the_broker_certificate_against_the_ca_on_flash(
        board_factory, runtime_name, tls_broker, tmp_path, record_heap):
    require_ssl(runtime_name)
    broker, der, other = tls_broker
    sub = Subscriber(broker.sub_port, ["picocharge/%s/telemetry" % CP])
    try:
        url = "mqtts://127.0.0.1:%d" % broker.port
        # a CA that did not sign the broker's certificate: the handshake fails, nothing sent
        board = boot(board_factory, config(url, ca_file="mqtt-ca.der"), world=WORLD,
                     flash=tmp_path / "foreign", files={"mqtt-ca.der": other})
        s = refused(board, FOREIGN_CA[runtime_name])
        assert s["security"] == "tls" and s["connects"] == 0
        assert sub.messages == []
        board.control("power_off")
        # the broker's own CA: connected over TLS, certificate checked
        board = boot(board_factory, config(url, ca_file="mqtt-ca.der"), world=WORLD,
                     flash=tmp_path / "checked", files={"mqtt-ca.der": der})
        board.wait_for(r"^mqtt: connected to 127\.0\.0\.1:\d+ \(TLS, certificate checked\)$")
        sub.wait(lambda m: len(sub.messages) >= 3, what="telemetry over mqtts")
        r = report(board)
        assert r["loop_gap_ms"] < LOOP_GAP_BOUND_MS, "the TLS handshake stalled the loop"
        print("max loop gap on %s with mqtts: %d ms" % (runtime_name, r["loop_gap_ms"]))
        if runtime_name == "micropython":
            record_heap(r["heap"])  # free heap with the TLS session up, after a collection
    finally:
        sub.stop()


@pytest.mark.dual_runtime
def test_mqtts_without_a_ca_refuses_to_connect_and_says_so(board_factory, tls_broker):
    """Secure by default: a TLS URL and no `mqtt.ca_file` is not silently unchecked (and
    never plaintext): the board refuses, on both runtimes (no ssl needed to refuse)."""
    broker, _, _ = tls_broker
    board = boot(board_factory, config("mqtts://127.0.0.1:%d" % broker.port), world=WORLD)
    board.wait_for(r'^mqtt: mqtts without mqtt\.ca_file: refusing to connect unchecked '
                   r'\(set "insecure": true to allow it\)$')
    s = refused(board, "mqtts without mqtt.ca_file")
    assert s["security"] == "refused" and s["connects"] == 0
    mark = board.console.mark()
    board.control("console", line="ev.status()")
    board.wait_for(r"^uplinks .*mqtt down \(0 sent, \d+ buffered, mqtts without a CA: refused\)",
                   start=mark)


@pytest.mark.parametrize("runtime", TLS_RUNTIMES)
def test_mqtts_insecure_connects_unchecked_and_says_so_on_the_console_and_in_status(
        board_factory, runtime_name, tls_broker):
    require_ssl(runtime_name)
    broker, _, _ = tls_broker
    sub = Subscriber(broker.sub_port, ["picocharge/%s/telemetry" % CP])
    try:
        board = boot(board_factory, config("mqtts://127.0.0.1:%d" % broker.port, insecure=True),
                     world=WORLD)
        board.wait_for(r"^mqtt: TLS to 127\.0\.0\.1:\d+ WITHOUT a certificate check "
                       r"\(insecure: true\)$")
        board.wait_for(r"^mqtt: connected to 127\.0\.0\.1:\d+ \(TLS, certificate NOT checked\)$")
        sub.wait(lambda m: True, what="telemetry over unchecked TLS")
        mark = board.console.mark()
        board.control("console", line="ev.status()")
        board.wait_for(r"^uplinks .*mqtt connected \(\d+ sent, \d+ buffered, "
                       r"TLS certificate NOT checked \(insecure\)\)", start=mark)
    finally:
        sub.stop()
