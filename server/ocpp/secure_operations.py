"""What the central system does around operator-initiated operations that touch secrets:

- ChangeConfiguration ``AuthorizationKey``: the new key must be 16–40 characters; it is
  stored (hashed) only once the charge point answered ``Accepted``, so a refused or
  unanswered change never locks the station out. The key is never logged or returned.
- GetDiagnostics to this server's ``/diagnostics/<chargePointId>``: the location gets a
  one-time upload token (``.../diagnostics/<id>/upload/<token>``), because boards cannot
  send Basic auth on the upload.
- GetConfiguration: an ``AuthorizationKey`` value a charge point returns is masked.
"""

from __future__ import annotations

import urllib.parse

from server.station_keys import key_problem

AUTHORIZATION_KEY = "AuthorizationKey"
MASK = "********"


def is_key_change(action: str, payload: dict) -> bool:
    return action == "ChangeConfiguration" and payload.get("key") == AUTHORIZATION_KEY


def prepare(central, cp_id: str, action: str, payload: dict) -> dict:
    """The payload to send; raises ValueError for a request that must not be sent."""
    if is_key_change(action, payload):
        problem = key_problem(payload.get("value"))
        if problem:
            raise ValueError(problem)
    if action == "GetDiagnostics":
        location = payload.get("location", "")
        parts = urllib.parse.urlsplit(location)
        own_path = "/diagnostics/" + urllib.parse.quote(cp_id, safe="")
        if parts.scheme in ("http", "https") and parts.path.rstrip("/") in (
                own_path, "/diagnostics/" + cp_id):
            token = central.upload_tokens.issue(cp_id)
            path = f"{own_path}/upload/{token}"
            payload = dict(payload, location=urllib.parse.urlunsplit(
                (parts.scheme, parts.netloc, path, "", "")))
    return payload


def after(central, cp_id: str, action: str, payload: dict, result: dict) -> dict:
    """The answer for the operator, after storing what an accepted answer commits to."""
    if is_key_change(action, payload) and result.get("status") == "Accepted":
        central.fleet.set_auth_key(cp_id, payload["value"])
        central.store.sync()  # the operator's 200 says the new key is in force
    if action == "GetConfiguration":
        for entry in result.get("configurationKey") or []:
            if isinstance(entry, dict) and entry.get("key") == AUTHORIZATION_KEY and entry.get("value"):
                entry["value"] = MASK
    return result
