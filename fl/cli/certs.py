"""``python -m fl certs``: a CA, a server certificate and client certificates for TLS (fl/wire/tls.py makes them)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fl.cli.usage import UsageError
from fl.wire.tls import default_hosts, has_ca, issue_client_certificates, make_certificates


def add_certs_parser(sub: Any) -> None:
    certs = sub.add_parser("certs", help="make a CA, a server certificate and client certificates for TLS")
    certs.add_argument("--out", default="certs", help="directory for ca.pem, ca.key, server.pem, server.key")
    certs.add_argument("--host", action="append", help="server name or IP (repeat); default localhost, "
                                                        "127.0.0.1 and this machine's name")
    certs.add_argument("--client", action="append", metavar="NAME",
                       help="also issue client-NAME.pem and client-NAME.key for mutual TLS (repeat); when --out "
                            "already holds a CA (ca.pem, ca.key), only these are made, signed by it")
    certs.add_argument("--days", type=int, default=365)



def cmd_certs(args: argparse.Namespace) -> int:
    """Make a CA and a server certificate (and client certificates); or, into a CA kept in --out, clients only."""
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
