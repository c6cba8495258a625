"""firmware/lib/firmware_trust.py (which keys a board trusts, what must verify) and the
`firmware` section of the board config, on CPython: the parts the end-to-end tests in
test_firmware_update.py do not reach (key encodings, bad entries, the key limit)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fwkit import MAKER, MAKER_PUB, OTHER, firmware_module

from tools.sign import endorse, public_hex, sign_bundle

board_config = firmware_module("config")
firmware_trust = firmware_module("firmware_trust")
Flash = firmware_module("storage").Flash

DIGEST = hashlib.sha256(b'{"version": "2.0.0", "files": {}}').digest()


@pytest.fixture
def flash(tmp_path):
    (tmp_path / "fw").mkdir()
    (tmp_path / "manifest.json").write_bytes(b'{"version": "2.0.0", "files": {}}')
    return Flash(str(tmp_path))


def plan(flash, fw, endorsements=(), key=MAKER):
    sign_bundle(flash.path(""), key, endorsements)
    lines = []
    out = firmware_trust.plan({"firmware": fw}, flash, lines.append, DIGEST, "manifest.sig")
    return out, lines


def test_a_key_in_base64_is_trusted_like_its_hex(flash):
    b64 = base64.b64encode(bytes.fromhex(MAKER_PUB)).decode()
    (why, checks, learnt, notes), lines = plan(flash, {"keys": [b64]})
    assert why is None and lines == [] and learnt is None
    assert [c[0].hex() for c in checks] == [MAKER_PUB]
    assert checks[0][1] == firmware_trust.MANIFEST_CONTEXT + DIGEST


def test_a_bad_key_entry_is_logged_and_ignored(flash):
    (why, checks, _, _), lines = plan(flash, {"keys": ["not-a-key", MAKER_PUB[:-2]]})
    assert why == "no trusted key configured (firmware.keys): every bundle is refused"
    assert checks == [] and len(lines) == 1 and "was ignored" in lines[0]


def test_a_rotation_past_the_key_limit_is_refused(flash):
    spare = [public_hex(Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)) for n in range(1, 8)]
    fw = {"keys": [MAKER_PUB] + spare}  # 8 keys: the limit
    (why, checks, _, _), _ = plan(flash, fw, [endorse(MAKER, bytes.fromhex(public_hex(OTHER)),
                                                      retire=False)], key=OTHER)
    assert why == "key rotation refused: more than 8 trusted keys" and checks == []
    # retiring the old key makes room
    (why, checks, learnt, notes), _ = plan(flash, fw, [endorse(MAKER, bytes.fromhex(public_hex(OTHER)))],
                                           key=OTHER)
    assert why is None and len(checks) == 2
    assert learnt == {"added": [public_hex(OTHER)], "retired": [MAKER_PUB]}
    assert notes == ["firmware: key %s endorsed by key %s (which it retires)" % (
        public_hex(OTHER)[:16], MAKER_PUB[:16])]


def test_learnt_and_retired_keys_on_flash_count(flash):
    flash.write_json("fw/keys.json", {"added": [public_hex(OTHER)], "retired": [MAKER_PUB]})
    (why, _, _, _), _ = plan(flash, {"keys": [MAKER_PUB]})
    assert why == "signed by key %s, which this board does not trust" % MAKER_PUB[:16]
    (why, checks, learnt, _), _ = plan(flash, {"keys": [MAKER_PUB]}, key=OTHER)
    assert why is None and checks[0][0].hex() == public_hex(OTHER) and learnt is None


def test_a_malformed_signature_file_is_refused_with_a_reason(flash):
    sign_bundle(flash.path(""), MAKER)
    for doc in ({"format": "other"}, {"format": "picocharge-sig-1", "key": MAKER_PUB, "sig": "zz"},
                [1, 2], {"format": "picocharge-sig-1", "key": MAKER_PUB, "sig": "00" * 64,
                         "endorse": "x"}):
        Path(flash.path("manifest.sig")).write_text(json.dumps(doc))
        why = firmware_trust.plan({"firmware": {"keys": [MAKER_PUB]}}, flash, print, DIGEST,
                                  "manifest.sig")[0]
        assert why == "manifest.sig is not a picocharge-sig-1 signature", doc


@pytest.mark.parametrize("section, message", [
    ("keys", "firmware must be an object or absent"),
    ({"keys": "abc"}, "firmware.keys must be a list"),
    ({"allow_unsigned": "yes"}, "firmware.allow_unsigned must be true or false"),
])
def test_the_board_config_refuses_a_firmware_section_it_cannot_use(section, message):
    cfg = board_config.merge(board_config.DEFAULTS, {"firmware": section})
    with pytest.raises(board_config.ConfigError, match=message):
        board_config.validate(cfg)
