"""Transaction ids allocated in memory (consistent with the store) and the dedup of a
StartTransaction retransmitted after a reconnect: same connector, idTag, meterStart and
timestamp → the same transactionId, never a second transaction."""

from __future__ import annotations

import threading
import time

from server.store import Store

# Start keys kept for dedup: every open transaction plus those started this recently.
DEDUP_WINDOW_SECONDS = 7 * 86400


class TransactionBook:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._next_id = store.max_transaction_id() + 1
        self._by_key: dict[tuple, int] = {}
        self._open: dict[int, dict] = {}
        for row in store.transaction_start_keys(time.time() - DEDUP_WINDOW_SECONDS):
            key = (row["cp_id"], row["connector_id"], row["id_tag"], row["meter_start"],
                   row["start_timestamp"])
            self._by_key[key] = row["id"]
            if row["stop_ts"] is None:
                self._open[row["id"]] = {"cp_id": row["cp_id"], "connector_id": row["connector_id"],
                                         "meter_start": row["meter_start"]}

    def start(self, cp_id: str, connector_id: int, id_tag: str, meter_start: int,
              timestamp: str, start_ts: float, reservation_id: int | None,
              id_tag_status: str) -> tuple[int, bool]:
        """Returns (transactionId, created)."""
        key = (cp_id, connector_id, id_tag, meter_start, timestamp)
        with self._lock:
            existing = self._by_key.get(key)
            if existing is not None:
                return existing, False
            tx_id = self._next_id
            self._next_id += 1
            self._by_key[key] = tx_id
            self._open[tx_id] = {"cp_id": cp_id, "connector_id": connector_id,
                                 "meter_start": meter_start}
        self.store.start_transaction({
            "id": tx_id, "cp_id": cp_id, "connector_id": connector_id, "id_tag": id_tag,
            "id_tag_status": id_tag_status, "meter_start": meter_start, "start_ts": start_ts,
            "start_timestamp": timestamp, "reservation_id": reservation_id})
        return tx_id, True

    def stop(self, tx_id: int, stop: dict) -> dict | None:
        """Close a transaction; returns what we knew of it (None if unknown)."""
        with self._lock:
            known = self._open.pop(tx_id, None)
        if known is None:
            row = self.store.get_transaction(tx_id)
            if row is not None:
                known = {"cp_id": row["cp_id"], "connector_id": row["connector_id"],
                         "meter_start": row["meter_start"]}
        if known is not None:
            self.store.stop_transaction(tx_id, stop)
        return known

    def open_transactions(self) -> dict[int, dict]:
        with self._lock:
            return {k: dict(v) for k, v in self._open.items()}
