"""Storage layer: one interface (:class:`Store`), SQLite implementation by default."""

from server.store.base import Store
from server.store.sqlite import SQLiteStore, StoreCorrupt
from server.store.writer import StoreUnavailable, WriteRejected


def open_store(config) -> Store:
    """Open the store selected by ``store.backend`` (only ``sqlite`` ships today)."""
    backend = config.store["backend"]
    if backend == "sqlite":
        return SQLiteStore(
            config.database_path,
            batch_max=config.store["batch_max"],
            retention_days={table: config.store[f"retention_days_{table}"]
                            for table, _column in SQLiteStore.RETENTION},
            retention_check_seconds=config.store["retention_check_seconds"],
            synchronous=config.store["synchronous"],
            close_timeout=config.store["close_timeout"],
        )
    raise ValueError(f"unsupported store backend {backend!r}")


__all__ = ["Store", "SQLiteStore", "StoreCorrupt", "StoreUnavailable", "WriteRejected",
           "open_store"]
