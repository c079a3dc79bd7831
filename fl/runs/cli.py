"""The command line: ``python -m fl simulate | server | client``.

Bad arguments exit with code 2 and one line on stderr that says what to fix.
A run that starts but does not complete exits with code 1.
"""

from __future__ import annotations

import argparse
import json
import math
import socket
import sys
from typing import Any, Sequence

from fl.runs.config import ATTACKS, DP_MODES, ConfigError, RunConfig
from fl.federation.events import describe_event
from fl.data import DATASETS, PARTITIONERS, DataError, load_client_frame, load_dataset, make_federated_data
from fl.learning.models import MODELS
from fl.learning.server_opt import SERVER_OPTIMIZERS
from fl.learning.aggregation import AGGREGATIONS


class UsageError(Exception):
    """Exit 2 with this one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is a single 'error: ...' line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


# ---------------------------------------------------------------------- flags
def _add_data_flags(p: argparse.ArgumentParser, *, required: bool = False) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, required=required, help="built-in dataset, or csv")
    g.add_argument("--csv", metavar="FILE", help="CSV file (with --target)")
    g.add_argument("--target", metavar="COL", help="label column of the CSV")
    g.add_argument("--target-bins", type=int, default=0, metavar="K",
                   help="turn a continuous numeric target into K quantile classes (default 0: no binning)")
    g.add_argument("--n-samples", type=int, default=1000, help="rows for synthetic and xor (default 1000)")
    g.add_argument("--n-features", type=int, default=20, help="features for synthetic (default 20)")
    g.add_argument("--n-classes", type=int, default=2, help="classes for synthetic (default 2)")
    g.add_argument("--test-size", type=float, default=0.2, help="server's held-out share (default 0.2)")
    g.add_argument("--val-size", type=float, default=0.15, help="server's validation share, stacking only")
    g.add_argument("--seed", type=int, default=0, help="seed for splits, sampling and training (default 0)")


def _add_partition_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("partition")
    g.add_argument("--partition", choices=PARTITIONERS, default="iid")
    g.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (smaller = more skew)")
    g.add_argument("--shards-per-client", type=int, default=2)
    g.add_argument("--quantity-skew", type=float, default=1.5)
    g.add_argument("--min-samples", type=int, default=2, help="smallest client partition")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and rounds")
    g.add_argument("--model", choices=list(MODELS), default="logreg")
    g.add_argument("--model-params", metavar="JSON", default="{}", help='hyperparameters, e.g. \'{"C": 0.5}\'')
    g.add_argument("--aggregation", choices=AGGREGATIONS, default="fedavg")
    g.add_argument("--rounds", type=int, default=10)
    g.add_argument("--local-epochs", type=int, default=5, help="passes over local data per round (default 5)")
    g.add_argument("--learning-rate", type=float, default=None)
    g.add_argument("--fraction", type=float, default=1.0, help="share of clients sampled per round")
    g.add_argument("--min-clients", type=int, default=1, help="fewest clients in a round (server: to start)")
    g.add_argument("--round-timeout", type=float, default=60.0, help="seconds to wait for results")
    g.add_argument("--no-standardize", action="store_true", help="do not standardise features")
    g.add_argument("--no-client-eval", action="store_true",
                   help="do not ask every client to score the global model on its own data each round")
    g.add_argument("--local-test-size", type=float, default=0.2,
                   help="share of each client's rows kept out of its training to score the global model (0.2)")
    g.add_argument("--out", metavar="DIR", help="write config, metrics.csv, clients.csv, events, model here")
    r = p.add_argument_group("robust rules, server optimisers, FedProx, differential privacy")
    r.add_argument("--trim-beta", type=float, default=0.2, help="trimmed_mean: share cut at each end")
    r.add_argument("--num-malicious", type=int, default=0, help="krum: assumed number of bad clients")
    r.add_argument("--num-to-keep", type=int, default=0, help="krum: 0 = Krum, k = multi-Krum over k best")
    r.add_argument("--server-opt", choices=SERVER_OPTIMIZERS, default="none")
    r.add_argument("--server-lr", type=float, default=None, help="server learning rate eta")
    r.add_argument("--server-momentum", type=float, default=0.0, help="fedavgm momentum")
    r.add_argument("--proximal-mu", type=float, default=0.0, help="FedProx mu (0 = off)")
    r.add_argument("--dp", choices=DP_MODES, default="none", help="clip updates on the server or the clients")
    r.add_argument("--clip-norm", type=float, default=1.0)
    r.add_argument("--noise-multiplier", type=float, default=1.0)
    r.add_argument("--dp-delta", type=float, default=1e-5)


def _add_fault_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("simulated faults and attacks")
    g.add_argument("--dropout-prob", type=float, default=0.0, help="chance a client skips a round")
    g.add_argument("--slow-clients", type=int, default=0)
    g.add_argument("--slow-delay", type=float, default=0.0, help="seconds a slow client waits before answering")
    g.add_argument("--malicious-clients", type=int, default=0)
    g.add_argument("--attack", choices=ATTACKS, default="none")
    g.add_argument("--attack-scale", type=float, default=4.0, help="factor (sign_flip, scale) or noise std")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m fl", description="Federated learning over real sockets.")
    sub = parser.add_subparsers(dest="command", metavar="{simulate,server,client,certs}", parser_class=OneLineParser)
    sim = sub.add_parser("simulate", help="a whole run in one process: server + N client threads")
    _add_data_flags(sim)
    _add_partition_flags(sim)
    _add_run_flags(sim)
    _add_fault_flags(sim)
    sim.add_argument("--clients", type=int, default=5)

    srv = sub.add_parser("server", help="host a run for client processes (prints 'listening on HOST:PORT')")
    _add_data_flags(srv)
    _add_partition_flags(srv)
    _add_run_flags(srv)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    srv.add_argument("--token", help="shared secret clients must present")
    srv.add_argument("--max-clients", type=int, default=1000)
    srv.add_argument("--wait", type=float, default=300.0, help="seconds to wait for --min-clients to join")
    srv.add_argument("--tls-cert", metavar="PEM", help="serve TLS with this certificate (with --tls-key)")
    srv.add_argument("--tls-key", metavar="PEM", help="the certificate's private key")
    srv.add_argument("--classes", help="comma-separated labels, when the server has no data")
    srv.add_argument("--features", type=int, help="number of features, when the server has no data")

    cli = sub.add_parser("client", help="join a server with local data")
    _add_data_flags(cli)
    _add_partition_flags(cli)
    cli.add_argument("--host", default="127.0.0.1")
    cli.add_argument("--port", type=int, default=8080)
    cli.add_argument("--token")
    cli.add_argument("--client-id", help="1-64 chars of A-Z a-z 0-9 _ . - (default: from host and partition)")
    cli.add_argument("--partition-id", type=int, help="take partition I of a built-in dataset ...")
    cli.add_argument("--num-partitions", type=int, help="... split in N partitions")
    cli.add_argument("--connect-timeout", type=float, default=60.0, help="keep retrying this long")
    cli.add_argument("--tls-ca", metavar="PEM", help="use TLS; verify the server against this CA file")
    cli.add_argument("--tls-pin", metavar="SHA256", help="use TLS; accept only this server certificate fingerprint")

    certs = sub.add_parser("certs", help="make a CA and a server certificate for TLS")
    certs.add_argument("--out", default="certs", help="directory for ca.pem, server.pem, server.key")
    certs.add_argument("--host", action="append", help="server name or IP (repeat); default localhost, "
                                                        "127.0.0.1 and this machine's name")
    certs.add_argument("--days", type=int, default=365)
    return parser


def config_from_args(args: argparse.Namespace, clients: int) -> RunConfig:
    try:
        model_params = json.loads(args.model_params)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--model-params is not valid JSON ({exc.msg})") from None
    dataset = args.dataset or ("csv" if args.csv else "iris")
    config = RunConfig(
        dataset=dataset, csv_path=args.csv, target=args.target, target_bins=args.target_bins,
        client_eval=not args.no_client_eval, local_test_size=args.local_test_size, n_samples=args.n_samples,
        n_features=args.n_features, n_classes=args.n_classes, test_size=args.test_size, val_size=args.val_size,
        standardize=not args.no_standardize, clients=clients, partition=args.partition, alpha=args.alpha,
        shards_per_client=args.shards_per_client, quantity_skew=args.quantity_skew, min_samples=args.min_samples,
        model=args.model, model_params=model_params, aggregation=args.aggregation, rounds=args.rounds,
        local_epochs=args.local_epochs, learning_rate=args.learning_rate, fraction=args.fraction,
        min_clients=args.min_clients, round_timeout=args.round_timeout, seed=args.seed,
        trim_beta=args.trim_beta, num_malicious=args.num_malicious, num_to_keep=args.num_to_keep,
        server_opt=args.server_opt, server_lr=args.server_lr, server_momentum=args.server_momentum,
        proximal_mu=args.proximal_mu, dp=args.dp, clip_norm=args.clip_norm, noise_multiplier=args.noise_multiplier,
        dp_delta=args.dp_delta,
        **{name: getattr(args, name) for name in ("dropout_prob", "slow_clients", "slow_delay", "malicious_clients",
                                                  "attack", "attack_scale") if hasattr(args, name)},
    )
    try:
        return config.validate()
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


# ---------------------------------------------------------------------- output
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def round_line(event: dict, total_rounds: int) -> str:
    """The per-round line of simulate and server."""
    line = (f"round {event['round']}/{total_rounds}  accuracy {_fmt(event.get('accuracy'))}  "
            f"loss {_fmt(event.get('loss'))}  f1 {_fmt(event.get('f1_macro'))}  "
            f"clients {event['n_fit_clients']} ({event['n_failures']} failed)  {event['duration_s']:.2f} s")
    if event.get("worst_client_accuracy") is not None:
        line += f"  worst client {_fmt(event['worst_client_accuracy'])}"
    if event.get("epsilon") is not None:
        line += f"  epsilon {_fmt(event['epsilon'], 2)}"
    return line


def progress_printer(total_rounds: int, quiet_joins: bool = False):
    """One line per round on stdout, flushed, plus joins/leaves/failures on stderr.

    ``quiet_joins`` (simulations with many clients) counts joins instead of
    printing one line each.
    """
    joined = 0

    def on_event(event: dict) -> None:
        nonlocal joined
        kind = event.get("type")
        if kind == "round":
            print(round_line(event, total_rounds), flush=True)
            return
        if kind == "join" and quiet_joins:
            joined += 1
            return
        if kind == "round_start" and event.get("round") == 1 and quiet_joins:
            text: str | None = f"{joined} clients joined; round 1 starts"
        elif kind in ("join", "leave", "refused", "failure", "straggler", "error"):
            text = describe_event(event)
        else:
            text = None
        if text:
            sys.stderr.write(text + "\n")  # one write: lines from threads never interleave
            sys.stderr.flush()

    return on_event


def client_printer(client_id: str):
    """What a client process tells the person who started it: joining, each round, leaving."""

    def on_attempt(attempt: int, problem: str, seconds_left: float) -> None:
        print(f"{client_id}: waiting for the server (attempt {attempt}: {problem}); "
              f"trying {seconds_left:.0f} s more", file=sys.stderr, flush=True)

    def on_event(event: dict) -> None:
        kind = event.get("type")
        if kind == "welcome":
            print(f"{client_id}: joined run {event['run_id']} ({event['model']}, {event['n_classes']} classes, "
                  f"{event['n_features']} features) with {event['n_samples']} local rows", flush=True)
        elif kind == "fit":
            print(f"{client_id}: round {event['round']}  trained in {event.get('train_time_s', 0):.2f} s  "
                  f"train accuracy {_fmt(event.get('train_accuracy'))}  loss {_fmt(event.get('train_loss'))}",
                  flush=True)
        elif kind == "evaluate":
            print(f"{client_id}: round {event['round']}  global model on local data: accuracy "
                  f"{_fmt(event.get('accuracy'))}  loss {_fmt(event.get('loss'))}", flush=True)
        elif kind == "client_error":
            print(f"{client_id}: cannot take part ({event.get('code')}): {event.get('message')}", file=sys.stderr,
                  flush=True)

    return on_attempt, on_event


# ---------------------------------------------------------------------- commands
def cmd_simulate(args: argparse.Namespace) -> int:
    from fl.runs import simulation

    config = config_from_args(args, args.clients)
    try:
        handle = simulation.start(config, out_dir=args.out,
                                  on_event=progress_printer(config.effective_rounds, quiet_joins=config.clients > 20))
    except (DataError, ConfigError) as exc:
        raise UsageError(str(exc)) from None
    try:
        handle.wait()
    except KeyboardInterrupt:
        handle.stop()
        handle.wait(5)
    result = handle.result
    return _finish(result)


def _finish(result: Any) -> int:
    if result is None:
        print("run did not finish", file=sys.stderr)
        return 1
    final = result.final_metrics or {}
    print(f"{result.status}: accuracy {_fmt(final.get('accuracy'))}  loss {_fmt(final.get('loss'))}  "
          f"f1 {_fmt(final.get('f1_macro'))}", flush=True)
    if result.error:
        print(f"error: {result.error}", file=sys.stderr)
    return 0 if result.status == "completed" else 1


def _server_data(args: argparse.Namespace, config: RunConfig):
    """(task, ServerData|None) from the server's own data, or from --classes/--features."""
    from fl.runs.hosting import server_task_and_data
    from fl.federation.task import Task

    if args.dataset or args.csv:
        return server_task_and_data(config)
    if not args.classes or not args.features:
        raise UsageError("the server needs its own data (--dataset or --csv/--target) or, for federated "
                         "evaluation, both --classes and --features")
    if config.aggregation == "stacking":
        raise UsageError("stacking needs a validation split on the server: give it --dataset or --csv")
    from fl.data import normalize_labels

    classes = sorted(set(normalize_labels([c.strip() for c in args.classes.split(",") if c.strip()]).tolist()))
    if len(classes) < 2:
        raise UsageError("--classes needs at least two labels, e.g. --classes 0,1")
    return Task(config.model, dict(config.model_params), args.features, classes,
                local_test_size=config.local_test_size), None


def cmd_server(args: argparse.Namespace) -> int:
    from fl.federation.rounds import RoundRunner
    from fl.runs.store import RunWriter, new_run_id
    from fl.federation.server import FederatedServer, ServerSettings

    config = config_from_args(args, clients=max(args.min_clients, 1))
    try:
        task, data = _server_data(args, config)
    except (DataError, ConfigError) as exc:
        raise UsageError(str(exc)) from None
    run_id = new_run_id()
    writer = RunWriter(args.out, config.to_dict(), run_id) if args.out else None
    printer = progress_printer(config.effective_rounds)

    def sink(event: dict) -> None:
        printer(event)
        if writer is not None:
            writer.on_event(event)

    settings = ServerSettings(host=args.host, port=args.port, token=args.token, max_clients=args.max_clients,
                              wait_for_clients=args.min_clients, join_timeout_s=args.wait,
                              ssl_context=_server_tls(args))
    server = FederatedServer(task, settings, on_event=sink, run_id=run_id)
    try:
        host, port = server.bind()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})", file=sys.stderr)
        return 1
    print(f"listening on {host}:{port}", flush=True)
    runner = RoundRunner(server, config, data)
    try:
        result = runner.run()
    except KeyboardInterrupt:
        server.stop()
        return 1
    if writer is not None:
        writer.finish(result.status, model=result.model, error=result.error)
    return _finish(result)


def cmd_client(args: argparse.Namespace) -> int:
    from fl.federation.client import ClientSettings, FederatedClient, LocalData

    if args.csv:
        if not args.target:
            raise UsageError("--csv needs --target COL, the label column")
        try:
            own = load_client_frame(args.csv, args.target)
        except DataError as exc:
            raise UsageError(str(exc)) from None
        local = LocalData(X=own.X, y=own.y, feature_names=own.names, frame=own.frame, target_values=own.target_values)
        default_id = f"{socket.gethostname()}-csv"
    elif args.dataset and args.partition_id is not None and args.num_partitions:
        if not 0 <= args.partition_id < args.num_partitions:
            raise UsageError(f"--partition-id must be between 0 and {args.num_partitions - 1}")
        try:
            ds = load_dataset(args.dataset, n_samples=args.n_samples, n_features=args.n_features,
                              n_classes=args.n_classes, seed=args.seed)
            fed = make_federated_data(ds, n_clients=args.num_partitions, partition_method=args.partition,
                                      alpha=args.alpha, shards_per_client=args.shards_per_client,
                                      quantity_skew=args.quantity_skew, min_samples=args.min_samples,
                                      test_size=args.test_size, val_size=0.0, seed=args.seed)
            X, y = fed.client_data(args.partition_id)
        except DataError as exc:
            raise UsageError(str(exc)) from None
        local = LocalData(X=X, y=y, feature_names=list(ds.feature_names))
        default_id = f"client_{args.partition_id:03d}"
    else:
        raise UsageError("a client needs its data: --csv FILE --target COL, or --dataset NAME "
                         "--partition-id I --num-partitions N")
    client_id = args.client_id or default_id
    from fl.wire import CLIENT_ID_PATTERN

    if not CLIENT_ID_PATTERN.fullmatch(client_id):
        raise UsageError(f"--client-id {client_id!r} must be 1-64 chars of A-Z a-z 0-9 _ . -")
    settings = ClientSettings(host=args.host, port=args.port, token=args.token,
                              connect_timeout_s=args.connect_timeout, pin_sha256=args.tls_pin)
    if args.tls_ca or args.tls_pin:
        from fl.wire.tls import client_context

        try:
            settings.ssl_context = client_context(cafile=args.tls_ca, pin_sha256=args.tls_pin)
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot use --tls-ca {args.tls_ca}: {exc}") from None
    on_attempt, on_event = client_printer(client_id)
    print(f"{client_id}: connecting to {args.host}:{args.port} with {len(local.y)} local rows", flush=True)
    result = FederatedClient(client_id, local, settings, seed=args.seed, on_event=on_event,
                             on_attempt=on_attempt).run()
    print(f"{client_id}: left ({result.reason}) after {result.rounds_trained} rounds", flush=True)
    return 0 if result.ok else 1


def _server_tls(args: argparse.Namespace) -> Any:
    if not (args.tls_cert or args.tls_key):
        return None
    if not (args.tls_cert and args.tls_key):
        raise UsageError("TLS needs both --tls-cert and --tls-key")
    from fl.wire.tls import server_context

    try:
        return server_context(args.tls_cert, args.tls_key)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the TLS certificate or key: {exc}") from None


def cmd_certs(args: argparse.Namespace) -> int:
    from fl.wire.tls import default_hosts, make_certificates

    made = make_certificates(args.out, args.host or default_hosts(), days=args.days)
    print(f"CA certificate (give to clients, --tls-ca): {made['ca']}")
    print(f"server certificate and key (--tls-cert, --tls-key): {made['cert']} {made['key']}")
    print(f"or pin the server certificate on clients: --tls-pin {made['pin']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        commands = {"simulate": cmd_simulate, "server": cmd_server, "client": cmd_client, "certs": cmd_certs}
        return commands[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
