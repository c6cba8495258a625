"""Ed25519 signature verification (RFC 8032, section 5.1.7) in pure Python, for the board.

    ed25519.verify(public_key, message, signature)  # 32 bytes, bytes, 64 bytes -> bool
    for verdict in ed25519.verifier(public_key, message, signature): ...

MicroPython on a Pico W has no Ed25519, and its `hashlib` has no SHA-512 (the rp2 port
builds sha256 and sha1 only): this module and `sha512.py` (loaded for the one hash a
verification needs, then dropped) do both on MicroPython's big integers. The board
only verifies, never signs. Loaded only while a firmware bundle is checked
(`firmware_trust`) and dropped after: its constants are not resident.

`verifier` is the check as a generator: it yields None after decoding the key, after the
hash and after every `step` bits of the scalar multiplication, and the verdict (True /
False) last, so a task on an event loop can give the other tasks a turn (a verify takes
over a second on an RP2040). `verify` runs it to
the end.

Method: the public key A and the signature (R, S) are decoded as RFC 8032 5.1.3 says
(non-canonical y and S >= L refused), k = SHA-512(R || A || M) mod L, then
R' = [S]B + [k](-A) by one double-and-add pass over both scalars at once (Shamir's trick
without the B-A table entry, to keep the heap small; extended twisted Edwards
coordinates, Hisil-Wong-Carter-Dawson formulas for a = -1), and
the signature holds when R' encodes to exactly the bytes of R (the cofactorless check,
as libsodium and OpenSSL do). Not constant time: it handles public data only.
"""

import hashlib

_P = 57896044618658097711785492504343953926634992332820282019728792003956564819949  # 2^255-19
_L = 7237005577332262213973186563042994240857116359379907606001950938285454250989  # 2^252+...
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = 16295367250680780974490674513165176452449235426866156013048779062215315747161  # 2d mod p
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960


def sha512(data):
    """SHA-512: the port's own when it has one (CPython, some MicroPython ports), else
    `sha512.py`, loaded for this hash only."""
    native = getattr(hashlib, "sha512", None)
    if native is not None:
        return native(data).digest()
    import sys

    try:
        import sha512 as pure

        return pure.digest(data)
    finally:
        if "sha512" in sys.modules:
            del sys.modules["sha512"]


def decode_point(s):
    """RFC 8032 5.1.3: 32 bytes -> (x, y) on the curve, or None."""
    p = _P
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= p:
        return None
    yy = y * y % p
    u = (yy - 1) % p
    v = (_D * yy + 1) % p
    v3 = v * v % p * v % p
    uv3 = u * v3 % p
    x = uv3 * pow(uv3 * v3 % p * v % p, (p - 5) // 8, p) % p
    vxx = v * x % p * x % p
    if vxx != u:
        if vxx != (p - u) % p:
            return None
        x = x * _SQRT_M1 % p
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = p - x
    return x, y


def _cached(q):
    """An extended point in the form an addition uses: (Y+X, Y-X, 2Z, 2dT)."""
    p = _P
    x, y, z, t = q
    return ((y + x) % p, (y - x) % p, 2 * z % p, t * _D2 % p)


def _add(q, c):
    """Extended point + cached point (add-2008-hwcd-3, a = -1)."""
    p = _P
    x1, y1, z1, t1 = q
    yp, ym, z2, t2 = c
    a = (y1 - x1) * ym % p
    b = (y1 + x1) * yp % p
    cc = t1 * t2 % p
    d = z1 * z2 % p
    e = b - a
    f = d - cc
    g = d + cc
    h = b + a
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _double(q):
    """2 x extended point (dbl-2008-hwcd, a = -1, signs folded)."""
    p = _P
    x1, y1, z1 = q[0], q[1], q[2]
    a = x1 * x1 % p
    b = y1 * y1 % p
    c = 2 * z1 * z1 % p
    h = a + b
    s = x1 + y1
    e = h - s * s % p
    g = a - b
    f = c + g
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def verifier(public_key, message, signature, step=8):
    """Generator: None after every `step` bits, then the verdict (see the module doc)."""
    p = _P
    a = None
    if len(public_key) == 32 and len(signature) == 64:
        a = decode_point(public_key)
    s = int.from_bytes(signature[32:], "little") if a is not None else _L
    if s >= _L:
        yield False
        return
    yield None  # decoding A took an exponentiation: a turn for the others
    r = bytes(signature[:32])
    k = int.from_bytes(sha512(r + bytes(public_key) + bytes(message)), "little") % _L
    yield None
    ax, ay = a
    ax = p - ax  # -A
    cb = _cached((_BX, _BY, 1, _BX * _BY % p))
    cneg = _cached((ax, ay, 1, ax * ay % p))
    a = None
    q = (0, 1, 1, 0)
    i = 253  # S and k are below L < 2^253
    while i:
        i -= 1
        q = _double(q)
        if s >> i & 1:
            q = _add(q, cb)
        if k >> i & 1:
            q = _add(q, cneg)
        if i % step == 0:
            yield None
    zi = pow(q[2], p - 2, p)
    x = q[0] * zi % p
    y = q[1] * zi % p
    yield (y | (x & 1) << 255).to_bytes(32, "little") == r


def verify(public_key, message, signature):
    """True if `signature` is the Ed25519 signature of `message` by `public_key`."""
    verdict = False
    for verdict in verifier(public_key, message, signature, 256):
        pass
    return verdict is True
