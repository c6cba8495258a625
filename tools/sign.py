"""Sign firmware bundles with Ed25519 (the maker's offline key), verify them as a board
does, rotate keys.

    python -m tools.sign keygen maker.key            # private key (mode 0600) + maker.key.pub
    python -m tools.sign pubkey maker.key            # the public key, for firmware.keys
    python -m tools.sign bundle build/firmware var/firmware/v2 --version 2.0.0 [--key maker.key]
                                                   [--security-version N]
    python -m tools.sign sign BUNDLE_DIR --key maker.key [--endorsement rot.json ...]
    python -m tools.sign verify BUNDLE_DIR --trust HEX [--trust HEX ...] [--allow-unsigned]
    python -m tools.sign rotate --old old.key --new new.key.pub --generation N --out rot.json [--keep-old]

The private key is a PKCS#8 PEM file, encrypted with a passphrase (asked on the terminal,
or read from the environment variable named by `--passphrase-env`); `--no-passphrase`
writes it unencrypted (a test or lab key). It is created with mode 0600, never
overwritten, never printed. Public keys are printed and stored as 64 hex digits.

`bundle` copies a firmware build (`make firmware` writes `build/firmware/`) into a bundle
directory with its manifest (`server.files.build_bundle`), signed when `--key` is given.
`sign` writes `manifest.sig` next to the bundle's `manifest.json` (format
`picocharge-sig-1`, see docs/firmware.md and firmware/lib/firmware_trust.py): an Ed25519
signature of MANIFEST_CONTEXT + SHA-256(manifest.json bytes), plus any key rotations
(endorsements) given. `rotate` makes such an endorsement: the old key signs
ENDORSE_CONTEXT + new public key + 0x01 (the old key is retired on the boards that accept
it) or 0x00 (`--keep-old`) + the key generation (4 bytes, big-endian). Generations count
the maker's rotations, 1 for the first: a board refuses a rotation of a generation it has
already seen, so the old endorsements, public in every manifest.sig, cannot be replayed,
and a retired key never comes back. Ship it with every bundle signed by the new key until
every board has taken one of them.

`--security-version N` (bundle) writes N into the manifest: a board that installed a
signed bundle of version N refuses every bundle below it (anti-rollback). Raise it with a
release that fixes a vulnerability.

`verify` applies the board's rules (firmware_trust.Trust) with the `cryptography`
package: trusted keys, endorsements in order, the signature, then each listed file's
size and SHA-256. Exit status 0 when a board trusting those keys would install it.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import sys
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from server.files import (
    ENDORSE_CONTEXT,
    MANIFEST_CONTEXT,
    MAX_VERSION,
    SIGNATURE_FILE,
    SIGNATURE_FORMAT,
    build_bundle,
    firmware_path_problem,
    sha256_file,
)

MAX_ENDORSE = 4


class SignError(Exception):
    """A clear, user-facing failure (bad key file, bad bundle, refused signature)."""


# -- keys ------------------------------------------------------------------------------

def public_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def parse_public(text: str) -> bytes:
    """64 hex digits or base64 (what a board's firmware.keys accepts) -> 32 bytes."""
    import base64
    import binascii

    text = text.strip()
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise SignError(f"not an Ed25519 public key (64 hex digits or base64): {text[:24]!r}")
    return raw


def write_private_key(path: Path, key: Ed25519PrivateKey, passphrase: bytes | None) -> None:
    """PKCS#8 PEM, mode 0600 from the start (O_EXCL: never overwrites a key)."""
    encryption = (serialization.BestAvailableEncryption(passphrase) if passphrase
                  else serialization.NoEncryption())
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             encryption)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SignError(f"{path} exists: a key is never overwritten") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def load_private_key(path: Path, passphrase: bytes | None) -> Ed25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SignError(f"cannot read the key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError:
        raise SignError(f"{path} is encrypted: give its passphrase") from None
    except ValueError:
        raise SignError(f"{path}: not a PEM private key, or a wrong passphrase") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignError(f"{path} is not an Ed25519 key")
    return key


def key_is_encrypted(path: Path) -> bool:
    return b"ENCRYPTED" in Path(path).read_bytes()[:64]


def load_public(text_or_path: str) -> bytes:
    """A public key given as hex/base64 text, as a .pub file, or as a private key file."""
    path = Path(text_or_path)
    if path.is_file():
        content = path.read_text(errors="replace").strip()
        if "PRIVATE KEY" in content:
            raise SignError(f"{path} is a private key: give its public key ({path}.pub)")
        return parse_public(content.split()[0] if content else "")
    return parse_public(text_or_path)


# -- signatures --------------------------------------------------------------------------

def manifest_message(manifest_bytes: bytes) -> bytes:
    return MANIFEST_CONTEXT + hashlib.sha256(manifest_bytes).digest()


MAX_GENERATION = 0x7FFFFFFF


def endorsement_message(new_public: bytes, retire: bool, generation: int) -> bytes:
    return (ENDORSE_CONTEXT + new_public + (b"\x01" if retire else b"\x00")
            + generation.to_bytes(4, "big"))


def endorse(old: Ed25519PrivateKey, new_public: bytes, retire: bool = True,
            generation: int = 1) -> dict:
    """The old key vouches for the new one, of key generation `generation` (1 for the
    first rotation, one more for each after it), and retires itself unless `retire` is
    False."""
    if isinstance(generation, bool) or not isinstance(generation, int) \
            or not 0 < generation <= MAX_GENERATION:
        raise SignError(f"the key generation must be 1 to {MAX_GENERATION}")
    return {"key": new_public.hex(), "by": public_hex(old), "retire": retire, "gen": generation,
            "sig": old.sign(endorsement_message(new_public, retire, generation)).hex()}


def sign_bundle(bundle: Path, key: Ed25519PrivateKey, endorsements=()) -> dict:
    """Write `<bundle>/manifest.sig` for the manifest as it is now; returns its content."""
    bundle = Path(bundle)
    try:
        manifest = (bundle / "manifest.json").read_bytes()
    except OSError:
        raise SignError(f"{bundle}: no manifest.json (build the bundle first)") from None
    endorsements = list(endorsements)
    if len(endorsements) > MAX_ENDORSE:
        raise SignError(f"at most {MAX_ENDORSE} key rotations per bundle")
    doc = {"format": SIGNATURE_FORMAT, "key": public_hex(key),
           "sig": key.sign(manifest_message(manifest)).hex()}
    if endorsements:
        doc["endorse"] = endorsements
    tmp = bundle / (SIGNATURE_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, bundle / SIGNATURE_FILE)
    return doc


def _verifies(public: bytes, message: bytes, signature_hex) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(bytes.fromhex(signature_hex), message)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def check_bundle(bundle: Path, trusted: list[bytes], allow_unsigned: bool = False,
                 state: dict | None = None) -> list[str]:
    """What a board trusting `trusted`, with trust state `state` (its fw/keys.json:
    retired keys, the key generation and security version seen), would say: [] if it
    installs the bundle, else the reasons it refuses it (the board stops at the first)."""
    bundle = Path(bundle)
    state = state or {}
    try:
        manifest_bytes = (bundle / "manifest.json").read_bytes()
        manifest = json.loads(manifest_bytes)
    except (OSError, ValueError) as exc:
        return [f"manifest.json: {exc}"]
    sig_path = bundle / SIGNATURE_FILE
    problems = []
    if not sig_path.is_file():
        if not allow_unsigned:
            problems.append("the bundle is not signed (no manifest.sig)")
    else:
        try:
            doc = json.loads(sig_path.read_text())
        except ValueError:
            doc = None
        problem = signature_problem(doc, manifest_bytes, trusted, state)
        if problem:
            problems.append(problem)
    security = manifest.get("security_version", 0) if isinstance(manifest, dict) else 0
    if isinstance(security, bool) or not isinstance(security, int) or security < 0:
        problems.append("bad manifest: security_version")
    elif security < state.get("floor", 0):
        problems.append(f"security version {security} is below the board's {state['floor']} "
                        "(anti-rollback)")
    files = manifest.get("files") if isinstance(manifest, dict) else None
    for relative, entry in (files or {}).items():
        path = bundle / relative
        if not path.is_file():
            problems.append(f"{relative}: missing")
        elif not isinstance(entry, dict) or entry.get("size") != path.stat().st_size:
            problems.append(f"{relative}: size differs from the manifest's")
        elif sha256_file(path) != entry.get("sha256"):
            problems.append(f"{relative}: sha256 differs from the manifest's")
    return problems


def signature_problem(doc, manifest_bytes: bytes, trusted: list[bytes],
                      state: dict | None = None) -> str | None:
    """The board's rule for one manifest.sig (firmware/lib/firmware_trust.py `plan`)."""
    state = state or {}
    if not isinstance(doc, dict) or doc.get("format") != SIGNATURE_FORMAT:
        return f"manifest.sig is not in the {SIGNATURE_FORMAT} format"
    endorsements = doc.get("endorse", [])
    if not isinstance(endorsements, list) or len(endorsements) > MAX_ENDORSE:
        return f"manifest.sig is not in the {SIGNATURE_FORMAT} format"
    retired = [bytes.fromhex(k) for k in state.get("retired", [])]
    working = [k for k in trusted if k not in retired]
    seen = state.get("gen", 0)
    for e in endorsements:
        try:
            new, by = parse_public(e["key"]), parse_public(e["by"])
        except (SignError, KeyError, TypeError, AttributeError):
            return "manifest.sig: malformed key rotation"
        retire = e.get("retire") is True
        generation = e.get("gen")
        if isinstance(generation, bool) or not isinstance(generation, int) \
                or not 0 < generation <= MAX_GENERATION:
            return (f"key rotation to {new.hex()[:16]} has no key generation (made by an older "
                    "tools.sign: make it again)")
        if generation <= seen:
            continue
        if new in retired:
            return f"key rotation to {new.hex()[:16]} refused: that key was retired"
        if new in working and not (retire and by in working):
            continue
        if by not in working:
            return f"key rotation to {new.hex()[:16]} signed by key {by.hex()[:16]}, which is not trusted"
        if not _verifies(by, endorsement_message(new, retire, generation), e.get("sig")):
            return f"the key rotation to {new.hex()[:16]} does not verify"
        if new not in working:
            working.append(new)
        if retire:
            working.remove(by)
        seen = generation
    try:
        key = parse_public(doc.get("key") or "")
    except SignError:
        return "manifest.sig: bad key"
    if key not in working:
        return f"signed by key {key.hex()[:16]}, which is not trusted"
    if not _verifies(key, manifest_message(manifest_bytes), doc.get("sig")):
        return f"the signature by key {key.hex()[:16]} does not verify"
    return None


# -- command line ----------------------------------------------------------------------

def passphrase_for(args, new: bool) -> bytes | None:
    if getattr(args, "no_passphrase", False):
        return None
    if args.passphrase_env:
        value = os.environ.get(args.passphrase_env)
        if not value:
            raise SignError(f"the environment variable {args.passphrase_env} is empty or unset")
        return value.encode()
    if not sys.stdin.isatty():
        raise SignError("no terminal to ask the passphrase: use --passphrase-env NAME"
                        + (" (or --no-passphrase for a test key)" if new else ""))
    first = getpass.getpass("passphrase for the private key: ")
    if new and getpass.getpass("again: ") != first:
        raise SignError("the passphrases differ")
    if not first:
        raise SignError("an empty passphrase (use --no-passphrase for an unencrypted key)")
    return first.encode()


def open_key(path: Path, args) -> Ed25519PrivateKey:
    if not Path(path).is_file():
        raise SignError(f"no such key file: {path}")
    args.no_passphrase = not key_is_encrypted(path)
    return load_private_key(path, passphrase_for(args, new=False))


def cmd_keygen(args) -> int:
    out = Path(args.key)
    pub = Path(str(out) + ".pub")
    if out.exists() or pub.exists():
        raise SignError(f"{out if out.exists() else pub} exists: a key is never overwritten")
    key = Ed25519PrivateKey.generate()
    write_private_key(out, key, passphrase_for(args, new=True))
    pub.write_text(public_hex(key) + "\n")
    print(f"private key: {out} (mode 0600; keep it offline)")
    print(f"public key:  {pub}")
    print(f"for the board's config.json: \"firmware\": {{\"keys\": [\"{public_hex(key)}\"]}}")
    return 0


def cmd_pubkey(args) -> int:
    print(public_hex(open_key(Path(args.key), args)))
    return 0


def cmd_bundle(args) -> int:
    source, dest = Path(args.source), Path(args.dest)
    if not source.is_dir():
        raise SignError(f"{source} is not a directory (run `make firmware` first)")
    if not 0 < len(args.version) <= MAX_VERSION:
        raise SignError(f"the version must have 1 to {MAX_VERSION} characters")
    if dest.exists():
        raise SignError(f"{dest} exists: a bundle is never overwritten")
    key = open_key(Path(args.key), args) if args.key else None
    if args.security_version < 0:
        raise SignError("the security version must be 0 or more")
    manifest = build_bundle(source, dest, args.version, args.security_version)
    problems = [p for p in map(firmware_path_problem, manifest["files"]) if p]
    for problem in problems:
        print(f"warning: {problem}")
    print(f"bundle {dest}: version {args.version}, {len(manifest['files'])} files")
    if key is not None:
        doc = sign_bundle(dest, key)
        print(f"signed with key {doc['key']}")
    return 0


def cmd_sign(args) -> int:
    key = open_key(Path(args.key), args)
    endorsements = []
    for path in args.endorsement or ():
        try:
            endorsements.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as exc:
            raise SignError(f"{path}: not a key rotation file ({exc})") from None
    doc = sign_bundle(Path(args.bundle), key, endorsements)
    print(f"signed {Path(args.bundle) / 'manifest.json'} with key {doc['key']}"
          + (f" ({len(endorsements)} key rotation(s) attached)" if endorsements else ""))
    return 0


def cmd_verify(args) -> int:
    trusted = [load_public(t) for t in args.trust or ()]
    problems = check_bundle(Path(args.bundle), trusted, args.allow_unsigned)
    if problems:
        for problem in problems:
            print(f"refused: {problem}")
        return 1
    print(f"ok: a board trusting {len(trusted)} key(s) installs {args.bundle}")
    return 0


def cmd_rotate(args) -> int:
    old = open_key(Path(args.old), args)
    new = load_public(args.new)
    out = Path(args.out)
    if out.exists():
        raise SignError(f"{out} exists")
    doc = endorse(old, new, retire=not args.keep_old, generation=args.generation)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"key {new.hex()} (generation {args.generation}) endorsed by {doc['by']}"
          + ("" if args.keep_old else " (boards that take it stop trusting the old key)"))
    print(f"attach it when signing with the new key: --endorsement {out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.sign",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)

    def with_passphrase(p, new=False):
        p.add_argument("--passphrase-env", metavar="NAME",
                       help="read the key's passphrase from this environment variable")
        if new:
            p.add_argument("--no-passphrase", action="store_true",
                           help="write the private key unencrypted (test or lab keys)")
        return p

    p = with_passphrase(sub.add_parser("keygen", help="make a key pair"), new=True)
    p.add_argument("key", help="private key file to create (the public key goes to KEY.pub)")
    p.set_defaults(fn=cmd_keygen)
    p = with_passphrase(sub.add_parser("pubkey", help="print a private key's public key"))
    p.add_argument("key")
    p.set_defaults(fn=cmd_pubkey)
    p = with_passphrase(sub.add_parser("bundle", help="make a bundle from a firmware build"))
    p.add_argument("source", help="the firmware build (build/firmware/)")
    p.add_argument("dest", help="the bundle directory to create")
    p.add_argument("--version", required=True, help="the firmware version the board reports")
    p.add_argument("--key", help="sign it with this private key")
    p.add_argument("--security-version", type=int, default=0,
                   help="boards that installed a signed bundle of a higher one refuse this one")
    p.set_defaults(fn=cmd_bundle)
    p = with_passphrase(sub.add_parser("sign", help="write BUNDLE/manifest.sig"))
    p.add_argument("bundle")
    p.add_argument("--key", required=True)
    p.add_argument("--endorsement", action="append", help="a key rotation file from `rotate`")
    p.set_defaults(fn=cmd_sign)
    p = sub.add_parser("verify", help="check a bundle as a board would")
    p.add_argument("bundle")
    p.add_argument("--trust", action="append",
                   help="a trusted public key (hex, base64 or a .pub file); repeatable")
    p.add_argument("--allow-unsigned", action="store_true",
                   help="as a board with firmware.allow_unsigned")
    p.set_defaults(fn=cmd_verify)
    p = with_passphrase(sub.add_parser("rotate", help="endorse a new key with the old one"))
    p.add_argument("--old", required=True, help="the old private key")
    p.add_argument("--new", required=True, help="the new public key (hex or its .pub file)")
    p.add_argument("--out", required=True, help="the key rotation file to write")
    p.add_argument("--generation", type=int, required=True,
                   help="this rotation's key generation: 1 for the first, one more each time")
    p.add_argument("--keep-old", action="store_true", help="boards keep trusting the old key")
    p.set_defaults(fn=cmd_rotate)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except SignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
