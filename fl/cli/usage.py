"""The command line's one usage error, and the parser that raises it.

A usage error is a member of the engine's error family (fl/errors.py): main
(fl/cli/main.py) catches ``FLError`` once and prints its one line, exit code 2.
"""

from __future__ import annotations

import argparse

from fl.errors import FLError


class UsageError(FLError):
    """Exit 2 with this one line."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is a single 'error: ...' line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")
