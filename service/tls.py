"""TLS for the gRPC server: its credentials from PEM files, and what counts as a loopback bind.

With ``tls_cert`` and ``tls_key`` the server speaks TLS only; with
``tls_client_ca`` as well, it asks every client for a certificate signed by
that CA and refuses the handshake without one (mutual TLS). The files are
read once, at start: replacing a certificate needs a restart (SIGTERM drains).

Examples
--------
>>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("[::1]")
(True, True, True)
>>> is_loopback("0.0.0.0"), is_loopback(""), is_loopback("runwatch.internal")
(False, False, False)
"""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

import grpc


class TLSConfigError(ValueError):
    """A TLS file cannot be used; the message names the setting."""


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` only accepts connections from this machine."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # "", a wildcard or a name that may resolve anywhere


def _read_pem(path: Path, setting: str, marker: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    if f"-----BEGIN {marker}".encode() not in data:
        raise TLSConfigError(f"{setting}: {path} holds no PEM {marker.lower().strip()} block")
    return data


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None) -> grpc.ServerCredentials:
    """Server credentials from PEM files; ``client_ca`` turns on mutual TLS.

    Raises :class:`TLSConfigError` naming the setting (``tls_cert``, ``tls_key``
    or ``tls_client_ca``) for an unreadable file, a file without PEM, or a key
    that does not belong to the certificate.

    Examples
    --------
    >>> try:
    ...     server_credentials(Path("/nonexistent.pem"), Path("/nonexistent.key"))
    ... except TLSConfigError as exc:
    ...     print(exc)
    tls_cert: cannot read /nonexistent.pem: No such file or directory
    """
    cert_pem = _read_pem(cert, "tls_cert", "CERTIFICATE")
    key_pem = _read_pem(key, "tls_key", "")
    if b"PRIVATE KEY" not in key_pem:
        raise TLSConfigError(f"tls_key: {key} holds no PEM private key")
    if b"ENCRYPTED" in key_pem:
        raise TLSConfigError(f"tls_key: {key} is encrypted; gRPC needs it unencrypted (openssl pkey -in KEY -out NEW)")
    ca_pem = _read_pem(client_ca, "tls_client_ca", "CERTIFICATE") if client_ca is not None else None
    # gRPC only finds a mismatched pair at the first handshake; the ssl module says so now.
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise TLSConfigError(f"tls_key: {key} does not match tls_cert {cert} ({exc.reason or exc})") from None
    return grpc.ssl_server_credentials(
        [(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=ca_pem is not None
    )
