"""firmware/lib/ed25519.py, the board's Ed25519 verification, against RFC 8032's test
vectors (section 7.1) and against the `cryptography` package, on CPython and on the
MicroPython Unix port (the modules compiled to .mpy as a board loads them).
firmware/lib/sha512.py, the pure-Python SHA-512 it uses where hashlib has none (as on
MicroPython), against hashlib's on both runtimes."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fwkit import firmware_module

from tools.board import FIRMWARE, MICROPYTHON, check_micropython, compiled

ed25519 = firmware_module("ed25519")  # the firmware modules, on CPython
sha512 = firmware_module("sha512")

L = 2**252 + 27742317777372353535851937790883648493

# RFC 8032 7.1: (secret key, public key, message, signature), hex
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
     "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
     "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
     "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    ("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
     "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
     "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"),
]


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


def cases() -> list[tuple[str, bytes, bytes, bytes, bool]]:
    """(what, public key, message, signature, valid?) — the RFC vectors, random keys and
    messages signed by `cryptography`, and each of them altered."""
    rng = random.Random(8032)
    out = []
    for n, (_, pub, msg, sig) in enumerate(RFC8032, 1):
        out.append(("rfc8032 test %d" % n, bytes.fromhex(pub), bytes.fromhex(msg), bytes.fromhex(sig), True))
    for n in range(12):
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        msg = rng.randbytes(rng.choice([0, 1, 31, 32, 33, 64, 100, 200]))
        out.append(("random %d" % n, raw_public(key), msg, key.sign(msg), True))
    valid = [c for c in out if c[4]]
    for what, pub, msg, sig, _ in valid[:8]:
        out.append((what + ", R altered", pub, msg, flip(sig, 3), False))
        out.append((what + ", S altered", pub, msg, flip(sig, 40), False))
        out.append((what + ", message altered", pub, msg + b"!", sig, False))
        out.append((what + ", other key", flip(pub, 0), msg, sig, False))
        # S + L: the same point, a malleated signature RFC 8032 says to refuse (S < L)
        s = int.from_bytes(sig[32:], "little") + L
        out.append((what + ", S + L", pub, msg, sig[:32] + s.to_bytes(32, "little"), False))
    what, pub, msg, sig, _ = valid[0]
    out.append(("public key of wrong length", pub[:31], msg, sig, False))
    out.append(("signature of wrong length", pub, msg, sig[:63], False))
    # y = 2^255 - 1 >= p: a non-canonical encoding RFC 8032 5.1.3 refuses
    out.append(("y >= p in the public key", (2**255 - 1).to_bytes(32, "little"), msg, sig, False))
    return out


def test_the_rfc8032_vectors_are_those_cryptography_computes():
    for secret, pub, msg, sig in RFC8032:
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
        assert raw_public(key).hex() == pub
        assert key.sign(bytes.fromhex(msg)).hex() == sig


def test_verify_agrees_with_rfc8032_and_cryptography_on_cpython():
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    for what, pub, msg, sig, valid in cases():
        assert ed25519.verify(pub, msg, sig) is valid, what
        if len(pub) == 32 and len(sig) == 64 and what != "y >= p in the public key":
            try:
                Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
                theirs = True
            except (InvalidSignature, ValueError):
                theirs = False
            assert theirs is valid, what  # the expectation is cryptography's too


def test_the_verifier_yields_while_it_works_and_gives_its_verdict_last():
    _, pub, msg, sig = RFC8032[0]
    steps = list(ed25519.verifier(bytes.fromhex(pub), bytes.fromhex(msg), bytes.fromhex(sig), 4))
    # after the key's decoding, after the hash, every 4 of the 253 bits, then the verdict
    assert steps[-1] is True and set(steps[:-1]) == {None} and len(steps) == 2 + 64 + 1
    bad = list(ed25519.verifier(bytes.fromhex(pub), b"x", bytes.fromhex(sig), 4))
    assert bad[-1] is False


def test_the_pure_sha512_matches_hashlib_on_cpython():
    for n in list(range(0, 260)) + [1000, 4096]:
        data = os.urandom(n)
        assert sha512.digest(data) == hashlib.sha512(data).digest(), n


MP_SCRIPT = r"""
import json, binascii, sys
import ed25519, sha512
cases = json.load(open('cases.json'))
for what, pub, msg, sig in cases['verify']:
    u = binascii.unhexlify
    print('VERIFY', json.dumps([what, ed25519.verify(u(pub), u(msg), u(sig))]))
for data in cases['sha']:
    print('SHA', binascii.hexlify(sha512.digest(binascii.unhexlify(data))).decode())
import hashlib
print('NATIVE_SHA512', hasattr(hashlib, 'sha512'))
"""


def test_verify_and_sha512_agree_with_cpython_on_the_micropython_unix_port(tmp_path: Path):
    check_micropython()  # a missing or stale build fails (saying how to build it), never skips
    all_cases = cases()
    shas = [os.urandom(n) for n in (0, 1, 55, 111, 112, 127, 128, 129, 200, 255, 256, 300)]
    (tmp_path / "cases.json").write_text(json.dumps({
        "verify": [[w, p.hex(), m.hex(), s.hex()] for w, p, m, s, _ in all_cases],
        "sha": [d.hex() for d in shas]}))
    for name in ("ed25519", "sha512"):
        shutil.copyfile(compiled(FIRMWARE / "lib" / (name + ".py")), tmp_path / (name + ".mpy"))
    out = subprocess.run([str(MICROPYTHON), "-X", "heapsize=192K", "-c", MP_SCRIPT],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, MICROPYPATH=""))
    assert out.returncode == 0, out.stdout + out.stderr
    verdicts = [json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("VERIFY ")]
    assert [w for w, _ in verdicts] == [c[0] for c in all_cases]
    for (what, got), case in zip(verdicts, all_cases):
        assert got is case[4], what
    digests = [line[4:] for line in out.stdout.splitlines() if line.startswith("SHA ")]
    assert digests == [hashlib.sha512(d).hexdigest() for d in shas]
    # the reason the module carries its own SHA-512 (the rp2 port's hashlib has none either)
    assert "NATIVE_SHA512 False" in out.stdout
