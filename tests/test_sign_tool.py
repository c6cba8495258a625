"""tools/sign.py, the maker's side of signed firmware bundles: key files (mode 0600,
never overwritten, never printed, encrypted unless told otherwise), signing, the board's
rules applied on the host (`verify`), key rotation; and the bundle library's report of a
bundle's signature (server/files.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from server.files import FirmwareLibrary, build_bundle
from tools import sign

pytestmark = pytest.mark.unit  # pure: starts no process, board, broker or server


def bundle(root: Path, name: str = "b1") -> Path:
    src = root / ("src-" + name)
    (src / "lib").mkdir(parents=True)
    (src / "main.py").write_text("print('hello')\n")
    (src / "lib" / "app.py").write_text("VALUE = 1\n")
    build_bundle(src, root / name, "2.0.0")
    return root / name


def run(capsys, *argv) -> tuple[int, str, str]:
    code = sign.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def keygen(capsys, path: Path) -> str:
    code, out, err = run(capsys, "keygen", path, "--no-passphrase")
    assert code == 0, err
    return (Path(str(path) + ".pub")).read_text().strip()


def test_keygen_writes_a_private_key_only_its_owner_can_read_and_never_prints_it(tmp_path, capsys):
    key = tmp_path / "maker.key"
    code, out, err = run(capsys, "keygen", key, "--no-passphrase")
    assert code == 0, err
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pem = key.read_text()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    body = "".join(pem.splitlines()[1:-1])
    assert body not in out and "PRIVATE" not in out
    public = Path(str(key) + ".pub").read_text().strip()
    assert len(public) == 64 and public in out  # the public key is for the board's config
    # a key is never overwritten
    before = key.read_bytes()
    code, _, err = run(capsys, "keygen", key, "--no-passphrase")
    assert code == 2 and "never overwritten" in err and key.read_bytes() == before


def test_keygen_encrypts_the_key_unless_told_not_to(tmp_path, capsys, monkeypatch):
    code, _, err = run(capsys, "keygen", tmp_path / "a.key")  # no terminal, no passphrase given
    assert code == 2 and "--passphrase-env" in err and not (tmp_path / "a.key").exists()
    monkeypatch.setenv("MAKER_PASS", "correct horse")
    code, _, err = run(capsys, "keygen", tmp_path / "b.key", "--passphrase-env", "MAKER_PASS")
    assert code == 0, err
    assert "ENCRYPTED PRIVATE KEY" in (tmp_path / "b.key").read_text()
    code, out, _ = run(capsys, "pubkey", tmp_path / "b.key", "--passphrase-env", "MAKER_PASS")
    assert code == 0 and out.strip() == (tmp_path / "b.key.pub").read_text().strip()
    monkeypatch.setenv("MAKER_PASS", "wrong")
    code, _, err = run(capsys, "pubkey", tmp_path / "b.key", "--passphrase-env", "MAKER_PASS")
    assert code == 2 and "wrong passphrase" in err


def test_a_signed_bundle_verifies_and_any_change_is_refused(tmp_path, capsys):
    pub = keygen(capsys, tmp_path / "maker.key")
    other = keygen(capsys, tmp_path / "other.key")
    b = bundle(tmp_path)
    assert run(capsys, "verify", b, "--trust", pub)[0] == 1  # not signed yet
    assert run(capsys, "verify", b, "--trust", pub, "--allow-unsigned")[0] == 0
    code, _, err = run(capsys, "sign", b, "--key", tmp_path / "maker.key")
    assert code == 0, err
    doc = json.loads((b / "manifest.sig").read_text())
    assert doc["format"] == "picocharge-sig-1" and doc["key"] == pub and len(doc["sig"]) == 128
    code, out, _ = run(capsys, "verify", b, "--trust", pub)
    assert code == 0 and out.startswith("ok")
    code, out, _ = run(capsys, "verify", b, "--trust", other)
    assert code == 1 and "which is not trusted" in out
    (b / "lib" / "app.py").write_text("VALUE = 2\n")  # same size, other content
    code, out, _ = run(capsys, "verify", b, "--trust", pub)
    assert code == 1 and "lib/app.py: sha256 differs" in out
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["files"]["lib/app.py"]["sha256"] = sign.sha256_file(b / "lib" / "app.py")
    (b / "manifest.json").write_text(json.dumps(manifest))
    code, out, _ = run(capsys, "verify", b, "--trust", pub)
    assert code == 1 and "does not verify" in out and "sha256" not in out


def test_a_rotation_lets_boards_that_trust_the_old_key_take_bundles_of_the_new_one(tmp_path, capsys):
    old = keygen(capsys, tmp_path / "old.key")
    new = keygen(capsys, tmp_path / "new.key")
    b = bundle(tmp_path)
    run(capsys, "sign", b, "--key", tmp_path / "new.key")
    assert run(capsys, "verify", b, "--trust", old)[0] == 1
    code, _, err = run(capsys, "rotate", "--old", tmp_path / "old.key", "--new",
                       tmp_path / "new.key.pub", "--generation", "1", "--out", tmp_path / "rot.json")
    assert code == 0, err
    rotation = json.loads((tmp_path / "rot.json").read_text())
    assert (rotation["key"], rotation["by"], rotation["retire"], rotation["gen"]) == (new, old, True, 1)
    run(capsys, "sign", b, "--key", tmp_path / "new.key", "--endorsement", tmp_path / "rot.json")
    assert run(capsys, "verify", b, "--trust", old)[0] == 0
    assert run(capsys, "verify", b, "--trust", new)[0] == 0  # already rotated: skipped
    # an endorsement cannot be moved to another key: its signature covers the new key
    rotation["key"] = keygen(capsys, tmp_path / "third.key")
    (tmp_path / "moved.json").write_text(json.dumps(rotation))
    run(capsys, "sign", b, "--key", tmp_path / "third.key", "--endorsement", tmp_path / "moved.json")
    code, out, _ = run(capsys, "verify", b, "--trust", old)
    assert code == 1 and "does not verify" in out
    # a private key is not accepted where a public one is expected
    code, _, err = run(capsys, "rotate", "--old", tmp_path / "old.key", "--new",
                       tmp_path / "new.key", "--generation", "2", "--out", tmp_path / "x.json")
    assert code == 2 and "is a private key" in err


def test_the_bundle_library_serves_unsigned_bundles_and_says_which_are_signed(tmp_path, capsys):
    library = FirmwareLibrary(tmp_path / "firmware")
    pub = keygen(capsys, tmp_path / "maker.key")
    bundle(library.root, "signed")
    bundle(library.root, "unsigned")
    run(capsys, "sign", library.root / "signed", "--key", tmp_path / "maker.key")
    assert library.names() == ["signed", "unsigned"]
    assert library.describe("unsigned")["signature"] == {
        "signed": False, "key": None, "key_rotations": 0, "matches_manifest": False}
    assert library.describe("unsigned")["valid"] is True  # served: the board decides
    info = library.describe("signed")["signature"]
    assert info == {"signed": True, "key": pub, "key_rotations": 0, "matches_manifest": True}
    manifest = library.root / "signed" / "manifest.json"
    manifest.write_text(manifest.read_text().replace("2.0.0", "2.0.1"))
    assert library.describe("signed")["signature"]["matches_manifest"] is False
    (library.root / "signed" / "manifest.sig").write_text("{not json")
    assert library.describe("signed")["signature"]["signed"] is True
    assert library.describe("signed")["signature"]["matches_manifest"] is False


@pytest.mark.parametrize("text", ["", "00" * 31, "zz" * 32, "not base64!"])
def test_bad_public_keys_get_a_clear_error(text):
    with pytest.raises(sign.SignError, match="not an Ed25519 public key"):
        sign.parse_public(text)


def test_bundle_makes_a_signed_bundle_from_a_firmware_build(tmp_path, capsys):
    pub = keygen(capsys, tmp_path / "maker.key")
    build = tmp_path / "build"
    (build / "lib").mkdir(parents=True)
    (build / "main.py").write_text("print('x')\n")
    (build / "lib" / "app.mpy").write_bytes(b"M\x06")
    code, out, err = run(capsys, "bundle", build, tmp_path / "v2", "--version", "2.0.0",
                         "--key", tmp_path / "maker.key")
    assert code == 0, err
    manifest = json.loads((tmp_path / "v2" / "manifest.json").read_text())
    assert manifest["version"] == "2.0.0" and sorted(manifest["files"]) == ["lib/app.mpy", "main.py"]
    assert run(capsys, "verify", tmp_path / "v2", "--trust", pub)[0] == 0
    code, _, err = run(capsys, "bundle", build, tmp_path / "v2", "--version", "2.0.1")
    assert code == 2 and "never overwritten" in err
