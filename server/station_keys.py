"""Charge point AuthorizationKeys: the length rule, storage with a password KDF, and a
bounded verification cache.

Keys are 16 to 40 characters (OCPP 1.6 security whitepaper, profiles 1 and 2). They are
stored as argon2id hashes; hashes written by older versions (``sha256$salt$hex``) are still
accepted and replaced by an argon2id hash on the next successful login.

Verifying an argon2id hash costs tens of milliseconds on purpose, far too much for 10 000
charge points reconnecting after a network outage. ``KeyVerifier`` therefore remembers, per
charge point, ``HMAC(process secret, key)`` of the last key that verified against the
currently stored hash: a reconnect with the same key and an unchanged hash costs one HMAC.
A key that failed is never remembered, a changed hash misses the cache by construction, and
the secret lives only in this process's memory, so the cache is worthless to anyone who
reads the database.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

KEY_MIN_LENGTH = 16
KEY_MAX_LENGTH = 40
LEGACY_SCHEME = "sha256$"

# OWASP's argon2id baseline (19 MiB, 2 passes, 1 lane): about 17 ms on the bench machine.
_HASHER = argon2.PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)


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


def hash_key(key: str) -> str:
    """An argon2id hash of ``key`` (slow by design; call off the event loop)."""
    return _HASHER.hash(key)


def _check_legacy(key: str, stored: str) -> bool:
    try:
        _, salt, digest = stored.split("$", 2)
    except ValueError:
        return False
    return hmac.compare_digest(hashlib.sha256((salt + key).encode()).hexdigest(), digest)


def check_key(key: str, stored: str | None) -> bool:
    """Slow path: does ``key`` match the stored hash (argon2id or legacy sha256)?"""
    if not stored or not isinstance(key, str):
        return False
    if stored.startswith(LEGACY_SCHEME):
        return _check_legacy(key, stored)
    try:
        return _HASHER.verify(stored, key)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    """True for legacy hashes and argon2 hashes made with other parameters."""
    if stored.startswith(LEGACY_SCHEME):
        return True
    try:
        return _HASHER.check_needs_rehash(stored)
    except (InvalidHashError, ValueError):
        return True


class KeyVerifier:
    """Verify charge point keys through a bounded LRU cache of keys known good."""

    def __init__(self, max_entries: int = 20000) -> None:
        self.max_entries = max(1, int(max_entries))
        self._secret = secrets.token_bytes(32)
        self._lock = threading.Lock()
        # cp_id → (stored hash the key verified against, HMAC(secret, key))
        self._good: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        # cp_id → (HMAC(secret, key), hash of that key): hashes computed ahead of a write
        self._prehashed: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def _mac(self, cp_id: str, key: str) -> bytes:
        return hmac.new(self._secret, f"{cp_id}\0{key}".encode(), hashlib.sha256).digest()

    def cached(self, cp_id: str, key: str, stored: str) -> bool:
        """Fast path: True only if this very key verified against this very hash before."""
        mac = self._mac(cp_id, key)
        with self._lock:
            entry = self._good.get(cp_id)
            if entry is not None and entry[0] == stored and hmac.compare_digest(entry[1], mac):
                self._good.move_to_end(cp_id)
                self.hits += 1
                return True
        return False

    def verify(self, cp_id: str, key: str, stored: str | None) -> bool:
        """The cache first, the KDF on a miss (slow: call off the event loop)."""
        if not stored or not isinstance(key, str):
            return False
        if self.cached(cp_id, key, stored):
            return True
        with self._lock:
            self.misses += 1
        if not check_key(key, stored):
            return False
        self.remember(cp_id, key, stored)
        return True

    def remember(self, cp_id: str, key: str, stored: str) -> None:
        with self._lock:
            self._good[cp_id] = (stored, self._mac(cp_id, key))
            self._good.move_to_end(cp_id)
            while len(self._good) > self.max_entries:
                self._good.popitem(last=False)

    def forget(self, cp_id: str) -> None:
        with self._lock:
            self._good.pop(cp_id, None)
            self._prehashed.pop(cp_id, None)

    def prehash(self, cp_id: str, key: str) -> None:
        """Compute the hash of a key about to be stored (auto-registration), so that the
        write itself, which may happen on the event loop, does not pay for the KDF."""
        digest = hash_key(key)
        with self._lock:
            self._prehashed[cp_id] = (self._mac(cp_id, key), digest)
            while len(self._prehashed) > self.max_entries:
                self._prehashed.popitem(last=False)

    def hash_for(self, cp_id: str, key: str) -> str:
        """The hash to store for ``key``: a precomputed one if it is for this key."""
        mac = self._mac(cp_id, key)
        with self._lock:
            entry = self._prehashed.pop(cp_id, None)
        if entry is not None and hmac.compare_digest(entry[0], mac):
            digest = entry[1]
        else:
            digest = hash_key(key)
        self.remember(cp_id, key, digest)
        return digest

    def stats(self) -> dict:
        with self._lock:
            return {"cached": len(self._good), "hits": self.hits, "misses": self.misses}
