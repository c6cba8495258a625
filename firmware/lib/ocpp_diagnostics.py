"""GetDiagnostics' upload (OCPP 1.6 Firmware Management), loaded by ocpp_firmware for the
moment it runs: the diagnostics file is written to flash (`fw/diag.txt`: header, summary,
recent OCPP events, the log files oldest first) and PUT to `<location>/<fileName>`, with
DiagnosticsStatusNotification Uploading (each try), then Uploaded or UploadFailed."""

import asyncio
import json

import httpc

LOG_FILES = ("log.1.txt", "log.txt")


async def build(fw):
    """Write `fw/diag.txt`; its size."""
    flash = fw.flash
    cp = fw.cp
    with open(flash.path("fw/diag.txt"), "wb") as fh:
        fh.write(("PicoCharge diagnostics %s %s firmware %s\nsummary %s\n" % (
            cp.cp_id, cp.clock.iso(), fw.version, json.dumps(cp.summary()))).encode())
        for line in cp.events:
            fh.write(line.encode() + b"\n")
        for name in LOG_FILES:
            if flash.exists(name):
                fh.write(("--- %s\n" % name).encode())
                with open(flash.path(name), "rb") as fi:
                    while True:
                        chunk = fi.read(512)
                        if not chunk:
                            break
                        fh.write(chunk)
                        await asyncio.sleep_ms(0)
    return flash.size("fw/diag.txt")


async def upload(fw, location, name, tries, interval):
    cp = fw.cp
    try:
        size = await build(fw)
    except OSError as exc:  # e.g. a full flash: nothing to upload
        cp.log("diagnostics: cannot write the file: %r" % (exc,))
        tries = 0
    url = location.rstrip("/") + "/" + name
    ok = False
    for attempt in range(tries):
        fw.diag_status = "Uploading"
        cp.outbox.add("DiagnosticsStatusNotification", {"status": "Uploading"})
        held = await cp.link.hold(url)  # one TLS session at a time
        try:
            with open(fw.flash.path("fw/diag.txt"), "rb") as fh:
                resp = await httpc.put(url, source=fh, source_len=size, timeout=60,
                                       headers={"Content-Type": "text/plain"},
                                       ssl_ctx=httpc.tls_context(cp.ocpp_conf, fw.flash)
                                       if url.startswith("https:") else None)
            ok = 200 <= resp.status < 300
            if not ok:
                cp.log("diagnostics: upload answered HTTP %d" % resp.status)
        except Exception as exc:
            cp.log("diagnostics: upload failed: %r" % (exc,))
        finally:
            if held:
                cp.link.release()
        if ok:
            break
        if attempt < tries - 1:
            await asyncio.sleep(interval)
    fw.diag_status = "Uploaded" if ok else "UploadFailed"
    cp.outbox.add("DiagnosticsStatusNotification", {"status": fw.diag_status})
    cp.log("diagnostics: %s %s" % (name, fw.diag_status))
