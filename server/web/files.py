"""Firmware bundle downloads (``/firmware/<bundle>/<path>``) for UpdateFirmware and the
diagnostics upload endpoint (``/diagnostics/<chargePointId>``) for GetDiagnostics."""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, request, send_from_directory

from server.web.common import services

files = Blueprint("files", __name__)


@files.get("/firmware/<bundle>/<path:path>")
def firmware_file(bundle: str, path: str):
    directory = services().firmware.bundle_dir(bundle)
    if directory is None:
        abort(404)
    return send_from_directory(directory, path, max_age=0)


def _store_upload(cp_id: str | None, filename: str | None):
    svc = services()
    limit = svc.config.http["max_upload_bytes"]
    try:
        # Only multipart bodies are parsed as forms; anything else is the file itself
        # (touching request.files first would consume a urlencoded-looking body).
        if request.mimetype == "multipart/form-data" and request.files:
            upload = next(iter(request.files.values()))
            row = svc.diagnostics.save(cp_id, upload.filename or filename, upload.stream, limit)
        else:
            row = svc.diagnostics.save(cp_id, filename or request.args.get("filename"),
                                       request.stream, limit)
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
