"""Operator accounts, API tokens and dashboard sessions (no HTTP here: the web layer and
the ``python -m server users`` CLI both use this).

- Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile).
- API tokens and session ids are 256-bit random strings. They are stored as their SHA-256:
  with 256 bits of entropy nobody can search the hash space, so a slow password KDF would
  add nothing but cost on every request, and a plain hash lets a request be matched by an
  indexed lookup (the secret itself is never compared, so there is no timing leak of it).
- Every check reads the store, so a revocation (API or CLI, even from another process) takes
  effect on the very next request.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import sys
import time
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

log = logging.getLogger(__name__)

ROLES = ("viewer", "operator", "admin")
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
MIN_ADMIN_TOKEN = 32
CLI_CREATOR = "cli"  # created_by of tokens made with `python -m server users token create`
SEEDED_TOKEN_ID = "env-admin"  # the token PICOCHARGE_ADMIN_TOKEN seeds; replaced at each start
TOKEN_PREFIX = "pct_"


class AccountError(ValueError):
    """A refused account change; ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def role_allows(role: str | None, needed: str) -> bool:
    return role in ROLE_RANK and ROLE_RANK[role] >= ROLE_RANK[needed]


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_role(role) -> str:
    if role not in ROLE_RANK:
        raise AccountError(400, f"role must be one of {', '.join(ROLES)}")
    return role


def _check_password(password) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise AccountError(400, f"password must be a string of {MIN_PASSWORD} to "
                                f"{MAX_PASSWORD} characters")
    return password


def user_json(row: dict) -> dict:
    return {"username": row["username"], "role": row["role"],
            "created_at": row["created_at"], "updated_at": row["updated_at"]}


def token_json(row: dict) -> dict:
    return {"id": row["id"], "name": row["name"], "role": row["role"],
            "created_by": row.get("created_by"), "created_at": row["created_at"],
            "revoked_at": row.get("revoked_at"), "active": row.get("revoked_at") is None}


def shell_python() -> str:
    """How to call this interpreter from a shell (bare `python` may be absent, or lack
    the dependencies: the venv's own is what works)."""
    here = Path(sys.executable)
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


class Accounts:
    """Users, tokens and sessions over a :class:`server.store.Store`. Every write that a
    caller acknowledges is committed (``store.sync()``) before the method returns."""

    def __init__(self, store, session_hours: float = 12.0,
                 hasher: PasswordHasher | None = None) -> None:
        self.store = store
        self.session_seconds = session_hours * 3600
        self.hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None

    @property
    def dummy_hash(self) -> str:
        """Verified against when the user does not exist, so both cases cost the same."""
        if self._dummy_hash is None:
            self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def _commit(self) -> None:
        self.store.sync()

    # Users ---------------------------------------------------------------------
    def users(self) -> list[dict]:
        return [user_json(r) for r in self.store.list_operator_users()]

    def user(self, username: str) -> dict | None:
        row = self.store.get_operator_user(username)
        return user_json(row) if row else None

    def add_user(self, username, role, password) -> dict:
        if not isinstance(username, str) or not USERNAME.match(username):
            raise AccountError(400, "username must be 1 to 64 letters, digits or _.@-")
        _check_role(role)
        _check_password(password)
        if self.store.get_operator_user(username) is not None:
            raise AccountError(409, f"user {username!r} exists")
        now = time.time()
        row = {"username": username, "role": role, "password_hash": self.hasher.hash(password),
               "created_at": now, "updated_at": now}
        self.store.save_operator_user(row)
        self._commit()
        log.info("operator account %r created with role %s", username, role)
        return user_json(row)

    def update_user(self, username: str, role=None, password=None) -> dict:
        row = self.store.get_operator_user(username)
        if row is None:
            raise AccountError(404, f"unknown user {username!r}")
        if role is not None:
            if _check_role(role) != "admin":
                self._keep_an_admin(row)
            row["role"] = role
        if password is not None:
            row["password_hash"] = self.hasher.hash(_check_password(password))
        row["updated_at"] = time.time()
        self.store.save_operator_user(row)
        if password is not None:  # a new password ends the sessions opened with the old one
            self.store.delete_operator_sessions(username=username)
        self._commit()
        log.info("operator account %r updated (%s)", username,
                 ", ".join(k for k, v in (("role", role), ("password", password)) if v is not None))
        return user_json(row)

    def _keep_an_admin(self, row: dict) -> None:
        admins = [u for u in self.store.list_operator_users() if u["role"] == "admin"]
        if row["role"] == "admin" and len(admins) == 1:
            raise AccountError(409, "the last admin account cannot be removed or demoted")

    def delete_user(self, username: str) -> None:
        row = self.store.get_operator_user(username)
        if row is None:
            raise AccountError(404, f"unknown user {username!r}")
        self._keep_an_admin(row)
        self.store.delete_operator_user(username)
        self._commit()
        log.info("operator account %r deleted", username)

    def verify_password(self, username: str, password: str) -> dict | None:
        """The account if the password is right, else None (same cost either way)."""
        row = self.store.get_operator_user(username) if isinstance(username, str) else None
        if not isinstance(password, str) or len(password) > MAX_PASSWORD:
            return None
        try:
            self.hasher.verify(row["password_hash"] if row else self.dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if self.hasher.check_needs_rehash(row["password_hash"]):
            row["password_hash"] = self.hasher.hash(password)
            row["updated_at"] = time.time()
            self.store.save_operator_user(row)
        return row

    # API tokens ----------------------------------------------------------------
    def tokens(self) -> list[dict]:
        return [token_json(r) for r in self.store.list_api_tokens()]

    def create_token(self, name, role, created_by: str | None = None,
                     creator_role: str | None = None) -> tuple[dict, str]:
        """(description, the token itself: shown once, never stored). ``creator_role``: the
        rights of whoever asks; a token never gets more."""
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise AccountError(400, "name must be a string of 1 to 100 characters")
        _check_role(role)
        if creator_role is not None and not role_allows(creator_role, role):
            raise AccountError(403, f"a {creator_role} cannot create a token with role {role}")
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        row = {"id": secrets.token_hex(6), "name": name, "role": role,
               "token_hash": digest(secret), "created_by": created_by,
               "created_at": time.time(), "revoked_at": None}
        self.store.save_api_token(row)
        self._commit()
        log.info("API token %s (%r, %s) created by %s", row["id"], name, role, created_by)
        return token_json(row), secret

    def revoke_token(self, token_id: str) -> None:
        if not any(t["id"] == token_id and t["revoked_at"] is None
                   for t in self.store.list_api_tokens()):
            raise AccountError(404, f"no active token {token_id!r}")
        self.store.revoke_api_token(token_id, time.time())
        self._commit()
        log.info("API token %s revoked", token_id)

    def seed_admin_token(self, secret: str) -> None:
        """Make ``secret`` (from PICOCHARGE_ADMIN_TOKEN) an admin token; a different value
        at a later start replaces the old one."""
        if len(secret) < MIN_ADMIN_TOKEN:
            raise ValueError(f"the admin token must have at least {MIN_ADMIN_TOKEN} characters")
        self.store.save_api_token({"id": SEEDED_TOKEN_ID, "name": "PICOCHARGE_ADMIN_TOKEN",
                                   "role": "admin", "token_hash": digest(secret),
                                   "created_by": None, "created_at": time.time(),
                                   "revoked_at": None})
        self._commit()

    def token_role(self, secret: str) -> dict | None:
        """The active token presented as ``Bearer <secret>`` with the role it has now, or
        None. A token never has more rights than whoever made it has now: its role is
        lowered to its creator's current one, and it is dead once the creator's account
        (or the token that made it) is gone. Tokens made on the server itself (the CLI,
        PICOCHARGE_ADMIN_TOKEN) answer to nobody."""
        if not secret or len(secret) > 256:
            return None
        token = self.store.find_api_token(digest(secret))
        if token is None:
            return None
        role = self._creator_cap(token.get("created_by"), depth=0)
        if role is None:
            return None
        if not role_allows(role, token["role"]):
            token = dict(token, role=role)
        return token

    def _creator_cap(self, creator: str | None, depth: int) -> str | None:
        """The highest role a token made by ``creator`` may have now; None: no rights."""
        if creator is None or creator == CLI_CREATOR:
            return ROLES[-1]
        if depth > 8:  # a chain of tokens making tokens: refuse rather than walk on
            return None
        if creator.startswith("token:"):
            parent = self.store.get_api_token(creator[len("token:"):])
            if parent is None:
                return None
            cap = self._creator_cap(parent.get("created_by"), depth + 1)
            if cap is None:
                return None
            return min(cap, parent["role"], key=ROLE_RANK.__getitem__)
        user = self.store.get_operator_user(creator)
        return user["role"] if user is not None else None

    # Sessions ------------------------------------------------------------------
    def open_session(self, username: str) -> tuple[str, dict]:
        """(cookie value, session row)."""
        secret = secrets.token_urlsafe(32)
        now = time.time()
        row = {"id_hash": digest(secret), "username": username,
               "csrf_token": secrets.token_urlsafe(32), "created_at": now,
               "expires_at": now + self.session_seconds}
        self.store.delete_operator_sessions(expired_before=now)
        self.store.save_operator_session(row)
        self._commit()
        return secret, row

    def session(self, secret: str | None) -> dict | None:
        if not secret or len(secret) > 256:
            return None
        return self.store.find_operator_session(digest(secret), time.time())

    def close_session(self, secret: str) -> None:
        self.store.delete_operator_sessions(id_hash=digest(secret))
        self._commit()

    # First start ---------------------------------------------------------------
    def bootstrap(self, admin_token: str, first_admin: str, console) -> None:
        """Seed the configured admin token; with none and no account at all, create the
        first admin with a random password and write it to ``console`` (only there: the
        log says where it went, never what it is)."""
        if admin_token:
            self.seed_admin_token(admin_token)
            log.info("admin API token from PICOCHARGE_ADMIN_TOKEN / auth.admin_token is active")
            return
        if self.store.get_api_token(SEEDED_TOKEN_ID) is not None:
            # the variable is gone: so is the token it made at an earlier start
            self.store.revoke_api_token(SEEDED_TOKEN_ID, time.time())
            self._commit()
            log.info("admin API token of an earlier PICOCHARGE_ADMIN_TOKEN revoked (not set now)")
        if self.store.list_operator_users():
            return
        password = secrets.token_urlsafe(15)
        self.add_user(first_admin, "admin", password)
        console.write(
            f"\n*** First start: created the operator account {first_admin!r} (admin) with the "
            f"password\n***     {password}\n*** It is shown only now. Log in to the dashboard "
            f"and change it, or run\n***     {shell_python()} -m server users passwd {first_admin}\n\n")
        console.flush()
        log.warning("first start: created admin account %r; its password was printed on the "
                    "console once", first_admin)
