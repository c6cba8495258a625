"""The central system: live connections by charge point id (a newer connection replaces
the older), offline detection by silence, and the thread-safe entry point for
central-system-initiated operations."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import Counter

from server.files import UploadTokens
from server.fleet import Fleet
from server.ocpp import schemas, secure_operations
from server.ocpp.connection import CallFailed, ChargePointConnection
from server.ocpp.errors import OcppError
from server.ocpp.transactions import TransactionBook
from server.store import Store

log = logging.getLogger(__name__)
# The longest an operation may wait for its answer: each waiting operation holds an HTTP
# worker thread, so a wait has to end (ocpp.call_timeout is capped to this too).
MIN_CALL_TIMEOUT, MAX_CALL_TIMEOUT = 0.1, 120.0


class OperationError(Exception):
    """An operation that could not be carried out; ``status`` is the HTTP status."""

    def __init__(self, status: int, reason: str, code: str | None = None, details=None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.code = code
        self.details = details


class CentralSystem:
    def __init__(self, config, store: Store, fleet: Fleet) -> None:
        self.config = config
        self.store = store
        self.fleet = fleet
        self.commit_timeout = float(config.store["commit_timeout"])
        self.transactions = TransactionBook(store, fleet, self.commit_timeout)
        self.connections: dict[str, ChargePointConnection] = {}
        self.counters: Counter = Counter()
        # the MQTT ingest (server/mqtt/ingest.py), set by the application once it runs:
        # telemetry that comes as DataTransfer goes through its pipeline
        self.telemetry_ingest = None
        # called with (action, outcome, seconds) when an operation's CALL ends (metrics)
        self.on_operation = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.upload_tokens = UploadTokens(config.files["diagnostics_token_seconds"])
        # Each operation waiting for a charge point holds an HTTP worker thread: all but
        # two of them at most, so reads and /health always find a free worker.
        self._operation_slots = threading.BoundedSemaphore(max(1, config.http["threads"] - 2))
        # the counters below are bumped from HTTP worker threads at once: `+= 1` is a read
        # and a write, and two threads can lose one
        self._count_lock = threading.Lock()
        schemas.precompile()
        fleet.on_identity_change(self.revoke)

    def _count(self, name: str) -> None:
        with self._count_lock:
            self.counters[name] += 1

    # Connections ---------------------------------------------------------------
    def attach(self, conn: ChargePointConnection) -> None:
        old = self.connections.get(conn.cp_id)
        self.connections[conn.cp_id] = conn
        self.counters["connections_total"] += 1
        if old is not None:
            old.replaced = True
            self.counters["connections_replaced"] += 1
            self.fleet.event(conn.cp_id, "connection_replaced")
            asyncio.get_running_loop().create_task(
                old.close(1000, "replaced by a newer connection"))
        if self.fleet.get(conn.cp_id) is None:
            self.fleet.strangers.note(conn.cp_id, "ocpp", conn.address)
        elif not self.fleet.set_ocpp_online(conn.cp_id, True, "connected"):
            self.fleet.touch(conn.cp_id, time.time())

    def revoke(self, cp_id: str, why: str) -> None:
        """End the open session of a station whose identity changed (any thread): nothing
        it sends from now on is handled, and its WebSocket closes (1008, policy)."""
        conn = self.connections.get(cp_id)
        if conn is None:
            return
        conn.revoked = f"the station's registration changed ({why})"
        self._count("sessions_revoked")
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(
                lambda: loop.create_task(conn.close(1008, "registration changed")))

    def detach(self, conn: ChargePointConnection) -> None:
        if self.connections.get(conn.cp_id) is conn:
            del self.connections[conn.cp_id]
            self.fleet.set_ocpp_online(conn.cp_id, False, "connection closed")
            ingest = self.telemetry_ingest
            if ingest is not None and conn.cp_id in ingest.via_ocpp:
                self.fleet.set_telemetry_online(
                    conn.cp_id, False, "the OCPP connection that carried its telemetry closed")

    async def monitor_silence(self) -> None:
        """One task for all connections: silence > factor × heartbeat interval → offline."""
        ocpp = self.config.ocpp
        while True:
            await asyncio.sleep(ocpp["monitor_interval"])
            now = time.monotonic()
            factor = ocpp["offline_after_heartbeats"]
            for conn in list(self.connections.values()):
                if not conn.silent and now - conn.last_seen > factor * conn.heartbeat_interval:
                    conn.silent = True
                    self.counters["silent_offline"] += 1
                    self.fleet.set_ocpp_online(
                        conn.cp_id, False,
                        f"silent for more than {factor:g} × {conn.heartbeat_interval} s")

    # Operations ----------------------------------------------------------------
    def call_threadsafe(self, cp_id: str, action: str, payload: dict,
                        timeout: float | None = None) -> dict:
        """Run a central-system-initiated operation from any thread; returns the answer.

        ``timeout``: seconds, MIN_CALL_TIMEOUT to MAX_CALL_TIMEOUT (None: ocpp.call_timeout)."""
        if timeout is not None and not MIN_CALL_TIMEOUT <= timeout <= MAX_CALL_TIMEOUT:
            raise OperationError(400, f"timeout must be {MIN_CALL_TIMEOUT:g} to "
                                 f"{MAX_CALL_TIMEOUT:g} seconds")
        if action not in schemas.CENTRAL_SYSTEM_ACTIONS:
            raise OperationError(404, f"unknown operation {action!r}; one of: "
                                 + ", ".join(schemas.CENTRAL_SYSTEM_ACTIONS))
        try:
            schemas.validate(action, payload)
        except OcppError as exc:
            raise OperationError(400, f"invalid {action} request: {exc.description}",
                                 exc.code, exc.details) from None
        try:
            payload = secure_operations.prepare(self, cp_id, action, payload)
        except ValueError as exc:
            raise OperationError(400, f"invalid {action} request: {exc}") from None
        conn = self.connections.get(cp_id)
        if conn is None:
            if self.fleet.get(cp_id) is None:
                raise OperationError(404, f"unknown charge point {cp_id!r}")
            raise OperationError(409, f"charge point {cp_id!r} is not connected")
        if self.loop is None:
            raise OperationError(503, "the OCPP endpoint is not running")
        timeout = timeout or min(self.config.ocpp["call_timeout"], MAX_CALL_TIMEOUT)
        if not self._operation_slots.acquire(blocking=False):
            self._count("operations_refused_busy")
            raise OperationError(429, "too many operations are waiting for charge points; "
                                 "retry when one has been answered")
        try:
            return self._call(conn, action, payload, timeout)
        finally:
            self._operation_slots.release()

    def _call(self, conn: ChargePointConnection, action: str, payload: dict,
              timeout: float) -> dict:
        cp_id = conn.cp_id
        started, outcome = time.monotonic(), "error"
        future = asyncio.run_coroutine_threadsafe(conn.call(action, payload, timeout), self.loop)
        self._count("operations")
        try:
            result = future.result(timeout + 5)
            outcome = "answered"
        except CallFailed as exc:
            outcome = exc.kind
            self.fleet.event(cp_id, "operation", action=action, outcome=exc.kind, code=exc.code)
            if exc.kind == "timeout":
                raise OperationError(504, str(exc)) from None
            if exc.kind == "closed":
                raise OperationError(409, f"charge point {cp_id!r} disconnected during {action}") from None
            raise OperationError(502, f"{action} failed: {exc}", exc.code, exc.details) from None
        except concurrent.futures.TimeoutError:
            outcome = "timeout"
            future.cancel()
            raise OperationError(504, f"{action}: no answer within {timeout:g} s") from None
        finally:
            if self.on_operation is not None:
                self.on_operation(action, outcome, time.monotonic() - started)
        self.fleet.event(cp_id, "operation", action=action, outcome="answered",
                         status=result.get("status"))
        result = secure_operations.after(self, cp_id, action, payload, result)
        if action == "DataTransfer":
            self.store.add_data_transfer({
                "ts": time.time(), "cp_id": cp_id, "direction": "out",
                "vendor_id": payload["vendorId"], "message_id": payload.get("messageId"),
                "data": str(payload.get("data")) if payload.get("data") is not None else None})
        return result

    def stats(self) -> dict:
        counters = dict(self.counters)
        return {"connections": len(self.connections), "counters": counters,
                "open_transactions": self.transactions.open_count()}
