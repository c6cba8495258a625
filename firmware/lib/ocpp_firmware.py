"""OCPP 1.6 Firmware Management: UpdateFirmware (a bundle over HTTP(S), staged, installed
across a reboot, rolled back automatically) and GetDiagnostics (the log uploaded over
HTTP).

A bundle is `manifest.json` = {"version": "...", "files": {"lib/x.mpy": {"sha256": hex,
"size": n}, ...}} (server/files.py `build_bundle` writes it); `location` names the
manifest (`.../manifest.json`) or the directory that holds it, and the files are fetched
relative to it. Allowed paths: `lib/<name>.py|.mpy`, `main.py`, `boot.py`; `version` is at
most 50 characters (it becomes BootNotification's firmwareVersion). The download starts
at `retrieveDate`. `retries` is, as OCPP 1.6 words it, how many times the charge point
tries before giving up (at least once; 3 when absent), `retryInterval` s apart (30 when
absent). The manifest and every file are streamed to `fw/stage/` with their size and
SHA-256 checked; a failed download leaves nothing behind.

Signed bundles: `manifest.sig` next to the manifest (`<name>.sig` for a location
`<name>.json`) must carry an Ed25519 signature of the manifest by a key the board trusts
(`firmware_trust`, loaded with `ed25519` for the check only), checked before any file is
fetched. A bundle that fails it (no signature, an unknown key, a signature that does not
verify, a file whose SHA-256 differs from the signed manifest) is refused at once, without
retries: InstallationFailed, nothing installed, a log line `firmware: refused ...`. A key
rotation the bundle carries is written to `fw/keys.json` once all its files verified.

Installation (after the transaction, if one runs): `fw/install.json` records the plan
("copying"); every target is moved into `fw/backup/` and the staged file renamed into
its place (renames only: atomic, no second copy on flash); a `lib/x.py` that would shadow
a new `lib/x.mpy` is moved away too. Then the plan becomes "trial" and the board reboots.
A power cut while copying is rolled back on the next boot. On trial the new firmware must
reach BootNotification Accepted within FirmwareTrialTimeout seconds and within 3 boots,
and must not crash (main.py rolls back a trial whose application raises); then the update
is committed (Installed). Otherwise the backups are renamed back (`bootmode.restore`), the
board reboots into the old firmware and reports InstallationFailed once it is Accepted.
FirmwareStatusNotification: Downloading (each attempt), Downloaded or DownloadFailed,
Installing, then after the reboot Installed or InstallationFailed; Idle only when
triggered with nothing going on (ocpp_trigger).

GetDiagnostics answers the fileName `diag-<id>-<unix time>.txt`; `ocpp_diagnostics`
(loaded for the upload only) writes the file and PUTs it to `<location>/<fileName>`
(`retries` and `retryInterval` as for UpdateFirmware).
"""

import asyncio
import binascii
import gc
import hashlib
import json

import clock as clock_mod
import httpc
import paging

BASE_VERSION = "1.0.0"
MAX_TRIAL_BOOTS = 3
MAX_MANIFEST = 16384
MAX_SIG = 4096
ENOMEM_TRIES = 4  # tries of a file whose TLS handshake finds no hole in the heap


class Refused(Exception):
    """The bundle is not what a trusted key signed: no retry, InstallationFailed."""


def attempts(p):
    """How many times to try (OCPP 1.6: `retries` = tries before giving up)."""
    return max(1, p["retries"]) if "retries" in p else 3


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


def json_complete(fh):
    """True if the JSON text in the binary file `fh` closes every bracket it opens
    (MicroPython's parser accepts a document cut short); read in small chunks."""
    depth = 0
    in_str = esc = seen = False
    while True:
        chunk = fh.read(256)
        if not chunk:
            return seen and depth == 0 and not in_str
        for c in chunk:
            if in_str:
                if esc:
                    esc = False
                elif c == 92:  # backslash
                    esc = True
                elif c == 34:  # quote
                    in_str = False
            elif c == 34:
                in_str = seen = True
            elif c == 123 or c == 91:  # { [
                depth += 1
                seen = True
            elif c == 125 or c == 93:  # } ]
                depth -= 1
                if depth < 0:
                    return False


class HashSink:
    """A download's sink: hashes and counts what it writes to `fh`, refuses more than
    `limit` bytes."""

    def __init__(self, fh, limit):
        self.fh = fh
        self.h = hashlib.sha256()
        self.n = 0
        self.limit = limit

    def write(self, data):
        self.n += len(data)
        if self.n > self.limit:
            raise ValueError("more than %d bytes" % self.limit)
        self.h.update(data)
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
        self.diag_name = None
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
            state = plan.get("state")
            if state == "copying":
                cp.log("firmware: install of %s was cut short, rolling back" % plan.get("version"))
                self.rollback(plan)
                self.needs_reboot = True
            elif state == "trial":
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
            else:  # "failed": rolled back before this boot
                cp.log("firmware: %s was rolled back, running %s" % (plan.get("version"), self.version))
                self.announce = "InstallationFailed"
                flash.remove("fw/install.json")
        cp.fw_version = self.version

    # -- install / commit / rollback ------------------------------------------------------

    def release(self):
        """Unload the firmware-management code once nothing is going on."""
        if not self.busy and not self.diag_busy and self.trial is None and not self.announce:
            self.cp.features.unload("fw")

    def clear(self, top):
        """Remove the files under `top` (and one level of directories below it)."""
        flash = self.flash
        for name in flash.listdir(top):
            path = top + "/" + name
            for sub in flash.listdir(path):
                flash.remove(path + "/" + sub)
            flash.remove(path)

    def rollback(self, plan):
        import bootmode  # the same code main.py uses after a crash on trial

        bootmode.restore(self.flash, plan)
        self.clear("fw/stage")
        self.version = plan.get("prev", self.version)
        self.cp.fw_version = self.version
        self.trial = None

    async def install(self, version, files):
        """Swap the staged files in (renames; `bootmode.restore` undoes them); the caller
        reboots."""
        flash = self.flash
        self.clear("fw/backup")
        drop = []
        for path in files:  # a source module would shadow its new .mpy: move it away too
            if path.endswith(".mpy") and path[:-4] + ".py" not in files and flash.exists(path[:-4] + ".py"):
                drop.append(path[:-4] + ".py")
        plan = {"state": "copying", "version": version, "prev": self.version, "files": files,
                "new": [p for p in files if not flash.exists(p)], "drop": drop}
        flash.write_json("fw/install.json", plan)
        flash.makedirs("fw/backup/lib")
        for path in drop:
            flash.rename(path, "fw/backup/" + path)
        for path in files:
            if flash.exists(path):
                flash.rename(path, "fw/backup/" + path)
            flash.rename("fw/stage/" + path, path)
            await asyncio.sleep_ms(0)
        plan["state"] = "trial"
        plan["boots"] = 0
        flash.write_json("fw/install.json", plan)
        self.clear("fw/stage")

    def on_accepted(self):
        """BootNotification Accepted: commit a trial, report what happened."""
        if self.trial is not None:
            self.flash.write_json("fw/version.json", {"version": self.trial["version"]})
            self.flash.remove("fw/install.json")
            self.clear("fw/backup")
            self.cp.log("firmware: %s committed" % self.trial["version"])
            self.trial = None
            self.announce = "Installed"
        if self.announce:
            self.notify(self.announce)
            self.announce = None
            self.release()

    async def trial_watch(self):
        """Roll back a trial that does not reach Accepted in time."""
        # in 1 s steps: a task asleep for the whole timeout would keep this module (~11 KB)
        # alive after the commit unloaded it, and the next UpdateFirmware would load a
        # second copy next to it
        for _ in range(self.cp.cfg.get("FirmwareTrialTimeout")):
            if self.trial is None:
                return
            await asyncio.sleep(1)
        if self.trial is not None:
            self.cp.log("firmware: %s not accepted within %ds, rolling back" % (
                self.trial["version"], self.cp.cfg.get("FirmwareTrialTimeout")))
            self.rollback(self.trial)
            self.cp.connector.reboot("Hard")

    def notify(self, status, done=None):
        self.status = status
        self.cp.outbox.add("FirmwareStatusNotification", {"status": status}, done)

    # -- UpdateFirmware -------------------------------------------------------------------
    def update(self, p):
        if not self.busy and self.trial is None:
            self.busy = True
            asyncio.create_task(self._update(p["location"], p["retrieveDate"], attempts(p),
                                             p.get("retryInterval", 30)))
        return {}

    async def _get(self, url, path, limit, missing_ok=False, ctx=None):
        """Stream `url` into `path` on flash: (bytes, sha256 digest); None for a 404 when
        `missing_ok`. `ctx`: the SSL context for https (one for a whole bundle)."""
        for attempt in range(ENOMEM_TRIES):
            with open(self.flash.path(path), "wb") as fh:
                sink = HashSink(fh, limit)
                try:
                    resp = await httpc.get(url, sink=sink, timeout=60, ssl_ctx=ctx)
                    break
                except OSError as exc:
                    # ENOMEM (mbedTLS): no hole for the session's buffers in that moment's
                    # heap; after a collection and a pause (transient allocations of other
                    # tasks end), the same file again, pauses doubling (0.5, 1, 2 s: one
                    # retry after 0.5 s failed the download in a fresh-clone CI run)
                    if attempt == ENOMEM_TRIES - 1 or not exc.args or exc.args[0] != 12:
                        raise
            self.cp.log("firmware: no heap for the TLS session of %s (OSError 12): "
                        "collecting, trying it again" % path)
            gc.collect()
            await asyncio.sleep_ms(500 << attempt)
            gc.collect()
        if resp.status == 404 and missing_ok:
            self.flash.remove(path)
            return None
        if resp.status != 200:
            raise OSError("%s: HTTP %d" % (url, resp.status))
        return sink.n, sink.h.digest()

    async def _check_signature(self, digest, sig_path):
        """(why refused or None, (fw/keys.json content, log lines) or None). The policy
        (firmware_trust) and the Ed25519 code are loaded one after the other, each for
        this moment only (each in its own function: a module bound to a local of this
        coroutine would stay on the heap as long as it runs)."""
        why, checks, learnt, notes = self._plan_signature(digest, sig_path)
        gc.collect()
        if why or not checks:
            return why, None
        why = await self._verify_signatures(checks)
        gc.collect()
        if why:
            return why, None
        self.cp.log("firmware: manifest signed by key %s (%d signature(s) verified)" % (
            binascii.hexlify(checks[-1][0]).decode()[:16], len(checks)))
        return None, (learnt, notes)

    def _plan_signature(self, digest, sig_path):
        gc.collect()  # into a clean heap
        try:
            return paging.load("firmware_trust").plan(self.cp.config, self.flash, self.cp.log,
                                                      digest, sig_path)
        finally:
            paging.drop("firmware_trust")

    async def _verify_signatures(self, checks):
        """Why the first failing check fails, or None; the event loop gets a turn every 4
        bits of each verification."""
        gc.collect()
        try:
            ed25519 = paging.load("ed25519")
            await asyncio.sleep_ms(0)  # loading it from flash was one stretch already
            for key, message, sig, fail in checks:
                for verdict in ed25519.verifier(key, message, sig, 4):
                    if verdict is None:
                        await asyncio.sleep_ms(0)
                    elif verdict is not True:
                        return fail
            return None
        finally:
            paging.drop("ed25519")

    async def _download(self, location):
        flash = self.flash
        if location.endswith(".json"):
            murl = location
            base = location.rsplit("/", 1)[0] + "/"
        else:  # the directory holding manifest.json
            base = location if location.endswith("/") else location + "/"
            murl = base + "manifest.json"
        self.clear("fw/stage")
        flash.makedirs("fw/stage/lib")
        # https: the central system's TLS settings (ocpp.ca_file / ocpp.insecure), one
        # context for every file of the bundle (the CA parsed once, not once a file: fewer
        # allocations between the TLS sessions, whose 16 KiB buffers need a hole each)
        ctx = httpc.tls_context(self.cp.ocpp_conf, flash) if murl.startswith("https:") else None
        digest = (await self._get(murl, "fw/stage/manifest.json", MAX_MANIFEST, False, ctx))[1]
        sig_path = "fw/stage/manifest.sig"
        if await self._get(murl[:-5] + ".sig", sig_path, MAX_SIG, True, ctx) is None:
            sig_path = None
        why, learnt = await self._check_signature(digest, sig_path)
        if sig_path:
            flash.remove(sig_path)
        if why:
            raise Refused(why)
        with open(flash.path("fw/stage/manifest.json"), "rb") as fh:
            if not json_complete(fh):
                raise ValueError("manifest cut short")
            fh.seek(0)
            manifest = json.load(fh)
        flash.remove("fw/stage/manifest.json")
        version = manifest.get("version") if isinstance(manifest, dict) else None
        files = manifest.get("files") if version else None
        if not isinstance(version, str) or not 0 < len(version) <= 50 \
                or not isinstance(files, dict) or not files:
            raise ValueError("bad manifest")
        floor = self._floor(learnt)
        security = manifest.get("security_version", 0)
        if isinstance(security, bool) or not isinstance(security, int) \
                or not 0 <= security <= 0x7FFFFFFF:
            raise ValueError("bad manifest: security_version")
        if security < floor:
            raise Refused("security version %d is below this board's %d (anti-rollback: an "
                          "older release is not installed again)" % (security, floor))
        raised = security if sig_path and security > floor else None  # only a signed one
        names = sorted(files)
        need = 0
        # the entries go to an index on flash: the parsed manifest (~250 bytes a file) is
        # off the heap while the files download
        with open(flash.path("fw/stage/index.txt"), "w") as ix:
            for path in names:
                meta = files[path]
                if not path_allowed(path) or not isinstance(meta, dict) \
                        or not isinstance(meta.get("size"), int) \
                        or not isinstance(meta.get("sha256"), str) or " " in meta["sha256"]:
                    raise ValueError("bad manifest entry: %s" % path)
                need += meta["size"]
                ix.write("%s %d %s\n" % (path, meta["size"], meta["sha256"].lower()))
        manifest = files = meta = names = None
        gc.collect()
        free = flash.free_bytes()
        if 0 <= free < need + 16384:
            raise ValueError("%d bytes do not fit in %d free" % (need, free))
        # the names (kept for the install) again, from the index into the collected heap:
        # the ones the manifest's parse made lay scattered where the manifest was, and
        # left no hole there big enough for the next TLS session's buffers
        with open(flash.path("fw/stage/index.txt")) as ix:
            names = [line.split(" ", 1)[0] for line in ix]
        with open(flash.path("fw/stage/index.txt")) as ix:
            for line in ix:
                path, size, sha = line.split()
                n, digest = await self._get(base + path, "fw/stage/" + path, int(size), False, ctx)
                if n != int(size):
                    raise ValueError("%s: %d bytes, not %s" % (path, n, size))
                if binascii.hexlify(digest).decode() != sha:
                    raise Refused("%s: sha256 differs from the manifest's" % path)
        flash.remove("fw/stage/index.txt")
        trust = learnt[0] if learnt is not None else None
        if raised is not None:
            trust = trust or paging.load("firmware_trust").state(flash)
            paging.drop("firmware_trust")
            trust["floor"] = raised
            self.cp.log("firmware: security version %d: older releases are refused from now "
                        "on" % raised)
        if trust is not None:
            flash.write_json("fw/keys.json", trust)
        if learnt is not None:
            for line in learnt[1]:
                self.cp.log(line)
        return version, names

    def _floor(self, learnt):
        """The lowest security_version this board installs (fw/keys.json)."""
        if learnt is not None and learnt[0] is not None:
            return learnt[0].get("floor", 0)
        try:
            return paging.load("firmware_trust").state(self.flash)["floor"]
        finally:
            paging.drop("firmware_trust")

    async def _update(self, location, retrieve, tries, interval):
        cp = self.cp
        try:
            wait = clock_mod.parse_iso(retrieve) - cp.clock.now()
            if wait > 0:
                cp.log("firmware: download of %s at %s" % (location, retrieve))
                await asyncio.sleep(wait)
            result = None
            for attempt in range(tries):
                self.notify("Downloading")
                held = await cp.link.hold(location)  # one TLS session at a time
                try:
                    result = await self._download(location)
                except Refused as exc:
                    result = exc
                except Exception as exc:
                    cp.log("firmware: download failed: %r" % (exc,))
                    self.clear("fw/stage")
                finally:
                    if held:
                        cp.link.release()
                if result is not None:
                    break
                if attempt < tries - 1:  # (not after a success or a refusal)
                    await asyncio.sleep(interval)
            if isinstance(result, Refused):
                cp.log("firmware: refused %s: %s" % (location, result))
                self.clear("fw/stage")
                self.notify("InstallationFailed")
                return
            if result is None:
                self.notify("DownloadFailed")
                return
            gc.collect()
            cp.log("firmware: %s downloaded (%d files), heap free %d" % (
                result[0], len(result[1]), gc.mem_free() if hasattr(gc, "mem_free") else -1))
            self.notify("Downloaded")
            while cp.connector.tx is not None:
                await asyncio.sleep(1)
            answered = []
            self.notify("Installing", answered.append)
            for _ in range(100):  # let the central system hear it before the reboot
                if answered:
                    break
                await asyncio.sleep_ms(100)
            try:
                await self.install(result[0], result[1])
            except Exception as exc:
                cp.log("firmware: install failed: %r" % (exc,))
                try:
                    self.rollback(self.flash.read_json("fw/install.json"))
                except (OSError, ValueError):
                    pass
                self.flash.remove("fw/install.json")
                self.notify("InstallationFailed")
                return
            cp.log("firmware: %s installed, rebooting on trial" % result[0])
            cp.connector.reboot("Hard")
        finally:
            self.busy = False
            self.release()

    # -- GetDiagnostics -------------------------------------------------------------------
    def diagnostics(self, p):
        cp = self.cp
        if not self.diag_busy:
            self.diag_busy = True
            self.diag_name = "diag-%s-%d.txt" % (cp.cp_id, int(cp.clock.now()))
            asyncio.create_task(self._diagnostics(p["location"], self.diag_name, attempts(p),
                                                  p.get("retryInterval", 30)))
        return {"fileName": self.diag_name}

    async def _diagnostics(self, location, name, tries, interval):
        # the upload code is loaded for the moment it runs (heap: an update waiting for a
        # transaction to end keeps this module loaded, without it)
        try:
            await paging.load("ocpp_diagnostics").upload(self, location, name, tries, interval)
        finally:
            paging.drop("ocpp_diagnostics")
            self.flash.remove("fw/diag.txt")
            self.diag_busy = False
            self.release()


Feature = Firmware  # what chargepoint.ChargePoint.feature() builds
