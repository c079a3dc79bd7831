"""The TLS part of the command line: the server's and the client's TLS flags, and ``python -m fl certs``.

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
from typing import Any

from fl.runs.cli import UsageError


def add_server_tls_flags(group: Any) -> None:
    group.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate (with --tls-key)")
    group.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    group.add_argument("--tls-client-ca", metavar="PEM",
                       help="mutual TLS: require every client to present a certificate signed by this CA "
                            "(python -m fl certs --client NAME issues them)")


def add_client_tls_flags(group: Any) -> None:
    group.add_argument("--tls-ca", metavar="PEM", help="use TLS; verify the server against this CA file")
    group.add_argument("--tls-pin", metavar="SHA256", help="use TLS; accept only this server certificate fingerprint")
    group.add_argument("--tls-client-cert", metavar="PEM",
                       help="this client's certificate, for a server that requires one (with --tls-client-key)")
    group.add_argument("--tls-client-key", metavar="PEM", help="the client certificate's private key")


def add_certs_parser(sub: Any) -> None:
    certs = sub.add_parser("certs", help="make a CA, a server certificate and client certificates for TLS")
    certs.add_argument("--out", default="certs", help="directory for ca.pem, ca.key, server.pem, server.key")
    certs.add_argument("--host", action="append", help="server name or IP (repeat); default localhost, "
                                                        "127.0.0.1 and this machine's name")
    certs.add_argument("--client", action="append", metavar="NAME",
                       help="also issue client-NAME.pem and client-NAME.key for mutual TLS (repeat); when --out "
                            "already holds a CA (ca.pem, ca.key), only these are made, signed by it")
    certs.add_argument("--days", type=int, default=365)


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
    from fl.wire.tls import server_context

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
        from fl.wire.tls import normalise_pin

        pin = normalise_pin(args.tls_pin)
        if len(pin) != 64 or any(ch not in "0123456789abcdef" for ch in pin):
            raise UsageError(f"--tls-pin {args.tls_pin!r} must be the 64 hex digits of a SHA-256 fingerprint "
                             "(python -m fl certs prints it)")
    from fl.wire.tls import client_context

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
    from fl.wire import CLIENT_ID_PATTERN
    from fl.wire.tls import certificate_names

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


def cmd_certs(args: argparse.Namespace) -> int:
    """Make a CA and a server certificate (and client certificates); or, into a CA kept in --out, clients only."""
    from fl.wire.tls import default_hosts, has_ca, issue_client_certificates, make_certificates

    clients = args.client or []
    if args.days < 1:
        raise UsageError(f"--days must be at least 1, not {args.days}")
    out = Path(args.out)
    try:
        if clients and has_ca(out):
            if args.host:
                raise UsageError(f"{out} already holds a CA: --client issues client certificates with it; drop "
                                 "--host, or make a new CA and server certificate in another --out")
            made = issue_client_certificates(out, clients, days=args.days)
            print(f"client certificates signed by the CA in {out / 'ca.pem'} (servers: --tls-client-ca)")
        else:
            if clients and (out / "ca.pem").exists():
                raise UsageError(f"{out / 'ca.pem'} has no ca.key beside it, so no client certificate can be signed "
                                 "by that CA: make a new CA with another --out")
            made = make_certificates(out, args.host or default_hosts(), days=args.days, clients=clients)
            print(f"CA certificate (give to clients, --tls-ca): {made['ca']}")
            print(f"server certificate and key (--tls-cert, --tls-key): {made['cert']} {made['key']}")
            print(f"or pin the server certificate on clients: --tls-pin {made['pin']}")
            print(f"CA key (keep it private; it signs client certificates): {made['ca_key']}")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write the certificates to --out {args.out} ({exc.strerror or exc})") from None
    for name in clients:
        print(f"client {name} (--tls-client-cert, --tls-client-key): {made[f'client:{name}']} "
              f"{made[f'client_key:{name}']}")
    if clients:
        print(f"require client certificates on the server: --tls-client-ca {out / 'ca.pem'}")
    return 0
