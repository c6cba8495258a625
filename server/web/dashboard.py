"""The operator dashboard: fleet overview and station pages. Plain HTML + JavaScript served
from this package (no CDN); live by polling the REST API."""

from __future__ import annotations

from flask import Blueprint, render_template

dashboard = Blueprint("dashboard", __name__, template_folder="templates",
                      static_folder="static", static_url_path="/static")


@dashboard.get("/")
def overview():
    return render_template("overview.html")


@dashboard.get("/stations/<cp_id>")
def station(cp_id: str):
    return render_template("station.html", cp_id=cp_id)
