"""The HTTP side: Flask application factory and blueprints (REST API, ThingSpeak-compatible
API, firmware/diagnostics files, dashboard, login, accounts); every request passes the
checks of :mod:`server.web.auth` first."""

from __future__ import annotations

import secrets

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from server.store import StoreUnavailable

WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")


def create_app(services) -> Flask:
    """``services`` is the running :class:`server.app.Application` (or anything with the
    same attributes: config, store, fleet, central, ingest, channels, bridge, firmware,
    diagnostics)."""
    from server.web import auth
    from server.web.accounts_api import accounts_api
    from server.web.api import api
    from server.web.dashboard import dashboard
    from server.web.files import files
    from server.web.login import login
    from server.web.metrics import metrics
    from server.web.request_checks import install as install_request_checks
    from server.web.thingspeak import thingspeak

    app = Flask(__name__)
    app.extensions["picocharge"] = services
    app.config["MAX_CONTENT_LENGTH"] = services.config.http["max_upload_bytes"]
    app.json.sort_keys = False
    auth.install(app, services)  # who may ask comes before what was asked (401 before 400)
    install_request_checks(app, services.config.http["max_json_bytes"])
    app.register_blueprint(api)
    app.register_blueprint(thingspeak)
    app.register_blueprint(files)
    app.register_blueprint(dashboard)
    app.register_blueprint(login)
    app.register_blueprint(accounts_api)
    app.register_blueprint(metrics)

    @app.before_request
    def refuse_writes_while_store_fails():
        # Nothing is answered as recorded unless it is committed: while the database
        # cannot commit, a write is refused before anything is queued.
        if request.method in WRITE_METHODS and services.store.failure is not None:
            raise StoreUnavailable(services.store.failure)

    @app.errorhandler(StoreUnavailable)
    def store_unavailable(exc: StoreUnavailable):
        body = {"error": "Service Unavailable",
                "reason": "the store cannot commit right now; nothing was recorded, try again"}
        return jsonify(body), 503, {"Retry-After": "5"}

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/api/"):
            return jsonify(error=exc.name, reason=exc.description), exc.code
        return exc

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        # the exception's text can hold paths, SQL or values: it goes to the log only, under
        # an incident id the caller can quote
        incident = secrets.token_hex(6)
        app.logger.exception("unhandled error on %s (incident %s)", request.path, incident)
        if request.path.startswith("/api/"):
            return jsonify(error="Internal Server Error", incident=incident,
                           reason=f"internal error; the server log has incident {incident}"), 500
        return f"Internal Server Error (incident {incident})\n", 500

    return app
