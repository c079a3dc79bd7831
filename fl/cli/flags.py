"""The flags the commands share, generated from declarations: a run's (RunConfig's knobs, fl/runs/knobs.py) and
the network's (fl/runs/network.py); and the run settings they give (``config_from_args``, ``--resume``).

Unset run flags stay unset, so the config's (or the saved run's) value
applies; each default is written once, in the knob or the network setting.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from fl.cli.types import json_object
from fl.cli.usage import UsageError
from fl.runs.config import ConfigError, RunConfig
from fl.runs.knobs import default_of, knobs_of
from fl.runs.network import TLS, NetSetting
from fl.runs.resume import Resumable, open_resume
from fl.runs.words import for_cli

GROUP_TITLES = {"data": "data", "split": "split across clients", "model": "model and aggregation",
                "rounds": "rounds and evaluation", "optimizer": "server optimisers and FedProx",
                "faults": "simulated faults and attacks", "privacy": "differential privacy",
                "runtime": "runtime", "tracking": "experiment tracking"}

RESUME_HELP = ("continue the run in --out DIR after its last finished round (its saved settings, its "
               "checkpoint, its run id); run flags given again must equal the saved settings")


# ---------------------------------------------------------------------- flags
def add_knob_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """One flag per knob the command takes; unset flags stay unset (the config's default applies)."""
    groups: dict[str, Any] = {}
    for name, k in knobs_of(RunConfig).items():
        if command not in k.commands:
            continue
        group = groups.get(k.group) or groups.setdefault(k.group, parser.add_argument_group(GROUP_TITLES[k.group]))
        default = default_of(RunConfig, name)
        shown = "on" if default is True else "off" if default is False or default == "" else default
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": f"{k.help} (default: {shown})"}
        flag = k.flag_name(name)
        if k.kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif k.kind is dict:
            group.add_argument(flag, type=json_object, metavar="JSON", **kw)
        elif k.choices is not None:
            group.add_argument(flag, choices=list(k.choices()), **kw)
        else:
            if k.const is not None:  # the value is optional: the flag alone means k.const
                kw.update(nargs="?", const=k.const)
            group.add_argument(flag, type=k.parse or k.kind,
                               metavar=name.split("_")[-1].upper() if k.kind is str or k.parse else None, **kw)


def add_network_flags(network: Any, tls: Any, specs: Sequence[NetSetting]) -> None:
    """One flag per network setting that has one (fl/runs/network.py), with its declared default: the TLS files
    in ``tls``, the rest in ``network`` (argument groups)."""
    for s in specs:
        if s.flag is None:
            continue
        group = tls if s.group == TLS else network
        kw: dict[str, Any] = {"dest": s.name, "default": s.default, "help": for_cli(s.flag_help())}
        if s.metavar:
            kw["metavar"] = s.metavar
        group.add_argument(s.flag_name(), type=s.parse or (None if s.kind is str else s.kind), **kw)


def add_cluster_network_flags(parser: argparse.ArgumentParser) -> None:
    """Where a simulation's server listens when its hosts are on a cluster (``--cluster``)."""
    net = parser.add_argument_group("network (with --cluster)")
    net.add_argument("--host", help="the address the run's server binds: 127.0.0.1 for a local run (it listens "
                                    "on loopback only); with --cluster, one the cluster's workers reach (default: "
                                    "this machine's address towards the scheduler)")
    net.add_argument("--advertise-host", metavar="HOST", help="the address the hosts on the cluster connect to, "
                                                              "when it differs from --host (NAT, 0.0.0.0)")


# ---------------------------------------------------------------------- the run's settings
def config_from_args(args: argparse.Namespace, data_at_clients: bool = False, **fixed: Any) -> RunConfig:
    """The saved config (``--config``) or the defaults, then every flag given, then ``fixed``; validated
    (``data_at_clients``: a server whose CSV rows are all at the sites needs no file)."""
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values = _read_config(args.config).to_dict()
    given = {name: getattr(args, name) for name in knobs_of(RunConfig) if hasattr(args, name)}
    if given.get("csv_path") and "dataset" not in given:
        given["dataset"] = "csv"
    values.update(given)
    values.update(fixed)
    return RunConfig.from_dict(values).validate(data_at_clients)  # a ConfigError is the usage error's line


def _read_config(path: str) -> RunConfig:
    try:
        return RunConfig.from_json(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read --config {path} ({exc.strerror or exc})") from None
    except ConfigError as exc:
        raise UsageError(f"--config {path}: {exc}") from None


def resume_from_args(args: argparse.Namespace) -> Resumable | None:
    """``--resume``: the run in --out DIR, read and checked (a Resumable), or None without the flag.

    Run flags (and ``--config``) may be given again as long as they say what the run was saved with (the
    command that started it, repeated with --resume); a changed one is refused by name, with both values.
    """
    if not getattr(args, "resume", False):
        return None
    if not args.out:
        raise UsageError("--resume continues the run in --out DIR: add --out")
    resumable = open_resume(args.out)  # a CheckpointError is the usage error's line
    changed = changed_settings(args, resumable.config)
    if changed:
        raise UsageError(f"--resume goes on with the run's saved settings; {', '.join(changed)}: "
                         f"drop {'it' if len(changed) == 1 else 'them'}")
    return resumable


def changed_settings(args: argparse.Namespace, saved: RunConfig) -> list[str]:
    """The run flags given (directly, or in ``--config``) whose values differ from ``saved``, each with both."""
    knobs = knobs_of(RunConfig)
    changed = [f"{knobs[name].flag_name(name)} {_shown(getattr(args, name))} differs from the saved "
               f"{_shown(getattr(saved, name))}"
               for name in knobs if hasattr(args, name) and getattr(args, name) != getattr(saved, name)]
    if getattr(args, "config", None):
        other = _read_config(args.config)
        changed += [f"--config {args.config} sets {knobs[name].flag_name(name)} {_shown(getattr(other, name))}, "
                    f"the saved {_shown(getattr(saved, name))}"
                    for name in knobs if getattr(other, name) != getattr(saved, name) and not hasattr(args, name)]
    return changed


def _shown(value: Any) -> str:
    """A setting as typed on the command line."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "default"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
