"""Ed25519 signature verification (RFC 8032, section 5.1.7) in pure Python, for the board.

    ed25519.verify(public_key, message, signature)  # 32 bytes, bytes, 64 bytes -> bool
    for verdict in ed25519.verifier(public_key, message, signature): ...

MicroPython on a Pico W has no Ed25519, and its `hashlib` has no SHA-512 (the rp2 port
builds sha256 and sha1 only), so both are here, on MicroPython's big integers. The board
only verifies, never signs. Loaded only while a firmware bundle is checked
(`firmware_trust`) and dropped after: its constants are not resident.

`verifier` is the check as a generator: it yields None after every `step` bits of the
scalar multiplication and the verdict (True / False) last, so a task on an event loop can
give the other tasks a turn (a verify takes seconds on an RP2040). `verify` runs it to
the end.

Method: the public key A and the signature (R, S) are decoded as RFC 8032 5.1.3 says
(non-canonical y and S >= L refused), k = SHA-512(R || A || M) mod L, then
R' = [S]B + [k](-A) by one double-and-add pass over both scalars at once (Straus/Shamir,
extended twisted Edwards coordinates, Hisil-Wong-Carter-Dawson formulas for a = -1), and
the signature holds when R' encodes to exactly the bytes of R (the cofactorless check,
as libsodium and OpenSSL do). Not constant time: it handles public data only.
"""

import binascii
import hashlib

_P = 57896044618658097711785492504343953926634992332820282019728792003956564819949  # 2^255-19
_L = 7237005577332262213973186563042994240857116359379907606001950938285454250989  # 2^252+...
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = 16295367250680780974490674513165176452449235426866156013048779062215315747161  # 2d mod p
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960

# SHA-512 round constants (FIPS 180-4 4.2.3), 80 x 64-bit big-endian
_K = (
    "428a2f98d728ae227137449123ef65cdb5c0fbcfec4d3b2fe9b5dba58189dbbc3956c25bf348b538"
    "59f111f1b605d019923f82a4af194f9bab1c5ed5da6d8118d807aa98a303024212835b0145706fbe"
    "243185be4ee4b28c550c7dc3d5ffb4e272be5d74f27b896f80deb1fe3b1696b19bdc06a725c71235"
    "c19bf174cf692694e49b69c19ef14ad2efbe4786384f25e30fc19dc68b8cd5b5240ca1cc77ac9c65"
    "2de92c6f592b02754a7484aa6ea6e4835cb0a9dcbd41fbd476f988da831153b5983e5152ee66dfab"
    "a831c66d2db43210b00327c898fb213fbf597fc7beef0ee4c6e00bf33da88fc2d5a79147930aa725"
    "06ca6351e003826f142929670a0e6e7027b70a8546d22ffc2e1b21385c26c9264d2c6dfc5ac42aed"
    "53380d139d95b3df650a73548baf63de766a0abb3c77b2a881c2c92e47edaee692722c851482353b"
    "a2bfe8a14cf10364a81a664bbc423001c24b8b70d0f89791c76c51a30654be30d192e819d6ef5218"
    "d69906245565a910f40e35855771202a106aa07032bbd1b819a4c116b8d2d0c81e376c085141ab53"
    "2748774cdf8eeb9934b0bcb5e19b48a8391c0cb3c5c95a634ed8aa4ae3418acb5b9cca4f7763e373"
    "682e6ff3d6b2b8a3748f82ee5defb2fc78a5636f43172f6084c87814a1f0ab728cc702081a6439ec"
    "90befffa23631e28a4506cebde82bde9bef9a3f7b2c67915c67178f2e372532bca273eceea26619c"
    "d186b8c721c0c207eada7dd6cde0eb1ef57d4f7fee6ed17806f067aa72176fba0a637dc5a2c898a6"
    "113f9804bef90dae1b710b35131c471b28db77f523047d8432caab7b40c724933c9ebe0a15c9bebc"
    "431d67c49c100d4c4cc5d4becb3e42b6597f299cfc657e2a5fcb6fab3ad6faec6c44198c4a475817"
)
_H0 = (0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
       0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179)


def sha512_pure(data):
    """SHA-512 (FIPS 180-4) in Python: for ports whose hashlib lacks it. Meant for short
    inputs (a verify hashes 64 bytes plus the message)."""
    k = binascii.unhexlify(_K)
    m = 0xFFFFFFFFFFFFFFFF
    n = len(data)
    data = bytes(data) + b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
    h = list(_H0)
    w = [0] * 80
    for off in range(0, len(data), 128):
        for t in range(16):
            w[t] = int.from_bytes(data[off + 8 * t:off + 8 * t + 8], "big")
        for t in range(16, 80):
            x = w[t - 15]
            y = w[t - 2]
            s0 = ((x >> 1 | x << 63) ^ (x >> 8 | x << 56) ^ (x >> 7)) & m
            s1 = ((y >> 19 | y << 45) ^ (y >> 61 | y << 3) ^ (y >> 6)) & m
            w[t] = (w[t - 16] + s0 + w[t - 7] + s1) & m
        a, b, c, d, e, f, g, hh = h
        for t in range(80):
            s1 = ((e >> 14 | e << 50) ^ (e >> 18 | e << 46) ^ (e >> 41 | e << 23)) & m
            t1 = hh + s1 + ((e & f) ^ ((e ^ m) & g)) + int.from_bytes(k[8 * t:8 * t + 8], "big") + w[t]
            s0 = ((a >> 28 | a << 36) ^ (a >> 34 | a << 30) ^ (a >> 39 | a << 25)) & m
            t2 = s0 + ((a & b) ^ (a & c) ^ (b & c))
            hh = g
            g = f
            f = e
            e = (d + t1) & m
            d = c
            c = b
            b = a
            a = (t1 + t2) & m
        v = (a, b, c, d, e, f, g, hh)
        for i in range(8):
            h[i] = (h[i] + v[i]) & m
    return b"".join(x.to_bytes(8, "big") for x in h)


def sha512(data):
    """SHA-512: the port's own when it has one (CPython, some MicroPython ports)."""
    native = getattr(hashlib, "sha512", None)
    if native is not None:
        return native(data).digest()
    return sha512_pure(data)


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
    r = bytes(signature[:32])
    k = int.from_bytes(sha512(r + bytes(public_key) + bytes(message)), "little") % _L
    ax, ay = a
    ax = p - ax  # -A
    base = (_BX, _BY, 1, _BX * _BY % p)
    cneg = _cached((ax, ay, 1, ax * ay % p))
    table = (None, _cached(base), cneg, _cached(_add(base, cneg)))
    a = base = None
    q = (0, 1, 1, 0)
    i = 253  # S and k are below L < 2^253
    while i:
        i -= 1
        q = _double(q)
        j = (s >> i & 1) | (k >> i & 1) << 1
        if j:
            q = _add(q, table[j])
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
