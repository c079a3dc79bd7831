"""``python -m fl client``: join a server with local data: a CSV, or partition I (or I to J, one process) of a
built-in dataset split as the server splits it.

Its network flags (the server's address, token, timeouts, TLS files) are
generated from the client's network settings, declared once in
fl/runs/network.py; the Deploy page writes its commands from the same
declaration (``fl.runs.network.client_flags``).
"""

from __future__ import annotations

import argparse
import socket
from typing import Any

from fl.cli.console import client_printer
from fl.cli.flags import add_knob_flags, add_network_flags, config_from_args
from fl.cli.tls import certificate_id, client_tls
from fl.cli.types import parse_partitions
from fl.cli.usage import UsageError
from fl.data import load_client_frame
from fl.federation.client import FederatedClient, LocalData
from fl.federation.session import ClientHost
from fl.runs.build import check_partitions, client_ids_for, data_split, load_data
from fl.runs.knobs import CLIENT
from fl.runs.network import CLIENT_NETWORK, client_settings
from fl.wire import CLIENT_ID_PATTERN
from fl.wire.text import shown


def add_client_parser(sub: Any) -> None:
    cli = sub.add_parser("client", help="join a server with local data")
    add_knob_flags(cli, CLIENT)
    own = cli.add_argument_group("this client")
    own.add_argument("--client-id", help="1-64 chars of A-Z a-z 0-9 _ . - (default: the name in "
                                          "--tls-client-cert, else from host and partition)")
    own.add_argument("--partition-id", type=parse_partitions, metavar="I|I-J",
                     help="take partition I of a built-in dataset or of --csv (or host partitions I to J, one "
                          "process) ...")
    own.add_argument("--num-partitions", type=int, help="... split in N partitions")
    add_network_flags(own, own, CLIENT_NETWORK)


def cmd_client(args: argparse.Namespace) -> int:
    """One client (its CSV, or partition I), or a host of many (``--partition-id 0-249``) on one event loop."""
    ssl_context = client_tls(args)  # bad TLS flags are told before any data is loaded
    if args.client_id and not CLIENT_ID_PATTERN.fullmatch(args.client_id):
        raise UsageError(f"--client-id {args.client_id!r} must be 1-64 chars of A-Z a-z 0-9 _ . -")
    args.client_id = certificate_id(args) or args.client_id  # a certificate names its client
    datas = _client_data(args)
    if args.client_id and len(datas) > 1:
        raise UsageError("--client-id names one client; a range of partitions is named client_000, ... or by site"
                         + ("; a client certificate names one client: host one partition per certificate"
                            if args.tls_client_cert else ""))
    settings = client_settings(vars(args), ssl_context=ssl_context)
    clients = []
    for n, (local, default_id) in enumerate(datas):
        client_id = args.client_id or default_id
        on_attempt, on_event = client_printer(client_id)
        verbose = len(datas) == 1 or n == 0  # a host of many: the first client speaks for the waiting
        clients.append(FederatedClient(client_id, local, settings, seed=getattr(args, "seed", 0),
                                       on_event=on_event if len(datas) == 1 else None,
                                       on_attempt=on_attempt if verbose else None))
    where = f"{args.host}:{args.port}"
    if len(clients) == 1:
        print(f"{clients[0].client_id}: connecting to {where} with {len(datas[0][0].y)} local rows", flush=True)
    else:
        print(f"hosting {len(clients)} clients ({clients[0].client_id} to {clients[-1].client_id}) on one event "
              f"loop, connecting to {where}", flush=True)
    results = ClientHost(clients, name="cli").run()
    for result in results if len(results) == 1 else []:
        print(f"{result.client_id}: left ({shown(result.reason)}) after {result.rounds_trained} rounds", flush=True)
    if len(results) > 1:
        reasons: dict[str, int] = {}
        for result in results:
            reasons[result.reason] = reasons.get(result.reason, 0) + 1
        said = ", ".join(f"{n} {shown(reason)}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1]))
        print(f"{len(results)} clients left after {max(r.rounds_trained for r in results)} rounds: {said}", flush=True)
    return 0 if all(r.ok for r in results) else 1


def _client_data(args: argparse.Namespace) -> list[tuple[Any, str]]:
    """The client's own rows (its CSV), or partitions of a built-in dataset split as the server splits it."""
    if getattr(args, "csv_path", None) and args.partition_id is None:
        if not getattr(args, "target", None):
            raise UsageError("--csv needs --target COL, the label column")
        own = load_client_frame(args.csv_path, args.target)  # a DataError is the usage error's line
        return [(LocalData(X=own.X, y=own.y, feature_names=own.names, frame=own.frame,
                           target_values=own.target_values), f"{socket.gethostname()}-csv")]
    if not ((hasattr(args, "dataset") or getattr(args, "csv_path", None)) and args.partition_id is not None
            and args.num_partitions):
        raise UsageError("a client needs its data: --csv FILE --target COL, or --dataset NAME "
                         "--partition-id I --num-partitions N")
    if not all(0 <= i < args.num_partitions for i in args.partition_id):
        raise UsageError(f"--partition-id must be between 0 and {args.num_partitions - 1}")
    config = config_from_args(args, clients=args.num_partitions)
    data = load_data(config, args.num_partitions)
    check_partitions(data, args.num_partitions)  # a column split: N is its number of values
    split, names, ids = data_split(config), list(data.dataset.feature_names), client_ids_for(data)
    return [(LocalData(*data.client_data(i), feature_names=names, data_split=split), ids[i])
            for i in args.partition_id]
