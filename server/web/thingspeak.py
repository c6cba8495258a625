"""ThingSpeak-compatible endpoints, answering in ThingSpeak's documented shapes.

Writes: ``/update`` (entry id or ``0``), ``/update.json``, ``/channels/<id>/bulk_update.json``
and ``bulk_update.csv``. Reads (with CORS, like ThingSpeak; query parameters in
server/thingspeak/reads.py): ``/channels/<id>/feeds.{json,csv,xml}``,
``fields/<n>.{json,csv,xml}``, ``fields/<n>/last.{json,xml,txt}``,
``feeds/last.{json,xml}``, ``feeds/<entry_id>.{json,xml}``,
``feeds/last_data_age.{json,txt}``, ``fields/<n>/last_data_age.{json,txt}``,
``status.{json,csv,xml}`` and ``/channels/<id>.{json,xml}``. No access: ``-1``."""

from __future__ import annotations

import csv
import functools
import time

from flask import Blueprint, Response, jsonify, make_response, request

from server.thingspeak import reads
from server.thingspeak.channels import FIELDS, WriteRefused
from server.web.auth import ROUTE_ROLES, STATION
from server.web.common import services

thingspeak = Blueprint("thingspeak", __name__)


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


def public_read(view):
    """A read route: also answers browsers of other sites (CORS), as ThingSpeak does."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        response = make_response(view(*args, **kwargs))
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response
    return wrapped


def _bad_parameter(exc: Exception):
    return _bulk_error(WriteRefused(400, "error_bad_request", str(exc)))


def _query(default_days: float | None = None) -> reads.ReadQuery:
    return reads.parse_query(request.args, time.time(), default_days)


def _channel_object(channel: dict, q: reads.ReadQuery) -> dict:
    out = services().channels.channel_json(channel)
    out["created_at"] = reads.show_time(channel["created_at"], q.tz)
    out["updated_at"] = reads.show_time(channel["updated_at"], q.tz)
    if q.metadata:  # channels here have no metadata text: ThingSpeak answers "" then
        out = {**{k: out[k] for k in ("id", "name", "description")}, "metadata": "",
               **{k: v for k, v in out.items() if k not in ("id", "name", "description")}}
    return out


def _feed_list(channel: dict, names: tuple[str, ...], fmt: str):
    """feeds.<fmt> and fields/<n>.<fmt>: the query, grouping, filters, then the format."""
    try:
        q = _query()
    except reads.BadParameter as exc:
        return _bad_parameter(exc)
    rows = services().store.list_ts_feeds(channel["id"], q.results, q.since, q.until)
    rows = reads.select(reads.aggregate(rows, names, q), names, q)
    cols = reads.columns(names, q, grouped=q.aggregate is not None)
    if fmt == "csv":
        return Response(reads.to_csv(rows, cols, q.tz), mimetype="text/csv")
    feeds_out = [reads.feed_entry(r, cols, q.tz) for r in rows]
    if fmt == "xml":
        return Response(reads.to_xml(_channel_object(channel, q), feeds_out),
                        mimetype="application/xml")
    return jsonify(channel=_channel_object(channel, q), feeds=feeds_out)


def _enabled(channel: dict) -> tuple[str, ...]:
    return tuple(n for n, label in zip(FIELDS, channel["field_names"]) if label)


@thingspeak.get("/channels/<int:channel_id>/feeds.<any(json, csv, xml):fmt>")
@public_read
def feeds(channel_id: int, fmt: str = "json"):
    channel = _readable_channel(channel_id)
    if channel is None:
        return _minus_one()
    return _feed_list(channel, _enabled(channel), fmt)


@thingspeak.get("/channels/<int:channel_id>/fields/<int:field>.<any(json, csv, xml):fmt>")
@public_read
def field_feed(channel_id: int, field: int, fmt: str = "json"):
    channel = _readable_channel(channel_id)
    if channel is None or not 1 <= field <= 8:
        return _minus_one()
    return _feed_list(channel, (FIELDS[field - 1],), fmt)


@thingspeak.get("/channels/<int:channel_id>/status.<any(json, csv, xml):fmt>")
@public_read
def status_feed(channel_id: int, fmt: str):
    """The status updates of the last day by default (ThingSpeak's Read Status)."""
    channel = _readable_channel(channel_id)
    if channel is None:
        return _minus_one()
    try:
        q = _query(default_days=1)
    except reads.BadParameter as exc:
        return _bad_parameter(exc)
    limit = reads.MAX_RESULTS if q.results is None else q.results
    rows = services().store.list_ts_feeds(channel_id, limit,
                                          q.since, q.until)
    cols = ["created_at", "entry_id", "status"]
    if fmt == "csv":
        return Response(reads.to_csv(rows, cols, q.tz), mimetype="text/csv")
    terse = {"name": channel["name"]}
    for key in ("latitude", "longitude", "elevation"):
        if channel.get(key):
            terse[key] = channel[key]
    feeds_out = [reads.feed_entry(r, cols, q.tz) for r in rows]
    if fmt == "xml":
        return Response(reads.to_xml(terse, feeds_out), mimetype="application/xml")
    return jsonify(channel=terse, feeds=feeds_out)


def _single(channel: dict, row: dict | None, names: tuple[str, ...], fmt: str,
            text_field: str | None = None):
    """One entry (last, by id, a field's last) as JSON, XML or the field's bare text."""
    try:
        q = _query()
    except reads.BadParameter as exc:
        return _bad_parameter(exc)
    if row is None:
        return _text("-1")
    row = reads.select([row], names, q)
    if not row:
        return _text("-1")
    entry = reads.feed_entry(row[0], reads.columns(names, q), q.tz)
    if fmt == "txt":
        value = entry.get(text_field) if text_field else None
        return _text(f"{q.prepend}{'' if value is None else value}{q.append}")
    if fmt == "xml":
        return Response(reads.to_xml(None, None, single=entry), mimetype="application/xml")
    return jsonify(entry)


@thingspeak.get("/channels/<int:channel_id>/feeds/last.<any(json, xml):fmt>")
@public_read
def last_entry(channel_id: int, fmt: str = "json"):
    channel = _readable_channel(channel_id)
    if channel is None:
        return _minus_one()
    return _single(channel, services().store.get_ts_feed(channel_id), _enabled(channel), fmt)


@thingspeak.get("/channels/<int:channel_id>/feeds/<int:entry_id>.<any(json, xml):fmt>")
@public_read
def entry_by_id(channel_id: int, entry_id: int, fmt: str):
    channel = _readable_channel(channel_id)
    if channel is None:
        return _minus_one()
    return _single(channel, services().store.get_ts_feed(channel_id, entry_id=entry_id),
                   _enabled(channel), fmt)


@thingspeak.get("/channels/<int:channel_id>/fields/<int:field>/last.<any(json, xml, txt):fmt>")
@public_read
def field_last(channel_id: int, field: int, fmt: str):
    """The newest entry in which this field is set."""
    channel = _readable_channel(channel_id)
    if channel is None or not 1 <= field <= 8:
        return _minus_one()
    name = FIELDS[field - 1]
    return _single(channel, services().store.get_ts_feed(channel_id, field=name), (name,), fmt,
                   text_field=name)


def _data_age(row: dict | None, fmt: str):
    if row is None:
        return _text("-1")
    age = str(max(0, int(time.time() - row["created_at"])))
    if fmt == "txt":
        return _text(age)
    return jsonify(last_data_age=age, last_data_age_units="s")


@thingspeak.get("/channels/<int:channel_id>/feeds/last_data_age.<any(json, txt):fmt>")
@public_read
def last_data_age(channel_id: int, fmt: str):
    """Seconds since the channel's newest entry."""
    channel = _readable_channel(channel_id)
    if channel is None:
        return _minus_one()
    return _data_age(services().store.get_ts_feed(channel_id), fmt)


@thingspeak.get("/channels/<int:channel_id>/fields/<int:field>/last_data_age.<any(json, txt):fmt>")
@public_read
def field_last_data_age(channel_id: int, field: int, fmt: str):
    """Seconds since the newest entry in which this field is set."""
    channel = _readable_channel(channel_id)
    if channel is None or not 1 <= field <= 8:
        return _minus_one()
    return _data_age(services().store.get_ts_feed(channel_id, field=FIELDS[field - 1]), fmt)


@thingspeak.get("/channels/<int:channel_id>.<any(json, xml):fmt>")
@public_read
def channel_info(channel_id: int, fmt: str):
    """The channel itself (ThingSpeak's View a Channel), without its keys."""
    channel = _readable_channel(channel_id)
    if channel is None:
        return _minus_one()
    try:
        q = _query()
    except reads.BadParameter as exc:
        return _bad_parameter(exc)
    out = {"id": channel["id"], "name": channel["name"],
           "description": channel["description"],
           "latitude": channel["latitude"] or "0.0", "longitude": channel["longitude"] or "0.0",
           "created_at": reads.show_time(channel["created_at"], q.tz),
           "elevation": channel["elevation"] or "",
           "last_entry_id": channel["last_entry_id"] or None,
           "public_flag": bool(channel["public"]), "metadata": ""}
    for name, label in zip(FIELDS, channel["field_names"]):
        if label:
            out[name] = label
    out["tags"] = []
    if fmt == "xml":
        root = {k: v for k, v in out.items() if k != "tags"}
        return Response(reads.to_xml(root, None), mimetype="application/xml")
    return jsonify(out)


@thingspeak.post("/channels/<int:channel_id>/bulk_update.csv")
def bulk_update_csv(channel_id: int):
    """ThingSpeak's Bulk-Write CSV: form fields write_api_key, time_format (absolute or
    relative) and updates ("TIME,field1,...,field8,latitude,longitude,elevation,status"
    entries separated by "|")."""
    values = _params()
    key = values.get("write_api_key") or values["api_key"]
    time_format = str(values.get("time_format") or "").lower()
    if time_format not in ("absolute", "relative"):
        return _bulk_error(WriteRefused(400, "error_bad_request",
                                        "time_format must be absolute or relative"))
    text = values.get("updates")
    if not isinstance(text, str) or not text.strip():
        return _bulk_error(WriteRefused(400, "error_bad_request", "updates must not be empty"))
    columns = [*FIELDS, "latitude", "longitude", "elevation", "status"]
    updates = []
    for cells in csv.reader(text.strip().split("|")):
        if not cells or len(cells) > 1 + len(columns):
            return _bulk_error(WriteRefused(400, "error_bad_request",
                                            "each update is TIME and at most 12 values"))
        update = {"created_at" if time_format == "absolute" else "delta_t": cells[0]}
        update.update({c: v for c, v in zip(columns, cells[1:]) if v != ""})
        updates.append(update)
    try:
        services().channels.bulk_write(channel_id, key, updates)
    except WriteRefused as exc:
        return _bulk_error(exc)
    return jsonify(success=True), 202


# Every route here is station-facing: it authenticates with the channel's keys.
ROUTE_ROLES.update({f"thingspeak.{name}": STATION for name in (
    "status_feed", "entry_by_id", "field_last", "last_data_age", "field_last_data_age",
    "channel_info", "bulk_update_csv")})
