"""Station identity and secrets (issue 11 items 3, 5, 6): who may connect as a charge
point (keys, profile 3 certificates), what an unauthenticated client can cost or change,
key rotation, masked ThingSpeak keys, the SSRF guard and diagnostics upload credentials."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import os
import socket
import sqlite3
import ssl
import stat
import threading
import time
import urllib.error
import urllib.parse
from http import server as http_server

import argon2
import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action
from websockets.exceptions import InvalidStatus

from server import net_guard
from tests.server.conftest import (
    ChargePointClient,
    ahttp,
    basic_auth,
    charge_point,
    exchange,
    http,
    now_iso,
    ocpp_url,
    raw_socket,
    register,
    run,
    station_key,
    wait_until,
)


async def handshake_status(app, cp_id: str, headers: dict | None = None, **kwargs) -> int:
    """101 when admitted (closed again at once), else the HTTP status of the refusal."""
    try:
        ws = await websockets.connect(ocpp_url(app, cp_id), subprotocols=["ocpp1.6"],
                                      additional_headers=headers or {}, **kwargs)
    except InvalidStatus as exc:
        return exc.response.status_code
    await ws.close()
    return 101


def stored_rows(app) -> dict:
    """Row counts of the tables a connection could write to, read from the database file."""
    app.store.sync()
    db = sqlite3.connect(app.config.database_path)
    try:
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("chargepoints", "events", "status_history")}
    finally:
        db.close()


# Revocation -----------------------------------------------------------------------------
def tables(app) -> dict:
    """Row counts of every table a station's messages write to."""
    app.store.sync()
    db = sqlite3.connect(app.config.database_path)
    try:
        return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("chargepoints", "transactions", "meter_values", "status_history",
                              "connectors")}
    finally:
        db.close()


REGISTRATION_CHANGES = {
    "key replaced": ("PATCH", {"auth_key": "a-brand-new-key-for-it"}),
    "key cleared": ("PATCH", {"auth_key": None}),
    "rejected": ("PATCH", {"registration": "Rejected"}),
    "pending": ("PATCH", {"registration": "Pending"}),
    "deleted": ("DELETE", None),
}


@pytest.mark.parametrize("change", sorted(REGISTRATION_CHANGES))
def test_a_registration_change_ends_the_open_session_and_nothing_more_is_stored(server, change):
    """An operator's change of a station's key, state or existence ends the session that
    was admitted under the old one: once the change is answered, nothing the session sends
    is handled (no transaction, meter value or status stored, no record brought back), and
    the server closes the WebSocket (1008)."""
    register(server, "CP-REV")
    method, body = REGISTRATION_CHANGES[change]

    def start(n):
        return [2, f"start{n}", "StartTransaction", {"connectorId": 1, "idTag": "T",
                                                     "meterStart": n, "timestamp": now_iso()}]

    async def scenario():
        async with raw_socket(server, "CP-REV") as ws:
            boot = [2, "b", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}]
            assert (await exchange(ws, boot))[2]["status"] == "Accepted"
            assert (await exchange(ws, start(1)))[0] == 3
            before = tables(server)
            status, answer = await ahttp(server, method, "/api/v1/chargepoints/CP-REV", body)
            assert status in (200, 204), answer
            changed_at = asyncio.get_running_loop().time()
            for frame in (start(2), [2, "s", "StatusNotification", {
                    "connectorId": 1, "errorCode": "NoError", "status": "Charging"}],
                          [2, "f", "FirmwareStatusNotification", {"status": "Installed"}],
                          [2, "m", "MeterValues", {"connectorId": 1, "meterValue": [
                              {"timestamp": now_iso(), "sampledValue": [{"value": "5"}]}]}]):
                try:
                    await ws.send(json.dumps(frame))
                except websockets.ConnectionClosed:
                    break
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:  # whatever was answered before the close, then the close
                    answer = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    assert answer[0] == 4 and answer[2] == "SecurityError", answer
            closing = asyncio.get_running_loop().time() - changed_at
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, closed.value
            after = tables(server)
            expected = dict(before)
            if change == "deleted":
                assert server.fleet.get("CP-REV") is None  # not brought back
                expected = {k: v for k, v in after.items()}  # the delete itself removed rows
                assert after["chargepoints"] == before["chargepoints"] - 1
            assert after["transactions"] == before["transactions"]
            assert after["meter_values"] == before["meter_values"]
            assert after["status_history"] == before["status_history"] or change == "deleted"
            if change != "deleted":
                assert after == expected
            print(f"  {change}: session closed {closing * 1000:.0f} ms after the change was answered")
        assert server.central.counters["sessions_revoked"] == 1

    run(scenario())


def test_a_key_changed_while_the_handshake_is_verified_ends_that_session_too(server, monkeypatch):
    """The operator's change lands between the key check and the session's start: the
    revocation finds no session yet, so the session is checked once attached."""
    register(server, "CP-RACE")
    keys = server.fleet.keys
    real = keys.matches
    changed = []

    def matches_then_the_operator_changes_the_key(cp_id, key, stored):
        answer = real(cp_id, key, stored)
        if cp_id == "CP-RACE" and not changed:
            changed.append(True)
            server.fleet.register("CP-RACE", "Accepted", auth_key="the-operators-new-key-1")
        return answer

    monkeypatch.setattr(keys, "matches", matches_then_the_operator_changes_the_key)

    async def scenario():
        async with raw_socket(server, "CP-RACE") as ws:  # admitted with the old key
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 30)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    run(scenario())
    assert changed == [True]


def test_a_station_rotating_its_own_key_through_its_session_keeps_that_session(server):
    """Not a revocation: the key the operator sends to the station with ChangeConfiguration
    (server/ocpp/secure_operations.py) is stored once the station accepts it; the station
    uses it from its next connection, its open session goes on."""
    register(server, "CP-ROTATE")

    class AcceptsTheKey(ChargePointClient):
        @on(Action.change_configuration)
        def on_change_configuration(self, **kw):
            return call_result.ChangeConfiguration(status="Accepted")

    async def scenario():
        async with charge_point(server, "CP-ROTATE", cls=AcceptsTheKey) as cp:
            status, answer = await ahttp(server, "POST",
                                         "/api/v1/chargepoints/CP-ROTATE/ChangeConfiguration",
                                         {"key": "AuthorizationKey", "value": "rotated-key-0123456789"})
            assert status == 200 and answer["result"] == {"status": "Accepted"}, answer
            assert await cp.call(call.Heartbeat()) is not None  # the same session goes on
        assert server.central.counters["sessions_revoked"] == 0

    run(scenario())


# Keys -------------------------------------------------------------------------------
def test_keyless_and_short_key_stations_are_refused(server):
    register(server, "CP-NOKEY", auth_key=None)
    for body in ({"id": "CP-SHORT", "auth_key": "x" * 15}, {"id": "CP-LONG", "auth_key": "x" * 41}):
        status, answer = http(server, "POST", "/api/v1/chargepoints", body)
        # the OpenAPI boundary says it first; the key rule itself says "16 to 40"
        assert status == 400 and ("16 to 40" in answer["reason"]
                                  or "'auth_key'" in answer["reason"]), answer
    register(server, "CP-OK")
    status, _ = http(server, "PATCH", "/api/v1/chargepoints/CP-OK", {"auth_key": "too-short"})
    assert status == 400

    async def scenario():
        assert await handshake_status(server, "CP-NOKEY") == 401
        assert await handshake_status(server, "CP-NOKEY",
                                      basic_auth("CP-NOKEY", "sixteen-chars-ok")) == 401
        assert await handshake_status(server, "CP-OK",
                                      basic_auth("CP-OK", station_key("CP-OK"))) == 101

    run(scenario())


def test_wrong_key_is_refused_and_never_remembered_as_good(server):
    register(server, "CP-WRONG")
    right, wrong = station_key("CP-WRONG"), "a-wrong-key-of-24-chars!"

    async def scenario():
        assert await handshake_status(server, "CP-WRONG", basic_auth("CP-WRONG", wrong)) == 401
        assert await handshake_status(server, "CP-WRONG", basic_auth("CP-WRONG", right)) == 101
        assert await handshake_status(server, "CP-WRONG", basic_auth("CP-WRONG", wrong)) == 401
        # the right key under another station's name is no credential either
        assert await handshake_status(server, "CP-WRONG", basic_auth("CP-OTHER", right)) == 401

    run(scenario())


def test_unauthenticated_connections_store_nothing(server):
    register(server, "CP-GUARDED")
    register(server, "CP-KEYLESS", auth_key=None)
    before = stored_rows(server)

    async def scenario():
        attempts = [("CP-STRANGER", {}), ("CP-STRANGER", basic_auth("CP-STRANGER", "x" * 20)),
                    ("CP-KEYLESS", {}), ("CP-GUARDED", {}),
                    ("CP-GUARDED", basic_auth("CP-GUARDED", "not-the-right-key-0"))]
        for cp_id, headers in attempts:
            assert await handshake_status(server, cp_id, headers) == 401

    run(scenario())
    assert stored_rows(server) == before
    assert server.fleet.get("CP-STRANGER") is None
    assert server.fleet.get("CP-GUARDED")["ocpp_online"] == 0


@pytest.mark.parametrize("scheme", ["sha256", "argon2id"])
def test_a_hash_of_an_earlier_version_still_admits_and_is_replaced_by_the_current_form(
        server, scheme):
    register(server, "CP-OLD", auth_key=None)
    key, salt = "legacy-key-0123456789", "00112233"
    legacy = (f"sha256${salt}${hashlib.sha256((salt + key).encode()).hexdigest()}"
              if scheme == "sha256" else argon2.PasswordHasher(time_cost=2, memory_cost=19456,
                                                               parallelism=1).hash(key))
    server.fleet.update("CP-OLD", auth_key_hash=legacy)

    async def scenario():
        assert await handshake_status(server, "CP-OLD", basic_auth("CP-OLD", key + "x")) == 401
        assert await handshake_status(server, "CP-OLD", basic_auth("CP-OLD", key)) == 101

    run(scenario())
    wait_until(lambda: server.fleet.get("CP-OLD")["auth_key_hash"].startswith("hmac-sha256$"))
    legacy_checks = server.fleet.keys.stats()["legacy"]

    async def again():
        assert await handshake_status(server, "CP-OLD", basic_auth("CP-OLD", key)) == 101
        assert await handshake_status(server, "CP-OLD", basic_auth("CP-OLD", key + "x")) == 401

    run(again())
    assert server.fleet.keys.stats()["legacy"] == legacy_checks  # the fast form from now on


def test_keys_are_stored_under_a_secret_kept_outside_the_database(start_server, tmp_path, caplog):
    """The database holds HMAC(secret, id, key): without the secret file it verifies
    nothing. A server started with another secret admits none of those stations and says
    why; with the secret back, they are admitted again."""
    app = start_server()
    register(app, "CP-PEPPER")
    stored = app.fleet.get("CP-PEPPER")["auth_key_hash"]
    secret_file = tmp_path / "var" / "station-keys.secret"
    assert stored.startswith("hmac-sha256$") and station_key("CP-PEPPER") not in stored
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret_file.read_text().strip() not in "\n".join(
        sqlite3.connect(app.config.database_path).iterdump())
    app.stop()

    kept = secret_file.read_text()
    secret_file.write_text(os.urandom(32).hex() + "\n")  # a data directory restored without it
    other = start_server()
    assert run(handshake_status(other, "CP-PEPPER",
                                basic_auth("CP-PEPPER", station_key("CP-PEPPER")))) == 401
    assert "another secret" in caplog.text
    other.stop()
    secret_file.write_text(kept)
    again = start_server()
    assert run(handshake_status(again, "CP-PEPPER",
                                basic_auth("CP-PEPPER", station_key("CP-PEPPER")))) == 101


# Key rotation -------------------------------------------------------------------------
class KeyChangeAnswers(ChargePointClient):
    """Answers ChangeConfiguration AuthorizationKey with the status in ``answers``."""

    answers = ["Rejected", "Accepted"]

    @on(Action.change_configuration)
    def on_change_configuration(self, **kw):
        self._got("ChangeConfiguration", kw)
        return call_result.ChangeConfiguration(status=self.answers.pop(0))


def test_key_rotation_stores_the_new_key_only_after_accepted(server, caplog):
    caplog.set_level(logging.DEBUG)
    register(server, "CP-ROT")
    old, new = station_key("CP-ROT"), "rotated-key-0123456789"
    path = "/api/v1/chargepoints/CP-ROT/ChangeConfiguration"

    async def scenario():
        async with charge_point(server, "CP-ROT", cls=KeyChangeAnswers) as cp:
            status, answer = await ahttp(server, "POST", path,
                                         {"key": "AuthorizationKey", "value": "short"})
            assert status == 400 and cp.received == []  # never sent to the station
            status, answer = await ahttp(server, "POST", path,
                                         {"key": "AuthorizationKey", "value": new})
            assert status == 200 and answer["result"] == {"status": "Rejected"}
            assert await handshake_status(server, "CP-ROT", basic_auth("CP-ROT", new)) == 401
            assert await handshake_status(server, "CP-ROT", basic_auth("CP-ROT", old)) == 101
        async with charge_point(server, "CP-ROT", cls=KeyChangeAnswers) as cp:
            status, answer = await ahttp(server, "POST", path,
                                         {"key": "AuthorizationKey", "value": new})
            assert status == 200 and answer["result"] == {"status": "Accepted"}
            assert new not in str(answer)
        assert await handshake_status(server, "CP-ROT", basic_auth("CP-ROT", old)) == 401
        assert await handshake_status(server, "CP-ROT", basic_auth("CP-ROT", new)) == 101
        _, events = await ahttp(server, "GET", "/api/v1/chargepoints/CP-ROT/events")
        assert "auth_key_changed" in [e["kind"] for e in events]
        _, record = await ahttp(server, "GET", "/api/v1/chargepoints/CP-ROT")
        return events, record

    events, record = run(scenario())
    server_log = "\n".join(r.getMessage() for r in caplog.records
                           if r.name.startswith(("server", "waitress", "werkzeug")))
    assert "auth_key_changed" in server_log  # the server's own log lines were captured
    for text in (str(events), str(record), server_log):
        assert new not in text and old not in text


class RevealsItsKey(ChargePointClient):
    @on(Action.get_configuration)
    def on_get_configuration(self, **kw):
        return call_result.GetConfiguration(configuration_key=[
            {"key": "AuthorizationKey", "readonly": False, "value": station_key("CP-LEAKY")},
            {"key": "HeartbeatInterval", "readonly": False, "value": "60"}])


def test_a_key_returned_by_get_configuration_is_masked(server):
    register(server, "CP-LEAKY")

    async def scenario():
        async with charge_point(server, "CP-LEAKY", cls=RevealsItsKey):
            return await ahttp(server, "POST", "/api/v1/chargepoints/CP-LEAKY/GetConfiguration", {})

    status, answer = run(scenario())
    assert status == 200 and station_key("CP-LEAKY") not in str(answer)
    values = {e["key"]: e["value"] for e in answer["result"]["configurationKey"]}
    assert values == {"AuthorizationKey": "********", "HeartbeatInterval": "60"}


# Profile 3 ---------------------------------------------------------------------------
def _certificate(subject_cn: str, key, issuer_cn: str, issuer_key, ca: bool = False,
                 san_ip: str | None = None):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san_ip:
        import ipaddress
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(san_ip))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path, cert, key) -> tuple[str, str]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.fixture
def pki(tmp_path):
    """A station CA, a server certificate, and station certificates (one from another CA)."""
    out = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("PicoCharge station CA", ca_key, "PicoCharge station CA", ca_key, ca=True)
    out["ca"], _ = _write(tmp_path / "ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    out["server"] = _write(tmp_path / "server",
                           _certificate("127.0.0.1", server_key, "PicoCharge station CA", ca_key,
                                        san_ip="127.0.0.1"), server_key)
    for name, cn in (("good", "CP-MTLS"), ("other", "CP-SOMEONE-ELSE")):
        key = ec.generate_private_key(ec.SECP256R1())
        out[name] = _write(tmp_path / name,
                           _certificate(cn, key, "PicoCharge station CA", ca_key), key)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    out["rogue"] = _write(tmp_path / "rogue",
                          _certificate("CP-MTLS", key, "Rogue CA", rogue_key), key)
    return out


def test_station_with_a_client_certificate_is_admitted_over_mutual_tls(start_server, pki):
    app = start_server({"ocpp.tls_cert": pki["server"][0], "ocpp.tls_key": pki["server"][1],
                        "ocpp.tls_client_ca": pki["ca"]})
    register(app, "CP-MTLS", auth_key=None)  # profile 3: the certificate is the credential
    url = f"wss://127.0.0.1:{app.ports['ocpp']}/ocpp/CP-MTLS"

    def context(which: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=pki["ca"])
        if which:
            ctx.load_cert_chain(*pki[which])
        return ctx

    async def status(which: str | None) -> int:
        try:
            ws = await websockets.connect(url, subprotocols=["ocpp1.6"], ssl=context(which))
        except InvalidStatus as exc:
            return exc.response.status_code
        try:
            await ws.send('[2,"b","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]')
            assert '"Accepted"' in await asyncio.wait_for(ws.recv(), 5)
        finally:
            await ws.close()
        return 101

    async def scenario():
        assert await status("good") == 101
        assert await status("other") == 403  # a valid certificate, for another charge point
        assert await status(None) == 401  # no certificate and no key
        with pytest.raises((ssl.SSLError, ConnectionError, websockets.exceptions.InvalidMessage)):
            await status("rogue")  # signed by a CA the server does not trust

    run(scenario())


# Bounded exposure ----------------------------------------------------------------------
def test_handshakes_per_address_are_rate_limited(start_server):
    app = start_server({"ocpp.handshake_rate_per_address": 0.1,
                        "ocpp.handshake_burst_per_address": 3})
    register(app, "CP-RATE")
    auth = basic_auth("CP-RATE", station_key("CP-RATE"))

    async def scenario():
        return [await handshake_status(app, "CP-RATE", auth) for _ in range(5)]

    assert run(scenario()) == [101, 101, 101, 429, 429]


def test_open_connections_per_address_are_capped(start_server):
    app = start_server({"ocpp.max_connections_per_address": 2})
    for n in range(3):
        register(app, f"CP-CAP{n}")

    async def scenario():
        async with charge_point(app, "CP-CAP0", boot=False), charge_point(app, "CP-CAP1", boot=False):
            assert await handshake_status(
                app, "CP-CAP2", basic_auth("CP-CAP2", station_key("CP-CAP2"))) == 429
        wait_until(lambda: app.endpoint.limiter.open_connections("127.0.0.1") == 0)
        assert await handshake_status(
            app, "CP-CAP2", basic_auth("CP-CAP2", station_key("CP-CAP2"))) == 101

    run(scenario())


def test_handshakes_being_verified_at_once_are_capped(start_server):
    app = start_server({"ocpp.max_unauthenticated_handshakes": 1,
                        "ocpp.handshake_burst_per_address": 100})
    register(app, "CP-BUSY")
    # a hash of an earlier version: its check runs the KDF, off the loop, under the cap
    app.fleet.update("CP-BUSY", auth_key_hash=argon2.PasswordHasher().hash(station_key("CP-BUSY")))
    wrong = basic_auth("CP-BUSY", "wrong-key-that-needs-the-kdf")

    async def scenario():
        return await asyncio.gather(*(handshake_status(app, "CP-BUSY", wrong) for _ in range(12)))

    statuses = run(scenario())
    assert set(statuses) <= {401, 503} and 503 in statuses and 401 in statuses


# ThingSpeak keys and the SSRF guard ---------------------------------------------------------
def test_thingspeak_keys_are_shown_once_then_masked_and_can_be_regenerated(start_server):
    app = start_server({"thingspeak.rate_limit": False})
    status, created = http(app, "POST", "/api/v1/thingspeak/channels", {"name": "masked"})
    assert status == 201 and len(created["write_key"]) == 16 and created["keys_masked"] is False
    write, read = created["write_key"], created["read_key"]
    for path in ("/api/v1/thingspeak/channels", f"/api/v1/thingspeak/channels/{created['id']}"):
        status, body = http(app, "GET", path)
        assert status == 200 and write not in str(body) and read not in str(body)
    _, one = http(app, "GET", f"/api/v1/thingspeak/channels/{created['id']}")
    assert one["write_key"] == "*" * 12 + write[-4:] and one["keys_masked"] is True

    status, fresh = http(app, "POST",
                         f"/api/v1/thingspeak/channels/{created['id']}/regenerate-keys", {})
    assert status == 200 and fresh["write_key"] != write and fresh["read_key"] != read
    assert http(app, "GET", f"/update?api_key={write}&field1=1")[1] == "0"  # old key dead
    assert http(app, "GET", f"/update?api_key={fresh['write_key']}&field1=1")[1] == "1"
    assert fresh["write_key"] not in str(http(app, "GET", "/api/v1/thingspeak/channels")[1])


@pytest.fixture
def loopback_listener():
    """A TCP listener on 127.0.0.1 that counts the connections it receives."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            accepted.append(conn.recv(4096))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], accepted
    sock.close()
    thread.join(5)


def test_ssrf_target_is_refused_and_the_listener_receives_nothing(server, loopback_listener):
    port, accepted = loopback_listener
    for url in (f"http://127.0.0.1:{port}", f"http://localhost:{port}",
                f"http://[::ffff:127.0.0.1]:{port}", "http://169.254.169.254",
                "http://10.0.0.1", "http://192.168.1.1"):
        status, answer = http(server, "PUT", "/api/v1/chargepoints/CP-SSRF/thingspeak",
                              {"url": url, "channel": 1, "write_key": "K" * 16})
        assert status == 400, url
        # a literal IPv6 host is already outside the documented URL rule
        assert ("non-public" in answer["reason"] or "resolve" in answer["reason"]
                or answer.get("field") == "url"), answer
    assert server.bridge.target("CP-SSRF") is None
    assert accepted == []


def test_ssrf_guard_checks_again_at_connect_time_against_dns_rebinding(monkeypatch,
                                                                      loopback_listener):
    port, accepted = loopback_listener
    answers = iter(["93.184.216.34", "127.0.0.1"])  # public when checked, loopback later
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host == "rebind.example":
            return real(next(answers), *args, **kwargs)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(net_guard.socket, "getaddrinfo", rebinding)
    net_guard.check_url(f"http://rebind.example:{port}/", allow_private=False)  # passes
    with pytest.raises(net_guard.TargetRefused):
        net_guard.guarded_opener(False).open(f"http://rebind.example:{port}/update", timeout=5)
    assert accepted == []


@pytest.mark.parametrize("scheme", ["ftp", "file", "data"])
def test_ssrf_guard_follows_a_redirect_only_to_http(scheme, loopback_listener):
    """A bridge target answering 302 to ftp://127.0.0.1:PORT/ must not make the server
    dial PORT (urllib's default opener has an FTP handler that would)."""
    port, accepted = loopback_listener
    target = {"ftp": f"ftp://127.0.0.1:{port}/x", "file": "file:///etc/passwd",
              "data": "data:text/plain,x"}[scheme]

    class Redirecting(http_server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    redirector = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
    thread = threading.Thread(target=redirector.serve_forever, daemon=True)
    thread.start()
    try:
        opener = net_guard.guarded_opener(allow_private=True)  # loopback allowed: the scheme is the guard
        with pytest.raises(net_guard.TargetRefused, match="only http"):
            opener.open(f"http://127.0.0.1:{redirector.server_address[1]}/update", timeout=5)
        with pytest.raises(urllib.error.URLError, match="unknown url type"):
            opener.open(target, timeout=5)  # and no handler for it when asked directly
    finally:
        redirector.shutdown()
        redirector.server_close()
    assert accepted == []


@pytest.mark.parametrize("address", [
    "2002:7f00:1::1",                          # 6to4 of 127.0.0.1
    "2002:a00:1::1",                           # 6to4 of 10.0.0.1
    "fec0::1",                                 # site-local
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",    # Teredo
    "64:ff9b::a9fe:a9fe",                      # NAT64 of 169.254.169.254
    "::ffff:192.168.1.1",                      # mapped
])
def test_ssrf_guard_judges_ipv6_addresses_by_the_ipv4_address_they_carry(address):
    assert net_guard.address_problem(address) is not None


def test_ssrf_guard_lets_public_addresses_through():
    for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "2002:5db8:d822::1"):
        assert net_guard.address_problem(address) is None, address


# Diagnostics uploads ----------------------------------------------------------------------
def test_diagnostics_upload_needs_the_stations_own_credentials(start_server):
    app = start_server({"files.diagnostics_uploads_per_hour": 2})
    register(app, "CP-UP")
    register(app, "CP-NEIGHBOUR")
    body = b"log line\n" * 10
    path = "/diagnostics/CP-UP/diag.txt"
    assert http(app, "PUT", path, raw=body)[0] == 401
    assert http(app, "PUT", path, raw=body, headers=basic_auth("CP-UP", "w" * 20))[0] == 401
    assert http(app, "PUT", path, raw=body, headers=basic_auth(
        "CP-NEIGHBOUR", station_key("CP-NEIGHBOUR")))[0] == 401
    assert http(app, "PUT", "/diagnostics/CP-NOBODY/x.txt", raw=body)[0] == 401
    own = basic_auth("CP-UP", station_key("CP-UP"))
    assert http(app, "PUT", path, raw=body, headers=own)[0] == 201
    assert http(app, "PUT", path, raw=body, headers=own)[0] == 201
    assert http(app, "PUT", path, raw=body, headers=own)[0] == 429  # uploads per hour
    _, listing = http(app, "GET", "/api/v1/diagnostics?cp_id=CP-UP")
    assert len(listing["files"]) == 2
    assert str(app.config.data_dir) not in str(listing) and "path" not in listing["files"][0]
    assert http(app, "GET", "/api/v1/diagnostics?cp_id=CP-NOBODY")[1]["files"] == []


def test_a_station_whose_id_cannot_be_a_folder_name_keeps_its_own_folder_and_quota(start_server):
    """Ids outside the safe-name pattern used to share one `_unknown` folder without any
    quota; each now has a folder named after its hash, and its quotas apply."""
    app = start_server({"files.diagnostics_uploads_per_hour": 1})
    stations = ["CP+ODD", "CP ODD"]
    for cp_id in stations:
        register(app, cp_id)
    for cp_id in stations:
        path = "/diagnostics/" + urllib.parse.quote(cp_id) + "/diag.txt"
        own = basic_auth(cp_id, station_key(cp_id))
        assert http(app, "PUT", path, raw=b"one\n", headers=own)[0] == 201, cp_id
        assert http(app, "PUT", path, raw=b"two\n", headers=own)[0] == 429, cp_id
    folders = sorted(p.name for p in app.config.diagnostics_dir.iterdir())
    assert len(folders) == 2 and all(name.startswith("id-") for name in folders), folders


def test_wrong_station_credentials_on_uploads_are_limited_per_address(server):
    """Per address a burst of 10 wrong keys, then 429 with Retry-After; a key stored by an
    earlier version (argon2id: the KDF) is limited before it is checked. The station's own
    right key is not counted."""
    # the limiter's clock stands still: a slow host's seconds would refill the budget
    # (one guess a second) between the burst and the checks that it is spent
    frozen = time.monotonic()
    server.web_app.extensions["picocharge_auth"]["station_limiter"].clock = lambda: frozen
    register(server, "CP-GUESS")
    path = "/diagnostics/CP-GUESS/diag.txt"
    own = basic_auth("CP-GUESS", station_key("CP-GUESS"))
    assert http(server, "PUT", path, raw=b"first\n", headers=own)[0] == 201
    answers = [http(server, "PUT", path, raw=b"x", headers=basic_auth("CP-GUESS", f"guess-{n:011d}"))
               for n in range(14)]
    statuses = [status for status, _ in answers]
    assert statuses[:10] == [401] * 10 and set(statuses[10:]) <= {401, 429} and 429 in statuses
    assert http(server, "PUT", path, raw=b"again\n", headers=own)[0] == 201  # not limited
    register(server, "CP-ARGON", auth_key=None)
    server.fleet.update("CP-ARGON", auth_key_hash=argon2.PasswordHasher().hash("k" * 20))
    legacy_checks = server.fleet.keys.stats()["legacy"]
    assert http(server, "PUT", "/diagnostics/CP-ARGON/d.txt", raw=b"x",
                headers=basic_auth("CP-ARGON", "k" * 20))[0] == 429  # the budget is spent
    assert server.fleet.keys.stats()["legacy"] == legacy_checks  # and the KDF did not run


def test_get_diagnostics_location_carries_a_one_time_upload_token(start_server):
    server = start_server({"files.diagnostics_max_bytes": 64})
    register(server, "CP-TOKEN")

    async def scenario():
        async with charge_point(server, "CP-TOKEN") as cp:
            base = f"http://127.0.0.1:{server.ports['http']}"
            status, _ = await ahttp(server, "POST", "/api/v1/chargepoints/CP-TOKEN/GetDiagnostics",
                                    {"location": f"{base}/diagnostics/CP-TOKEN"})
            assert status == 200
            return cp.received[-1][1]["location"]

    location = run(scenario())
    assert location.startswith(f"http://127.0.0.1:{server.ports['http']}/diagnostics/CP-TOKEN/upload/")
    path = location.split(str(server.ports["http"]), 1)[1]
    forged = path.rsplit("/", 1)[0] + "/not-the-token"
    assert http(server, "PUT", forged + "/diag.txt", raw=b"x")[0] == 401
    assert http(server, "PUT", path + "/diag.txt", raw=b"x" * 65)[0] == 413  # not stored:
    assert http(server, "PUT", path + "/diag.txt", raw=b"diagnostics")[0] == 201  # retry ok
    assert http(server, "PUT", path + "/again.txt", raw=b"diagnostics")[0] == 401  # spent
    other = path.replace("/CP-TOKEN/", "/CP-ELSE/")
    assert http(server, "PUT", other + "/diag.txt", raw=b"x")[0] == 401
