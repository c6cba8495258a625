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
    assert learnt == {"added": [public_hex(OTHER)], "retired": [MAKER_PUB], "gen": 1, "floor": 0}
    assert notes == ["firmware: key %s endorsed by key %s (which it retires) (generation 1)" % (
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


# -- a monotonic trust state: retired keys stay retired, old rotations cannot be replayed ----
K2 = Ed25519PrivateKey.from_private_bytes(bytes([42]) * 32)
K3 = Ed25519PrivateKey.from_private_bytes(bytes([43]) * 32)


def raw(key):
    return bytes.fromhex(public_hex(key))


def learn(flash, fw, endorsements, key):
    """Plan a bundle and, as ocpp_firmware does once its files verify, keep what it taught."""
    (why, checks, learnt, notes), _ = plan(flash, fw, endorsements, key=key)
    assert why is None, why
    if learnt is not None:
        flash.write_json("fw/keys.json", learnt)
    return checks


def test_a_replayed_old_rotation_does_not_bring_a_retired_key_back(flash):
    """The review's attack: MAKER ⇒ K2 (keeping MAKER), later K2 ⇒ K3 retiring K2; whoever
    holds K2 replays the public MAKER ⇒ K2 endorsement with a bundle signed by K2."""
    fw = {"keys": [MAKER_PUB]}
    first = endorse(MAKER, raw(K2), retire=False, generation=1)
    learn(flash, fw, [first], key=K2)
    learn(flash, fw, [endorse(K2, raw(K3), generation=2)], key=K3)
    assert flash.read_json("fw/keys.json") == {
        "added": [public_hex(K3)], "retired": [public_hex(K2)], "gen": 2, "floor": 0}
    (why, checks, learnt, _), _ = plan(flash, fw, [first], key=K2)
    assert why == "signed by key %s, which this board does not trust" % public_hex(K2)[:16]
    assert checks == [] and learnt is None
    # nor with a fresh generation: a retired key never comes back, whoever vouches for it
    (why, _, _, _), _ = plan(flash, fw, [endorse(MAKER, raw(K2), retire=False, generation=3)],
                             key=K2)
    assert why == "key rotation to %s refused: that key was retired on this board" % (
        public_hex(K2)[:16])
    # and the host tool says the same as the board
    from tools.sign import check_bundle
    sign_bundle(flash.path(""), K2, [first])
    assert check_bundle(Path(flash.path("")), [raw(MAKER)], state=flash.read_json("fw/keys.json")) \
        == ["signed by key %s, which is not trusted" % public_hex(K2)[:16]]


def test_a_rotation_must_be_of_a_newer_generation_than_the_board_has_seen(flash):
    fw = {"keys": [MAKER_PUB]}
    learn(flash, fw, [endorse(MAKER, raw(K2), retire=False, generation=5)], key=K2)
    # generation 5 again, or 4, teaches nothing: K3 stays unknown
    for generation in (4, 5):
        (why, _, _, _), _ = plan(flash, fw, [endorse(MAKER, raw(K3), retire=False,
                                                     generation=generation)], key=K3)
        assert why == "signed by key %s, which this board does not trust" % public_hex(K3)[:16]
    checks = learn(flash, fw, [endorse(MAKER, raw(K3), retire=False, generation=6)], key=K3)
    assert len(checks) == 2 and flash.read_json("fw/keys.json")["gen"] == 6


def test_a_rotation_without_a_generation_is_refused_with_what_to_do(flash):
    old_style = endorse(MAKER, raw(K2))
    del old_style["gen"]
    (why, checks, _, _), _ = plan(flash, {"keys": [MAKER_PUB]}, [old_style], key=K2)
    assert why == ("key rotation to %s has no key generation (made by an older tools.sign: "
                   "make it again)" % public_hex(K2)[:16]) and checks == []
    # and the generation is signed: changing it breaks the endorsement
    moved = endorse(MAKER, raw(K2), generation=1)
    moved["gen"] = 7
    (why, checks, _, _), _ = plan(flash, {"keys": [MAKER_PUB]}, [moved], key=K2)
    assert why is None and checks[0][1].endswith((7).to_bytes(4, "big"))
    from tools.sign import signature_problem
    sign_bundle(flash.path(""), K2, [moved])
    assert signature_problem(json.loads(Path(flash.path("manifest.sig")).read_text()),
                             Path(flash.path("manifest.json")).read_bytes(), [raw(MAKER)]) \
        == "the key rotation to %s does not verify" % public_hex(K2)[:16]
