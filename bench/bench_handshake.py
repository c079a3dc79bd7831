"""What unauthenticated connections cost a server process: threads, descriptors, memory.

Starts ``python -m fl server`` (its own process, so its numbers are its own),
then: 1,000 idle connections held open (caps raised so that it keeps them
all), a legitimate client completing a 2-round run meanwhile; then 1,000
connect/close cycles sending garbage or a wrong token. Reads the server's
/proc/PID (Linux) before and after each. Loopback only; every socket and
process is closed at the end.

    python bench/bench_handshake.py          # ~20 s
"""

from __future__ import annotations

import json
import os
import resource
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def proc_stats(pid: int) -> dict[str, float]:
    """Threads, open descriptors and resident memory (MiB) of a process."""
    with open(f"/proc/{pid}/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
    return {"threads": len(os.listdir(f"/proc/{pid}/task")), "fds": len(os.listdir(f"/proc/{pid}/fd")), "rss": rss}


def row(label: str, s: dict[str, float]) -> str:
    return f"| {label} | {s['threads']:.0f} | {s['fds']:.0f} | {s['rss']:.1f} |"


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    server = subprocess.Popen([sys.executable, "-m", "fl", "server", "--dataset", "iris", "--port", "0",
                               "--min-clients", "1", "--rounds", "2", "--token", "s3cret", "--wait", "120",
                               "--max-pending", "2000", "--max-pending-per-address", "2000"],
                              cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    socks: list[socket.socket] = []
    try:
        port = int(server.stdout.readline().strip().rsplit(":", 1)[1])
        time.sleep(0.5)
        print("| server process | threads | open fds | RSS MiB |\n|---|---|---|---|")
        print(row("listening", proc_stats(server.pid)))
        wrong = json.dumps({"type": "hello", "protocol": 1, "client_id": "x", "token": "guess", "n_samples": 1,
                            "n_features": 4}).encode()
        payloads = [b"GET / HTTP/1.1\r\n\r\n", os.urandom(64), struct.pack(">4sIQ", b"FLW1", len(wrong), 0) + wrong]
        for i in range(1000):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(payloads[i % 3])
                sock.settimeout(2)
                try:
                    while sock.recv(4096):
                        pass
                except OSError:
                    pass
        time.sleep(0.5)
        print(row("after 1,000 connect/close cycles (garbage, wrong token)", proc_stats(server.pid)))
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(1000)]
        time.sleep(1.0)
        print(row("1,000 idle connections open", proc_stats(server.pid)))
        client = subprocess.run([sys.executable, "-m", "fl", "client", "--port", str(port), "--token", "s3cret",
                                 "--dataset", "iris", "--partition-id", "0", "--num-partitions", "2"],
                                cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
        print(f"\nlegitimate client meanwhile: exit {client.returncode}, "
              f"{client.stdout.strip().splitlines()[-1] if client.stdout.strip() else client.stderr.strip()}")
        server.wait(timeout=60)
        print(f"server: exit {server.returncode}, {server.stdout.read().strip().splitlines()[-1]}")
    finally:
        for sock in socks:
            sock.close()
        if server.poll() is None:
            server.kill()
            server.wait(10)


if __name__ == "__main__":
    main()
