"""Signed firmware bundles on the board: which Ed25519 keys it trusts, and what must be
verified for a bundle's `manifest.sig` to hold. Loaded only while a bundle is checked,
then dropped by ocpp_firmware, which runs the verifications with `ed25519` afterwards
(the two modules are never on the heap together).

    why, checks, learnt, notes = plan(config, flash, log, manifest_sha256, sig_path or None)
    # why: a refusal (string) or None; checks: [(public key, message, signature, why if
    # it does not verify)], all must verify; learnt: fw/keys.json to write once the
    # bundle's files are verified (a key rotation), else None; notes: log lines for then.

Trusted keys: config.json `firmware.keys` (Ed25519 public keys, 64 hex digits or
base64), plus keys learnt from rotations, minus keys retired by them. The board's trust
state only moves forward (`fw/keys.json`, written atomically): {"added": [hex], "retired":
[hex], "gen": the highest key generation learnt, "floor": the lowest security_version it
still installs}. A retired key never comes back, even through an endorsement that would
verify, and a rotation must carry a generation above the one the board has seen, so an
old endorsement (they are public, in every manifest.sig) cannot be replayed. With no key
at all every bundle is refused, unless `firmware.allow_unsigned` is true (a lab
shortcut): then a bundle without a signature is installed (a signature that is there
must still verify).

`manifest.sig` (JSON, docs/firmware.md): {"format": "picocharge-sig-1", "key": hex,
"sig": hex, "endorse": [{"key": hex, "by": hex, "retire": bool, "sig": hex}, ...]}.
`sig` signs MANIFEST_CONTEXT + SHA-256 of manifest.json's bytes; an endorsement
{"key", "by", "retire", "gen", "sig"}'s `sig`, by key `by`, signs ENDORSE_CONTEXT + new
key (32 bytes) + 0x01 if it retires `by` (else 0x00) + `gen` (4 bytes, big-endian, 1 and
up). Endorsements are applied in order, each by a key trusted at that point; one whose
generation the board has already seen changes nothing (skipped), and so does one whose
key is already trusted, unless it retires a key still trusted. Any check that fails
refuses the whole bundle, so the order of the checks does not matter.
"""

import binascii

MANIFEST_CONTEXT = b"PicoCharge firmware manifest v1\n"
ENDORSE_CONTEXT = b"PicoCharge key endorsement v2\n"
MAX_KEYS = 8  # trusted keys at most (config and learnt)
MAX_ENDORSE = 4
MAX_GEN = 0x7FFFFFFF
KEYS_FILE = "fw/keys.json"
NO_KEY = "no trusted key configured (firmware.keys)"


def decode_key(text):
    """A public key as 32 bytes from 64 hex digits or base64, else None."""
    try:
        raw = binascii.unhexlify(text) if len(text) == 64 else binascii.a2b_base64(text)
    except (ValueError, TypeError):
        return None
    return raw if len(raw) == 32 else None


def _hex(raw):
    return binascii.hexlify(raw).decode()


def _keys(texts):
    out = []
    for text in texts if isinstance(texts, list) else ():
        raw = decode_key(text)
        if raw is not None and raw not in out:
            out.append(raw)
    return out


def plan(config, flash, log, digest, sig_path):
    """(why, checks, learnt, notes): see the module doc."""
    fw = config.get("firmware") or {}
    configured = _keys(fw.get("keys"))
    if len(configured) != len(fw.get("keys") or ()):
        log("firmware: firmware.keys: an entry that is not an Ed25519 public key (64 hex "
            "digits or base64), or a duplicate, was ignored")
    known = state(flash)
    added = _keys(known.get("added"))
    retired = _keys(known.get("retired"))
    trusted = [k for k in configured + added if k not in retired]
    if sig_path is None:
        if fw.get("allow_unsigned") is True:
            log("firmware: WARNING installing an UNSIGNED bundle (firmware.allow_unsigned is on)")
            return None, [], None, []
        return ("the bundle is not signed (no manifest.sig)" if trusted
                else "no manifest.sig, and " + NO_KEY), [], None, []
    if not trusted and fw.get("allow_unsigned") is not True:
        return NO_KEY + ": every bundle is refused", [], None, []
    try:
        doc = flash.read_json(sig_path)
        endorse = doc.get("endorse", [])
        key = decode_key(doc["key"])
        sig = _sig(doc["sig"])
        if doc["format"] != "picocharge-sig-1" or not isinstance(endorse, list) \
                or len(endorse) > MAX_ENDORSE or key is None or sig is None:
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "manifest.sig is not a picocharge-sig-1 signature", [], None, []
    checks = []
    notes = []
    working = list(trusted)
    seen = [known.get("gen", 0)]  # the generation reached so far (a list: _endorsement moves it)
    for e in endorse:
        why = _endorsement(e, working, retired, seen, checks, notes)
        if why:
            return why, [], None, []
    if key not in working:
        return "signed by key %s, which this board does not trust" % _hex(key)[:16], [], None, []
    checks.append((key, MANIFEST_CONTEXT + digest, sig, "the signature by key %s does not verify "
                   "(manifest altered or signed by another key)" % _hex(key)[:16]))
    learnt = None
    if working != trusted or seen[0] != known.get("gen", 0):
        # retired only grows: every key retired before, and every one no longer trusted
        gone = [_hex(k) for k in retired]
        for k in configured + added:
            if k not in working and _hex(k) not in gone:
                gone.append(_hex(k))
        learnt = {"added": [_hex(k) for k in working if k not in configured], "retired": gone,
                  "gen": seen[0], "floor": known.get("floor", 0)}
    return None, checks, learnt, notes


def state(flash):
    """The board's trust state (fw/keys.json), {} when there is none yet; `gen` and
    `floor` are integers (0 when absent or not one)."""
    try:
        known = flash.read_json(KEYS_FILE)
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    for name in ("gen", "floor"):
        value = known.get(name, 0)
        known[name] = value if isinstance(value, int) and 0 <= value <= MAX_GEN else 0
    return known


def _sig(text):
    raw = binascii.unhexlify(text)
    return raw if len(raw) == 64 else None


def _endorsement(e, working, retired, seen, checks, notes):
    """Plan one key rotation (applied to `working`, `seen`); why it is refused, or None."""
    try:
        new = decode_key(e["key"])
        by = decode_key(e["by"])
        sig = _sig(e["sig"])
        retire = e.get("retire") is True
        gen = e.get("gen")
        if new is None or by is None or sig is None:
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        return "manifest.sig: malformed key rotation"
    if isinstance(gen, bool) or not isinstance(gen, int) or not 0 < gen <= MAX_GEN:
        return ("key rotation to %s has no key generation (made by an older tools.sign: "
                "make it again)" % _hex(new)[:16])
    if gen <= seen[0]:
        return None  # a generation this board has seen: nothing to learn from it again
    if new in retired:
        return "key rotation to %s refused: that key was retired on this board" % _hex(new)[:16]
    if new in working and not (retire and by in working):
        return None  # already known
    if by not in working:
        return "key rotation to %s signed by key %s, which this board does not trust" % (
            _hex(new)[:16], _hex(by)[:16])
    checks.append((by, ENDORSE_CONTEXT + new + (b"\x01" if retire else b"\x00")
                   + gen.to_bytes(4, "big"), sig,
                   "the key rotation to %s does not verify" % _hex(new)[:16]))
    if new not in working:
        if len(working) >= MAX_KEYS + retire:
            return "key rotation refused: more than %d trusted keys" % MAX_KEYS
        working.append(new)
    if retire:
        working.remove(by)
    seen[0] = gen
    notes.append("firmware: key %s endorsed by key %s%s (generation %d)" % (
        _hex(new)[:16], _hex(by)[:16], " (which it retires)" if retire else "", gen))
    return None
