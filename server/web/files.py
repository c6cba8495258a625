"""Firmware bundle downloads (``/firmware/<bundle>/<path>``) for UpdateFirmware and the
diagnostics upload endpoint for GetDiagnostics.

An upload must prove it comes from the station: either HTTP Basic auth with the station's
own credentials (``/diagnostics/<chargePointId>[/<filename>]``, username = chargePointId,
password = its AuthorizationKey) or a one-time token the server put in the GetDiagnostics
location (``/diagnostics/<chargePointId>/upload/<token>[/<filename>]``). Uploads per
station are bounded in size, number per hour and total space."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, jsonify, request, send_from_directory

from server.files import UploadRefused
from server.ocpp.endpoint import basic_credentials
from server.web.common import services

files = Blueprint("files", __name__)


@files.get("/firmware/<bundle>/<path:path>")
def firmware_file(bundle: str, path: str):
    directory = services().firmware.bundle_dir(bundle)
    if directory is None:
        abort(404)
    return send_from_directory(directory, path, max_age=0)


def _unauthorized(reason: str):
    response = jsonify(error="Unauthorized", reason=reason)
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="diagnostics", charset="UTF-8"'
    return response


class _TooManyGuesses(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__(wait)
        self.wait = wait


def _station_credentials_valid(cp_id: str) -> bool:
    """The station's own Basic credentials? Wrong keys are limited per address
    (_TooManyGuesses), and a key stored by an earlier version (argon2id, the KDF) is
    limited before it is checked."""
    fleet = services().fleet
    credentials = basic_credentials(request.headers.get("Authorization"))
    record = fleet.get(cp_id)
    if credentials is None or credentials[0] != cp_id or record is None:
        return False
    stored = record.get("auth_key_hash")
    if not stored:
        return False
    guesses = current_app.extensions["picocharge_auth"]["station_limiter"]
    if fleet.keys.is_current(stored):
        if fleet.keys.matches(cp_id, credentials[1], stored):
            return True
        wait = guesses.take(request.remote_addr or "?")
        if wait:
            raise _TooManyGuesses(wait)
        return False
    wait = guesses.take(request.remote_addr or "?")
    if wait:
        raise _TooManyGuesses(wait)
    return fleet.keys.verify(cp_id, credentials[1], stored)


def _store_upload(cp_id: str, filename: str | None, token: str | None = None):
    svc = services()
    if token is not None:
        expiry = svc.central.upload_tokens.take(cp_id, token)
        if expiry is None:
            return _unauthorized("unknown, expired or spent upload token")
        stored = False
        try:
            response = _receive(svc, cp_id, filename)
            stored = response[1] == 201
            return response
        finally:
            if not stored:  # spent only by a stored upload: the station may retry
                svc.central.upload_tokens.give_back(cp_id, token, expiry)
    try:
        valid = _station_credentials_valid(cp_id)
    except _TooManyGuesses as exc:
        response = jsonify(error="Too Many Requests",
                           reason="too many credential checks from this address; wait")
        response.status_code = 429
        guesses = current_app.extensions["picocharge_auth"]["station_limiter"]
        response.headers["Retry-After"] = guesses.retry_after_header(exc.wait)
        return response
    if not valid:
        return _unauthorized("the station's Basic auth credentials are required")
    return _receive(svc, cp_id, filename)


def _receive(svc, cp_id: str, filename: str | None):
    files_config = svc.config.files
    limit = min(svc.config.http["max_upload_bytes"], files_config["diagnostics_max_bytes"])
    try:
        # Only multipart bodies are parsed as forms; anything else is the file itself
        # (touching request.files first would consume a urlencoded-looking body).
        if request.mimetype == "multipart/form-data" and request.files:
            upload = next(iter(request.files.values()))
            name, stream = upload.filename or filename, upload.stream
        else:
            name, stream = filename or request.args.get("filename"), request.stream
        row = svc.diagnostics.receive(cp_id, files_config, name, stream, limit)
    except UploadRefused as exc:
        return jsonify(error="Upload Refused", reason=exc.reason), exc.status
    except ValueError as exc:
        return jsonify(error="Payload Too Large", reason=str(exc)), 413
    svc.fleet.event(cp_id, "diagnostics_uploaded", filename=row["filename"], size=row["size"])
    return jsonify(filename=row["filename"], size=row["size"], sha256=row["sha256"]), 201


@files.post("/diagnostics/<cp_id>")
def upload_diagnostics(cp_id: str):
    return _store_upload(cp_id, None)


@files.route("/diagnostics/<cp_id>/<filename>", methods=["POST", "PUT"])
def upload_diagnostics_named(cp_id: str, filename: str):
    return _store_upload(cp_id, filename)


@files.post("/diagnostics/<cp_id>/upload/<token>")
def upload_diagnostics_with_token(cp_id: str, token: str):
    return _store_upload(cp_id, None, token)


@files.route("/diagnostics/<cp_id>/upload/<token>/<filename>", methods=["POST", "PUT"])
def upload_diagnostics_named_with_token(cp_id: str, token: str, filename: str):
    return _store_upload(cp_id, filename, token)
