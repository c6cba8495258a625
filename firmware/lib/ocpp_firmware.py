"""OCPP 1.6 Firmware Management: UpdateFirmware (a bundle over HTTP(S), staged, installed
across a reboot, rolled back automatically) and GetDiagnostics (the log uploaded over
HTTP).

A bundle is `manifest.json` = {"version": "...", "files": {"lib/x.py": {"sha256": hex,
"size": n}, ...}}; the files are fetched relative to the manifest URL (`location` may name
the manifest or the directory that holds it) into `fw/stage/`, streamed to flash with
their SHA-256 checked. Allowed paths: `lib/<name>.py|.mpy` and `main.py`, `boot.py`.

Installation (after the transaction, if one runs): `fw/install.json` records the plan
("copying"), every target is backed up into `fw/backup/` and replaced by an atomic
rename, then the plan becomes "trial" and the board reboots. A power cut while copying is
rolled back on the next boot. On trial the new firmware must reach BootNotification
Accepted within FirmwareTrialTimeout seconds and within 3 boots; then the update is
committed (Installed). Otherwise the backups are restored, the board reboots into the
old firmware and reports InstallationFailed. Every FirmwareStatusNotification state is
sent: Downloading, Downloaded, DownloadFailed, Installing, Installed, InstallationFailed
(Idle when asked with nothing going on).
"""

import asyncio
import binascii
import hashlib
import json

import clock as clock_mod
import httpc

BASE_VERSION = "1.0.0"
MAX_TRIAL_BOOTS = 3
LOG_FILES = ("log.txt", "log.1.txt", "log.old")


def path_allowed(path):
    if not isinstance(path, str) or ".." in path or path.startswith("/") or "\\" in path:
        return False
    if path in ("main.py", "boot.py"):
        return True
    if not path.startswith("lib/") or "/" in path[4:]:
        return False
    name = path[4:]
    if not (name.endswith(".py") or name.endswith(".mpy")) or len(name) > 40:
        return False
    for ch in name:
        if not (ch.isalpha() or ch.isdigit() or ch in "_.-"):
            return False
    return True


class HashSink:
    def __init__(self, fh):
        self.fh = fh
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, data):
        self.h.update(data)
        self.n += len(data)
        self.fh.write(data)


class Firmware:
    HANDLERS = {
        "UpdateFirmware": ("update", {"location": "!s", "retries": "i", "retrieveDate": "!t",
                                      "retryInterval": "i"}),
        "GetDiagnostics": ("diagnostics", {"location": "!s", "retries": "i", "retryInterval": "i",
                                           "startTime": "t", "stopTime": "t"}),
    }

    def __init__(self, cp):
        self.cp = cp
        self.flash = cp.flash
        self.status = "Idle"
        self.diag_status = "Idle"
        self.busy = False
        self.diag_busy = False
        self.version = BASE_VERSION
        self.trial = None
        self.announce = None  # a status to report once registered
        flash = self.flash
        flash.makedirs("fw")
        try:
            self.version = flash.read_json("fw/version.json")["version"]
        except (OSError, ValueError, KeyError):
            pass
        try:
            plan = flash.read_json("fw/install.json")
        except (OSError, ValueError):
            plan = None
        self.needs_reboot = False
        if plan is not None:
            if plan.get("state") == "copying":
                cp.log("firmware: install of %s was cut short, rolling back" % plan.get("version"))
                self.rollback(plan)
                self.needs_reboot = True
            elif plan.get("state") == "trial":
                plan["boots"] = plan.get("boots", 0) + 1
                if plan["boots"] > MAX_TRIAL_BOOTS:
                    cp.log("firmware: %s did not come up in %d boots, rolling back" % (
                        plan["version"], MAX_TRIAL_BOOTS))
                    self.rollback(plan)
                    self.needs_reboot = True
                else:
                    flash.write_json("fw/install.json", plan)
                    self.trial = plan
                    self.version = plan["version"]
            elif plan.get("state") == "failed":
                self.announce = "InstallationFailed"
                flash.remove("fw/install.json")
        cp.fw_version = self.version

    # -- install / commit / rollback ------------------------------------------------------

    def release(self):
        """Unload the firmware-management code once nothing is going on."""
        if not self.busy and not self.diag_busy and self.trial is None and not self.announce:
            self.cp.unload("fw")

    def _copy(self, src, dst):
        flash = self.flash
        tmp = flash.path(dst) + ".tmp"
        with open(flash.path(src), "rb") as fi:
            with open(tmp, "wb") as fo:
                while True:
                    chunk = fi.read(512)
                    if not chunk:
                        break
                    fo.write(chunk)
        import os
        os.rename(tmp, flash.path(dst))

    def rollback(self, plan):
        flash = self.flash
        for path in plan.get("files", ()):
            backup = "fw/backup/" + path
            if flash.exists(backup):
                self._copy(backup, path)
            elif path in plan.get("new", ()):
                flash.remove(path)
        flash.write_json("fw/install.json", {"state": "failed", "version": plan.get("version")})
        self.version = plan.get("prev", self.version)
        self.cp.fw_version = self.version
        self.trial = None

    def install(self, version, files):
        """Swap the staged files in; the caller reboots."""
        flash = self.flash
        new = [p for p in files if not flash.exists(p)]
        plan = {"state": "copying", "version": version, "prev": self.version, "files": files,
                "new": new}
        flash.write_json("fw/install.json", plan)
        for path in files:
            flash.makedirs("fw/backup/" + path.rsplit("/", 1)[0] if "/" in path else "fw/backup")
            if flash.exists(path):
                self._copy(path, "fw/backup/" + path)
            if "/" in path:
                flash.makedirs(path.rsplit("/", 1)[0])
            flash.rename("fw/stage/" + path, path)
        plan["state"] = "trial"
        plan["boots"] = 0
        flash.write_json("fw/install.json", plan)

    def on_accepted(self):
        """BootNotification Accepted: commit a trial, report what happened."""
        if self.trial is not None:
            self.flash.write_json("fw/version.json", {"version": self.trial["version"]})
            self.flash.remove("fw/install.json")
            self.cp.log("firmware: %s committed" % self.trial["version"])
            self.trial = None
            self.announce = "Installed"
        if self.announce:
            self.notify(self.announce)
            self.announce = None
            self.release()

    async def trial_watch(self):
        """Roll back a trial that does not reach Accepted in time."""
        if self.trial is None:
            return
        await asyncio.sleep(self.cp.cfg.get("FirmwareTrialTimeout"))
        if self.trial is not None:
            self.cp.log("firmware: %s not accepted within %ds, rolling back" % (
                self.trial["version"], self.cp.cfg.get("FirmwareTrialTimeout")))
            self.rollback(self.trial)
            self.cp.reboot("Hard")

    def notify(self, status):
        self.status = status
        self.cp.queue("FirmwareStatusNotification", {"status": status})

    # -- UpdateFirmware -------------------------------------------------------------------
    def update(self, p):
        if not self.busy:
            self.busy = True
            asyncio.create_task(self._update(p["location"], p["retrieveDate"],
                                             p.get("retries", 1), p.get("retryInterval", 30)))
        return {}

    async def _download(self, location):
        base = location if location.endswith("/") else location.rsplit("/", 1)[0] + "/"
        murl = location if location.endswith(".json") else base + "manifest.json"
        if location.endswith(".json"):
            base = location.rsplit("/", 1)[0] + "/"
        resp = await httpc.get(murl, timeout=30, max_body=4096)
        if resp.status != 200:
            raise OSError("manifest: HTTP %d" % resp.status)
        manifest = json.loads(resp.body)
        version = manifest["version"]
        files = manifest["files"]
        if not isinstance(version, str) or not isinstance(files, dict) or not files:
            raise ValueError("bad manifest")
        names = sorted(files)
        for path in names:
            if not path_allowed(path):
                raise ValueError("path not allowed: %s" % path)
        self.flash.makedirs("fw/stage/lib")
        for path in names:
            meta = files[path]
            with open(self.flash.path("fw/stage/" + path), "wb") as fh:
                sink = HashSink(fh)
                resp = await httpc.get(base + path, sink=sink, timeout=60)
            if resp.status != 200:
                raise OSError("%s: HTTP %d" % (path, resp.status))
            digest = binascii.hexlify(sink.h.digest()).decode()
            if sink.n != meta["size"] or digest != meta["sha256"].lower():
                raise ValueError("%s: size or sha256 mismatch" % path)
        return version, names

    async def _update(self, location, retrieve, retries, interval):
        cp = self.cp
        try:
            wait = clock_mod.parse_iso(retrieve) - cp.clock.now()
            if wait > 0:
                await asyncio.sleep(wait)
            result = None
            for attempt in range(max(1, retries + 1)):
                self.notify("Downloading")
                try:
                    result = await self._download(location)
                    break
                except Exception as exc:
                    cp.log("firmware: download failed: %r" % (exc,))
                    if attempt < retries:
                        await asyncio.sleep(interval)
            if result is None:
                self.notify("DownloadFailed")
                self.release()
                return
            self.notify("Downloaded")
            while cp.tx is not None:
                await asyncio.sleep(1)
            self.notify("Installing")
            for _ in range(50):  # let the notification out before the reboot
                if not cp.has_queued("FirmwareStatusNotification"):
                    break
                await asyncio.sleep_ms(100)
            try:
                self.install(result[0], result[1])
            except Exception as exc:
                cp.log("firmware: install failed: %r" % (exc,))
                plan = self.flash.read_json("fw/install.json")
                self.rollback(plan)
                self.flash.remove("fw/install.json")
                self.notify("InstallationFailed")
                self.release()
                return
            cp.log("firmware: %s installed, rebooting on trial" % result[0])
            cp.reboot("Hard")
        finally:
            self.busy = False

    # -- GetDiagnostics -------------------------------------------------------------------
    def diagnostics(self, p):
        cp = self.cp
        name = "diag-%s-%d.txt" % (cp.cp_id, int(cp.clock.now()))
        if not self.diag_busy:
            self.diag_busy = True
            asyncio.create_task(self._diagnostics(p["location"], name, p.get("retries", 1),
                                                  p.get("retryInterval", 30)))
        return {"fileName": name}

    def _build_diag(self):
        """Write the diagnostics file to flash (summary, recent OCPP events, log files)."""
        flash = self.flash
        path = flash.path("fw/diag.txt")
        with open(path, "w") as fh:
            fh.write("PicoCharge diagnostics %s %s firmware %s\n" % (
                self.cp.cp_id, self.cp.clock.iso(), self.version))
            fh.write("summary " + json.dumps(self.cp.summary()) + "\n")
            for line in self.cp.events:
                fh.write(line + "\n")
            for name in LOG_FILES:
                if flash.exists(name):
                    fh.write("--- %s\n" % name)
                    with open(flash.path(name)) as fi:
                        while True:
                            chunk = fi.read(512)
                            if not chunk:
                                break
                            fh.write(chunk)
        return flash.size("fw/diag.txt")

    async def _diagnostics(self, location, name, retries, interval):
        cp = self.cp
        try:
            size = self._build_diag()
            url = location.rstrip("/") + "/" + name
            ok = False
            for attempt in range(max(1, retries + 1)):
                self.diag_status = "Uploading"
                cp.queue("DiagnosticsStatusNotification", {"status": "Uploading"})
                try:
                    with open(self.flash.path("fw/diag.txt"), "rb") as fh:
                        resp = await httpc.put(url, source=fh, source_len=size, timeout=60,
                                               headers={"Content-Type": "text/plain"})
                    ok = 200 <= resp.status < 300
                    if not ok:
                        cp.log("diagnostics: upload answered HTTP %d" % resp.status)
                except Exception as exc:
                    cp.log("diagnostics: upload failed: %r" % (exc,))
                if ok:
                    break
                if attempt < retries:
                    await asyncio.sleep(interval)
            self.diag_status = "Uploaded" if ok else "UploadFailed"
            cp.queue("DiagnosticsStatusNotification", {"status": self.diag_status})
            self.flash.remove("fw/diag.txt")
        finally:
            self.diag_busy = False
            self.release()


Feature = Firmware  # what chargepoint.ChargePoint.feature() builds
