"""Small helpers shared by the benchmark scripts (markdown tables, provenance, machine load)."""

from __future__ import annotations

import os
import resource
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def table(headers: list[str], rows: list[list[str]], first_left: bool = False) -> str:
    """A markdown table; numbers right-aligned (the first column left-aligned if asked)."""
    aligns = [":---" if (i == 0 and first_left) else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def source_version() -> str:
    """The commit measured, and whether fl/ had uncommitted changes (read-only git calls)."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "fl"], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "commit unknown"
    return f"commit {head or '?'}" + (" + uncommitted changes in fl/" if dirty else "")


def _busy_jiffies() -> int | None:
    """CPU time (all cores, in clock ticks) the whole machine spent busy, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle


def _own_cpu_s() -> float:
    """CPU seconds of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class MachineLoad:
    """How busy the rest of the machine was while a benchmark ran (Linux; 'unknown' elsewhere).

    Other processes on a shared 2-core machine inflate round times, so the
    scripts print this next to their numbers.
    """

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.monotonic(), _busy_jiffies(), _own_cpu_s()

    def summary(self) -> str:
        wall = time.monotonic() - self.t0
        busy1 = _busy_jiffies()
        if self.busy0 is None or busy1 is None or wall <= 0:
            return "machine load: unknown"
        busy = (busy1 - self.busy0) / os.sysconf("SC_CLK_TCK")
        own = _own_cpu_s() - self.own0
        cores = os.cpu_count() or 1
        other = max(busy - own, 0.0)
        return (f"machine load over {wall:.0f} s: this benchmark used {own / wall:.2f} cores, "
                f"other processes {other / wall:.2f} of {cores}")
