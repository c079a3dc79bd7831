"""Messages in the words of whoever reads them: a command line's flags, or the dashboard's setting labels.

The engine names a setting in a message with a marker, ``«keep_columns»`` or
``«keep_columns=column_1»`` (any layer may write one: the format is the
contract), and each front end renders it: ``--keep-columns column_1`` on
the command line, ``“Keep excluded columns” (column_1)`` on a page. So no
page tells a person to pass a flag and no terminal tells them to press a
widget, and the setting's name and label are written once, in its knob.
"""

from __future__ import annotations

import re

from fl.runs.config import RunConfig
from fl.runs.knobs import knobs_of
from fl.runs.network import CLIENT_NETWORK, SERVER_NETWORK

MARKER = re.compile(r"«([a-z][a-z0-9_]*)(?:=([^»]*))?»")
# The network settings (fl/runs/network.py): their flags and the Deploy form's labels
NETWORK = {s.name: s for s in (*CLIENT_NETWORK, *SERVER_NETWORK)}  # a name both have: the server's
# Settings that are flags of a command but neither a RunConfig knob nor a network setting
OTHER_LABELS = {"num_partitions": "number of partitions", "classes": "class labels", "features": "number of features",
                "partition_id": "partition"}


def setting(name: str, value: object | None = None) -> str:
    """The marker that names a setting in a message (``value``: what to set it to, when the message knows)."""
    return f"«{name}»" if value is None else f"«{name}={value}»"


def for_cli(text: str) -> str:
    """Markers as command-line flags: ``--keep-columns column_1``."""
    knobs = knobs_of(RunConfig)

    def flag(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        k, net = knobs.get(name), NETWORK.get(name)
        shown = k.flag_name(name) if k is not None else net.flag_name() if net is not None and net.flag is not None \
            else "--" + name.replace("_", "-")
        return shown + (f" {value}" if value else "")

    return MARKER.sub(flag, str(text))


def for_page(text: str) -> str:
    """Markers as the dashboard's settings: ``“Keep excluded columns” (column_1)``."""
    knobs = knobs_of(RunConfig)

    def label(m: re.Match) -> str:
        name, value = m.group(1), m.group(2)
        k, net = knobs.get(name), NETWORK.get(name)
        shown = (k.label if k is not None and k.label else None) or (net.label if net is not None else None) \
            or OTHER_LABELS.get(name) or name.replace("_", " ")
        return f"“{shown}”" + (f" ({value})" if value else "")

    return MARKER.sub(label, str(text))


def plain(text: str) -> str:
    """Markers as setting names, for files both front ends read (``keep_columns = column_1``)."""
    return MARKER.sub(lambda m: m.group(1) + (f" = {m.group(2)}" if m.group(2) else ""), str(text))
