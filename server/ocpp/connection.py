"""One charge point's WebSocket session: receive loop, dispatch, rate limit, size limit,
and central-system-initiated CALLs correlated with their answers."""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from typing import Any

from websockets.exceptions import ConnectionClosed

from server.ocpp import frames, schemas
from server.ocpp.errors import (
    FORMATION_VIOLATION,
    GENERIC_ERROR,
    INTERNAL_ERROR,
    NOT_IMPLEMENTED,
    NOT_SUPPORTED,
    SECURITY_ERROR,
    OcppError,
)
from server.ocpp.handlers import HANDLERS, require_accepted

log = logging.getLogger(__name__)


class CallFailed(Exception):
    """A central-system CALL that did not produce a valid CALLRESULT."""

    def __init__(self, kind: str, message: str, code: str | None = None,
                 details: Any = None) -> None:
        super().__init__(message)
        self.kind = kind  # "timeout", "callerror", "invalid_response", "closed"
        self.code = code
        self.details = details


class ChargePointConnection:
    __slots__ = ("cp_id", "ws", "central", "presented_password", "accepted", "heartbeat_interval",
                 "address",
                 "last_seen", "silent", "replaced", "connected_at", "_tokens", "_tokens_at",
                 "_call_lock", "_pending_id", "_pending", "closed", "revoked")

    def __init__(self, cp_id: str, ws, central, presented_password: str | None) -> None:
        self.cp_id = cp_id
        self.ws = ws
        self.central = central
        self.presented_password = presented_password
        remote = getattr(ws, "remote_address", None)
        self.address = remote[0] if remote else None
        record = central.fleet.get(cp_id) or {}
        # A known, accepted charge point may resume without a new BootNotification.
        self.accepted = record.get("registration") == "Accepted"
        self.heartbeat_interval = int(record.get("heartbeat_interval")
                                      or central.config.ocpp["heartbeat_interval"])
        self.last_seen = time.monotonic()
        self.connected_at = time.time()
        self.silent = False
        self.replaced = False
        self._tokens = float(central.config.ocpp["rate_limit_burst"])
        self._tokens_at = self.last_seen
        self._call_lock: asyncio.Lock | None = None
        self._pending_id: str | None = None
        self._pending: asyncio.Future | None = None
        self.closed = False  # the receive loop ended: no answer can arrive any more
        # why the identity this session was admitted under no longer holds (set from any
        # thread by CentralSystem.revoke): from then on nothing it sends is handled
        self.revoked: str | None = None

    # Receive side -------------------------------------------------------------
    async def run(self) -> None:
        try:
            async for raw in self.ws:
                await self.on_message(raw)
        except ConnectionClosed:
            pass
        finally:
            self.closed = True
            if self._pending is not None and not self._pending.done():
                self._pending.set_exception(CallFailed("closed", "connection closed"))

    def _take_token(self, now: float) -> bool:
        ocpp = self.central.config.ocpp
        rate, burst = ocpp["rate_limit_per_second"], ocpp["rate_limit_burst"]
        if rate <= 0:
            return True
        self._tokens = min(burst, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    async def on_message(self, raw) -> None:
        central = self.central
        counters = central.counters
        if self.revoked is not None:  # closing: nothing more is handled, stored or touched
            counters["revoked_messages_dropped"] += 1
            return
        counters["messages_in"] += 1
        now = time.monotonic()
        self.last_seen = now
        central.fleet.touch(self.cp_id, time.time())
        if self.silent:
            self.silent = False
            central.fleet.set_ocpp_online(self.cp_id, True, "activity after silence")
        if isinstance(raw, bytes):
            await self.send_error("-1", FORMATION_VIOLATION, "OCPP-J frames are text frames")
            return
        limit = central.config.ocpp["max_message_bytes"]
        if len(raw) > limit:  # characters ≥ bytes/4; checked cheaply first
            size = len(raw.encode())
            if size > limit:
                counters["oversized"] += 1
                await self.send_error(frames.recover_unique_id(raw), GENERIC_ERROR,
                                      f"message of {size} bytes exceeds the limit of {limit} bytes")
                return
        try:
            frame = frames.parse(raw)
        except frames.FrameError as exc:
            counters["malformed"] += 1
            if exc.frame_type in (frames.CALLRESULT, frames.CALLERROR):
                log.warning("%s: malformed answer ignored: %s", self.cp_id, exc.description)
                return
            await self.send_error(exc.unique_id, exc.code, exc.description)
            return
        if frame.type == frames.CALL:
            if not self._take_token(now):
                counters["rate_limited"] += 1
                await self.send_error(frame.unique_id, GENERIC_ERROR, "rate limit exceeded")
                return
            await self.dispatch(frame)
        else:
            self.on_answer(frame)

    async def dispatch(self, frame: frames.Frame) -> None:
        action = frame.action
        counters = self.central.counters
        try:
            handler = HANDLERS.get(action)
            if handler is None:
                if action in schemas.KNOWN_ACTIONS:
                    raise OcppError(NOT_SUPPORTED, f"{action} is not supported by this central system")
                raise OcppError(NOT_IMPLEMENTED, f"unknown action {action!r}")
            counters[f"calls_received.{action}"] += 1  # actions with a handler: a bounded set
            schemas.validate(action, frame.payload)
            if self.revoked is not None:
                raise OcppError(SECURITY_ERROR, f"{action} refused: {self.revoked}")
            require_accepted(self, action)
            try:
                response = handler(self, frame.payload)
                if inspect.isawaitable(response):  # answers only once its writes committed
                    response = await response
            except OcppError:
                raise
            except Exception as exc:
                log.exception("%s: %s failed", self.cp_id, action)
                raise OcppError(INTERNAL_ERROR, f"internal error handling {action}") from exc
            try:
                schemas.validate(action, response, response=True)
            except OcppError as exc:
                log.exception("%s: %s produced an invalid response", self.cp_id, action)
                raise OcppError(INTERNAL_ERROR, f"internal error handling {action}") from exc
        except OcppError as exc:
            await self.send_error(frame.unique_id, exc.code, exc.description, exc.details)
            return
        counters["calls_answered"] += 1
        await self.send(frames.call_result(frame.unique_id, response))

    def on_answer(self, frame: frames.Frame) -> None:
        if self._pending is None or frame.unique_id != self._pending_id or self._pending.done():
            self.central.counters["unexpected_answers"] += 1
            log.warning("%s: answer to unknown call %s ignored", self.cp_id, frame.unique_id)
            return
        self._pending.set_result(frame)

    # Send side -----------------------------------------------------------------
    async def send(self, text: str) -> bool:
        """False when the connection is closed (the frame was not sent)."""
        try:
            await self.ws.send(text)
            self.central.counters["messages_out"] += 1
            return True
        except ConnectionClosed:
            return False

    async def send_error(self, unique_id: str, code: str, description: str,
                         details: Any = None) -> None:
        self.central.counters[f"callerror_sent.{code}"] += 1
        await self.send(frames.call_error(unique_id, code, description, details))

    async def call(self, action: str, payload: dict, timeout: float) -> dict:
        """Send a CALL and return the validated CALLRESULT payload.

        OCPP allows one outstanding CALL per direction, so calls queue on a lock. Once the
        connection is closed a call fails at once ("closed"): the pending one when the
        receive loop ends, the queued ones as they get the lock, one whose send fails.
        """
        if self._call_lock is None:
            self._call_lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(self._call_lock.acquire(), timeout)
        except TimeoutError:
            raise CallFailed("timeout", f"{action}: another call to {self.cp_id} is still pending") from None
        try:
            if self.closed:
                raise CallFailed("closed", f"{action}: connection closed")
            self._pending_id = uuid.uuid4().hex[:36]
            self._pending = loop.create_future()
            if not await self.send(frames.call(self._pending_id, action, payload)):
                raise CallFailed("closed", f"{action}: connection closed")
            try:
                answer = await asyncio.wait_for(self._pending, max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise CallFailed("timeout", f"{action}: no answer within {timeout:g} s") from None
        finally:
            self._pending_id = None
            self._pending = None
            self._call_lock.release()
        if answer.type == frames.CALLERROR:
            raise CallFailed("callerror", answer.error_description or answer.error_code,
                             answer.error_code, answer.error_details)
        try:
            schemas.validate(action, answer.payload, response=True)
        except OcppError as exc:
            raise CallFailed("invalid_response", exc.description, exc.code, exc.details) from None
        return answer.payload

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)
