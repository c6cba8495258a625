"""Charge point AuthorizationKeys: the length rule, and how they are stored and checked.

Keys are 16 to 40 characters (OCPP 1.6 security whitepaper, profiles 1 and 2). They are
stored as ``hmac-sha256$<secret id>$<hex>``: HMAC-SHA256 under a server secret kept outside
the database (``<data_dir>/station-keys.secret``, mode 0600), of the charge point id and the
key. Checking one costs about a microsecond, so 10 000 stations reconnecting after a
server restart are admitted as fast as their handshakes arrive.

Why not a slow password hash (argon2id, as earlier versions stored): the same key is also
the station's MQTT password, which the broker must keep as PBKDF2 of 101 iterations (its
own format, checked on every connect); the weakest stored form sets the real protection,
and argon2id beside it bought nothing but three minutes of CPU after each restart. The
HMAC's secret is what protects the keys now: a copy of the database alone (a dump, a
backup, a replica) gives nothing to guess against. Whoever has the data directory too
can test guesses quickly either way, so keys must be random (docs/central-system.md says how to make
one), not chosen words.

Hashes written by older versions (argon2id, ``sha256$salt$hex``) still admit their
station, checked the slow way once, and are replaced by the HMAC form at that login.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from pathlib import Path

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

log = logging.getLogger(__name__)

KEY_MIN_LENGTH = 16
KEY_MAX_LENGTH = 40
SCHEME = "hmac-sha256"
LEGACY_SHA256 = "sha256$"
SECRET_BYTES = 32

# verifies hashes written by earlier versions only (argon2id takes its parameters from the hash)
_LEGACY_ARGON2 = argon2.PasswordHasher()


def key_problem(key: object) -> str | None:
    """Why ``key`` cannot be an AuthorizationKey, or None."""
    if not isinstance(key, str):
        return "the AuthorizationKey must be a string"
    if not KEY_MIN_LENGTH <= len(key) <= KEY_MAX_LENGTH:
        return (f"the AuthorizationKey must be {KEY_MIN_LENGTH} to {KEY_MAX_LENGTH} characters "
                "(OCPP 1.6 security whitepaper)")
    if not key.isprintable() or not key.isascii():
        return "the AuthorizationKey must be printable ASCII"
    return None


def check_legacy(key: str, stored: str) -> bool:
    """A hash of an earlier version (argon2id, or sha256$salt$hex): slow by design for
    argon2id (call off the event loop)."""
    if stored.startswith(LEGACY_SHA256):
        try:
            _, salt, digest = stored.split("$", 2)
        except ValueError:
            return False
        return hmac.compare_digest(hashlib.sha256((salt + key).encode()).hexdigest(), digest)
    try:
        return _LEGACY_ARGON2.verify(stored, key)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def load_secret(path: Path) -> bytes:
    """The secret in ``path``, made (random, mode 0600) if the file does not exist yet."""
    path = Path(path)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        secret = bytes.fromhex(text)
        if len(secret) < SECRET_BYTES:
            raise ValueError(f"{path}: the station key secret must be {SECRET_BYTES} bytes "
                             "(64 hex digits)")
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(SECRET_BYTES)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex() + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    log.info("station keys: made a new secret in %s (back it up with the database)", path)
    return secret


class StationKeys:
    """Hash and check AuthorizationKeys under one server secret."""

    def __init__(self, secret: bytes | None = None) -> None:
        # no secret: a random one for this process (tools and tests that store nothing)
        self._secret = secret if secret is not None else secrets.token_bytes(SECRET_BYTES)
        self.secret_id = hashlib.sha256(self._secret).hexdigest()[:8]
        self._prefix = f"{SCHEME}${self.secret_id}$"
        self._lock = threading.Lock()
        self._counts = {"fast": 0, "legacy": 0, "other_secret": 0}
        self._warned_other_secret = False

    def hash_key(self, cp_id: str, key: str) -> str:
        mac = hmac.new(self._secret, f"{cp_id}\0{key}".encode(), hashlib.sha256).hexdigest()
        return self._prefix + mac

    def is_current(self, stored: str | None) -> bool:
        """A hash in this server's own form (checked in a microsecond)."""
        return bool(stored) and stored.startswith(self._prefix)

    def matches(self, cp_id: str, key: str, stored: str | None) -> bool:
        """Fast path only: True if ``stored`` is in the current form and ``key`` matches."""
        if not isinstance(key, str) or not self.is_current(stored):
            return False
        self._count("fast")
        return hmac.compare_digest(self.hash_key(cp_id, key), stored)

    def verify(self, cp_id: str, key: str, stored: str | None) -> bool:
        """Any stored form; a hash of an earlier version is checked the slow way (argon2id:
        call off the event loop), then ``needs_rehash`` says to replace it."""
        if not stored or not isinstance(key, str):
            return False
        if self.is_current(stored):
            return self.matches(cp_id, key, stored)
        if stored.startswith(SCHEME + "$"):
            self._count("other_secret")
            if not self._warned_other_secret:
                self._warned_other_secret = True
                log.error("station keys: stored key hashes were made with another secret than "
                          "this server's (%s): no such station can log in; restore the "
                          "station-keys.secret that was backed up with this database",
                          self.secret_id)
            return False
        self._count("legacy")
        return check_legacy(key, stored)

    def needs_rehash(self, stored: str | None) -> bool:
        return not self.is_current(stored)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def stats(self) -> dict:
        with self._lock:
            return dict(self._counts, secret_id=self.secret_id)
