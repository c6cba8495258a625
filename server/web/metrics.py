"""``GET /metrics``: the Prometheus exposition of this server (server/metrics.py).

Viewer role or higher, like the API's reads (server/web/auth.py): Prometheus sends an API
token with ``authorization: {credentials: <token>}`` (Bearer) in its scrape config."""

from __future__ import annotations

from flask import Blueprint
from prometheus_client import CONTENT_TYPE_LATEST

from server.web.common import error_response, services

metrics = Blueprint("metrics", __name__)


@metrics.get("/metrics")
def exposition():
    registry = getattr(services(), "metrics", None)
    if registry is None:
        return error_response(503, "metrics are not collected by this server")
    return registry.exposition(), 200, {"Content-Type": CONTENT_TYPE_LATEST}
