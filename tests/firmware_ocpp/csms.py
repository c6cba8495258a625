"""An independent OCPP 1.6-J central system for firmware tests, built on the published
`ocpp` package (`ocpp.v16.ChargePoint`, schema validation on) over `websockets`.

It runs its own event loop on a thread, on 127.0.0.1 and a free port, so synchronous tests
can drive it:

    cs = CentralSystem(password="...").start()
    cs.url                      # ws://127.0.0.1:PORT/ocpp  (the firmware appends its id)
    cs.wait(lambda: cs.booted("PICO-1"), timeout=30)
    cs.call("PICO-1", call.RemoteStartTransaction(id_tag="CARD1"))
    cs.transactions             # transactionId -> what the CS knows of it
    cs.invalid                  # every message of the charge point that failed the schemas

Every frame the charge point sends is recorded (`frames`) and every CALL it sends is
validated against the package's OCPP 1.6 JSON schemas (the package also validates the
answers to the CS's own calls). Transaction messages are idempotent by OCPP message id,
as a careful central system makes them: a redelivered StartTransaction, StopTransaction or
MeterValues (the charge point resends a journal record after a power cut that fell between
the CS's answer and the record's removal) gets the same answer again and is counted in
`redeliveries`, not stored twice.

Switches for the failure scenarios (set them from the test, any time):

    cs.fail_next["StartTransaction"] = 2   # answer the next 2 with CALLERROR InternalError
    cs.delay["StartTransaction"] = 4.0     # answer after 4 s (the session reads nothing else meanwhile)
    cs.silent_next["StopTransaction"] = 2  # leave the next 2 unanswered (a black-holed answer)
    cs.parents["CHILD"] = "PARENT"          # idTagInfo.parentIdTag of a tag
    cs.go_offline()                        # drop every session and refuse new connections
    cs.go_online()                         # accept connections again
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from datetime import UTC, datetime

import websockets
from ocpp.messages import Call, unpack, validate_payload
from ocpp.routing import on
from ocpp.v16 import ChargePoint as OcppChargePoint
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from tests.waiting import wait_until

TX_ACTIONS = ("StartTransaction", "StopTransaction", "MeterValues")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Session(OcppChargePoint):
    """One connected charge point, seen from the central system."""

    def __init__(self, cs: CentralSystem, cp_id: str, connection):
        super().__init__(cp_id, connection, response_timeout=30)
        self.cs = cs
        self.answers: dict[str, str] = {}
        self.current_uid = None

    async def route_message(self, raw_msg):
        cs = self.cs
        with cs.lock:
            cs.frames.append((self.id, raw_msg))
        try:
            msg = unpack(raw_msg)
        except Exception as exc:
            cs.invalid.append((raw_msg, repr(exc)))
            return
        if msg.message_type_id == 2:
            try:
                await validate_payload(msg, "1.6")
            except Exception as exc:
                cs.invalid.append((raw_msg, repr(exc)))
            with cs.lock:
                cs.attempts.append((msg.action, msg.unique_id, time.monotonic()))
                fail = cs.fail_next.get(msg.action, 0)
                if fail:
                    cs.fail_next[msg.action] = fail - 1
                silent = cs.silent_next.get(msg.action, 0)
                if silent and not fail:
                    cs.silent_next[msg.action] = silent - 1
                delay = cs.delay.get(msg.action, 0)
            if silent and not fail:
                return  # never answered (nothing else is sent on the session either)
            if fail:
                with cs.lock:
                    cs.failed.append((msg.action, msg.unique_id))
                await super()._send(json.dumps([4, msg.unique_id, "InternalError",
                                                "test: failing on purpose", {}]))
                return
            if delay:
                await asyncio.sleep(delay)
            if msg.action in TX_ACTIONS and msg.unique_id in self.cs.answers:
                cs.redeliveries.append((msg.action, msg.unique_id))
                await self._send(self.cs.answers[msg.unique_id])
                return
            self.current_uid = msg.unique_id if msg.action in TX_ACTIONS else None
        await super().route_message(raw_msg)

    async def _send(self, message):
        uid = self.current_uid
        if uid is not None and message.startswith("[3,") and json.loads(message)[1] == uid:
            self.cs.answers[uid] = message
            self.current_uid = None
        await super()._send(message)

    async def raw_call(self, frame: list, timeout: float = 15):
        """Send a hand-made frame (possibly malformed) and return the answer as a list."""
        async with self._call_lock:
            await self._connection.send(json.dumps(frame))
            response = await self._get_specific_response(frame[1], timeout)
        return json.loads(response.to_json())

    def _note(self, action, payload):
        with self.cs.lock:
            self.cs.messages.append((self.id, action, payload, time.monotonic()))

    @on(Action.boot_notification)
    def on_boot(self, **kw):
        self._note("BootNotification", kw)
        status = self.cs.boot_status(self.id, kw)
        return call_result.BootNotification(current_time=now_iso(), interval=self.cs.heartbeat_s,
                                            status=status)

    @on(Action.heartbeat)
    def on_heartbeat(self, **kw):
        self._note("Heartbeat", kw)
        return call_result.Heartbeat(current_time=now_iso())

    @on(Action.status_notification)
    def on_status(self, **kw):
        self._note("StatusNotification", kw)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag, **kw):
        self._note("Authorize", {"id_tag": id_tag})
        return call_result.Authorize(id_tag_info=self.cs.id_tag_info(id_tag))

    @on(Action.start_transaction)
    def on_start(self, **kw):
        self._note("StartTransaction", kw)
        cs = self.cs
        with cs.lock:
            cs.next_txid += 1
            txid = cs.next_txid
            cs.transactions[txid] = {"cp": self.id, "id_tag": kw["id_tag"],
                                     "meter_start": kw["meter_start"], "start": kw["timestamp"],
                                     "reservation_id": kw.get("reservation_id"),
                                     "meter_stop": None, "reason": None, "values": [],
                                     "transaction_data": None}
        return call_result.StartTransaction(transaction_id=txid,
                                            id_tag_info=cs.id_tag_info(kw["id_tag"]))

    @on(Action.stop_transaction)
    def on_stop(self, **kw):
        self._note("StopTransaction", kw)
        cs = self.cs
        with cs.lock:
            tx = cs.transactions.get(kw["transaction_id"])
            if tx is None:
                cs.unknown_tx.append(kw)
            else:
                if tx["meter_stop"] is not None:
                    cs.double_stops.append(kw)
                tx["meter_stop"] = kw["meter_stop"]
                tx["reason"] = kw.get("reason", "Local")
                tx["stop"] = kw["timestamp"]
                tx["transaction_data"] = kw.get("transaction_data")
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, **kw):
        self._note("MeterValues", kw)
        cs = self.cs
        txid = kw.get("transaction_id")
        if txid is not None:
            with cs.lock:
                tx = cs.transactions.get(txid)
                if tx is None:
                    cs.unknown_tx.append(kw)
                else:
                    tx["values"].append(kw["meter_value"])
        return call_result.MeterValues()

    @on(Action.firmware_status_notification)
    def on_fw_status(self, **kw):
        self._note("FirmwareStatusNotification", kw)
        return call_result.FirmwareStatusNotification()

    @on(Action.diagnostics_status_notification)
    def on_diag_status(self, **kw):
        self._note("DiagnosticsStatusNotification", kw)
        return call_result.DiagnosticsStatusNotification()

    @on(Action.data_transfer)
    def on_data_transfer(self, **kw):
        self._note("DataTransfer", kw)
        return call_result.DataTransfer(status="Accepted")


class CentralSystem:
    def __init__(self, password: str | None = None, heartbeat_s: int = 300):
        self.password = password
        self.heartbeat_s = heartbeat_s
        self.lock = threading.RLock()
        self.frames: list[tuple[str, str]] = []
        self.messages: list[tuple[str, str, dict, float]] = []
        self.invalid: list[tuple[str, str]] = []
        self.redeliveries: list[tuple[str, str]] = []
        self.unknown_tx: list[dict] = []
        self.double_stops: list[dict] = []
        self.transactions: dict[int, dict] = {}
        self.answers: dict[str, str] = {}
        self.next_txid = 1000
        self.sessions: dict[str, Session] = {}
        self.refused: list[str] = []
        self.connects = 0
        self.boot_policy: dict[str, str] = {}
        self.boot_next: dict[str, list[str]] = {}  # answers given first, in order, then boot_policy
        self.tags: dict[str, str] = {}
        self.parents: dict[str, str] = {}
        self.fail_next: dict[str, int] = {}
        self.delay: dict[str, float] = {}
        self.silent_next: dict[str, int] = {}  # leave the next n CALLs of an action unanswered
        self.attempts: list[tuple[str, str, float]] = []  # (action, message id, when) of every CALL
        self.failed: list[tuple[str, str]] = []  # CALLs answered with CALLERROR on purpose
        self.offline = False
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.port = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    # -- policy -------------------------------------------------------------------------
    def boot_status(self, cp_id: str, payload: dict) -> str:
        with self.lock:
            queued = self.boot_next.get(cp_id)
            if queued:
                return queued.pop(0)
        return self.boot_policy.get(payload.get("firmware_version", ""),
                                    self.boot_policy.get(cp_id, "Accepted"))

    def auth(self, id_tag: str) -> str:
        return self.tags.get(id_tag, "Accepted")

    def id_tag_info(self, id_tag: str) -> dict:
        info = {"status": self.auth(id_tag)}
        if id_tag in self.parents:
            info["parent_id_tag"] = self.parents[id_tag]
        return info

    # -- server -------------------------------------------------------------------------
    async def _process_request(self, connection, request):
        if self.offline:
            self.refused.append(request.path)
            return connection.respond(503, "offline\n")
        if self.password is None:
            return None
        expected = "Basic " + base64.b64encode(
            f"{request.path.rsplit('/', 1)[-1]}:{self.password}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            self.refused.append(request.path)
            return connection.respond(401, "unauthorized\n")
        return None

    async def _handler(self, connection):
        cp_id = connection.request.path.rsplit("/", 1)[-1]
        if connection.subprotocol != "ocpp1.6":
            await connection.close()
            return
        session = Session(self, cp_id, connection)
        session.answers = self.answers
        with self.lock:
            self.sessions[cp_id] = session
            self.connects += 1
        try:
            await session.start()
        except websockets.ConnectionClosed:
            pass
        finally:
            with self.lock:
                if self.sessions.get(cp_id) is session:
                    del self.sessions[cp_id]

    async def _serve(self, ssl_ctx):
        self.server = await websockets.serve(self._handler, "127.0.0.1", 0,
                                             subprotocols=["ocpp1.6"],
                                             process_request=self._process_request,
                                             ssl=ssl_ctx, ping_interval=None)
        self.port = self.server.sockets[0].getsockname()[1]

    def start(self, ssl_ctx=None) -> CentralSystem:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(ssl_ctx), self.loop).result(10)
        scheme = "wss" if ssl_ctx else "ws"
        self.url = f"{scheme}://127.0.0.1:{self.port}/ocpp"
        return self

    def stop(self) -> None:
        async def shutdown():
            self.server.close()
            await self.server.wait_closed()
        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def go_offline(self) -> None:
        """Drop every session and refuse new connections until go_online()."""
        self.offline = True

        async def drop():
            for session in list(self.sessions.values()):
                await session._connection.close()
        self.run(drop(), 10)
        self.wait(lambda: not self.sessions, 10, "every session closed")

    def go_online(self) -> None:
        self.offline = False

    # -- driving it from a test ----------------------------------------------------------
    def run(self, coro, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def session(self, cp_id: str, timeout: float = 30) -> Session:
        self.wait(lambda: cp_id in self.sessions, timeout, f"{cp_id} never connected")
        return self.sessions[cp_id]

    def call(self, cp_id: str, payload, timeout: float = 60):
        """Send a CALL (an `ocpp.v16.call` object) and return the CALLRESULT object;
        a CALLERROR raises the package's OCPP error."""
        session = self.session(cp_id)
        return self.run(session.call(payload, suppress=False), timeout)

    def raw(self, cp_id: str, frame: list, timeout: float = 30) -> list:
        """Send a hand-made frame; TimeoutError if it is not answered within `timeout`."""
        return self.run(self.session(cp_id).raw_call(frame, timeout), timeout + 10)

    def wait(self, predicate, timeout: float = 30, what: str = "condition") -> None:
        def holds():
            with self.lock:
                return predicate()

        wait_until(holds, timeout, what)

    def of(self, action: str, cp_id: str | None = None) -> list[dict]:
        with self.lock:
            return [m[2] for m in self.messages if m[1] == action and (cp_id is None or m[0] == cp_id)]

    def booted(self, cp_id: str) -> bool:
        return bool(self.of("BootNotification", cp_id))

    def statuses(self, cp_id: str, connector: int = 1) -> list[str]:
        return [m["status"] for m in self.of("StatusNotification", cp_id)
                if m["connector_id"] == connector]

    def last_status(self, cp_id: str, connector: int = 1) -> str | None:
        s = self.statuses(cp_id, connector)
        return s[-1] if s else None

    def sent_calls(self) -> list[tuple[str, str]]:
        """(action, raw) of every CALL the charge points sent."""
        out = []
        for _, raw in self.frames:
            msg = json.loads(raw)
            if msg[0] == 2:
                out.append((msg[2], raw))
        return out


__all__ = ["CentralSystem", "Call"]
