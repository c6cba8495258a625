"""Operators prove who they are: anonymous and under-privileged callers are refused, tokens
are revocable at once, the dashboard session cookie is locked down, cross-site and
foreign-Host requests are refused, pages carry a CSP and no inline script, the first start
prints an admin password once, the CLI manages accounts and tokens, HTTPS works."""

from __future__ import annotations

import json
import re
import sqlite3
import ssl
import subprocess
import sys
import urllib.parse
from html.parser import HTMLParser
from http.client import HTTPConnection, HTTPSConnection
from pathlib import Path

import pytest

from server.config import load_config
from server.web.auth import ROUTE_ROLES
from tests.server.conftest import ADMIN_TOKEN, ANONYMOUS, http, make_config
from tools.selfsigned import write_self_signed

ROOT = Path(__file__).resolve().parents[2]


class Browser:
    """Raw HTTP exchanges with a cookie jar and no redirect following."""

    def __init__(self, app, tls_context: ssl.SSLContext | None = None) -> None:
        self.port = app.ports["http"]
        self.tls = tls_context
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict | None = None):
        if self.tls:
            conn = HTTPSConnection("127.0.0.1", self.port, context=self.tls,
                                               timeout=30)
        else:
            conn = HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = dict(headers or {})
        if self.cookies:
            headers.setdefault("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        conn.request(method, path, body=body.encode() if isinstance(body, str) else body,
                     headers=headers)
        response = conn.getresponse()
        content = response.read().decode()
        for header in response.headers.get_all("Set-Cookie") or []:
            self.set_cookie_headers.append(header)
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value and "Max-Age=0" not in header and "1970" not in header:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)
        conn.close()
        return response.status, response.headers, content

    def login(self, username: str, password: str, next_page: str = "/"):
        status, _, page = self.request("GET", "/login")
        assert status == 200
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode({"username": username, "password": password,
                                       "csrf_token": csrf, "next": next_page})
        return self.request("POST", "/login", form,
                            {"Content-Type": "application/x-www-form-urlencoded",
                             "Origin": f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"})

    def csrf(self) -> str:
        status, _, page = self.request("GET", "/")
        assert status == 200, page
        return re.search(r'<meta name="csrf-token" content="([^"]+)">', page).group(1)


def make_user(app, username: str, role: str, password: str = "correct horse battery") -> str:
    status, data = http(app, "POST", "/api/v1/users",
                        {"username": username, "role": role, "password": password})
    assert status == 201, data
    return password


def make_token(app, role: str, name: str = "t") -> dict:
    status, data = http(app, "POST", "/api/v1/tokens", {"name": name, "role": role})
    assert status == 201, data
    return data


# Anonymous and wrong role ---------------------------------------------------------
def test_anonymous_operation_read_and_registration_are_refused_with_401(server):
    assert http(server, "GET", "/api/v1/health", token=ANONYMOUS)[0] == 200
    for method, path, body in [
        ("POST", "/api/v1/chargepoints/CP1/Reset", {"type": "Soft"}),
        ("POST", "/api/v1/chargepoints/CP1/UpdateFirmware",
         {"location": "http://x/", "retrieveDate": "2030-01-01T00:00:00Z"}),
        ("GET", "/api/v1/chargepoints", None),
        ("GET", "/api/v1/thingspeak/channels", None),
        ("POST", "/api/v1/chargepoints", {"id": "EVIL"}),
        ("POST", "/api/v1/idtags", {"id_tag": "EVIL"}),
        ("GET", "/api/v1/users", None),
    ]:
        status, data = http(server, method, path, body, token=ANONYMOUS)
        assert status == 401, (method, path, data)
    assert http(server, "GET", "/api/v1/chargepoints/EVIL")[0] == 404  # nothing registered
    assert http(server, "GET", "/api/v1/idtags/EVIL")[0] == 404


def test_each_role_reaches_what_it_needs_and_is_refused_the_rest_with_403(server):
    viewer = make_token(server, "viewer")["token"]
    operator = make_token(server, "operator")["token"]
    assert http(server, "GET", "/api/v1/chargepoints", token=viewer)[0] == 200
    assert http(server, "POST", "/api/v1/idtags", {"id_tag": "V"}, token=viewer)[0] == 403
    assert http(server, "POST", "/api/v1/chargepoints/CP1/Reset", {"type": "Soft"},
                token=viewer)[0] == 403
    assert http(server, "POST", "/api/v1/idtags", {"id_tag": "OP"}, token=operator)[0] == 201
    # operator may run operations (404: the station is not connected, but it got through)
    assert http(server, "POST", "/api/v1/chargepoints/CP1/Reset", {"type": "Soft"},
                token=operator)[0] not in (401, 403)
    # ... but not the ones that rewrite a station's keys or code
    for operation in ("UpdateFirmware", "ChangeConfiguration", "GetDiagnostics"):
        assert http(server, "POST", f"/api/v1/chargepoints/CP1/{operation}", {},
                    token=operator)[0] == 403
    assert http(server, "POST", "/api/v1/chargepoints", {"id": "CP9"}, token=operator)[0] == 403
    assert http(server, "GET", "/api/v1/thingspeak/channels", token=operator)[0] == 403
    assert http(server, "POST", "/api/v1/tokens", {"name": "x", "role": "admin"},
                token=operator)[0] == 403
    assert http(server, "POST", "/api/v1/chargepoints", {"id": "CP9"})[0] == 201  # admin


def test_every_route_of_the_app_has_an_explicit_role(server):
    from server.web import create_app

    endpoints = {rule.endpoint for rule in create_app(server).url_map.iter_rules()}
    assert endpoints - set(ROUTE_ROLES) == set()


# Tokens ---------------------------------------------------------------------------
def test_revoked_token_is_refused_on_the_very_next_request(server):
    created = make_token(server, "operator", "ci")
    token = created["token"]
    assert http(server, "GET", "/api/v1/me", token=token) == (
        200, {"name": "token:" + created["id"], "role": "operator", "kind": "token"})
    assert http(server, "DELETE", f"/api/v1/tokens/{created['id']}")[0] == 204
    assert http(server, "GET", "/api/v1/me", token=token)[0] == 401
    listed = {t["id"]: t for t in http(server, "GET", "/api/v1/tokens")[1]}
    assert listed[created["id"]]["active"] is False


def test_a_token_never_has_more_rights_than_its_creator_has_now(server):
    """A token made by a logged-in admin follows that account: demoted, the token is
    demoted with it; deleted, the token is dead. A token made by a token dies with it."""
    make_user(server, "erin", "admin")  # the last admin could not be demoted
    make_user(server, "dana", "admin", "dana's long password")
    browser = Browser(server)
    assert browser.login("dana", "dana's long password")[0] == 303
    status, _, body = browser.request(
        "POST", "/api/v1/tokens", json.dumps({"name": "dana-ci", "role": "admin"}),
        {"Content-Type": "application/json", "X-CSRF-Token": browser.csrf()})
    assert status == 201, body
    token = json.loads(body)["token"]
    assert http(server, "GET", "/api/v1/users", token=token)[0] == 200
    assert http(server, "PATCH", "/api/v1/users/dana", {"role": "viewer"})[0] == 200
    assert http(server, "GET", "/api/v1/me", token=token)[1]["role"] == "viewer"
    assert http(server, "GET", "/api/v1/users", token=token)[0] == 403
    assert http(server, "POST", "/api/v1/chargepoints/CP1/Reset", {"type": "Soft"},
                token=token)[0] == 403
    assert http(server, "DELETE", "/api/v1/users/dana")[0] == 204
    assert http(server, "GET", "/api/v1/me", token=token)[0] == 401

    parent = make_token(server, "admin", "parent")
    status, child = http(server, "POST", "/api/v1/tokens", {"name": "child", "role": "admin"},
                         token=parent["token"])
    assert status == 201 and http(server, "GET", "/api/v1/users", token=child["token"])[0] == 200
    assert http(server, "DELETE", f"/api/v1/tokens/{parent['id']}")[0] == 204
    assert http(server, "GET", "/api/v1/me", token=child["token"])[0] == 401


def test_the_admin_token_of_the_environment_ends_when_the_variable_is_gone(start_server):
    app = start_server()
    assert http(app, "GET", "/api/v1/users")[0] == 200
    app.stop()
    again = start_server({"auth.admin_token": ""})
    assert http(again, "GET", "/api/v1/me")[0] == 401  # ADMIN_TOKEN, seeded at the first start


def test_tokens_are_shown_once_and_stored_only_as_their_hash(server):
    created = make_token(server, "viewer")
    token = created["token"]
    status, listed = http(server, "GET", "/api/v1/tokens")
    assert status == 200 and token not in str(listed)
    server.store.sync()
    dump = "\n".join(sqlite3.connect(server.store.path).iterdump())
    assert token not in dump and ADMIN_TOKEN not in dump
    make_user(server, "alice", "viewer", "a fine long password")
    dump = "\n".join(sqlite3.connect(server.store.path).iterdump())
    assert "a fine long password" not in dump and "$argon2id$" in dump


def test_password_change_ends_the_users_sessions(server):
    make_user(server, "bob", "operator")
    browser = Browser(server)
    assert browser.login("bob", "correct horse battery")[0] == 303
    assert browser.request("GET", "/api/v1/me")[0] == 200
    assert http(server, "PATCH", "/api/v1/users/bob", {"password": "another long one"})[0] == 200
    assert browser.request("GET", "/api/v1/me")[0] == 401


def test_demoting_or_deleting_an_account_applies_to_its_open_session_at_once(server):
    make_user(server, "lee", "operator")
    browser = Browser(server)
    browser.login("lee", "correct horse battery")
    csrf = browser.csrf()
    post = {"Content-Type": "application/json", "X-CSRF-Token": csrf}
    assert browser.request("POST", "/api/v1/idtags", '{"id_tag": "L1"}', post)[0] == 201
    assert http(server, "PATCH", "/api/v1/users/lee", {"role": "viewer"})[0] == 200
    assert browser.request("POST", "/api/v1/idtags", '{"id_tag": "L2"}', post)[0] == 403
    assert http(server, "DELETE", "/api/v1/users/lee")[0] == 204
    assert browser.request("GET", "/api/v1/me")[0] == 401


def test_the_last_admin_account_cannot_be_deleted_or_demoted(server):
    make_user(server, "root", "admin")
    assert http(server, "DELETE", "/api/v1/users/root")[0] == 409
    assert http(server, "PATCH", "/api/v1/users/root", {"role": "viewer"})[0] == 409
    make_user(server, "root2", "admin")
    assert http(server, "DELETE", "/api/v1/users/root")[0] == 204


# Dashboard login, cookie, CSRF --------------------------------------------------------
def test_login_sets_a_locked_down_session_cookie_and_logout_ends_it(server):
    make_user(server, "carol", "viewer")
    browser = Browser(server)
    status, headers, _ = browser.request("GET", "/")
    assert status == 302 and headers["Location"].startswith("/login")
    status, _, page = browser.login("carol", "wrong password!")
    assert status == 401 and "Wrong user name or password" in page
    status, headers, _ = browser.login("carol", "correct horse battery")
    assert status == 303 and headers["Location"] == "/"
    cookie = next(h for h in browser.set_cookie_headers if h.startswith("picocharge_session="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; test_https_* checks Secure
    assert browser.request("GET", "/api/v1/me")[2].count('"carol"') == 1
    csrf = browser.csrf()
    status, headers, _ = browser.request(
        "POST", "/logout", urllib.parse.urlencode({"csrf_token": csrf}),
        {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and "picocharge_session" not in browser.cookies
    stolen = re.search(r"picocharge_session=([^;]+)", cookie).group(1)
    browser.cookies["picocharge_session"] = stolen  # the old cookie is dead server-side too
    assert browser.request("GET", "/api/v1/me")[0] == 401


def test_session_state_change_needs_the_csrf_token(server):
    make_user(server, "dave", "operator")
    http(server, "POST", "/api/v1/idtags", {"id_tag": "TAG1"})
    browser = Browser(server)
    browser.login("dave", "correct horse battery")
    json_headers = {"Content-Type": "application/json"}
    assert browser.request("POST", "/api/v1/idtags/TAG1/block", "{}", json_headers)[0] == 403
    assert browser.request("POST", "/api/v1/idtags/TAG1/block", "{}",
                           dict(json_headers, **{"X-CSRF-Token": "guess"}))[0] == 403
    assert http(server, "GET", "/api/v1/idtags/TAG1")[1]["status"] == "Accepted"
    status, _, body = browser.request("POST", "/api/v1/idtags/TAG1/block", "{}",
                                      dict(json_headers, **{"X-CSRF-Token": browser.csrf()}))
    assert status == 200 and '"Blocked"' in body


def test_cross_site_form_post_and_foreign_host_are_refused_with_403(server):
    make_user(server, "erin", "operator")
    http(server, "POST", "/api/v1/idtags", {"id_tag": "TAG2"})
    browser = Browser(server)
    browser.login("erin", "correct horse battery")
    csrf = browser.csrf()  # even with the token, a foreign origin is refused
    for extra in ({"Origin": "http://attacker.example"}, {"Origin": "null"},
                  {"Sec-Fetch-Site": "cross-site"}):
        status, _, _ = browser.request("POST", "/api/v1/idtags/TAG2/block", "x=1",
                                       dict({"Content-Type": "text/plain", "X-CSRF-Token": csrf},
                                            **extra))
        assert status == 403, extra
    # a bearer token does not help a request with a foreign Origin either
    assert http(server, "POST", "/api/v1/idtags/TAG2/block", raw=b"x=1",
                headers={"Content-Type": "text/plain",
                         "Origin": "http://attacker.example"})[0] == 403
    assert http(server, "GET", "/api/v1/idtags/TAG2")[1]["status"] == "Accepted"
    # DNS rebinding: the browser sends the attacker's name as Host
    for path in ("/api/v1/chargepoints", "/", "/login", "/api/v1/health"):
        assert http(server, "GET", path, headers={"Host": "attacker.example"})[0] == 403, path
    assert http(server, "GET", "/api/v1/chargepoints",
                headers={"Host": f"localhost:{server.ports['http']}"})[0] == 200


def test_login_redirects_only_to_a_path_of_this_site(server):
    """`next` after a correct password: a path here is kept; anything a browser would turn
    into another site (tab, newline, backslash, //host, a scheme) becomes "/", never a 500."""
    make_user(server, "nina", "viewer")
    # nine logins: the login limiter lets ten through from one address
    for wanted, landed in [("/transactions?cp=CP1", "/transactions?cp=CP1"),
                           ("/\\t/evil.example", "/"), ("/\\n/evil.example", "/"),
                           ("\\t//evil.example", "/"), ("//evil.example", "/"),
                           ("/\\\\evil.example", "/"), ("https://evil.example/", "/"),
                           ("javascript:alert(1)", "/"), ("/caf\\u00e9", "/")]:
        wanted = wanted.encode().decode("unicode_escape")
        status, headers, _ = Browser(server).login("nina", "correct horse battery", wanted)
        assert status == 303 and headers["Location"] == landed, (wanted, status, headers)


def test_login_form_without_its_csrf_token_or_from_another_site_is_refused(server):
    make_user(server, "fay", "viewer")
    browser = Browser(server)
    form = urllib.parse.urlencode({"username": "fay", "password": "correct horse battery"})
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    assert browser.request("POST", "/login", form, form_type)[0] == 403
    assert browser.request("POST", "/login", form,
                           dict(form_type, Origin="http://attacker.example"))[0] == 403
    assert "picocharge_session" not in browser.cookies


def test_allowed_hosts_come_from_config_or_public_url(tmp_path):
    from server.web.hosts import allowed_hosts, cross_site, host_allowed, public_origin

    config = load_config(None, environ={}, overrides={"server.public_url":
                                                      "https://charge.example.org:8443"})
    hosts = allowed_hosts(config)
    assert {"charge.example.org", "localhost", "127.0.0.1", "::1"} <= hosts
    assert "attacker.example" not in hosts
    assert host_allowed("[::1]:8080", hosts) and host_allowed("Charge.Example.org:8443", hosts)
    assert not host_allowed("charge.example.org.attacker.example", hosts)
    # behind a reverse proxy the browser's Origin is the public URL's, the Host may differ
    trusted = public_origin(config)
    assert cross_site("POST", {"Origin": "https://charge.example.org:8443"}, "127.0.0.1:8080",
                      trusted) is None
    assert cross_site("POST", {"Origin": "https://charge.example.org:9999"}, "127.0.0.1:8080",
                      trusted) is not None
    # another port of the same host is another origin (same-site is not enough)
    assert cross_site("POST", {"Origin": "http://127.0.0.1:3000"}, "127.0.0.1:8080") is not None
    config.set("http.allowed_hosts", "dash.example.org")
    assert allowed_hosts(config) == {"dash.example.org"}


# Headers and pages ---------------------------------------------------------------------
class _ScriptFinder(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self._in_inline = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.inline.extend(f"{tag} {name}" for name in attrs if name.startswith("on"))
        if "style" in attrs:
            self.inline.append(f"{tag} style")
        self._in_inline = tag in ("script", "style") and "src" not in attrs

    def handle_data(self, data):
        if self._in_inline and data.strip():
            self.inline.append(data.strip()[:40])

    def handle_endtag(self, tag):
        self._in_inline = False


def test_pages_carry_a_strict_csp_and_no_inline_script(server):
    make_user(server, "gus", "viewer")
    browser = Browser(server)
    browser.login("gus", "correct horse battery")
    for path in ("/login", "/", "/stations/CP1", "/api/v1/health"):
        status, headers, page = browser.request("GET", path)
        assert status == 200, path
        csp = headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
        finder = _ScriptFinder()
        finder.feed(page)
        assert finder.inline == [], (path, finder.inline)
    for template in (ROOT / "server/web/templates").glob("*.html"):
        finder = _ScriptFinder()
        finder.feed(template.read_text())
        assert finder.inline == [], (template.name, finder.inline)


# Rate limit ----------------------------------------------------------------------------------
def test_requests_beyond_the_tokens_rate_get_429_with_retry_after(start_server):
    app = start_server({"auth.rate_limit_per_second": 0.5, "auth.rate_limit_burst": 3})
    other = make_token(app, "viewer")["token"]
    statuses = [http(app, "GET", "/api/v1/me", token=other)[0] for _ in range(3)]
    browser = Browser(app)
    status, headers, _ = browser.request("GET", "/api/v1/me",
                                         headers={"Authorization": f"Bearer {other}"})
    assert statuses == [200, 200, 200] and status == 429
    assert int(headers["Retry-After"]) >= 1
    assert http(app, "GET", "/api/v1/health", token=ANONYMOUS)[0] == 200  # not rate limited
    status, data = http(app, "GET", "/api/v1/me")  # the admin token has its own bucket
    assert status == 200, data


def test_rate_limiter_refills_at_its_rate_and_forgets_the_least_recent_key():
    from server.web.ratelimit import RateLimiter

    now = [0.0]
    limiter = RateLimiter(2.0, 3, max_keys=2, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)  # empty: one token in 1/2 s
    now[0] += 0.5
    assert limiter.take("a") == 0.0
    limiter.take("b")
    limiter.take("c")  # a third key: "a", the least recently used, is forgotten
    assert "a" not in limiter._buckets and len(limiter._buckets) == 2


def test_password_guessing_from_one_address_is_slowed_down_with_429(server):
    make_user(server, "kim", "viewer")
    browser = Browser(server)
    statuses = []
    while 429 not in statuses and len(statuses) < 40:  # a guess takes ~0.1 s, refill 0.5/s
        statuses.append(browser.login("kim", f"wrong guess {len(statuses):02d}")[0])
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401} and len(statuses) > 10


# First start, CLI, binding, HTTPS --------------------------------------------------------
def test_first_start_prints_a_random_admin_password_once_and_never_logs_it(
        tmp_path, capsys, caplog):
    from server.app import Application

    config = make_config(tmp_path, {"auth.admin_token": ""})
    app = Application(config).start()
    try:
        printed = capsys.readouterr().out
        password = re.search(r"password\n\*\*\*\s+(\S+)", printed).group(1)
        assert len(password) >= 16 and password not in caplog.text
        assert Browser(app).login("admin", password)[0] == 303
        assert http(app, "GET", "/api/v1/chargepoints", token=ANONYMOUS)[0] == 401
    finally:
        app.stop()
    app = Application(make_config(tmp_path, {"auth.admin_token": ""})).start()
    try:
        assert "password" not in capsys.readouterr().out  # not a second time
        assert Browser(app).login("admin", password)[0] == 303  # and still the same account
    finally:
        app.stop()


def test_short_admin_token_is_refused_at_start(tmp_path):
    from server.app import Application

    app = Application(make_config(tmp_path, {"auth.admin_token": "short"}))
    with pytest.raises(ValueError, match="at least 32"):
        app.start()
    app.stop()
    app.store.close()


def _cli(tmp_path, *args, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", "users", "--data-dir",
                           str(tmp_path / "var"), *args], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={"PATH": "/usr/bin:/bin"})


def test_cli_adds_lists_and_deletes_users_and_creates_and_revokes_tokens(server, tmp_path):
    added = _cli(tmp_path, "add", "hank", "--role", "operator", "--password-stdin",
                 stdin="a password for hank\n")
    assert added.returncode == 0, added.stderr
    assert "hank\toperator" in _cli(tmp_path, "list").stdout
    assert Browser(server).login("hank", "a password for hank")[0] == 303  # server sees it
    short = _cli(tmp_path, "add", "ivy", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "password must be" in short.stderr
    created = _cli(tmp_path, "token", "create", "robot", "--role", "viewer")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    token_id = re.search(r"token (\w+)", created.stdout).group(1)
    assert http(server, "GET", "/api/v1/chargepoints", token=token)[0] == 200
    assert f"{token_id}\tviewer\tactive\trobot" in _cli(tmp_path, "token", "list").stdout
    assert token not in _cli(tmp_path, "token", "list").stdout
    assert _cli(tmp_path, "token", "revoke", token_id).returncode == 0
    assert http(server, "GET", "/api/v1/chargepoints", token=token)[0] == 401  # at once
    assert _cli(tmp_path, "passwd", "hank", "--password-stdin",
                stdin="hank's new password\n").returncode == 0
    assert Browser(server).login("hank", "a password for hank")[0] == 401
    assert _cli(tmp_path, "delete", "hank").returncode == 0
    assert Browser(server).login("hank", "hank's new password")[0] == 401


def test_http_side_binds_localhost_unless_configured():
    assert load_config(None, environ={}).http["host"] == "127.0.0.1"


def _self_signed(tmp_path) -> tuple[Path, Path]:
    return write_self_signed(tmp_path)


def test_https_from_the_configured_certificate_with_secure_session_cookie(start_server,
                                                                           tmp_path):
    cert, key = _self_signed(tmp_path)
    app = start_server({"http.tls_cert": str(cert), "http.tls_key": str(key)})
    assert app.dashboard_url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    browser = Browser(app, context)
    status, headers, _ = browser.request("GET", "/api/v1/health")
    assert status == 200 and "max-age" in headers["Strict-Transport-Security"]
    password = make_user_over_tls(browser)
    assert browser.login("jo", password)[0] == 303
    cookie = next(h for h in browser.set_cookie_headers if h.startswith("picocharge_session="))
    assert "Secure" in cookie and "HttpOnly" in cookie
    with pytest.raises(ssl.SSLError):  # it is the configured certificate that is served
        Browser(app, ssl.create_default_context()).request("GET", "/api/v1/health")


def make_user_over_tls(browser: Browser) -> str:
    status, _, body = browser.request(
        "POST", "/api/v1/users",
        b'{"username": "jo", "role": "viewer", "password": "a long tls password"}',
        {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert status == 201, body
    return "a long tls password"
