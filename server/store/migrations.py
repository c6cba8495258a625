"""Ordered schema migrations. Append new ones; never edit an applied one."""

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
        CREATE TABLE chargepoints (
            id TEXT PRIMARY KEY,
            registration TEXT,              -- Accepted / Pending / Rejected, NULL = not registered
            auth_key_hash TEXT,
            description TEXT,
            vendor TEXT, model TEXT, serial_number TEXT, box_serial_number TEXT,
            firmware_version TEXT, iccid TEXT, imsi TEXT, meter_type TEXT, meter_serial_number TEXT,
            heartbeat_interval INTEGER,
            boot_at REAL, last_seen REAL,
            ocpp_online INTEGER NOT NULL DEFAULT 0,
            telemetry_online INTEGER NOT NULL DEFAULT 0,
            telemetry_last_seen REAL,
            firmware_status TEXT, diagnostics_status TEXT,
            created_at REAL NOT NULL
        );
        CREATE TABLE connectors (
            cp_id TEXT NOT NULL, connector_id INTEGER NOT NULL,
            status TEXT, error_code TEXT, info TEXT, vendor_id TEXT, vendor_error_code TEXT,
            status_ts REAL, updated_at REAL,
            PRIMARY KEY (cp_id, connector_id)
        );
        CREATE TABLE status_history (
            id INTEGER PRIMARY KEY,
            cp_id TEXT NOT NULL, connector_id INTEGER NOT NULL,
            status TEXT NOT NULL, error_code TEXT, info TEXT, vendor_id TEXT, vendor_error_code TEXT,
            ts REAL, received_at REAL NOT NULL
        );
        CREATE INDEX ix_status_history_cp ON status_history (cp_id, received_at);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL, cp_id TEXT, kind TEXT NOT NULL, detail TEXT
        );
        CREATE INDEX ix_events_ts ON events (ts);
        CREATE INDEX ix_events_cp_ts ON events (cp_id, ts);
        CREATE TABLE id_tags (
            id_tag TEXT PRIMARY KEY,
            status TEXT NOT NULL DEFAULT 'Accepted',
            expiry REAL, parent_id_tag TEXT, note TEXT,
            created_at REAL NOT NULL
        );
        CREATE TABLE transactions (
            id INTEGER PRIMARY KEY,
            cp_id TEXT NOT NULL, connector_id INTEGER NOT NULL, id_tag TEXT NOT NULL,
            id_tag_status TEXT,
            meter_start INTEGER NOT NULL, start_ts REAL NOT NULL, start_timestamp TEXT NOT NULL,
            reservation_id INTEGER,
            meter_stop INTEGER, stop_ts REAL, stop_reason TEXT, stop_id_tag TEXT,
            UNIQUE (cp_id, connector_id, id_tag, meter_start, start_timestamp)
        );
        CREATE INDEX ix_transactions_cp ON transactions (cp_id, start_ts);
        CREATE INDEX ix_transactions_tag ON transactions (id_tag, start_ts);
        CREATE INDEX ix_transactions_start ON transactions (start_ts);
        CREATE TABLE meter_values (
            id INTEGER PRIMARY KEY,
            cp_id TEXT NOT NULL, connector_id INTEGER NOT NULL, transaction_id INTEGER,
            ts REAL NOT NULL, value TEXT NOT NULL,
            measurand TEXT, unit TEXT, phase TEXT, context TEXT, location TEXT, format TEXT,
            source TEXT NOT NULL
        );
        CREATE INDEX ix_meter_values_cp_ts ON meter_values (cp_id, ts);
        CREATE INDEX ix_meter_values_tx ON meter_values (transaction_id);
        CREATE TABLE telemetry (
            id INTEGER PRIMARY KEY,
            cp_id TEXT NOT NULL, ts REAL NOT NULL, received_at REAL NOT NULL, seq INTEGER,
            t REAL, rh REAL, tmcu REAL, v REAL, a REAL, w REAL, wh REAL,
            cp TEXT, st TEXT, lim REAL, rssi REAL, heap INTEGER, up INTEGER
        );
        CREATE INDEX ix_telemetry_cp_ts ON telemetry (cp_id, ts);
        CREATE TABLE telemetry_stats (
            cp_id TEXT PRIMARY KEY,
            received INTEGER NOT NULL, lost INTEGER NOT NULL, duplicates INTEGER NOT NULL,
            reboots INTEGER NOT NULL, invalid INTEGER NOT NULL,
            last_seq INTEGER, last_up INTEGER, updated_at REAL
        );
        CREATE TABLE data_transfers (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL, cp_id TEXT NOT NULL, direction TEXT NOT NULL,
            vendor_id TEXT NOT NULL, message_id TEXT, data TEXT
        );
        CREATE TABLE ts_channels (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL, description TEXT,
            write_key TEXT NOT NULL UNIQUE, read_key TEXT NOT NULL,
            public INTEGER NOT NULL DEFAULT 0,
            field_names TEXT NOT NULL,      -- JSON list of 8 labels (null = disabled)
            latitude TEXT, longitude TEXT, elevation TEXT,
            created_at REAL NOT NULL, updated_at REAL NOT NULL,
            last_entry_id INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE ts_feeds (
            channel_id INTEGER NOT NULL, entry_id INTEGER NOT NULL, created_at REAL NOT NULL,
            field1 TEXT, field2 TEXT, field3 TEXT, field4 TEXT,
            field5 TEXT, field6 TEXT, field7 TEXT, field8 TEXT,
            status TEXT, latitude TEXT, longitude TEXT, elevation TEXT,
            PRIMARY KEY (channel_id, entry_id)
        );
        CREATE INDEX ix_ts_feeds_created ON ts_feeds (channel_id, created_at);
        CREATE TABLE ts_bridges (
            cp_id TEXT PRIMARY KEY,
            url TEXT NOT NULL, channel INTEGER NOT NULL, write_key TEXT NOT NULL,
            enabled INTEGER NOT NULL DEFAULT 1
        );
        CREATE TABLE diagnostics_files (
            id INTEGER PRIMARY KEY,
            cp_id TEXT, filename TEXT NOT NULL, path TEXT NOT NULL,
            size INTEGER NOT NULL, sha256 TEXT NOT NULL, received_at REAL NOT NULL
        );
        """,
    ),
    (
        2,
        "durable transaction id sequence; server receive times for retention",
        """
        CREATE TABLE sequences (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO sequences (name, value)
            SELECT 'transaction', COALESCE(MAX(id), 0) FROM transactions;
        ALTER TABLE meter_values ADD COLUMN received_at REAL;
        UPDATE meter_values SET received_at = ts;
        CREATE INDEX ix_meter_values_received ON meter_values (received_at);
        ALTER TABLE ts_feeds ADD COLUMN received_at REAL;
        UPDATE ts_feeds SET received_at = created_at;
        CREATE INDEX ix_ts_feeds_received ON ts_feeds (received_at);
        CREATE INDEX ix_data_transfers_ts ON data_transfers (ts);
        CREATE INDEX ix_telemetry_received ON telemetry (received_at);
        CREATE INDEX ix_status_history_received ON status_history (received_at);
        CREATE INDEX ix_diagnostics_received ON diagnostics_files (received_at)
        """,
    ),
    (
        3,
        "operator accounts, API tokens and dashboard sessions",
        """
        CREATE TABLE operator_users (
            username TEXT PRIMARY KEY,
            role TEXT NOT NULL,             -- viewer / operator / admin
            password_hash TEXT NOT NULL,    -- argon2id (PHC string)
            created_at REAL NOT NULL, updated_at REAL NOT NULL
        );
        CREATE TABLE api_tokens (
            id TEXT PRIMARY KEY,            -- public handle for listing and revoking
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE,  -- SHA-256 of the 256-bit random token
            created_by TEXT,
            created_at REAL NOT NULL,
            revoked_at REAL
        );
        CREATE TABLE operator_sessions (
            id_hash TEXT PRIMARY KEY,       -- SHA-256 of the cookie value
            username TEXT NOT NULL,
            csrf_token TEXT NOT NULL,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE INDEX ix_operator_sessions_user ON operator_sessions (username)
        """,
    ),
]
