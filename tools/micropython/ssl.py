"""`ssl` for the test MicroPython, as a Pico W's firmware image provides it.

On a board, `ssl` is not built in: MicroPython's rp2 firmware freezes micropython-lib's
`ssl` module, a thin layer over the built-in `tls` module (mbedTLS). No current release of
that module is published on the Python package index (the `micropython-ssl` there is a
2018 placeholder), so the bench freezes this module instead. It is written from
MicroPython's documentation of `ssl` and keeps the board's behaviour that matters to
firmware:

- `SSLContext(PROTOCOL_TLS_CLIENT)` starts with `verify_mode == CERT_NONE` (the built-in
  `tls.SSLContext` would start at CERT_REQUIRED; the board's wrapper turns it off), so
  firmware that wants the server certificate checked must set CERT_REQUIRED itself;
- `load_verify_locations(cafile=None, cadata=None)`: a file on flash or the CA's bytes;
- `load_cert_chain(certfile, keyfile)`: paths or bytes;
- `wrap_socket(sock, server_side=False, do_handshake_on_connect=True, server_hostname=None)`;
- the module-level `wrap_socket(...)` of older firmware.
"""

import tls

CERT_NONE = tls.CERT_NONE
CERT_OPTIONAL = tls.CERT_OPTIONAL
CERT_REQUIRED = tls.CERT_REQUIRED
PROTOCOL_TLS_CLIENT = tls.PROTOCOL_TLS_CLIENT
PROTOCOL_TLS_SERVER = tls.PROTOCOL_TLS_SERVER
MBEDTLS_VERSION = tls.MBEDTLS_VERSION


def _contents(source):
    """Bytes as given, or the bytes of the file a str names."""
    if isinstance(source, str):
        with open(source, "rb") as f:
            return f.read()
    return source


class SSLContext:
    def __init__(self, *args):
        self._tls = tls.SSLContext(*args)
        self._tls.verify_mode = CERT_NONE

    @property
    def verify_mode(self):
        return self._tls.verify_mode

    @verify_mode.setter
    def verify_mode(self, mode):
        self._tls.verify_mode = mode

    def get_ciphers(self):
        return self._tls.get_ciphers()

    def set_ciphers(self, ciphers):
        self._tls.set_ciphers(ciphers)

    def load_cert_chain(self, certfile, keyfile):
        self._tls.load_cert_chain(_contents(certfile), _contents(keyfile))

    def load_verify_locations(self, cafile=None, cadata=None):
        self._tls.load_verify_locations(_contents(cafile) if cafile else cadata)

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True,
                    server_hostname=None):
        return self._tls.wrap_socket(sock, server_side=server_side,
                                     do_handshake_on_connect=do_handshake_on_connect,
                                     server_hostname=server_hostname)


def wrap_socket(sock, server_side=False, key=None, cert=None, cert_reqs=CERT_NONE,
                cadata=None, server_hostname=None, do_handshake=True):
    ctx = SSLContext(PROTOCOL_TLS_SERVER if server_side else PROTOCOL_TLS_CLIENT)
    if key or cert:
        ctx.load_cert_chain(cert, key)
    if cadata:
        ctx.load_verify_locations(cadata=cadata)
    ctx.verify_mode = cert_reqs
    return ctx.wrap_socket(sock, server_side=server_side, do_handshake_on_connect=do_handshake,
                           server_hostname=server_hostname)
