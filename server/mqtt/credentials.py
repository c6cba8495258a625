"""Who may use the embedded broker, and where they may publish: the credentials and topic
rules shared by the Mosquitto broker and the amqtt fallback.

Stations connect with username = chargePointId and password = their AuthorizationKey;
the ingest has its own generated credentials and a client id that carries a secret. The
password file ``passwd`` is in Mosquitto's own format
(``user:$7$<iterations>$<salt b64>$<hash b64>``: PBKDF2-SHA512, mosquitto_passwd(1)),
computed here because only a hash of each key is kept once it has been set (the plaintext
exists only while a key is being registered). It is the source of truth across restarts:
Mosquitto and the amqtt fallback both read it (Mosquitto again on SIGHUP), with the one ACL
rule of ``acl_document``. Files are written atomically (temporary file, fsync, rename) with
mode 0600.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# Mosquitto's default for `$7$` hashes. The keys are random 16-40 character secrets, not
# words, so iterations buy little; the broker checks them on every connect.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
# A username the password file and the ACL pattern can carry unchanged: no separator of
# the file (':'), no topic level or wildcard ('/', '+', '#'), nothing invisible.
_FORBIDDEN = set(":/+#")


def mosquitto_hash(password: str, salt: bytes | None = None,
                   iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return (f"$7${iterations}${base64.b64encode(salt).decode()}"
            f"${base64.b64encode(digest).decode()}")


def check_mosquitto_hash(password: str | bytes | None, stored: str | None) -> bool:
    if password is None or not stored:
        return False
    if isinstance(password, bytes):
        password = password.decode("utf-8", "replace")
    try:
        _, scheme, iterations, salt, digest = stored.split("$")
        if scheme != "7":
            return False
        computed = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt),
                                       int(iterations))
        return hmac.compare_digest(computed, base64.b64decode(digest))
    except (ValueError, TypeError):
        return False


def usable_username(name: str) -> bool:
    return (bool(name) and len(name) <= 128 and name.isprintable()
            and not any(ch in _FORBIDDEN or ch.isspace() for ch in name))


def read_password_file(path: Path) -> dict[str, str]:
    users: dict[str, str] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        return users
    for line in text.splitlines():
        user, sep, hashed = line.partition(":")
        if sep and user:
            users[user] = hashed
    return users


def write_private(path: Path, text: str) -> None:
    """Replace `path` atomically with `text`, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def topic_allowed(username: str | None, ingest_user: str, prefix: str, topic: str,
                  subscribe: bool) -> bool:
    """The ACL both brokers enforce: a station writes only under `<prefix>/<its id>/`;
    only the ingest reads (subscribes to) the stations' topics."""
    if not username:
        return False
    if username == ingest_user:
        return subscribe and (topic == f"{prefix}/#" or topic.startswith(f"{prefix}/"))
    return not subscribe and topic.startswith(f"{prefix}/{username}/")


class BrokerCredentials:
    """The embedded broker's credentials (the password file, and the dynamic-security
    document generated from it), kept in step with the fleet.

    `set_station(cp_id, key)` is called when a station gets a key (plaintext, available
    only then), `set_station(cp_id, None)` when the key is cleared or the station deleted.
    `set_enabled(cp_id, accepted)` follows its registration state: only an Accepted station
    may use the broker; a Pending or Rejected one keeps its credential (its key is not
    known again once set) in `passwd.disabled`, out of the password file, and is
    disconnected. Every change rewrites the files atomically and calls `on_change` or
    `on_state` (the broker applies it)."""

    def __init__(self, directory: Path, ingest_user: str, prefix: str) -> None:
        self.directory = directory
        self.ingest_user = ingest_user
        self.prefix = prefix
        self.password_file = directory / "passwd"
        self.disabled_file = directory / "passwd.disabled"  # Pending/Rejected stations'
        # each key change, appended and fsynced before it is acknowledged; folded into the
        # two files above by flush() (rewriting them costs O(stations) per change)
        self.journal_file = directory / "passwd.journal"
        self.secret_file = directory / "ingest.secret"
        self.on_change = None  # on_change(cp_id, key or None, revokes_a_key), set by the broker
        self.on_state = None  # on_state(cp_id, enabled), set by the broker
        self._lock = threading.Lock()
        self._users: dict[str, str] = {}
        self._disabled: set[str] = set()  # stations not Accepted (with a credential or not)
        self._dirty = False  # the files lag behind _users/_disabled (flush() writes them)
        self.ingest_password = ""

    @staticmethod
    def _secret(path: Path) -> str:
        value = path.read_text().strip() if path.exists() else ""
        if not value:
            value = secrets.token_urlsafe(32)
            write_private(path, value + "\n")
        return value

    def load(self, fleet_records: list[dict]) -> None:
        """Read what the data directory holds, generate the ingest's secret on first use,
        drop credentials of stations the fleet no longer has a key for, write both files."""
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self.ingest_password = self._secret(self.secret_file)
        with_key = {r["id"] for r in fleet_records if r.get("auth_key_hash")}
        users = read_password_file(self.disabled_file)
        users.update(read_password_file(self.password_file))
        for user, hashed in self._read_journal():  # changes made after the last flush
            if hashed:
                users[user] = hashed
            else:
                users.pop(user, None)
        with self._lock:
            self._users = {user: hashed for user, hashed in users.items()
                           if user in with_key and user not in self.reserved}
            self._disabled = {r["id"] for r in fleet_records
                              if r.get("registration") != "Accepted"}
            missing = sorted(with_key - set(self._users))
            self._write()
            self._truncate_journal()
        if missing:
            log.warning("%d station(s) have an AuthorizationKey but no MQTT credential (the key "
                        "was set before the broker kept credentials): set their key again to "
                        "let them publish telemetry, e.g. %s", len(missing), ", ".join(missing[:5]))

    def stations(self) -> list[str]:
        with self._lock:
            return sorted(self._users)

    @property
    def reserved(self) -> tuple[str, ...]:
        return (self.ingest_user,)

    def set_station(self, cp_id: str, key: str | None) -> None:
        if cp_id in self.reserved or not usable_username(cp_id):
            if key is not None:
                log.warning("station %r gets no MQTT credential: its id cannot be an MQTT "
                            "username here (reserved, or contains ':', '/', '+', '#' or spaces)",
                            cp_id)
            return
        hashed = mosquitto_hash(key) if key is not None else ""
        with self._lock:
            revoke = cp_id in self._users
            if key is None:
                if self._users.pop(cp_id, None) is None:
                    return
            else:
                self._users[cp_id] = hashed
            self._append_journal(f"{cp_id}:{hashed}\n")
            self._dirty = True
        if self.on_change is not None:
            self.on_change(cp_id, key, revoke)

    def set_enabled(self, cp_id: str, enabled: bool) -> None:
        """Let the station use the broker (Accepted) or not (Pending, Rejected): a station
        turned away is disconnected and refused until it is Accepted again."""
        with self._lock:
            if (cp_id not in self._disabled) == enabled:
                return
            if enabled:
                self._disabled.discard(cp_id)
            else:
                self._disabled.add(cp_id)
            if cp_id not in self._users:
                return  # no credential yet: the state waits for one
            # not journaled: the fleet's registration states rebuild _disabled at load
            self._dirty = True
        if self.on_state is not None:
            self.on_state(cp_id, enabled)

    def is_enabled(self, cp_id: str) -> bool:
        with self._lock:
            return cp_id in self._users and cp_id not in self._disabled

    def flush(self) -> None:
        """Bring ``passwd`` and ``passwd.disabled`` up to date (what the brokers read), then
        empty the journal: once per batch of changes, just before the broker rereads them."""
        with self._lock:
            if not self._dirty:
                return
            self._write()
            self._truncate_journal()
            self._dirty = False

    def _append_journal(self, line: str) -> None:
        fd = os.open(self.journal_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def _read_journal(self) -> list[tuple[str, str]]:
        try:
            text = self.journal_file.read_text()
        except FileNotFoundError:
            return []
        changes = []
        for line in text.splitlines():  # a torn last line (a crash mid-append) has no ':'
            user, sep, hashed = line.partition(":")
            if sep and user:
                changes.append((user, hashed))
        return changes

    def _truncate_journal(self) -> None:
        write_private(self.journal_file, "")

    def _write(self) -> None:
        lines = [f"{self.ingest_user}:{mosquitto_hash(self.ingest_password)}"]
        lines += [f"{user}:{hashed}" for user, hashed in sorted(self._users.items())
                  if user not in self._disabled]
        write_private(self.password_file, "\n".join(lines) + "\n")
        write_private(self.disabled_file, "".join(
            f"{user}:{hashed}\n" for user, hashed in sorted(self._users.items())
            if user in self._disabled))

    # Mosquitto ----------------------------------------------------------------------
    @property
    def ingest_client_id(self) -> str:
        """The ingest's client id: its name and a tag derived from its secret, so that no
        station can connect with it and take the ingest's session (Mosquitto's password
        file does not bind client ids to usernames; see server/mqtt/mosquitto.py)."""
        tag = hmac.new(self.ingest_password.encode(), b"mqtt client id", hashlib.sha256)
        return f"{self.ingest_user}-{tag.hexdigest()[:24]}"

    def acl_document(self) -> str:
        """Mosquitto's ACL file: a station publishes under its own id only, the ingest
        reads every station's topics, nothing else is allowed."""
        return ("# Written by the PicoCharge server at every start; edits are lost.\n"
                "# %u is the username, which is the station's chargePointId\n"
                f"pattern write {self.prefix}/%u/#\n"
                f"user {self.ingest_user}\n"
                f"topic read {self.prefix}/#\n")
