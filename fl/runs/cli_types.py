"""How the command line reads its typed flags: durations, counts, JSON objects, partition ranges, client ids.

Each raises ``argparse.ArgumentTypeError`` with what is wrong, which the
parser turns into one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math


def seconds(text: str) -> float:
    """A duration flag: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more seconds")
    return value


def at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, e.g. '{\"C\": 0.5}'")
    return value


def parse_partitions(text: str) -> list[int]:
    """``3`` or a range ``0-249`` (inclusive), as argparse reads --partition-id."""
    text = str(text).strip()
    try:
        if "-" in text.lstrip("-"):
            first, last = (int(part) for part in text.split("-", 1))
            if last < first:
                raise ValueError
            return list(range(first, last + 1))
        return [int(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a partition number or a range such as 0-249") from None


def client_id_list(text: str) -> tuple[str, ...]:
    """``--expect-clients biscoe,dream,torgersen``: client ids, read as the Deploy page reads its field."""
    from fl.federation.identity import parse_client_ids

    try:
        ids = parse_client_ids(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not ids:
        raise argparse.ArgumentTypeError("name at least one client id, e.g. biscoe,dream,torgersen")
    return ids
