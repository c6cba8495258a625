"""Certificates for TLS tests, made with the openssl CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_cert(dir: Path, name: str) -> tuple[Path, Path, bytes]:
    """A self-signed certificate for 127.0.0.1 (CN and subjectAltName IP), valid 2 days:
    (cert PEM path, key PEM path, cert DER bytes: what a board keeps on flash as its CA)."""
    crt, key, der = dir / (name + ".pem"), dir / (name + ".key"), dir / (name + ".der")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(crt), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-in", str(crt), "-outform", "DER", "-out", str(der)],
                   check=True, capture_output=True)
    return crt, key, der.read_bytes()
