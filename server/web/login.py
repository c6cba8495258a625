"""Dashboard login and logout. The login form carries a double-submit CSRF token (a random
value both in a short-lived cookie and in the form) because there is no session yet; the
session cookie is HttpOnly, SameSite=Strict and Secure under HTTPS."""

from __future__ import annotations

import hmac
import logging
import secrets
import urllib.parse

from flask import Blueprint, current_app, g, redirect, render_template, request

from server.web.auth import CSRF_FIELD, SESSION_COOKIE
from server.web.common import services

log = logging.getLogger(__name__)
login = Blueprint("login", __name__, template_folder="templates")
LOGIN_CSRF_COOKIE = "picocharge_login"


def _safe_next(target: str | None) -> str:
    """Only a path on this server may be redirected to. Anything a browser or Werkzeug
    would read otherwise is refused, not repaired: tabs and newlines (dropped by browsers,
    so ``/\t/evil`` is ``//evil``), any other control, space or non-ASCII character, a
    backslash (read as ``/``), a scheme or a host."""
    if not target or len(target) > 2048:
        return "/"
    if not all(33 <= ord(c) <= 126 for c in target) or "\\" in target:
        return "/"
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or target.startswith("//"):
        return "/"
    return target


def _secure() -> bool:
    """Secure cookies when served over TLS, or behind a TLS-terminating proxy whose
    public URL is https."""
    return request.is_secure or services().config.server["public_url"].startswith("https:")


def _form(status: int = 200, message: str = ""):
    # One token per browser, not per page load: a second tab or a prefetch of the login
    # page must not invalidate the form already shown.
    token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if len(token) != 43:
        token = secrets.token_urlsafe(32)
    response = current_app.make_response((render_template(
        "login.html", login_csrf=token, next=_safe_next(request.values.get("next")),
        message=message), status))
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, path="/login", httponly=True,
                        samesite="Strict", secure=_secure())
    return response


@login.get("/login")
def login_page():
    return _form()


@login.post("/login")
def login_submit():
    guesses = current_app.extensions["picocharge_auth"]["login_limiter"]
    wait = guesses.take(request.remote_addr or "?")
    if wait:
        response = _form(429, "Too many attempts; wait a moment.")
        response.headers["Retry-After"] = guesses.retry_after_header(wait)
        return response
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    field = request.form.get(CSRF_FIELD, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), field.encode()):
        return _form(403, "The form expired; please try again.")
    accounts = services().accounts
    user = accounts.verify_password(request.form.get("username", ""),
                                    request.form.get("password", ""))
    if user is None:
        log.warning("failed login for %r from %s", request.form.get("username", "")[:64],
                    request.remote_addr)
        return _form(401, "Wrong user name or password.")
    log.info("%s logged in from %s", user["username"], request.remote_addr)
    secret, _session = accounts.open_session(user["username"])
    response = redirect(_safe_next(request.form.get("next")), code=303)
    response.set_cookie(SESSION_COOKIE, secret, max_age=int(accounts.session_seconds), path="/",
                        httponly=True, samesite="Strict", secure=_secure())
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@login.post("/logout")
def logout():
    # reached only with a valid session and its CSRF token (server/web/auth.py)
    if g.principal["kind"] == "session":
        services().accounts.close_session(request.cookies.get(SESSION_COOKIE, ""))
    response = redirect("/login", code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict",
                           secure=_secure())
    return response
