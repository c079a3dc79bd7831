"""A join/leave flood by a site that holds the token: what it costs a server, with and without the join limits.

Starts ``python -m fl server`` (its own process) with a token and ``--out``,
then a scripted peer says a valid hello, reads the welcome and hangs up, as
fast as the server answers, for FLOOD_S seconds before the rounds and
during them: either always under one id from 127.0.0.1 (the honest
clients' own address), or under a fresh id each time from 127.0.0.2. After
the first FLOOD_S seconds a client process hosting three honest partitions
joins from 127.0.0.1 and the 3-round run goes on. Reported per case: hellos
answered per second, joins admitted (sessions opened) per second, the
server's lines on stderr and the growth of events.jsonl per second (what a
flood leaves for good), all over the first FLOOD_S seconds; the joins over
the whole flood; and whether the honest clients finished (and how long
their process took, start-up included). Loopback
only (127.0.0.2 is on Linux's loopback); every socket and process is closed.

    python bench/bench_join_flood.py          # ~1.5 min
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import MachineLoad, source_version, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
FLOOD_S = 8.0
# as before the limits: no join limit, and no bound on new ids (it is max_clients per address)
OFF = ["--max-joins-per-client", "1000000000", "--max-joins-per-address", "1000000000", "--max-clients", "1000000000"]


def hello_frame(client_id: str) -> bytes:
    header = json.dumps({"type": "hello", "protocol": 1, "client_id": client_id, "token": "s3cret", "n_samples": 20,
                         "n_features": 4}).encode()
    return struct.pack(">4sIQ", b"FLW1", len(header), 0) + header


def read_answer(sock: socket.socket) -> str:
    """The type (and error code) of the server's first frame."""
    head = b""
    while len(head) < 16:
        chunk = sock.recv(16 - len(head))
        if not chunk:
            return "closed"
        head += chunk
    _, header_len, body_len = struct.unpack(">4sIQ", head)
    data = b""
    while len(data) < header_len + body_len:
        chunk = sock.recv(header_len + body_len - len(data))
        if not chunk:
            return "closed"
        data += chunk
    header = json.loads(data[:header_len])
    return header["type"] + (f":{header['code']}" if header["type"] == "error" else "")


def flood(port: int, source: str, fresh_ids: bool, stop: threading.Event, counts: dict[str, int]) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as sock:
                sock.sendall(hello_frame(f"f{i}" if fresh_ids else "flood"))
                answer = read_answer(sock)
        except ConnectionRefusedError:
            return  # the run is over
        except OSError:
            answer = "oserror"
        counts[answer] = counts.get(answer, 0) + 1


def case(fresh_ids: bool, limits: list[str]) -> list[str]:
    source = "127.0.0.2" if fresh_ids else "127.0.0.1"
    with tempfile.TemporaryDirectory() as out:
        server = subprocess.Popen([sys.executable, "-m", "fl", "server", "--dataset", "iris", "--port", "0",
                                   "--min-clients", "3", "--rounds", "3", "--token", "s3cret", "--wait", "120",
                                   "--out", out, *limits], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        err_lines: list[str] = []
        reader = threading.Thread(target=lambda: err_lines.extend(server.stderr), daemon=True)
        reader.start()
        stop, counts = threading.Event(), {}
        honest = None
        try:
            port = int(server.stdout.readline().strip().rsplit(":", 1)[1])
            start = time.monotonic()
            flooder = threading.Thread(target=flood, args=(port, source, fresh_ids, stop, counts), daemon=True)
            flooder.start()
            time.sleep(FLOOD_S)
            events_at_flood = os.path.getsize(Path(out) / "events.jsonl")
            lines_at_flood = len(err_lines)
            hellos_at_flood = sum(counts.values())
            joins_at_flood = counts.get("welcome", 0)
            honest_start = time.monotonic()
            honest = subprocess.Popen([sys.executable, "client_new.py", "--port", str(port), "--token", "s3cret",
                                       "--dataset", "iris", "--partition-id", "0-2", "--num-partitions", "3",
                                       "--connect-timeout", "90"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
            honest_out, _ = honest.communicate(timeout=180)
            honest_s = time.monotonic() - honest_start
            server.wait(timeout=60)
            flood_s = time.monotonic() - start
        finally:
            stop.set()
            for proc in (server, honest):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            reader.join(5)
    flood_kind = "fresh id each time, from 127.0.0.2" if fresh_ids else "one id, from the honest clients' 127.0.0.1"
    return [flood_kind, "off" if limits else "default",
            f"{hellos_at_flood / FLOOD_S:.0f}", f"{joins_at_flood / FLOOD_S:.1f}",
            f"{lines_at_flood / FLOOD_S:.1f}", f"{events_at_flood / FLOOD_S / 1024:.1f}",
            f"{counts.get('welcome', 0)} in {flood_s:.0f} s", f"{'yes' if honest.returncode == 0 else 'NO'} "
                                                              f"({honest_s:.1f} s)"]


def main() -> None:
    load = MachineLoad()
    rows = []
    for fresh_ids in (False, True):
        for limits in (OFF, []):
            rows.append(case(fresh_ids, limits))
    print(table(["flood", "join limits", "hellos/s", "joins/s", "stderr lines/s", "events.jsonl KiB/s",
                 "joins in all", "honest run completes"], rows, first_left=True))
    print(f"\n{FLOOD_S:g} s of flood before the honest clients come (rates over that time); "
          f"{source_version()}; {load.summary()}")


if __name__ == "__main__":
    main()
