"""Firmware Management end to end, on both runtimes: a whole board (tools/board.py: the
firmware installed in its flash directory as on a Pico W, booted from main.py, restarted
by its own resets) against the independent central system (the `ocpp` package, schemas
on: every message the board sends must validate) and an HTTP file server
(fwkit.FileServer). Bundles are the current firmware as that runtime runs it (.mpy for
MicroPython) with a main.py that prints which version booted.

- a good bundle (signed by the key the board trusts): Downloading, Downloaded, Installing,
  reboot, BootNotification with the new firmwareVersion Accepted, Installed; the flash
  holds the bundle's files;
- download failures (body cut short, HTTP 404, server gone): as many tries as `retries`
  says (OCPP 1.6: "how many times the Charge Point must try"), then DownloadFailed, and
  nothing on flash changed;
- signed bundles: a missing signature, an unknown key, a manifest or a file changed after
  signing are refused at once (InstallationFailed, nothing installed, a log line); a board
  with no key refuses everything unless `firmware.allow_unsigned`; a key rotation carried
  by a bundle signed with the new key is learnt, and the retired key refused afterwards;
- a new firmware the central system rejects, and one that crashes at start-up: the board
  rolls back by itself, boots the old firmware Accepted, InstallationFailed;
- GetDiagnostics: the fileName, the file PUT to the location with the log in it,
  Uploading/Uploaded; an unreachable location: UploadFailed after every attempt;
- a retrieveDate in the future: nothing is fetched before it;
- an update that arrives during a charging session is installed after it;
- a power cut in the middle of an install is rolled back at the next boot; a new firmware
  that keeps rebooting without being accepted is rolled back after three boots;
- (MicroPython) a stale lib/x.py on flash does not shadow the bundle's lib/x.mpy;
- the real central system (server/): its bundle and diagnostics endpoints, driven
  through its REST API.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fwkit import MAKER, MAKER_PUB, MARK, OTHER, FileServer, firmware_files, free_port, make_bundle
from harness import sensor_reports
from ocpp.v16 import call

from tests.server.conftest import ADMIN_TOKEN
from tests.waiting import wait_until
from tools.board import FIRMWARE

CP = "PICO-FW"
KEY = "0123456789abcdef"
OLD = "1.0.0"


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def board_config(url: str, trial_s: int = 300, password: str | None = KEY,
                 firmware: dict | None = None) -> dict:
    return {"cp_id": CP, "wifi": {"ssid": "workshop", "password": "secret"},
            "ocpp": {"url": url, "password": password, "reconnect_min_s": 0.2,
                     "keys": {"FirmwareTrialTimeout": trial_s, "MeterValueSampleInterval": 1}},
            "firmware": {"keys": [MAKER_PUB]} if firmware is None else firmware,
            "limits": {"max_current_a": 16.0}, "intervals": {"report_s": 1}}


# the `cs` fixture's heartbeat interval (tests/firmware_ocpp/conftest.py)
CS_HEARTBEAT_S = 5


@pytest.fixture
def files(tmp_path):
    server = FileServer(tmp_path / "www")
    yield server
    server.close()


def fw_statuses(cs) -> list[str]:
    return [m["status"] for m in cs.of("FirmwareStatusNotification", CP)]


def diag_statuses(cs) -> list[str]:
    return [m["status"] for m in cs.of("DiagnosticsStatusNotification", CP)]


def boot_versions(cs) -> list[str]:
    return [m["firmware_version"] for m in cs.of("BootNotification", CP)]


def accepted_boots(board) -> list[str]:
    return re.findall(r"^ocpp: BootNotification (\w+)", board.console.text, re.M)


def record_min_heap(board, runtime_name, record_heap):
    if runtime_name == "micropython":
        reports = [r for r in sensor_reports(board.console.text) if "heap" in r]
        assert reports, "no heap report on the console"
        record_heap(min(r["heap"] for r in reports))


@pytest.fixture
def boards():
    """Boards of the test; their consoles (without the sensor reports) are printed at the
    end, which pytest shows when the test failed."""
    started = []
    yield started
    for board in started:
        lines = [ln for ln in board.console.text.splitlines() if not ln.startswith("sensors ")]
        print("--- console of %s without sensor reports ---" % board.flash.name)
        print("\n".join(lines[-150:]))


WORLD = {"ap_ssid": "workshop", "ap_password": "secret", "ev_demand_a": 16.0}


def start_board(board_factory, boards, cs, trial_s=300, firmware=None):
    board = board_factory(board_config(cs.url, trial_s, firmware=firmware), world=WORLD)
    boards.append(board)
    cs.wait(lambda: cs.booted(CP), 60, "BootNotification")
    cs.wait(lambda: cs.last_status(CP) == "Available", 30, "Available")
    return board


DONE = {"Installed", "InstallationFailed", "DownloadFailed"}


def update(cs, location, when=None, retries=1, retry_interval=1):
    cs.call(CP, call.UpdateFirmware(location=location, retrieve_date=iso(when or datetime.now(UTC)),
                                    retries=retries, retry_interval=retry_interval))


def stage_files(flash):
    return sorted(p.relative_to(flash).as_posix() for p in (flash / "fw").rglob("*") if p.is_file())


def download_heap(board):
    """Free heap the firmware logged after the download (MicroPython; -1 on CPython)."""
    found = re.findall(r"downloaded \(\d+ files\), heap free (-?\d+)", board.console.text)
    return int(found[-1]) if found else None


@pytest.mark.dual_runtime
def test_good_bundle_is_downloaded_installed_and_boots_accepted(
        cs, files, board_factory, boards, runtime_name, record_heap):
    board = start_board(board_factory, boards, cs)
    old_files = firmware_files(board.flash)
    manifest = make_bundle(runtime_name, files.root / "v2", "2.0.0", mark_all=True)
    assert len(manifest["files"]) > 30  # the whole firmware, every module changed

    update(cs, files.url + "/v2/manifest.json")
    cs.wait(lambda: DONE & set(fw_statuses(cs)), 60, "the update to finish")
    cs.wait(lambda: cs.last_status(CP) == "Available" and len(boot_versions(cs)) == 2, 30,
            "Available after the update")
    assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing", "Installed"]
    assert boot_versions(cs) == [OLD, "2.0.0"]
    assert accepted_boots(board) == ["Accepted", "Accepted"]
    assert board.board.resets == ["hard"]
    assert board.console.text.count(MARK) == 1 and "%s 2.0.0" % MARK in board.console.text
    new_files = firmware_files(board.flash)
    assert sorted(new_files) == sorted(old_files)  # nothing left over, nothing missing
    for path in manifest["files"]:
        assert new_files[path] == (files.root / "v2" / path).read_bytes(), path
        assert path == "boot.py" or new_files[path] != old_files[path], path
    assert json.loads((board.flash / "fw" / "version.json").read_text()) == {"version": "2.0.0"}
    assert stage_files(board.flash) == ["fw/version.json"]  # no plan, stage or backup left
    assert cs.invalid == []
    record_min_heap(board, runtime_name, record_heap)
    print("free heap after the download:", download_heap(board))


@pytest.mark.dual_runtime
def test_failed_downloads_change_nothing_on_flash(cs, files, board_factory, boards, runtime_name):
    board = start_board(board_factory, boards, cs)
    before = firmware_files(board.flash)
    make_bundle(runtime_name, files.root / "v3", "3.0.0")
    victim = "lib/app.mpy" if runtime_name == "micropython" else "lib/app.py"
    files.faults["/v3/%s" % victim] = "truncate"
    files.faults["/v3/404/manifest.json"] = "404"
    cases = [
        ("body cut short", files.url + "/v3/manifest.json", "/v3/%s" % victim),
        ("HTTP 404", files.url + "/v3/404", "/v3/404/manifest.json"),  # a directory location
        ("server gone", "http://127.0.0.1:%d/v3/manifest.json" % free_port(), None),
    ]
    expected = []
    for what, location, failing in cases:
        failed_before = fw_statuses(cs).count("DownloadFailed")
        update(cs, location, retries=3, retry_interval=1)
        cs.wait(lambda n=failed_before: fw_statuses(cs).count("DownloadFailed") > n, 45,
                "DownloadFailed (%s)" % what)
        expected += ["Downloading"] * 3 + ["DownloadFailed"]
        assert fw_statuses(cs) == expected, what
        if failing is not None:
            assert len(files.gets(failing)) == 3, what  # retries=3: three tries
        assert firmware_files(board.flash) == before, what
        assert stage_files(board.flash) == [], what
    assert board.board.resets == [] and boot_versions(cs) == [OLD]
    # the console line may reach the test after the status notification that followed it
    wait_until(lambda: len(re.findall(r"firmware: download failed", board.console.text)) >= 9,
               10, "nine 'download failed' lines")
    assert len(re.findall(r"firmware: download failed", board.console.text)) == 9
    # nothing going on any more: asked, the board says Idle (the only time it may)
    cs.call(CP, call.TriggerMessage(requested_message="FirmwareStatusNotification"))
    cs.wait(lambda: fw_statuses(cs)[-1] == "Idle", 30, "Idle")
    assert cs.invalid == []


def rollback_scenario(cs, files, board_factory, boards, runtime_name, version, edits):
    board = start_board(board_factory, boards, cs, trial_s=10)
    before = firmware_files(board.flash)
    make_bundle(runtime_name, files.root / "next", version, edits)
    update(cs, files.url + "/next/manifest.json")
    cs.wait(lambda: DONE & set(fw_statuses(cs)), 60, "the update to finish")
    cs.wait(lambda: cs.last_status(CP) == "Available" and boot_versions(cs)[-1] == OLD
            and len(board.board.resets) == 2, 30, "the old firmware Available again")
    assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert board.board.resets == ["hard", "hard"]  # into the new firmware, back to the old
    assert board.console.text.count(MARK) == 1  # the new main.py ran once, the old one since
    assert firmware_files(board.flash) == before
    assert stage_files(board.flash) == []  # never committed: no version.json, no backups left
    assert cs.invalid == []
    return board


@pytest.mark.dual_runtime
def test_firmware_rejected_by_the_central_system_is_rolled_back(
        cs, files, board_factory, boards, runtime_name):
    cs.boot_policy["2.0.0-rejected"] = "Rejected"
    board = rollback_scenario(cs, files, board_factory, boards, runtime_name, "2.0.0-rejected", None)
    versions = boot_versions(cs)
    assert versions[0] == OLD and versions[-1] == OLD
    assert set(versions[1:-1]) == {"2.0.0-rejected"}  # retried after the interval, then gave up
    assert accepted_boots(board)[-1] == "Accepted"
    assert "Rejected" in accepted_boots(board)
    # while Rejected the board sent nothing but BootNotification
    calls = [action for action, _ in cs.sent_calls()]
    first_bad = calls.index("BootNotification", 1)
    back = len(calls) - 1 - calls[::-1].index("BootNotification")
    assert set(calls[first_bad:back]) == {"BootNotification"}
    assert re.search(r"firmware: 2\.0\.0-rejected not accepted within 10s, rolling back",
                     board.console.text)


@pytest.mark.dual_runtime
def test_firmware_that_crashes_at_start_up_is_rolled_back(
        cs, files, board_factory, boards, runtime_name):
    def crash(src):
        marker = "    def __init__(self, flash=None, machine=None, network=None, dht=None, ntptime=None,\n" \
                 "                 console=print):\n"
        assert marker in src
        return src.replace(marker, marker + '        raise RuntimeError("this firmware cannot start")\n', 1)

    board = rollback_scenario(cs, files, board_factory, boards, runtime_name, "2.0.0-crash",
                              {"lib/app.py": crash})
    assert boot_versions(cs) == [OLD, OLD]  # the crashing firmware never got to OCPP
    assert "firmware 2.0.0-crash crashed at start-up (RuntimeError('this firmware cannot start'" \
        in board.console.text
    log = (board.flash / "log.txt").read_text()
    assert "firmware 2.0.0-crash crashed at start-up" in log


@pytest.mark.dual_runtime
def test_get_diagnostics_uploads_the_log(cs, files, board_factory, boards, runtime_name):
    board = start_board(board_factory, boards, cs)
    res = cs.call(CP, call.GetDiagnostics(location=files.url + "/diagnostics/" + CP, retries=1,
                                          retry_interval=1))
    assert re.fullmatch(r"diag-PICO-FW-\d+\.txt", res.file_name)
    cs.wait(lambda: "Uploaded" in diag_statuses(cs) or "UploadFailed" in diag_statuses(cs), 30,
            "the upload")
    assert diag_statuses(cs) == ["Uploading", "Uploaded"]
    assert len(files.uploads) == 1
    _, method, path, headers, body = files.uploads[0]
    assert (method, path) == ("PUT", "/diagnostics/%s/%s" % (CP, res.file_name))
    assert int(headers["Content-Length"]) == len(body)
    text = body.decode()
    assert text.startswith("PicoCharge diagnostics %s " % CP)
    assert "firmware %s\n" % OLD in text.splitlines()[0] + "\n"
    log_part = text.split("--- log.txt\n", 1)[1]
    on_flash = (board.flash / "log.txt").read_text()
    assert len(log_part) > 200 and on_flash.startswith(log_part)  # the log as it was then
    assert "PicoCharge %s booting" % CP in log_part
    assert stage_files(board.flash) == []  # the file built for the upload is gone

    # an unreachable location: every attempt, then UploadFailed
    res = cs.call(CP, call.GetDiagnostics(location="http://127.0.0.1:%d/diag" % free_port(),
                                          retries=3, retry_interval=1))
    assert res.file_name
    cs.wait(lambda: "UploadFailed" in diag_statuses(cs), 30, "UploadFailed")
    assert diag_statuses(cs) == ["Uploading", "Uploaded"] + ["Uploading"] * 3 + ["UploadFailed"]
    assert len(re.findall(r"diagnostics: upload failed", board.console.text)) == 3
    assert len(files.uploads) == 1 and stage_files(board.flash) == []
    cs.call(CP, call.TriggerMessage(requested_message="DiagnosticsStatusNotification"))
    cs.wait(lambda: diag_statuses(cs)[-1] == "Idle", 30, "Idle")
    assert cs.invalid == []


@pytest.mark.dual_runtime
def test_download_waits_for_the_retrieve_date(cs, files, board_factory, boards, runtime_name):
    board = start_board(board_factory, boards, cs)
    make_bundle(runtime_name, files.root / "later", "2.1.0")
    retrieve = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
    update(cs, files.url + "/later", when=retrieve)  # the directory holding manifest.json
    assert time.time() < retrieve.timestamp()  # else this run proves nothing
    cs.wait(lambda: DONE & set(fw_statuses(cs)), 60, "the update to finish")
    fetched = files.gets("/later/manifest.json")
    assert fetched and min(fetched) >= retrieve.timestamp()
    assert min(t for t, *_ in files.requests) >= retrieve.timestamp()
    assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing", "Installed"]
    cs.wait(lambda: len(boot_versions(cs)) == 2, 30, "the second boot")
    assert boot_versions(cs) == [OLD, "2.1.0"] and board.board.resets == ["hard"]
    assert "firmware: download of %s/later at %s" % (files.url, iso(retrieve)) in board.console.text
    assert cs.invalid == []


@pytest.mark.dual_runtime
def test_update_during_a_charging_session_is_installed_after_it(
        cs, files, board_factory, boards, runtime_name, record_heap):
    board = start_board(board_factory, boards, cs)
    make_bundle(runtime_name, files.root / "v2", "2.0.0")
    board.control("plug")
    cs.wait(lambda: cs.last_status(CP) == "Preparing", 30, "Preparing")
    cs.call(CP, call.RemoteStartTransaction(id_tag="CARD-1", connector_id=1))
    cs.wait(lambda: cs.last_status(CP) == "Charging", 30, "Charging")
    update(cs, files.url + "/v2/manifest.json")
    cs.wait(lambda: "Downloaded" in fw_statuses(cs), 60, "Downloaded")
    # the session goes on: meter values keep coming after the download, nothing installed
    seen = len(cs.of("MeterValues", CP))
    cs.wait(lambda: len(cs.of("MeterValues", CP)) >= seen + 2, 30, "meter values after Downloaded")
    assert fw_statuses(cs) == ["Downloading", "Downloaded"]
    assert board.world()["relay_closed"] is True and board.board.resets == []
    board.control("unplug")
    cs.wait(lambda: DONE & set(fw_statuses(cs)), 60, "the update to finish")
    assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing", "Installed"]
    stop = cs.of("StopTransaction", CP)
    assert len(stop) == 1 and stop[0]["reason"] == "EVDisconnected"
    order = [m[1] if m[1] != "FirmwareStatusNotification" else m[2]["status"]
             for m in cs.messages if m[0] == CP]
    assert order.index("StopTransaction") < order.index("Installing")
    assert boot_versions(cs) == [OLD, "2.0.0"] and board.board.resets == ["hard"]
    assert cs.invalid == []
    record_min_heap(board, runtime_name, record_heap)


def swap_halfway(flash, bundle: Path, version: str) -> list[str]:
    """Leave `flash` as a power cut halfway through installing `bundle` leaves it: the plan
    says "copying" (ocpp_firmware.Firmware.install's format), the first half of the files
    moved into fw/backup/ and replaced by the bundle's."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    names = sorted(manifest["files"])
    plan = {"state": "copying", "version": version, "prev": OLD, "files": names, "new": [],
            "drop": []}
    (flash / "fw" / "backup" / "lib").mkdir(parents=True)
    (flash / "fw" / "install.json").write_text(json.dumps(plan))
    for name in names[:len(names) // 2]:
        os.replace(flash / name, flash / "fw" / "backup" / name)
        shutil.copyfile(bundle / name, flash / name)
    return names


@pytest.mark.dual_runtime
def test_power_cut_in_the_middle_of_an_install_is_rolled_back(
        cs, files, board_factory, boards, runtime_name):
    board = board_factory(board_config(cs.url), world=WORLD, start=False)
    boards.append(board)
    before = firmware_files(board.flash)
    make_bundle(runtime_name, files.root / "v2", "2.0.0", mark_all=True)
    names = swap_halfway(board.flash, files.root / "v2", "2.0.0")
    assert firmware_files(board.flash) != before
    board.start()
    cs.wait(lambda: "InstallationFailed" in fw_statuses(cs), 60, "InstallationFailed")
    assert fw_statuses(cs) == ["InstallationFailed"]
    assert boot_versions(cs) == [OLD]  # the half-installed firmware never went online
    assert board.board.resets == ["hard"]  # the rollback reboots into the restored files
    assert "install of 2.0.0 was cut short, rolling back" in board.console.text
    assert firmware_files(board.flash) == before and len(names) > 30
    assert stage_files(board.flash) == []
    assert cs.invalid == []


@pytest.mark.dual_runtime
def test_firmware_that_keeps_rebooting_is_rolled_back_after_three_boots(
        cs, files, board_factory, boards, runtime_name):
    cs.boot_policy["2.0.0-rejected"] = "Rejected"
    board = start_board(board_factory, boards, cs)  # trial timeout 300 s: boots decide
    before = firmware_files(board.flash)
    make_bundle(runtime_name, files.root / "next", "2.0.0-rejected")
    update(cs, files.url + "/next/manifest.json")
    for boot in (1, 2, 3):  # each boot of the new firmware is cut after its BootNotification
        cs.wait(lambda b=boot: boot_versions(cs).count("2.0.0-rejected") >= b, 60,
                "boot %d of the new firmware" % boot)
        board.control("power_cut")
    cs.wait(lambda: "InstallationFailed" in fw_statuses(cs), 60, "InstallationFailed")
    assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert boot_versions(cs) == [OLD] + ["2.0.0-rejected"] * 3 + [OLD]
    assert board.board.resets == ["hard", "power", "power", "power", "hard"]
    assert "2.0.0-rejected did not come up in 3 boots, rolling back" in board.console.text
    assert firmware_files(board.flash) == before and stage_files(board.flash) == []
    assert cs.invalid == []


@pytest.mark.parametrize("runtime", ["micropython-picow"])
def test_a_source_module_on_flash_does_not_shadow_the_new_mpy(
        cs, files, board_factory, boards, runtime_name):
    board = board_factory(board_config(cs.url), world=WORLD, start=False)
    boards.append(board)
    lib = board.flash / "lib"
    (lib / "clock.mpy").unlink()  # an older deploy left the module as source
    shutil.copyfile(FIRMWARE / "lib" / "clock.py", lib / "clock.py")
    board.start()
    cs.wait(lambda: cs.booted(CP), 60, "BootNotification")
    make_bundle(runtime_name, files.root / "v2", "2.0.0",
                {"lib/clock.py": lambda src: src + '\nprint("clock.mpy of the bundle")\n'})
    update(cs, files.url + "/v2/manifest.json")
    cs.wait(lambda: DONE & set(fw_statuses(cs)), 60, "the update to finish")
    assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing", "Installed"]
    assert "clock.mpy of the bundle" in board.console.text  # the new module ran
    assert not (lib / "clock.py").exists()
    assert (lib / "clock.mpy").read_bytes() == (files.root / "v2" / "lib" / "clock.mpy").read_bytes()
    assert cs.invalid == []


# -- signed bundles ------------------------------------------------------------------------

def tamper_file(bundle: Path, runtime_name: str) -> str:
    """Change one byte of lib/app in `bundle` (same size); returns its path."""
    victim = "lib/app.mpy" if runtime_name == "micropython" else "lib/app.py"
    data = bytearray((bundle / victim).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / victim).write_bytes(bytes(data))
    return victim


def refusals(board) -> list[tuple[str, str]]:
    """(location, why) of every `firmware: refused` log line."""
    return re.findall(r"^firmware: refused (\S+): (.*)$", board.console.text, re.M)


def nth_refusal(board, n: int) -> tuple[str, str]:
    """The n-th refusal, waited for: the console reaches the test by another path than the
    InstallationFailed the central system got, and may arrive a moment after it."""
    wait_until(lambda: len(refusals(board)) >= n, 10, "refusal %d on the console" % n)
    return refusals(board)[n - 1]


def refuse_each(cs, files, board, cases):
    """Send each bundle of `cases` [(name, why)] and check it is refused at once, with
    nothing fetched past the failing check and nothing changed on flash."""
    before = firmware_files(board.flash)
    refused_before = len(refusals(board))
    for n, (name, why) in enumerate(cases, 1):
        location = files.url + "/%s/manifest.json" % name
        update(cs, location, retries=3)
        cs.wait(lambda n=n: fw_statuses(cs).count("InstallationFailed") == n, 60,
                "InstallationFailed (%s)" % name)
        assert fw_statuses(cs) == ["Downloading", "InstallationFailed"] * n, name  # no retry
        refused = nth_refusal(board, refused_before + n)
        assert refused[0] == location and refused[1].startswith(why), (name, refused)
        fetched = [p for _, method, p in files.requests if p.startswith("/%s/" % name)]
        yield name, fetched
        assert firmware_files(board.flash) == before, name
        assert stage_files(board.flash) == [], name  # no stage, no learnt keys
    assert board.board.resets == [] and boot_versions(cs) == [OLD]
    assert cs.invalid == []


@pytest.mark.dual_runtime
def test_bundles_failing_the_signature_check_are_refused_and_change_nothing(
        cs, files, board_factory, boards, runtime_name):
    from tools.sign import endorse, public_hex

    board = start_board(board_factory, boards, cs)
    root = files.root
    other = public_hex(OTHER)
    make_bundle(runtime_name, root / "unsigned", "3.0.0", key=None)
    make_bundle(runtime_name, root / "otherkey", "3.0.0", key=OTHER)
    # a file changed after signing: the signed manifest still names the original
    make_bundle(runtime_name, root / "file", "3.0.0")
    victim = tamper_file(root / "file", runtime_name)
    # the same change with the manifest made to match it: the signature no longer does
    make_bundle(runtime_name, root / "manifest", "3.0.0")
    tamper_file(root / "manifest", runtime_name)
    manifest = json.loads((root / "manifest" / "manifest.json").read_text())
    manifest["files"][victim]["sha256"] = hashlib.sha256(
        (root / "manifest" / victim).read_bytes()).hexdigest()
    (root / "manifest" / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    # key rotations: one the untrusted key signed itself, one whose signature was altered
    make_bundle(runtime_name, root / "selfendorsed", "3.0.0", key=OTHER,
                endorsements=[endorse(OTHER, bytes.fromhex(other))])
    forged = endorse(MAKER, bytes.fromhex(other))
    forged["sig"] = ("0" if forged["sig"][0] != "0" else "1") + forged["sig"][1:]
    make_bundle(runtime_name, root / "forged", "3.0.0", key=OTHER, endorsements=[forged])
    cases = [
        ("unsigned", "the bundle is not signed (no manifest.sig)"),
        ("otherkey", "signed by key %s, which this board does not trust" % other[:16]),
        ("manifest", "the signature by key %s does not verify" % MAKER_PUB[:16]),
        ("file", "%s: sha256 differs from the manifest's" % victim),
        ("selfendorsed", "key rotation to %s signed by key %s, which this board does not trust"
         % (other[:16], other[:16])),
        ("forged", "the key rotation to %s does not verify" % other[:16]),
    ]
    for name, fetched in refuse_each(cs, files, board, cases):
        if name == "file":  # fetched up to the altered file, not one further
            assert fetched[:2] == ["/file/manifest.json", "/file/manifest.sig"]
            assert fetched[-1] == "/file/" + victim
        else:  # refused before any file of the bundle was fetched
            assert fetched == ["/%s/manifest.json" % name, "/%s/manifest.sig" % name], name


@pytest.mark.dual_runtime
def test_a_board_without_keys_refuses_every_bundle(cs, files, board_factory, boards, runtime_name):
    board = start_board(board_factory, boards, cs, firmware={})
    make_bundle(runtime_name, files.root / "signed", "3.0.0")
    make_bundle(runtime_name, files.root / "unsigned", "3.0.0", key=None)
    cases = [("signed", "no trusted key configured (firmware.keys): every bundle is refused"),
             ("unsigned", "no manifest.sig, and no trusted key configured (firmware.keys)")]
    for _name, fetched in refuse_each(cs, files, board, cases):
        assert len(fetched) == 2, fetched
    assert "allow_unsigned" not in board.console.text


@pytest.mark.dual_runtime
def test_allow_unsigned_installs_an_unsigned_bundle_and_says_so(
        cs, files, board_factory, boards, runtime_name):
    board = start_board(board_factory, boards, cs, firmware={"allow_unsigned": True})
    assert "firmware: WARNING firmware.allow_unsigned is on" in board.console.text
    mark = board.console.mark()
    board.board.type_line("import ev; ev.status()")
    board.wait_for(r"firmware 1\.0\.0  updates: 0 key\(s\) in config  UNSIGNED BUNDLES ALLOWED",
                   30, mark)
    make_bundle(runtime_name, files.root / "v2", "2.0.0", key=None)
    update(cs, files.url + "/v2/manifest.json")
    cs.wait(lambda: DONE & set(fw_statuses(cs)), 60, "the update to finish")
    cs.wait(lambda: len(boot_versions(cs)) == 2, 30, "the second boot")
    assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing", "Installed"]
    assert boot_versions(cs) == [OLD, "2.0.0"]
    assert "firmware: WARNING installing an UNSIGNED bundle" in board.console.text
    assert board.console.text.count("firmware: WARNING firmware.allow_unsigned is on") == 2
    assert cs.invalid == []


@pytest.mark.dual_runtime
def test_a_key_rotation_in_a_bundle_is_learnt_and_retires_the_old_key(
        cs, files, board_factory, boards, runtime_name):
    from tools.sign import endorse, public_hex

    other = public_hex(OTHER)
    board = start_board(board_factory, boards, cs)  # trusts MAKER only
    # the maker moves to a new key: the old one vouches for it (and retires itself), the
    # bundle is signed by the new key
    make_bundle(runtime_name, files.root / "v2", "2.0.0", key=OTHER,
                endorsements=[endorse(MAKER, bytes.fromhex(other))])
    update(cs, files.url + "/v2/manifest.json")
    cs.wait(lambda: DONE & set(fw_statuses(cs)), 60, "the update to finish")
    cs.wait(lambda: len(boot_versions(cs)) == 2, 30, "the second boot")
    assert fw_statuses(cs) == ["Downloading", "Downloaded", "Installing", "Installed"]
    assert boot_versions(cs) == [OLD, "2.0.0"]
    assert "firmware: key %s endorsed by key %s (which it retires) (generation 1)" % (
        other[:16], MAKER_PUB[:16]) in board.console.text
    assert json.loads((board.flash / "fw" / "keys.json").read_text()) == {
        "added": [other], "retired": [MAKER_PUB], "gen": 1, "floor": 0}
    # the retired key is refused from now on; the new key works without the rotation
    make_bundle(runtime_name, files.root / "old", "3.0.0", key=MAKER)
    refused_before = len(refusals(board))
    update(cs, files.url + "/old/manifest.json")
    cs.wait(lambda: "InstallationFailed" in fw_statuses(cs), 60, "InstallationFailed")
    assert nth_refusal(board, refused_before + 1)[1] == "signed by key %s, which this board does not trust" % (
        MAKER_PUB[:16])
    make_bundle(runtime_name, files.root / "v3", "3.0.0", key=OTHER)
    update(cs, files.url + "/v3/manifest.json")
    cs.wait(lambda: fw_statuses(cs).count("Installed") == 2, 60, "the second install")
    cs.wait(lambda: len(boot_versions(cs)) == 3, 30, "the third boot")
    assert boot_versions(cs) == [OLD, "2.0.0", "3.0.0"]
    assert fw_statuses(cs)[4:] == ["Downloading", "InstallationFailed", "Downloading",
                                   "Downloaded", "Installing", "Installed"]
    assert cs.invalid == []


@pytest.mark.dual_runtime
def test_a_signed_security_version_is_a_floor_no_older_release_installs_below(
        cs, files, board_factory, boards, runtime_name):
    """Anti-rollback: once a signed bundle of security_version 2 is installed, a bundle of
    a lower one (the old vulnerable release, still validly signed) is refused; an unsigned
    bundle never raises the floor."""
    board = start_board(board_factory, boards, cs)
    make_bundle(runtime_name, files.root / "v2", "2.0.0", security_version=2)
    update(cs, files.url + "/v2/manifest.json")
    cs.wait(lambda: DONE & set(fw_statuses(cs)), 60, "the update to finish")
    cs.wait(lambda: len(boot_versions(cs)) == 2, 30, "the second boot")
    assert "firmware: security version 2: older releases are refused from now on" in board.console.text
    assert json.loads((board.flash / "fw" / "keys.json").read_text())["floor"] == 2
    make_bundle(runtime_name, files.root / "old", "1.5.0", security_version=1)
    refused_before = len(refusals(board))
    update(cs, files.url + "/old/manifest.json")
    cs.wait(lambda: "InstallationFailed" in fw_statuses(cs), 60, "InstallationFailed")
    assert nth_refusal(board, refused_before + 1)[1] == (
        "security version 1 is below this board's 2 (anti-rollback: an older release is not "
        "installed again)")
    assert boot_versions(cs) == [OLD, "2.0.0"]
    assert cs.invalid == []


# -- the real central system ---------------------------------------------------------------

def api(app, path, body=None):
    """GET (or POST `body`) on the REST API; a GET of something not there yet is {}."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%d/api/v1%s" % (app.ports["http"], path),
                                 data=data, method="POST" if data else "GET",
                                 headers={"Content-Type": "application/json",
                                          "Authorization": "Bearer " + ADMIN_TOKEN})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 404 and data is None:
            return {}
        raise


def wait_api(probe, timeout=60.0, what="condition"):
    return wait_until(probe, timeout, what, interval=0.2)


@pytest.fixture
def central(tmp_path):
    from server.app import Application
    from server.config import load_config

    config = load_config(None, environ={}, overrides={
        "server.data_dir": str(tmp_path / "var"),
        "ocpp.host": "127.0.0.1", "ocpp.port": 0, "http.host": "127.0.0.1", "http.port": 0,
        "mqtt.embedded_port": 0, "ocpp.auto_register": True, "auth.admin_token": ADMIN_TOKEN,
    })
    app = Application(config).start()
    yield app
    app.stop()


@pytest.mark.dual_runtime
def test_the_central_system_serves_the_bundle_and_stores_the_diagnostics(
        central, board_factory, boards, runtime_name):
    # auto_register: the server stores the key the board presents first
    board = board_factory(board_config("ws://127.0.0.1:%d/ocpp" % central.ports["ocpp"]),
                          world=WORLD)
    boards.append(board)
    record = "/chargepoints/%s" % CP
    wait_api(lambda: api(central, record).get("ocpp", {}).get("online"), what="OCPP online")
    make_bundle(runtime_name, central.firmware.root / "v2", "2.0.0")
    bundle = [b for b in api(central, "/firmware") if b["name"] == "v2"][0]
    assert bundle["valid"] is True, bundle["problems"]
    api(central, record + "/UpdateFirmware",
        {"location": bundle["manifest_url"], "retrieveDate": iso(datetime.now(UTC))})
    info = wait_api(lambda: (lambda r: r if r["firmware_status"] in DONE else None)(
        api(central, record)), what="the update to finish")
    assert info["firmware_status"] == "Installed" and info["firmware_version"] == "2.0.0"
    events = api(central, record + "/events?kind=firmware_status")  # newest first
    assert [e["detail"]["status"] for e in reversed(events)] == [
        "Downloading", "Downloaded", "Installing", "Installed"]

    answer = api(central, record + "/GetDiagnostics",
                 {"location": "http://127.0.0.1:%d/diagnostics/%s" % (central.ports["http"], CP)})
    name = answer["result"]["fileName"]
    row = wait_api(lambda: [f for f in api(central, "/diagnostics?cp_id=" + CP)["files"]
                            if f["filename"] == name], what="the diagnostics file")[0]
    # the API names the file, the server's own table says where it lies (no path in the API)
    stored = [r for r in central.store.list_diagnostics_files(CP) if r["filename"] == row["filename"]]
    text = Path(stored[0]["path"]).read_text()
    assert text.startswith("PicoCharge diagnostics %s " % CP) and " firmware 2.0.0\n" in text
    assert "firmware: 2.0.0 committed" in text  # the log of the running firmware
    wait_api(lambda: api(central, record)["diagnostics_status"] == "Uploaded",
             what="DiagnosticsStatusNotification Uploaded")


def test_the_bundle_library_flags_what_the_firmware_would_refuse(tmp_path):
    from server.files import FirmwareLibrary, build_bundle

    library = FirmwareLibrary(tmp_path / "firmware")
    make_bundle("micropython", library.root / "good", "2.0.0")
    assert library.describe("good")["valid"] is True
    source = tmp_path / "src"
    (source / "lib" / "umqtt").mkdir(parents=True)
    (source / "lib" / "__pycache__").mkdir()
    (source / "main.py").write_text("print('x')\n")
    (source / "lib" / "umqtt" / "simple.mpy").write_bytes(b"M")
    (source / "lib" / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"x")
    manifest = build_bundle(source, library.root / "bad", "9" * 51)
    assert sorted(manifest["files"]) == ["lib/umqtt/simple.mpy", "main.py"]  # no __pycache__
    info = library.describe("bad")
    assert info["valid"] is False
    assert any(p.startswith("manifest.json: version") for p in info["problems"])
    assert any(p.startswith("lib/umqtt/simple.mpy: the firmware installs only") for p in info["problems"])
