"""How the command line reads its typed flags: JSON objects and partition ranges.

Each raises ``argparse.ArgumentTypeError`` with what is wrong, which the
parser turns into one line and exit code 2. The network flags' readers
(durations, counts, client ids) sit with their declaration, fl/runs/network.py.
"""

from __future__ import annotations

import argparse
import json


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
