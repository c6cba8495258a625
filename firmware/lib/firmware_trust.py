"""Signed firmware bundles on the board: which Ed25519 keys it trusts, and what must be
verified for a bundle's `manifest.sig` to hold. Loaded only while a bundle is checked,
then dropped by ocpp_firmware, which runs the verifications with `ed25519` afterwards
(the two modules are never on the heap together).

    why, checks, learnt, notes = plan(config, flash, log, manifest_sha256, sig_path or None)
    # why: a refusal (string) or None; checks: [(public key, message, signature, why if
    # it does not verify)], all must verify; learnt: fw/keys.json to write once the
    # bundle's files are verified (a key rotation), else None; notes: log lines for then.

Trusted keys: config.json `firmware.keys` (Ed25519 public keys, 64 hex digits or
base64), plus keys learnt from rotations, minus keys retired by them (`fw/keys.json`:
{"added": [hex], "retired": [hex]}, written atomically). With no key at all every bundle
is refused, unless `firmware.allow_unsigned` is true (a lab shortcut): then a bundle
without a signature is installed (a signature that is there must still verify).

`manifest.sig` (JSON, docs/firmware.md): {"format": "picocharge-sig-1", "key": hex,
"sig": hex, "endorse": [{"key": hex, "by": hex, "retire": bool, "sig": hex}, ...]}.
`sig` signs MANIFEST_CONTEXT + SHA-256 of manifest.json's bytes; an endorsement's `sig`,
by key `by`, signs ENDORSE_CONTEXT + new key (32 bytes) + 0x01 if it retires `by` (else
0x00). Endorsements are applied in order, each by a key trusted at that point; one whose
key is already trusted is skipped (nothing to learn) unless it retires a key still
trusted. Any check that fails refuses the whole bundle, so the order of the checks does
not matter.
"""

import binascii

MANIFEST_CONTEXT = b"PicoCharge firmware manifest v1\n"
ENDORSE_CONTEXT = b"PicoCharge key endorsement v1\n"
MAX_KEYS = 8  # trusted keys at most (config and learnt)
MAX_ENDORSE = 4
KEYS_FILE = "fw/keys.json"


def decode_key(text):
    """A public key as 32 bytes from 64 hex digits or base64, else None."""
    if not isinstance(text, str):
        return None
    try:
        raw = binascii.unhexlify(text) if len(text) == 64 else binascii.a2b_base64(text)
    except (ValueError, TypeError):
        return None
    return raw if len(raw) == 32 else None


def hexkey(raw):
    return binascii.hexlify(raw).decode()


def short(raw):
    """A key in log lines: its first 16 hex digits."""
    return hexkey(raw)[:16]


def _sig(text):
    try:
        raw = binascii.unhexlify(text) if isinstance(text, str) else b""
    except ValueError:
        return None
    return raw if len(raw) == 64 else None


class Trust:
    def __init__(self, config, flash, log):
        fw = config.get("firmware") or {}
        self.flash = flash
        self.log = log
        self.allow_unsigned = fw.get("allow_unsigned") is True
        self.configured = []
        for text in fw.get("keys") or ():
            raw = decode_key(text)
            if raw is None:
                log("firmware: firmware.keys entry %r ignored: not an Ed25519 public key "
                    "(64 hex digits or base64)" % (str(text)[:24],))
            elif raw not in self.configured:
                self.configured.append(raw)
        try:
            known = flash.read_json(KEYS_FILE)
        except (OSError, ValueError):
            known = {}
        self.added = [k for k in (decode_key(t) for t in known.get("added", ())) if k]
        self.retired = [k for k in (decode_key(t) for t in known.get("retired", ())) if k]
        self.trusted = [k for k in self.configured + self.added if k not in self.retired]
        self.learnt = None

    def plan(self, digest, sig_path):
        """(why refused or None, checks, learnt, notes): see the module doc."""
        checks = []
        notes = []
        if sig_path is None:
            if self.allow_unsigned:
                self.log("firmware: WARNING installing an UNSIGNED bundle "
                         "(firmware.allow_unsigned is on)")
                return None, checks, None, notes
            if not self.trusted:
                return "no manifest.sig, and no trusted key configured (firmware.keys)", checks, None, notes
            return "the bundle is not signed (no manifest.sig)", checks, None, notes
        if not self.trusted and not self.allow_unsigned:
            return "no trusted key configured (firmware.keys): every bundle is refused", checks, None, notes
        try:
            doc = self.flash.read_json(sig_path)
        except (OSError, ValueError):
            return "manifest.sig is not valid JSON", checks, None, notes
        endorse = doc.get("endorse", []) if isinstance(doc, dict) else None
        if not isinstance(doc, dict) or doc.get("format") != "picocharge-sig-1" \
                or not isinstance(endorse, list) or len(endorse) > MAX_ENDORSE:
            return "manifest.sig is not in the picocharge-sig-1 format", checks, None, notes
        key = decode_key(doc.get("key"))
        sig = _sig(doc.get("sig"))
        if key is None or sig is None:
            return "manifest.sig: bad key or sig", checks, None, notes
        working = list(self.trusted)
        for e in endorse:
            why = self._endorsement(e, working, checks, notes)
            if why:
                return why, checks, None, notes
        if key not in working:
            return "signed by key %s, which this board does not trust" % short(key), checks, None, notes
        checks.append((key, MANIFEST_CONTEXT + digest, sig,
                       "the signature by key %s does not verify (manifest altered or signed "
                       "by another key)" % short(key)))
        learnt = None
        if working != self.trusted:
            retired = []
            for k in self.configured + self.added + self.retired:
                if k not in working and hexkey(k) not in retired:
                    retired.append(hexkey(k))
            learnt = {"added": [hexkey(k) for k in working if k not in self.configured],
                      "retired": retired}
        return None, checks, learnt, notes

    def _endorsement(self, e, working, checks, notes):
        """Plan one key rotation (applied to `working`); why it is refused, or None."""
        new = decode_key(e.get("key")) if isinstance(e, dict) else None
        by = decode_key(e.get("by")) if new else None
        sig = _sig(e.get("sig")) if by else None
        if sig is None:
            return "manifest.sig: malformed key rotation"
        retire = e.get("retire") is True
        if new in working and not (retire and by in working):
            return None  # already known
        if by not in working:
            return "key rotation to %s signed by key %s, which this board does not trust" % (
                short(new), short(by))
        checks.append((by, ENDORSE_CONTEXT + new + (b"\x01" if retire else b"\x00"), sig,
                       "the key rotation to %s does not verify" % short(new)))
        if new not in working:
            if len(working) >= MAX_KEYS + (1 if retire else 0):
                return "key rotation refused: more than %d trusted keys" % MAX_KEYS
            working.append(new)
        if retire:
            working.remove(by)
        notes.append("firmware: key %s endorsed by key %s%s" % (
            short(new), short(by), " (which it retires)" if retire else ""))
        return None


def plan(config, flash, log, digest, sig_path):
    return Trust(config, flash, log).plan(digest, sig_path)
