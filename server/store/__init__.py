"""Storage layer: one interface (:class:`Store`), SQLite implementation by default."""

from server.store.base import Store
from server.store.sqlite import SQLiteStore


def open_store(config) -> Store:
    """Open the store selected by ``store.backend`` (only ``sqlite`` ships today)."""
    backend = config.store["backend"]
    if backend == "sqlite":
        return SQLiteStore(
            config.database_path,
            batch_max=config.store["batch_max"],
            retention_days={
                "telemetry": config.store["retention_days_telemetry"],
                "meter_values": config.store["retention_days_meter_values"],
                "status_history": config.store["retention_days_status_history"],
                "events": config.store["retention_days_events"],
            },
            retention_check_seconds=config.store["retention_check_seconds"],
        )
    raise ValueError(f"unsupported store backend {backend!r}")


__all__ = ["Store", "SQLiteStore", "open_store"]
