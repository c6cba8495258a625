"""The HTTP side: Flask application factory and blueprints (REST API, ThingSpeak-compatible
API, firmware/diagnostics files, dashboard)."""

from __future__ import annotations

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException


def create_app(services) -> Flask:
    """``services`` is the running :class:`server.app.Application` (or anything with the
    same attributes: config, store, fleet, central, ingest, channels, bridge, firmware,
    diagnostics)."""
    from server.web.api import api
    from server.web.dashboard import dashboard
    from server.web.files import files
    from server.web.request_checks import install as install_request_checks
    from server.web.thingspeak import thingspeak

    app = Flask(__name__)
    app.extensions["picocharge"] = services
    app.config["MAX_CONTENT_LENGTH"] = services.config.http["max_upload_bytes"]
    app.json.sort_keys = False
    install_request_checks(app, services.config.http["max_json_bytes"])
    app.register_blueprint(api)
    app.register_blueprint(thingspeak)
    app.register_blueprint(files)
    app.register_blueprint(dashboard)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if request.path.startswith("/api/"):
            return jsonify(error=exc.name, reason=exc.description), exc.code
        return exc

    @app.errorhandler(Exception)
    def internal_error(exc: Exception):
        app.logger.exception("unhandled error on %s", request.path)
        if request.path.startswith("/api/"):
            return jsonify(error="Internal Server Error", reason=str(exc)), 500
        return "Internal Server Error\n", 500

    return app
