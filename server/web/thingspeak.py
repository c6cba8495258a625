"""ThingSpeak-compatible endpoints, answering in ThingSpeak's documented shapes:
``/update`` (entry id or ``0``), ``/update.json``, ``/channels/<id>/bulk_update.json``,
``/channels/<id>/feeds.json``, ``/channels/<id>/fields/<n>.json``,
``/channels/<id>/feeds/last.json``."""

from __future__ import annotations

import time

from flask import Blueprint, Response, jsonify, request

from server.thingspeak.channels import FIELDS, WriteRefused
from server.timeutil import parse_time
from server.web.common import services

thingspeak = Blueprint("thingspeak", __name__)
DEFAULT_RESULTS = 100
MAX_RESULTS = 8000


def _params() -> dict:
    values = dict(request.args.items())
    if request.method == "POST":
        body = request.get_json(silent=True) if request.is_json else None
        if isinstance(body, dict):
            values.update(body)
        else:
            values.update(request.form.items())
    key = (values.get("api_key") or values.get("key")
           or request.headers.get("THINGSPEAKAPIKEY") or request.headers.get("X-THINGSPEAKAPIKEY"))
    values["api_key"] = key
    return values


def _text(body: str, status: int = 200) -> Response:
    return Response(body, status=status, mimetype="text/plain")


def _minus_one():
    return _text("-1", 400)


@thingspeak.route("/update", methods=["GET", "POST"])
def update():
    values = _params()
    try:
        _, entry = services().channels.write(values["api_key"], values)
    except WriteRefused:
        return _text("0")
    return _text(str(entry["entry_id"]))


@thingspeak.route("/update.json", methods=["GET", "POST"])
def update_json():
    values = _params()
    svc = services()
    try:
        channel, entry = svc.channels.write(values["api_key"], values)
    except WriteRefused:
        return _text("0")
    return jsonify(svc.channels.update_json(channel, entry))


@thingspeak.post("/channels/<int:channel_id>/bulk_update.json")
def bulk_update(channel_id: int):
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _bulk_error(WriteRefused(400, "error_bad_request", "body must be a JSON object"))
    try:
        services().channels.bulk_write(channel_id, body.get("write_api_key"), body.get("updates"))
    except WriteRefused as exc:
        return _bulk_error(exc)
    return jsonify(success=True), 202


def _bulk_error(exc: WriteRefused):
    return jsonify(status=str(exc.status),
                   error={"error_code": exc.error_code, "message": exc.message,
                          "details": exc.message}), exc.status


def _readable_channel(channel_id: int):
    svc = services()
    channel = svc.channels.get(channel_id)
    if channel is None or not svc.channels.can_read(channel, _params()["api_key"]):
        return None
    svc.store.sync()
    return channel


def _feed_query(channel_id: int) -> list[dict]:
    results = request.args.get("results", type=int)
    start, end = request.args.get("start"), request.args.get("end")
    days, minutes = request.args.get("days", type=float), request.args.get("minutes", type=float)
    since = parse_time(start) if start else None
    if since is None and (days or minutes):
        since = time.time() - (days or 0) * 86400 - (minutes or 0) * 60
    if results is None and since is None and not end:
        results = DEFAULT_RESULTS
    if results is not None:
        results = max(0, min(results, MAX_RESULTS))
    return services().store.list_ts_feeds(channel_id, results, since,
                                          parse_time(end) if end else None)


def _flag(name: str) -> bool:
    return request.args.get(name, "").lower() == "true"


@thingspeak.get("/channels/<int:channel_id>/feeds.json")
def feeds(channel_id: int):
    channel = _readable_channel(channel_id)
    if channel is None:
        return _minus_one()
    try:
        rows = _feed_query(channel_id)
    except ValueError:
        return _minus_one()
    svc = services()
    return jsonify(channel=svc.channels.channel_json(channel),
                   feeds=[svc.channels.feed_json(channel, r, status=_flag("status"),
                                                 location=_flag("location")) for r in rows])


@thingspeak.get("/channels/<int:channel_id>/fields/<int:field>.json")
def field_feed(channel_id: int, field: int):
    channel = _readable_channel(channel_id)
    if channel is None or not 1 <= field <= 8:
        return _minus_one()
    try:
        rows = _feed_query(channel_id)
    except ValueError:
        return _minus_one()
    svc = services()
    name = FIELDS[field - 1]
    return jsonify(channel=svc.channels.channel_json(channel),
                   feeds=[svc.channels.feed_json(channel, r, fields=(name,), status=_flag("status"),
                                                 location=_flag("location")) for r in rows])


@thingspeak.get("/channels/<int:channel_id>/feeds/last.json")
def last_entry(channel_id: int):
    channel = _readable_channel(channel_id)
    if channel is None:
        return _minus_one()
    rows = services().store.list_ts_feeds(channel_id, 1)
    if not rows:
        return _text("-1")
    return jsonify(services().channels.feed_json(channel, rows[0], status=_flag("status"),
                                                 location=_flag("location")))
