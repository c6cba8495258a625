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
    b"\x42\x8a\x2f\x98\xd7\x28\xae\x22\x71\x37\x44\x91\x23\xef\x65\xcd"
    b"\xb5\xc0\xfb\xcf\xec\x4d\x3b\x2f\xe9\xb5\xdb\xa5\x81\x89\xdb\xbc"
    b"\x39\x56\xc2\x5b\xf3\x48\xb5\x38\x59\xf1\x11\xf1\xb6\x05\xd0\x19"
    b"\x92\x3f\x82\xa4\xaf\x19\x4f\x9b\xab\x1c\x5e\xd5\xda\x6d\x81\x18"
    b"\xd8\x07\xaa\x98\xa3\x03\x02\x42\x12\x83\x5b\x01\x45\x70\x6f\xbe"
    b"\x24\x31\x85\xbe\x4e\xe4\xb2\x8c\x55\x0c\x7d\xc3\xd5\xff\xb4\xe2"
    b"\x72\xbe\x5d\x74\xf2\x7b\x89\x6f\x80\xde\xb1\xfe\x3b\x16\x96\xb1"
    b"\x9b\xdc\x06\xa7\x25\xc7\x12\x35\xc1\x9b\xf1\x74\xcf\x69\x26\x94"
    b"\xe4\x9b\x69\xc1\x9e\xf1\x4a\xd2\xef\xbe\x47\x86\x38\x4f\x25\xe3"
    b"\x0f\xc1\x9d\xc6\x8b\x8c\xd5\xb5\x24\x0c\xa1\xcc\x77\xac\x9c\x65"
    b"\x2d\xe9\x2c\x6f\x59\x2b\x02\x75\x4a\x74\x84\xaa\x6e\xa6\xe4\x83"
    b"\x5c\xb0\xa9\xdc\xbd\x41\xfb\xd4\x76\xf9\x88\xda\x83\x11\x53\xb5"
    b"\x98\x3e\x51\x52\xee\x66\xdf\xab\xa8\x31\xc6\x6d\x2d\xb4\x32\x10"
    b"\xb0\x03\x27\xc8\x98\xfb\x21\x3f\xbf\x59\x7f\xc7\xbe\xef\x0e\xe4"
    b"\xc6\xe0\x0b\xf3\x3d\xa8\x8f\xc2\xd5\xa7\x91\x47\x93\x0a\xa7\x25"
    b"\x06\xca\x63\x51\xe0\x03\x82\x6f\x14\x29\x29\x67\x0a\x0e\x6e\x70"
    b"\x27\xb7\x0a\x85\x46\xd2\x2f\xfc\x2e\x1b\x21\x38\x5c\x26\xc9\x26"
    b"\x4d\x2c\x6d\xfc\x5a\xc4\x2a\xed\x53\x38\x0d\x13\x9d\x95\xb3\xdf"
    b"\x65\x0a\x73\x54\x8b\xaf\x63\xde\x76\x6a\x0a\xbb\x3c\x77\xb2\xa8"
    b"\x81\xc2\xc9\x2e\x47\xed\xae\xe6\x92\x72\x2c\x85\x14\x82\x35\x3b"
    b"\xa2\xbf\xe8\xa1\x4c\xf1\x03\x64\xa8\x1a\x66\x4b\xbc\x42\x30\x01"
    b"\xc2\x4b\x8b\x70\xd0\xf8\x97\x91\xc7\x6c\x51\xa3\x06\x54\xbe\x30"
    b"\xd1\x92\xe8\x19\xd6\xef\x52\x18\xd6\x99\x06\x24\x55\x65\xa9\x10"
    b"\xf4\x0e\x35\x85\x57\x71\x20\x2a\x10\x6a\xa0\x70\x32\xbb\xd1\xb8"
    b"\x19\xa4\xc1\x16\xb8\xd2\xd0\xc8\x1e\x37\x6c\x08\x51\x41\xab\x53"
    b"\x27\x48\x77\x4c\xdf\x8e\xeb\x99\x34\xb0\xbc\xb5\xe1\x9b\x48\xa8"
    b"\x39\x1c\x0c\xb3\xc5\xc9\x5a\x63\x4e\xd8\xaa\x4a\xe3\x41\x8a\xcb"
    b"\x5b\x9c\xca\x4f\x77\x63\xe3\x73\x68\x2e\x6f\xf3\xd6\xb2\xb8\xa3"
    b"\x74\x8f\x82\xee\x5d\xef\xb2\xfc\x78\xa5\x63\x6f\x43\x17\x2f\x60"
    b"\x84\xc8\x78\x14\xa1\xf0\xab\x72\x8c\xc7\x02\x08\x1a\x64\x39\xec"
    b"\x90\xbe\xff\xfa\x23\x63\x1e\x28\xa4\x50\x6c\xeb\xde\x82\xbd\xe9"
    b"\xbe\xf9\xa3\xf7\xb2\xc6\x79\x15\xc6\x71\x78\xf2\xe3\x72\x53\x2b"
    b"\xca\x27\x3e\xce\xea\x26\x61\x9c\xd1\x86\xb8\xc7\x21\xc0\xc2\x07"
    b"\xea\xda\x7d\xd6\xcd\xe0\xeb\x1e\xf5\x7d\x4f\x7f\xee\x6e\xd1\x78"
    b"\x06\xf0\x67\xaa\x72\x17\x6f\xba\x0a\x63\x7d\xc5\xa2\xc8\x98\xa6"
    b"\x11\x3f\x98\x04\xbe\xf9\x0d\xae\x1b\x71\x0b\x35\x13\x1c\x47\x1b"
    b"\x28\xdb\x77\xf5\x23\x04\x7d\x84\x32\xca\xab\x7b\x40\xc7\x24\x93"
    b"\x3c\x9e\xbe\x0a\x15\xc9\xbe\xbc\x43\x1d\x67\xc4\x9c\x10\x0d\x4c"
    b"\x4c\xc5\xd4\xbe\xcb\x3e\x42\xb6\x59\x7f\x29\x9c\xfc\x65\x7e\x2a"
    b"\x5f\xcb\x6f\xab\x3a\xd6\xfa\xec\x6c\x44\x19\x8c\x4a\x47\x58\x17"
)
_H0 = (0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
       0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179)


def sha512_pure(data):
    """SHA-512 (FIPS 180-4) in Python: for ports whose hashlib lacks it. Meant for short
    inputs (a verify hashes 64 bytes plus the message); the message schedule is kept as 16
    words, not 80, to keep the heap small."""
    k = _K
    m = 0xFFFFFFFFFFFFFFFF
    n = len(data)
    data = bytes(data) + b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
    h = list(_H0)
    w = [0] * 16
    for off in range(0, len(data), 128):
        for t in range(16):
            w[t] = int.from_bytes(data[off + 8 * t:off + 8 * t + 8], "big")
        a, b, c, d, e, f, g, hh = h
        for t in range(80):
            if t >= 16:  # w[t % 16] becomes W_t
                x = w[(t + 1) & 15]
                y = w[(t + 14) & 15]
                w[t & 15] = (w[t & 15] + w[(t + 9) & 15]
                             + (((x >> 1 | x << 63) ^ (x >> 8 | x << 56) ^ (x >> 7)) & m)
                             + (((y >> 19 | y << 45) ^ (y >> 61 | y << 3) ^ (y >> 6)) & m)) & m
            t1 = hh + (((e >> 14 | e << 50) ^ (e >> 18 | e << 46) ^ (e >> 41 | e << 23)) & m) \
                + ((e & f) ^ ((e ^ m) & g)) + int.from_bytes(k[8 * t:8 * t + 8], "big") + w[t & 15]
            t2 = (((a >> 28 | a << 36) ^ (a >> 34 | a << 30) ^ (a >> 39 | a << 25)) & m) \
                + ((a & b) ^ (a & c) ^ (b & c))
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
