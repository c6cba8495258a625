r"""The security audit (`make audit`): a static scan of our code, the pinned dependencies
against known vulnerabilities, and an active web scan of a running server with a
logged-in operator session.

    python -m tools.audit [--out var/audit] [--scan-seconds 300] [--skip-web]

1. bandit over server/ and tools/: every finding of medium or high severity must be
   explained in EXPLAINED below (why it is not a vulnerability here), else it fails.
2. pip-audit over the installed environment (the versions pyproject.toml pins): any known
   vulnerability fails.
3. wapiti (Debian's package) against a server this script starts on 127.0.0.1 over
   HTTPS, as in production (a certificate made for the run), with a fresh data directory,
   logged in as an admin through the login form: the session cookie goes with every
   request and /logout is left out, so the whole scan runs logged in (the summary says
   whether the session was still valid at the end). wapiti 3.0.4's exclusion patterns do
   not compile on Python 3.11 (`\Z(?ms)`: global flags at the end); the script runs it
   with that one function replaced. Modules
   that need an endpoint on the internet (ssrf) or an update download (wapp, nikto) are
   not run: the scan sends traffic to 127.0.0.1 only. Any vulnerability it reports fails.

Reports go to OUT (bandit.json, pip-audit.json, wapiti.json) and a summary to stdout.
Exit status 0 when nothing unexplained was found.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tools.loadgen import free_port
from tools.selfsigned import write_self_signed

ROOT = Path(__file__).resolve().parents[1]

# (bandit test id, file) → why the finding is not a vulnerability here
EXPLAINED = {
    ("B608", "server/store/sqlite.py"): "SQL text built only from constant table and column "
        "names of this module; every value is a bound parameter",
    ("B104", "server/config.py"): "the OCPP endpoint listens on all interfaces by default: "
        "stations are on the LAN (the HTTP side stays on 127.0.0.1 unless configured)",
    ("B104", "server/app.py"): "compares a configured host with the wildcard to print a "
        "usable address; binds nothing",
    ("B104", "server/mqtt/mosquitto.py"): "compares a configured host with the wildcard to "
        "choose where to connect; binds nothing",
    ("B104", "server/web/hosts.py"): "recognises a wildcard bind to list the host names the "
        "HTTP side answers to; binds nothing",
    ("B104", "tools/stubs/network.py"): "the Pico W stand-in's made-up network settings",
    ("B102", "tools/stubs/boardboot.py"): "the board stand-in runs the firmware's main.py, "
        "as a board does",
    ("B310", "tools/bench/__main__.py"): "the benchmark's requests to the server it started "
        "on 127.0.0.1",
    ("B310", "tools/bench/commit_cost.py"): "requests to the server the benchmark started on "
        "127.0.0.1",
    ("B310", "tools/sim.py"): "the simulator's requests to the central system it was given",
    ("B310", "tools/fetch.py"): "downloads from the Debian or Ubuntu archives in apt's own "
        "configuration (http or https only) or the documented mirror variable, every file "
        "checked against its pinned SHA-256",
    ("B310", "tools/demo.py"): "the demo's requests to the server it started on 127.0.0.1",
    ("B310", "tools/board_config.py"): "registers the station on the server the user names "
        "(--api, or http://<the server address they typed>:8080); their own request, no "
        "privilege crossed",
    ("B608", "tools/deploy.py"): "not SQL: a message telling the user which config key to "
        "set (bandit reads 'set ... to' in an f-string as a query)",
}
# (wapiti category, a phrase of its finding) → why it is not a vulnerability here
EXPLAINED_WEB = {
    ("HTTP Secure Headers", "X-XSS-Protection"): "sent as 0 on purpose: the browsers' old XSS "
        "filter could be abused to cut scripts out of a page and is gone from current "
        "browsers; the Content-Security-Policy is the protection (OWASP's advice); wapiti "
        "3.0.4 wants 1",
}
# web scan modules: wapiti's defaults without ssrf (it plants URLs of an endpoint on the
# internet), plus the ones that need nothing outside this machine
WAPITI_MODULES = ("blindsql,cookieflags,csp,exec,file,http_headers,permanentxss,redirect,sql,"
                  "xss,crlf,csrf,methods,htaccess,backup")


def run_bandit(out: Path) -> list[str]:
    report = out / "bandit.json"
    subprocess.run([sys.executable, "-m", "bandit", "-r", "server", "tools", "-q", "-f", "json",
                    "-o", str(report)], cwd=ROOT, check=False)
    results = json.loads(report.read_text())["results"]
    problems, explained = [], 0
    for r in results:
        if r["issue_severity"] == "LOW":
            continue
        where = Path(r["filename"]).as_posix()
        if (r["test_id"], where) in EXPLAINED:
            explained += 1
            continue
        problems.append(f"bandit {r['test_id']} {r['issue_severity']} {where}:{r['line_number']}: "
                        f"{r['issue_text']}")
    low = sum(r["issue_severity"] == "LOW" for r in results)
    print(f"bandit: {len(results)} findings ({low} low, {explained} medium/high explained in "
          f"tools/audit.py, {len(problems)} to look at)")
    return problems


def run_pip_audit(out: Path) -> list[str]:
    report = out / "pip-audit.json"
    done = subprocess.run([sys.executable, "-m", "pip_audit", "--progress-spinner", "off",
                           "-f", "json", "-o", str(report)], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    if not report.exists():
        return [f"pip-audit did not run: {done.stderr.strip()[-500:]}"]
    deps = json.loads(report.read_text())["dependencies"]
    problems = [f"pip-audit {d['name']} {d['version']}: {v['id']} (fixed in "
                f"{', '.join(v.get('fix_versions') or ['no release yet'])})"
                for d in deps for v in d.get("vulns", [])]
    skipped = [d for d in deps if d.get("skip_reason")]
    print(f"pip-audit: {len(deps)} packages, {len(deps) - len(skipped)} checked, "
          f"{len(problems)} known vulnerabilities")
    if skipped:
        # not a pass: a package that could not be looked up may be vulnerable
        problems.append(f"pip-audit could not check {len(skipped)} of {len(deps)} packages "
                        f"(e.g. {skipped[0]['skip_reason']}): the package index answering "
                        "here does not serve PyPI's per-version JSON")
    return problems



# wapiti with its wildcard_translate made valid for Python 3.11 (flags first)
WAPITI_RUNNER = """
import re, sys
import wapitiCore.net.crawler as crawler

def wildcard_translate(pattern):
    return re.compile("(?ms)" + "".join(".*" if c == "*" else re.escape(c) for c in pattern)
                      + r"\\Z")

crawler.wildcard_translate = wildcard_translate
from wapitiCore.main.wapiti import wapiti_main
sys.argv[0] = "wapiti"
sys.exit(wapiti_main())
"""


def _opener(cafile: Path, *handlers) -> urllib.request.OpenerDirector:
    import ssl
    return urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(cafile))),
        *handlers)


def _request(opener, base: str, method: str, path: str, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _log_in(cafile: Path, base: str, username: str, password: str) -> str:
    """The session cookie of a login through the form, as a browser does it."""
    opener = _opener(cafile, _NoRedirect())
    with opener.open(base + "/login", timeout=30) as page:
        html = page.read().decode()
        form_cookie = page.headers.get("Set-Cookie", "").split(";", 1)[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)
    form = urllib.parse.urlencode({"username": username, "password": password,
                                   "csrf_token": token, "next": "/"}).encode()
    request = urllib.request.Request(base + "/login", data=form, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": form_cookie,
        "Origin": base})
    try:
        opener.open(request, timeout=30)
        raise RuntimeError("the login did not redirect")
    except urllib.error.HTTPError as exc:
        if exc.code != 303:
            raise
        for header in exc.headers.get_all("Set-Cookie") or []:
            if header.startswith("picocharge_session="):
                return header.split(";", 1)[0]
    raise RuntimeError("no session cookie after the login")


def run_wapiti(out: Path, scan_seconds: int) -> list[str]:
    wapiti = shutil.which("wapiti")
    if wapiti is None:
        return ["wapiti is not installed (make audit installs Debian's package)"]
    http_port, ocpp_port = free_port(), free_port()
    base = f"https://127.0.0.1:{http_port}"
    admin = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="picocharge-audit-") as tmp:
        cert, key = write_self_signed(Path(tmp), "audit")
        opener = _opener(cert)
        env = dict(os.environ, PICOCHARGE_ADMIN_TOKEN=admin)
        log = open(out / "server.log", "w")
        server = subprocess.Popen(
            [sys.executable, "-m", "server", "--data-dir", str(Path(tmp) / "var"),
             "--ocpp-host", "127.0.0.1", "--ocpp-port", str(ocpp_port), "--http-host",
             "127.0.0.1", "--http-port", str(http_port), "--set", "mqtt.embedded_port=0",
             "--set", f"http.tls_cert={cert}", "--set", f"http.tls_key={key}",
             "--public-url", base],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if _request(opener, base, "GET", "/api/v1/health")[0] == 200:
                        break
                except OSError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    return [f"the server did not start (see {out / 'server.log'})"]
                time.sleep(0.2)
            bearer = {"Authorization": f"Bearer {admin}"}
            password = secrets.token_urlsafe(16)
            _request(opener, base, "POST", "/api/v1/users", {"username": "auditor", "role": "admin",
                                                     "password": password}, bearer)
            _request(opener, base, "POST", "/api/v1/chargepoints",
                     {"id": "CP-AUDIT", "auth_key": secrets.token_hex(16),
                      "description": "audit station"}, bearer)
            _request(opener, base, "POST", "/api/v1/idtags", {"id_tag": "AUDIT-TAG"}, bearer)
            cookie = _log_in(cert, base, "auditor", password)
            starts = ["/", "/login?next=/transactions", "/api/v1/chargepoints",
                      "/api/v1/chargepoints/CP-AUDIT", "/api/v1/transactions?cp_id=CP-AUDIT&state=active",
                      "/api/v1/chargepoints/CP-AUDIT/telemetry?limit=10", "/api/v1/idtags",
                      "/api/v1/events?cp_id=CP-AUDIT", "/channels/1/feeds.json?results=1"]
            report = out / "wapiti.json"
            command = ["/usr/bin/python3", "-c", WAPITI_RUNNER, "-u", base + "/", "--scope",
                       "folder", "-m", WAPITI_MODULES, "-H", f"Cookie: {cookie}",
                       "-x", base + "/logout", "--verify-ssl", "0", "--flush-session",
                       "--max-scan-time", str(scan_seconds), "--max-attack-time",
                       str(max(30, scan_seconds // 6)), "-t", "10", "--no-bugreport", "-v", "0",
                       "-f", "json", "-o", str(report)]
            for start in starts:
                command += ["-s", base + start]
            done = subprocess.run(command, capture_output=True, text=True, check=False,
                                  timeout=scan_seconds * 3 + 300)
            if not report.exists():
                return [f"wapiti wrote no report: {(done.stderr or done.stdout).strip()[-500:]}"]
            still_in = _request(opener, base, "GET", "/api/v1/me", headers={"Cookie": cookie})[0]
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()
    doc = json.loads(report.read_text())
    found = [(category, v) for category, items in doc.get("vulnerabilities", {}).items()
             for v in items]
    explained = [(c, v) for c, v in found
                 if any(c == cat and phrase in v.get("info", "") for cat, phrase in EXPLAINED_WEB)]
    problems = [f"wapiti {c}: {v.get('method', '')} {v.get('path', '')} {v.get('info', '')}"
                for c, v in found if (c, v) not in explained]
    anomalies = sum(len(items) for items in doc.get("anomalies", {}).values())
    print(f"wapiti: {len(WAPITI_MODULES.split(','))} modules over HTTPS, logged in as an admin "
          f"(session still valid at the end: {still_in == 200}), {len(found)} findings "
          f"({len(explained)} explained in tools/audit.py), {anomalies} anomalies (server "
          f"errors); report {report}")
    if still_in != 200:
        problems.append("the scan lost its session: part of it ran logged out")
    if anomalies:
        problems += [f"wapiti anomaly {category}: {v.get('method', '')} {v.get('path', '')} "
                     f"{v.get('info', '')}" for category, items in doc["anomalies"].items()
                     for v in items]
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.audit",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="var/audit", help="where the reports go")
    parser.add_argument("--scan-seconds", type=int, default=300,
                        help="how long the web scan may take")
    parser.add_argument("--skip-web", action="store_true", help="bandit and pip-audit only")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    problems = run_bandit(out) + run_pip_audit(out)
    if not args.skip_web:
        problems += run_wapiti(out, args.scan_seconds)
    for problem in problems:
        print("  " + problem)
    print("audit: " + ("nothing unexplained found" if not problems
                       else f"{len(problems)} finding(s) to look at"))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
