"""firmware/lib/firmware_trust.py: a `firmware.keys` entry that is not a 32-byte Ed25519
key in hex or base64 (a number, a list, a short string) is ignored (what the deploy check
warns about), never a crash at boot."""

from __future__ import annotations

import pytest

from tests.unit.fwimport import load

pytestmark = pytest.mark.unit

trust = load("firmware_trust")


@pytest.mark.parametrize("entry", [5, None, ["ab"], {"k": 1}, "", "abcd", "z" * 64])
def test_an_entry_that_is_no_key_is_ignored(entry):
    assert trust.decode_key(entry) is None


def test_a_key_in_hex_or_base64_is_its_32_bytes():
    raw = bytes(range(32))
    assert trust.decode_key(raw.hex()) == raw
    assert trust.decode_key("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=") == raw
