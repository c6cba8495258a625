"""Transactions as the OCPP handlers see them: every answer that promises something was
recorded waits for the store's commit first, and a store that cannot commit becomes a
CALLERROR InternalError (the charge point keeps the message in its journal and retries),
never a made-up id.

Ownership: a StopTransaction or MeterValues for a transaction the sending station does not
own (another station's, or one that does not exist), or a second, different stop of a
closed transaction, changes nothing; it is answered as OCPP requires and recorded as a
``security`` event that operators see in the event list."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from server.ocpp.errors import INTERNAL_ERROR, PROPERTY_CONSTRAINT_VIOLATION, OcppError
from server.store.writer import StoreUnavailable, WriteRejected

log = logging.getLogger(__name__)

# transactionId and connectorId are 32-bit in every OCPP implementation we know; meter
# registers and reservation ids must at least fit SQLite's 64-bit integers.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def require_int(payload: dict, key: str, low: int, high: int) -> None:
    value = payload.get(key)
    if value is not None and not low <= value <= high:
        raise OcppError(PROPERTY_CONSTRAINT_VIOLATION,
                        f"{key} {value} is outside {low}..{high}")


def require_store(store) -> None:
    """Refuse at once what would need storing while the store cannot commit."""
    if store.failure is not None:
        raise OcppError(INTERNAL_ERROR, "store unavailable, try again later")


async def committed(future: concurrent.futures.Future, timeout: float):
    """The result of a store write once it is committed; InternalError otherwise."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except StoreUnavailable:
        raise OcppError(INTERNAL_ERROR, "store unavailable, try again later") from None
    except TimeoutError:
        raise OcppError(INTERNAL_ERROR, "store did not commit in time, try again later") from None
    except WriteRejected as exc:
        log.error("store refused a write: %s", exc)
        raise OcppError(INTERNAL_ERROR, "the message could not be stored") from None


class TransactionBook:
    def __init__(self, store, fleet, commit_timeout: float = 10.0) -> None:
        self.store = store
        self.fleet = fleet
        self.commit_timeout = commit_timeout

    async def start(self, cp_id: str, connector_id: int, id_tag: str, meter_start: int,
                    timestamp: str, start_ts: float, reservation_id: int | None,
                    id_tag_status: str) -> tuple[int, bool]:
        """Returns (transactionId, created) once the transaction is committed."""
        require_store(self.store)
        future = self.store.start_transaction({
            "cp_id": cp_id, "connector_id": connector_id, "id_tag": id_tag,
            "id_tag_status": id_tag_status, "meter_start": meter_start, "start_ts": start_ts,
            "start_timestamp": timestamp, "reservation_id": reservation_id})
        return await committed(future, self.commit_timeout)

    async def stop(self, cp_id: str, tx_id: int, stop: dict, meter_rows: list[dict]):
        """Returns (outcome, transaction row) once committed; see Store.stop_transaction."""
        require_store(self.store)
        if not 0 < tx_id <= INT32_MAX:
            outcome, row = "unknown", None
        else:
            outcome, row = await committed(
                self.store.stop_transaction(cp_id, tx_id, stop, meter_rows), self.commit_timeout)
        if outcome not in ("stopped", "repeated"):
            self.refused(cp_id, "StopTransaction", tx_id, outcome, row)
        return outcome, row

    async def meter_values(self, cp_id: str, tx_id: int | None, rows: list[dict]) -> str:
        require_store(self.store)
        if tx_id is not None and not 0 < tx_id <= INT32_MAX:
            outcome = "unknown"
        else:
            outcome = await committed(self.store.add_meter_values(rows, cp_id, tx_id),
                                      self.commit_timeout)
        if outcome != "stored":
            self.refused(cp_id, "MeterValues", tx_id, outcome, None, values=len(rows))
        return outcome

    def refused(self, cp_id: str, action: str, tx_id, outcome: str, row, **extra) -> None:
        reasons = {"foreign": "transaction belongs to another charge point",
                   "unknown": "no such transaction",
                   "closed": "transaction already stopped with other values"}
        log.warning("%s: %s for transaction %s refused: %s", cp_id, action, tx_id,
                    reasons[outcome])
        self.fleet.event(cp_id, "security", action=action, transaction_id=tx_id,
                         refused=outcome, reason=reasons[outcome], **extra)

    def open_count(self) -> int:
        return self.store.open_transaction_count()
