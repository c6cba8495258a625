"""The storage interface every backend implements.

Write methods are *accepted* immediately, persisted in batches (group commit) by the
backend, and return a ``concurrent.futures.Future`` settled once the write is committed
(its result) or refused. A caller that answers "recorded" waits for that future first.
A write accepted before :meth:`Store.sync` returns is visible to reads afterwards. While
the database cannot commit, :meth:`Store.health` says why, futures of waiting callers
fail with ``StoreUnavailable`` at once, and every accepted write is kept and retried.
Reads return plain dicts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

Row = dict[str, Any]


class Store(ABC):
    # Lifecycle ---------------------------------------------------------------
    @abstractmethod
    def sync(self, timeout: float = 10.0) -> None:
        """Block until every write accepted so far is committed."""

    @abstractmethod
    def close(self) -> None:
        """Flush every accepted write, then release resources."""

    @abstractmethod
    def when_committed(self, callback) -> None:
        """Run `callback(True)` once every write accepted before this call is committed."""

    @abstractmethod
    def health(self) -> Row:
        """``{"ok": True}``, or ``{"ok": False, "reason": ...}`` while writes cannot commit."""

    @property
    @abstractmethod
    def failure(self) -> str | None:
        """Why the store cannot commit right now, None when it can."""

    @abstractmethod
    def backup(self, target) -> Row:
        """A consistent copy of the whole store at `target`, taken while it runs."""

    @abstractmethod
    def stats(self) -> Row:
        """Counters: accepted/committed writes per kind, batches, queue depth."""

    @abstractmethod
    def purge_expired(self, now: float) -> Row:
        """Apply the retention settings; returns rows deleted per table."""

    # Charge points, connectors, events ----------------------------------------
    @abstractmethod
    def save_chargepoint(self, record: Row) -> None: ...

    @abstractmethod
    def delete_chargepoint(self, cp_id: str) -> None: ...

    @abstractmethod
    def load_chargepoints(self) -> list[Row]: ...

    @abstractmethod
    def save_connector_status(self, status: Row) -> None:
        """Upsert the connector's current status and append it to the history."""

    @abstractmethod
    def load_connectors(self, cp_id: str | None = None) -> list[Row]: ...

    @abstractmethod
    def status_history(self, cp_id: str, limit: int = 100, since: float | None = None) -> list[Row]: ...

    @abstractmethod
    def add_event(self, ts: float, cp_id: str | None, kind: str, detail: Row | None) -> None: ...

    @abstractmethod
    def list_events(self, cp_id: str | None = None, kind: str | None = None,
                    since: float | None = None, limit: int = 100) -> list[Row]: ...

    @abstractmethod
    def add_data_transfer(self, row: Row) -> None: ...

    # Authorization ------------------------------------------------------------
    @abstractmethod
    def save_id_tag(self, tag: Row) -> None: ...

    @abstractmethod
    def delete_id_tag(self, id_tag: str) -> None: ...

    @abstractmethod
    def get_id_tag(self, id_tag: str) -> Row | None: ...

    @abstractmethod
    def list_id_tags(self) -> list[Row]: ...

    # Transactions and meter values -------------------------------------------
    @abstractmethod
    def start_transaction(self, tx: Row):
        """Future of (transactionId, created): ids come from a durable sequence and are never
        reused; the same start (cp, connector, idTag, meterStart, timestamp) maps to the
        same id."""

    @abstractmethod
    def stop_transaction(self, cp_id: str, tx_id: int, stop: Row, meter_rows: list[Row] = ()):
        """Future of (outcome, row): stopped / repeated / closed / foreign / unknown; only
        ``stopped`` changes anything."""

    @abstractmethod
    def open_transaction_count(self) -> int: ...

    @abstractmethod
    def get_transaction(self, tx_id: int) -> Row | None: ...

    @abstractmethod
    def list_transactions(self, cp_id: str | None = None, id_tag: str | None = None,
                          state: str | None = None, since: float | None = None,
                          until: float | None = None, limit: int = 500) -> list[Row]: ...

    @abstractmethod
    def add_meter_values(self, rows: list[Row], cp_id: str | None = None,
                         transaction_id: int | None = None):
        """Future of stored / foreign / unknown (nothing stored unless `cp_id` owns the
        transaction)."""

    @abstractmethod
    def list_meter_values(self, cp_id: str | None = None, transaction_id: int | None = None,
                          measurand: str | None = None, since: float | None = None,
                          until: float | None = None, limit: int = 1000) -> list[Row]: ...

    # Telemetry --------------------------------------------------------------
    @abstractmethod
    def add_telemetry(self, row: Row, on_settled=None):
        """Queue a telemetry row; `on_settled(stored)` runs once it is committed (True) or
        refused for good (False)."""

    @abstractmethod
    def list_telemetry(self, cp_id: str, since: float | None = None,
                       until: float | None = None, limit: int = 1000) -> list[Row]: ...

    @abstractmethod
    def save_telemetry_stats(self, row: Row) -> None: ...

    @abstractmethod
    def load_telemetry_stats(self) -> list[Row]: ...

    # ThingSpeak-compatible channels and the bridge ---------------------------
    @abstractmethod
    def save_ts_channel(self, channel: Row) -> None: ...

    @abstractmethod
    def delete_ts_channel(self, channel_id: int) -> None: ...

    @abstractmethod
    def load_ts_channels(self) -> list[Row]: ...

    @abstractmethod
    def add_ts_feeds(self, channel_id: int, entries: list[Row]) -> None: ...

    @abstractmethod
    def list_ts_feeds(self, channel_id: int, results: int | None = None,
                      start: float | None = None, end: float | None = None) -> list[Row]: ...

    @abstractmethod
    def get_ts_feed(self, channel_id: int, entry_id: int | None = None,
                    field: str | None = None) -> Row | None:
        """One entry: by entry id; else the newest (with ``field``, the newest where that
        field is set); None if there is none."""

    @abstractmethod
    def save_bridge(self, bridge: Row) -> None: ...

    @abstractmethod
    def delete_bridge(self, cp_id: str) -> None: ...

    @abstractmethod
    def load_bridges(self) -> list[Row]: ...

    # Files -------------------------------------------------------------------
    @abstractmethod
    def add_diagnostics_file(self, row: Row) -> None: ...

    @abstractmethod
    def list_diagnostics_files(self, cp_id: str | None = None) -> list[Row]: ...

    # Operator accounts, API tokens, dashboard sessions (schema version 3) -------
    @abstractmethod
    def save_operator_user(self, user: Row) -> None:
        """Insert or update (username, role, password_hash, created_at, updated_at)."""

    @abstractmethod
    def delete_operator_user(self, username: str) -> None:
        """Remove the account and every session it holds."""

    @abstractmethod
    def get_operator_user(self, username: str) -> Row | None: ...

    @abstractmethod
    def list_operator_users(self) -> list[Row]: ...

    @abstractmethod
    def save_api_token(self, token: Row) -> None: ...

    @abstractmethod
    def revoke_api_token(self, token_id: str, revoked_at: float) -> None: ...

    @abstractmethod
    def find_api_token(self, token_hash: str) -> Row | None:
        """The unrevoked token with this SHA-256, or None."""

    @abstractmethod
    def get_api_token(self, token_id: str) -> Row | None:
        """The unrevoked token with this id, or None."""

    @abstractmethod
    def list_api_tokens(self) -> list[Row]: ...

    @abstractmethod
    def save_operator_session(self, session: Row) -> None: ...

    @abstractmethod
    def delete_operator_sessions(self, id_hash: str | None = None,
                                 username: str | None = None,
                                 expired_before: float | None = None) -> None:
        """Delete one session, all of a user's, or all expired before a time."""

    @abstractmethod
    def find_operator_session(self, id_hash: str, now: float) -> Row | None:
        """The unexpired session joined with its account's role, or None."""
