"""Channels to a runwatch server: plaintext or TLS (optionally mutual), with an optional access token.

The target says which: ``host:port`` (or ``http://host:port``) is plaintext,
exactly as before; ``https://host:port`` (or ``grpcs://``) is TLS, checked
against the system's CAs or ``ca_file``. ``cert_file`` and ``key_file`` add a
client certificate (servers started with ``--tls-client-ca`` require one). A
token is sent with every call as ``authorization: Bearer <token>``.

Arguments left as None come from the environment: ``RUNWATCH_TOKEN``,
``RUNWATCH_CA_FILE``, ``RUNWATCH_CLIENT_CERT``, ``RUNWATCH_CLIENT_KEY``. TLS
files given as arguments with a plaintext target are an error; the same
files from the environment are ignored for a plaintext target (with a
warning), so a shell set up for a remote server still reaches a local one.

Examples
--------
>>> parse_target("127.0.0.1:50051")
Target(address='127.0.0.1:50051', tls=False)
>>> parse_target("https://runwatch.example.com")
Target(address='runwatch.example.com:443', tls=True)
>>> channel = make_channel("https://runwatch.example.com:8443", token="rw_0123456789ab_...")  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import grpc

__all__ = ["ENV", "Target", "make_channel", "parse_target"]

logger = logging.getLogger("runwatch.client")

#: The environment variable each connection setting falls back to.
ENV = {
    "token": "RUNWATCH_TOKEN",
    "ca_file": "RUNWATCH_CA_FILE",
    "cert_file": "RUNWATCH_CLIENT_CERT",
    "key_file": "RUNWATCH_CLIENT_KEY",
}
_TLS_SCHEMES = ("https://", "grpcs://")
_PLAIN_SCHEMES = ("http://", "grpc://")
_LOOPBACK_HOSTS = ("127.", "localhost", "[::1]", "::1", "unix:")
_warned_clear_token: set[str] = set()


class Target(NamedTuple):
    """Where to connect (``host:port``) and whether over TLS."""

    address: str
    tls: bool


def parse_target(target: str) -> Target:
    """Split a target into its gRPC address and whether it means TLS (port 443 by default with TLS)."""
    text = target.strip()
    lower = text.lower()
    tls = lower.startswith(_TLS_SCHEMES)
    if tls or lower.startswith(_PLAIN_SCHEMES):
        address = text.split("://", 1)[1].rstrip("/")
        if not address:
            raise ValueError(f"target: no host in {target!r}")
        if tls and not _has_port(address):
            address += ":443"
        return Target(address, tls)
    return Target(text, False)


def unavailable_hint(target: str, detail: str) -> str:
    """What a user may have got wrong when ``target`` answered UNAVAILABLE with ``detail`` ("" when nothing to add).

    A plaintext target may be a TLS server; a TLS server that asks for a client certificate (mutual TLS) closes
    the connection during the handshake when none or an untrusted one is given, which gRPC reports only as
    "Socket closed" on this side.

    >>> unavailable_hint("127.0.0.1:50051", "failed to connect")
    '; a server with TLS needs https://HOST:PORT'
    >>> unavailable_hint("https://h:1", "Socket closed")[:60]
    '; a TLS server that wants a client certificate (mutual TLS) '
    >>> unavailable_hint("https://h:1", "Connection refused")
    ''
    """
    if not parse_target(target).tls:
        return "; a server with TLS needs https://HOST:PORT"
    if "socket closed" in detail.lower() or "handshake" in detail.lower():
        return (
            "; a TLS server that wants a client certificate (mutual TLS) closes the connection like this when it gets "
            "none, or one its CA did not sign: pass --client-cert and --client-key (or $RUNWATCH_CLIENT_CERT and "
            "$RUNWATCH_CLIENT_KEY)"
        )
    return ""


def _has_port(address: str) -> bool:
    if address.startswith("["):  # [v6]:port
        return "]:" in address
    return ":" in address


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call (works over plaintext too, unlike call credentials)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, d: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [*(d.metadata or ()), self._header]
        return _CallDetails(
            d.method,
            d.timeout,
            metadata,
            d.credentials,
            getattr(d, "wait_for_ready", None),
            getattr(d, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        return continuation(self._details(client_call_details), request_iterator)


def _setting(name: str, value: str | os.PathLike[str] | None) -> tuple[str | None, bool]:
    """``(value, explicit)``: the argument if given, else its environment variable ("" = unset)."""
    if value is not None:
        return (str(value).strip() or None), True
    return (os.environ.get(ENV[name], "").strip() or None), False


def _read(path: str, name: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path}: {exc.strerror}") from None


def make_channel(
    target: str,
    *,
    token: str | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    options: Iterable[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to ``target`` (see the module docstring); None arguments come from the environment.

    Raises
    ------
    ValueError
        A TLS file is unreadable, only one of ``cert_file``/``key_file`` is
        given, or TLS files are given for a plaintext target; the message
        names the argument.

    Examples
    --------
    >>> ch = make_channel("127.0.0.1:1", token="")  # plaintext, no token: as grpc.insecure_channel
    >>> ch.close()
    >>> make_channel("127.0.0.1:1", ca_file="ca.pem")
    Traceback (most recent call last):
    ...
    ValueError: ca_file: given, but target '127.0.0.1:1' is plaintext; write it as https://127.0.0.1:1
    """
    address, tls = parse_target(target)
    token_value, _ = _setting("token", token)
    given = {"ca_file": ca_file, "cert_file": cert_file, "key_file": key_file}
    files = {name: _setting(name, value) for name, value in given.items()}
    options = list(options)
    if not tls:
        for name, (value, explicit) in files.items():
            if value is None:
                continue
            if explicit:
                raise ValueError(f"{name}: given, but target {target!r} is plaintext; write it as https://{address}")
            logger.warning("runwatch: %s is set but target %s is plaintext: ignored", ENV[name], target)
        channel = grpc.insecure_channel(address, options=options)
        if token_value and not address.startswith(_LOOPBACK_HOSTS) and address not in _warned_clear_token:
            _warned_clear_token.add(address)
            logger.warning("runwatch: sending a token to %s without TLS: use https://%s", address, address)
    else:
        ca, cert, key = (files[n][0] for n in ("ca_file", "cert_file", "key_file"))
        if (cert is None) != (key is None):
            given, missing = ("cert_file", "key_file") if key is None else ("key_file", "cert_file")
            raise ValueError(f"{missing}: needed with {given} (a client certificate takes its key)")
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(ca, "ca_file") if ca else None,
            private_key=_read(key, "key_file") if key else None,
            certificate_chain=_read(cert, "cert_file") if cert else None,
        )
        channel = grpc.secure_channel(address, credentials, options=options)
    if token_value:
        channel = grpc.intercept_channel(channel, _BearerToken(token_value))
    return channel
