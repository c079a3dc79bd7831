"""The TLS flags of the command line, read: the server's and the client's TLS context, the client's id from
its certificate. (The flags themselves are declared with the other network settings, fl/runs/network.py;
``python -m fl certs`` is fl/cli/certs.py.)

Server: ``--tls-cert`` and ``--tls-key`` turn TLS on; ``--tls-client-ca``
adds mutual TLS (every client must present a certificate that CA signed).
Client: ``--tls-ca`` or ``--tls-pin`` turn TLS on (how it checks the server);
``--tls-client-cert`` and ``--tls-client-key`` are its own certificate, for a
server that requires one, and the name it was issued to is the client's id
(a server under mutual TLS admits a client only under that name). A file that is missing, unreadable or not what the
flag needs is a one-line usage error (exit code 2), before any socket opens.
"""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

from fl.cli.usage import UsageError
from fl.wire import CLIENT_ID_PATTERN
from fl.wire.tls import certificate_names, client_context, normalise_pin, server_context


def _readable(path: str, flag: str) -> str:
    """The path, or a usage error saying which flag names a file that cannot be read."""
    p = Path(path)
    if not p.exists():
        raise UsageError(f"cannot read {flag} {path}: no such file")
    if not p.is_file():
        raise UsageError(f"cannot read {flag} {path}: not a file")
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None
    return path


def _chain_problem(exc: Exception, cert_flag: str, cert: str, key_flag: str, key: str) -> str:
    text = str(exc)
    if "KEY_VALUES_MISMATCH" in text:
        return f"{key_flag} {key} is not the private key of {cert_flag} {cert}"
    return f"{cert_flag} {cert} and {key_flag} {key} must be a PEM certificate and its unencrypted PEM key " \
           f"({getattr(exc, 'reason', None) or text})"


def server_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's TLS context from its flags, or None for plain TCP."""
    if not (args.tls_cert or args.tls_key):
        if args.tls_client_ca:
            raise UsageError("--tls-client-ca needs TLS: add --tls-cert and --tls-key (python -m fl certs makes them)")
        return None
    if not (args.tls_cert and args.tls_key):
        raise UsageError("TLS needs both --tls-cert and --tls-key")
    cert, key = _readable(args.tls_cert, "--tls-cert"), _readable(args.tls_key, "--tls-key")
    client_ca = _readable(args.tls_client_ca, "--tls-client-ca") if args.tls_client_ca else None
    try:
        server_context(cert, key)
    except (OSError, ValueError) as exc:
        raise UsageError(_chain_problem(exc, "--tls-cert", cert, "--tls-key", key)) from None
    try:
        return server_context(cert, key, client_ca)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--tls-client-ca {client_ca} holds no PEM CA certificate "
                         f"({getattr(exc, 'reason', None) or exc})") from None


def client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client's TLS context from its flags, or None for plain TCP."""
    own = args.tls_client_cert or args.tls_client_key
    if not (args.tls_ca or args.tls_pin):
        if own:
            raise UsageError("--tls-client-cert needs TLS: add --tls-ca CA.pem or --tls-pin FINGERPRINT "
                             "(how this client checks the server)")
        return None
    if own and not (args.tls_client_cert and args.tls_client_key):
        raise UsageError("a client certificate needs both --tls-client-cert and --tls-client-key")
    if args.tls_pin:
        pin = normalise_pin(args.tls_pin)
        if len(pin) != 64 or any(ch not in "0123456789abcdef" for ch in pin):
            raise UsageError(f"--tls-pin {args.tls_pin!r} must be the 64 hex digits of a SHA-256 fingerprint "
                             "(python -m fl certs prints it)")
    cafile = _readable(args.tls_ca, "--tls-ca") if args.tls_ca else None
    try:
        client_context(cafile=cafile, pin_sha256=args.tls_pin)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--tls-ca {args.tls_ca} holds no PEM CA certificate "
                         f"({getattr(exc, 'reason', None) or exc})") from None
    if not own:
        return client_context(cafile=cafile, pin_sha256=args.tls_pin)
    cert = _readable(args.tls_client_cert, "--tls-client-cert")
    key = _readable(args.tls_client_key, "--tls-client-key")
    try:
        return client_context(cafile=cafile, pin_sha256=args.tls_pin, certfile=cert, keyfile=key)
    except (OSError, ValueError) as exc:
        raise UsageError(_chain_problem(exc, "--tls-client-cert", cert, "--tls-client-key", key)) from None


def certificate_id(args: argparse.Namespace) -> str | None:
    """The client id a client certificate gives: ``--client-id`` when it is one of the certificate's names,
    else its first name; None without a certificate. A usage error when the two disagree (a server requiring
    client certificates would refuse the client) or the certificate names no usable id."""
    if not args.tls_client_cert:
        return None
    try:
        names = certificate_names(args.tls_client_cert)
    except ValueError as exc:
        raise UsageError(f"--tls-client-cert {args.tls_client_cert} holds no PEM certificate ({exc})") from None
    if args.client_id:
        if args.client_id not in names:
            raise UsageError(f"--client-id {args.client_id!r} is not the name in --tls-client-cert "
                             f"({', '.join(repr(n) for n in names) or 'none'}): a server that requires client "
                             "certificates admits this client only under its certificate's name; drop --client-id")
        return args.client_id
    usable = [name for name in names if CLIENT_ID_PATTERN.fullmatch(name)]
    if not usable:
        raise UsageError(f"--tls-client-cert {args.tls_client_cert} names no usable client id "
                         f"({', '.join(repr(n) for n in names) or 'no common name'}): issue one with "
                         "python -m fl certs --client NAME")
    return usable[0]
