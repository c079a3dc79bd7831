"""Wire-protocol benchmarks: in-memory framing, loopback transfer, early rejection.

Run from the repository root:

    python bench/bench_protocol.py            # all three parts, ~30 s on 2 cores
    python bench/bench_protocol.py --part a   # only one part (a, b or c)

Prints markdown tables (paste them into docs/performance.md). Sizes are in
MiB (2**20 bytes); throughput is MiB/s. Only 127.0.0.1 is used, every socket
and thread is closed before the script returns.

(a) encode_frame + decode_frame in memory of a float64 parameter set.
    encode_frame hands back views of the arrays (no copy). decode_frame hands
    back views of the buffer only when an array's offset in it is 8-aligned;
    the body starts at 16 + header_len, so this is measured twice: with the
    header padded to put the body on an 8-byte boundary, and without. The
    b"".join (turning the send buffers into one in-memory frame) is a copy
    the socket path never makes.
(b) a Fit message of the same sizes through Connection.send / Connection.recv
    over a loopback TCP socket, sender in a thread, receiver in the main
    thread. Memory: peak traced allocations (tracemalloc, numpy included)
    during one transfer, and peak RSS (VmHWM) growth in a fresh child process.
(c) how fast a frame whose prefix claims a 200 MiB body is refused, and what
    it costs the receiver, in memory and over a socket.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _path in (ROOT, HERE):  # the repo (for fl) and bench/ (for _common), whatever the working directory
    if _path not in sys.path:
        sys.path.insert(0, _path)

import numpy as np  # noqa: E402

from _common import MachineLoad, source_version, table  # noqa: E402
from fl.wire import (  # noqa: E402
    MAGIC, PREFIX_SIZE, Fit, Limits, PeerClosed, ProtocolError, decode_frame, encode_frame,
)
from fl.wire.reference_peer import Connection, read_frame  # noqa: E402

MiB = 1 << 20
SIZES_MIB = (1, 10, 100)
HOST = "127.0.0.1"


# ------------------------------------------------------------------ helpers


def make_params(mib: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """An MLP-like float64 parameter set of about ``mib`` MiB (one big matrix, three small arrays)."""
    rng = np.random.default_rng(seed)
    hidden, out = 512, 10
    small = hidden + hidden * out + out
    rows = max(1, (mib * MiB // 8 - small) // hidden)
    return [
        ("coefs_0", rng.standard_normal((rows, hidden))),
        ("intercepts_0", rng.standard_normal(hidden)),
        ("coefs_1", rng.standard_normal((hidden, out))),
        ("intercepts_1", rng.standard_normal(out)),
    ]


def nbytes(params: list[tuple[str, np.ndarray]]) -> int:
    return sum(a.nbytes for _, a in params)


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def fmt_us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f}"


class LoopbackPair:
    """Two connected TCP sockets on 127.0.0.1 (listener closed at once)."""

    def __init__(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((HOST, 0))
            listener.listen(1)
            self.a = socket.create_connection(listener.getsockname()[:2], timeout=5.0)
            self.b, _ = listener.accept()
        finally:
            listener.close()
        for s in (self.a, self.b):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        for s in (self.a, self.b):
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> LoopbackPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ (a) in memory


def _header_with_body_offset(params, aligned: bool) -> dict:
    """A fit header padded (a config string) so the body starts 8-aligned in the frame, or not."""
    for pad in range(16):
        header = {"type": "fit", "round": 1, "config": {"pad": "x" * pad}}
        prefix = encode_frame(dict(header), params)[0]  # prefix + header JSON
        if (len(prefix) % 8 == 0) == aligned:
            return header
    raise AssertionError("unreachable")


def bench_memory() -> str:
    """Rows per size and body alignment: decode_frame copies float64 arrays whose offset is not 8-aligned."""
    rows = []
    for mib in SIZES_MIB:
        params = make_params(mib)
        size = nbytes(params)
        repeat = 50 if mib < 100 else 10
        for aligned in (True, False):
            header = _header_with_body_offset(params, aligned)
            bufs = encode_frame(dict(header), params)
            # no copy on encode: every array buffer is the array's own memory
            zero_copy_encode = all(np.shares_memory(np.frombuffer(b, np.uint8), a)
                                   for b, (_, a) in zip(bufs[1:], params, strict=True))
            t_enc = timed(lambda h=header, p=params: encode_frame(dict(h), p), repeat)
            t_join = timed(lambda b=bufs: b"".join(b), max(3, repeat // 5))
            data = b"".join(bufs)
            frame = decode_frame(data)
            whole = np.frombuffer(data, np.uint8)
            views = sum(np.shares_memory(a, whole) for _, a in frame.arrays)
            assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(params, frame.arrays, strict=True))
            t_dec = timed(lambda d=data: decode_frame(d), repeat)
            enc, join, dec = statistics.median(t_enc), statistics.median(t_join), statistics.median(t_dec)
            rows.append([
                f"{size / MiB:.2f}", f"{len(bufs[0]) % 8}", fmt_us(enc), fmt_us(dec),
                f"{size / MiB / (enc + dec):,.0f}", fmt_ms(join), f"{size / MiB / (enc + join + dec):,.0f}",
                "yes" if zero_copy_encode else "NO", f"{views} of {len(frame.arrays)}",
            ])
            del bufs, data, frame, whole
        del params
        gc.collect()
    return table(["MiB", "body offset % 8", "encode µs", "decode µs", "encode+decode MiB/s", "join ms (copy)",
                  "encode+join+decode MiB/s", "encode: views", "decode: arrays that are views"], rows)


# ------------------------------------------------------------------ (b) loopback


def _transfer(params, repeat: int, measure_alloc: bool = False) -> tuple[list[float], int, int | None]:
    """Send ``repeat`` Fit messages a->b; return per-message seconds, wire bytes, peak traced growth."""
    with LoopbackPair() as pair:
        tx, rx = Connection(pair.a), Connection(pair.b)
        go, errors = threading.Semaphore(0), []

        def sender() -> None:
            try:
                for _ in range(repeat):
                    go.acquire()
                    tx.send(Fit(round=1, config={"local_epochs": 1}, params=params))
            except Exception as exc:  # surfaced below
                errors.append(exc)

        thread = threading.Thread(target=sender, name="bench-sender", daemon=True)
        thread.start()
        times, peak_growth = [], None
        try:
            for _ in range(repeat):
                if measure_alloc:
                    gc.collect()
                    tracemalloc.reset_peak()
                    before = tracemalloc.get_traced_memory()[0]
                t0 = time.perf_counter()
                go.release()
                msg = rx.recv(idle_timeout=60.0)
                times.append(time.perf_counter() - t0)
                if measure_alloc:
                    peak_growth = tracemalloc.get_traced_memory()[1] - before
                assert isinstance(msg, Fit) and msg.params is not None
                assert msg.params[0][1].shape == params[0][1].shape
                del msg
        finally:
            thread.join(timeout=60.0)
            tx.close()
            rx.close()
        if errors:
            raise errors[0]
        return times, rx.bytes_received // repeat, peak_growth


def peak_rss() -> int:
    """Peak resident set of this process in bytes.

    VmHWM (Linux) belongs to this process image; ru_maxrss is the fallback,
    but on Linux a child started by fork+exec inherits the parent's ru_maxrss,
    which is why the measurement runs in a child and reads VmHWM.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_child(mib: int) -> None:
    """In a fresh process: peak RSS growth across one received Fit."""
    params = make_params(mib)
    _transfer([("w", np.zeros(8))], 1)  # warm up code paths without freeing a big buffer for reuse
    gc.collect()
    before = peak_rss()
    _transfer(params, 1)
    after = peak_rss()
    print(json.dumps({"body": nbytes(params), "growth": after - before}))


def rss_growth(mib: int) -> tuple[int, int]:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--rss-child", str(mib)],
                         capture_output=True, text=True, timeout=120, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["body"], res["growth"]


def bench_loopback() -> str:
    rows = []
    for mib in SIZES_MIB:
        params = make_params(mib)
        size = nbytes(params)
        repeat = 20 if mib == 1 else (10 if mib == 10 else 5)
        _transfer(params, 1)  # warm-up
        times, wire, _ = _transfer(params, repeat)
        tracemalloc.start()
        try:
            _, _, peak = _transfer(params, 1, measure_alloc=True)
        finally:
            tracemalloc.stop()
        body, growth = rss_growth(mib)
        med = statistics.median(times)
        alloc = statistics.median(timed(lambda n=size: bytearray(n), 5))  # what read_frame does before recv_into
        rows.append([
            f"{size / MiB:.2f}", f"{wire:,}", fmt_ms(med), fmt_ms(min(times)), f"{size / MiB / med:,.0f}",
            fmt_ms(alloc),
            f"{peak / MiB:.2f} ({peak / size:.2f}×)", f"{growth / MiB:.2f} ({growth / body:.2f}×)",
        ])
        del params
        gc.collect()
    return table(["MiB", "bytes on wire", "median ms", "best ms", "MiB/s (median)", "bytearray(body) alone, ms",
                  "peak traced alloc during recv, MiB (× body)", "peak RSS growth, MiB (× body)"], rows)


# ------------------------------------------------------------------ (c) rejection


def _claim_200mib() -> tuple[bytes, int]:
    """Prefix + a consistent header for one 200 MiB float64 array, and no body."""
    body_len = 200 * MiB
    header = json.dumps({"type": "fit", "round": 1, "config": {},
                         "arrays": [{"name": "w", "dtype": "<f8", "shape": [body_len // 8]}]}).encode()
    return struct.pack(">4sIQ", MAGIC, len(header), body_len) + header, body_len


def _decode_case(data: bytes, limits: Limits, repeat: int = 20000) -> tuple[float, str, int]:
    codes = set()

    def once() -> None:
        try:
            decode_frame(data, limits)
        except ProtocolError as exc:
            codes.add(exc.code)
        else:
            raise AssertionError("frame was accepted")

    for _ in range(100):
        once()
    t0 = time.perf_counter()
    for _ in range(repeat):
        once()
    per_call = (time.perf_counter() - t0) / repeat
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        once()
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return per_call, ",".join(sorted(codes)), peak


def _socket_case(data: bytes, limits: Limits, repeat: int) -> tuple[float, str, int]:
    """Peer sends prefix + header and closes; time read_frame until it raises."""
    times, codes, peak = [], set(), 0
    tracemalloc.start()
    try:
        for _ in range(repeat):
            with LoopbackPair() as pair:
                pair.a.sendall(data)
                pair.a.shutdown(socket.SHUT_WR)  # the body never comes
                gc.collect()
                tracemalloc.reset_peak()
                before = tracemalloc.get_traced_memory()[0]
                t0 = time.perf_counter()
                try:
                    read_frame(pair.b, limits, idle_timeout=5.0)
                except ProtocolError as exc:
                    codes.add(exc.code)
                except PeerClosed:
                    codes.add("PeerClosed after allocating the body")
                else:
                    raise AssertionError("frame was accepted")
                times.append(time.perf_counter() - t0)
                peak = max(peak, tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()
    return statistics.median(times), ",".join(sorted(codes)), peak


def bench_reject() -> str:
    data, body_len = _claim_200mib()
    assert len(data) > PREFIX_SIZE
    tight = Limits(max_message_bytes=100 * MiB)
    rows = []
    t, code, peak = _decode_case(data, Limits())
    rows.append(["decode_frame, default Limits (256 MiB)", code, fmt_us(t), f"{peak:,} B"])
    t, code, peak = _decode_case(data, tight)
    rows.append(["decode_frame, max_message_bytes=100 MiB", code, fmt_us(t), f"{peak:,} B"])
    t, code, peak = _socket_case(data, tight, repeat=50)
    rows.append(["read_frame over loopback, max_message_bytes=100 MiB", code, fmt_us(t), f"{peak:,} B"])
    t, code, peak = _socket_case(data, Limits(), repeat=5)
    rows.append(["read_frame over loopback, default Limits (256 MiB)", code, fmt_us(t),
                 f"{peak:,} B ({peak / MiB:.0f} MiB)"])
    return (f"Frame: {len(data)} bytes (16-byte prefix + header) claiming body_len = {body_len:,} "
            f"(200 MiB), no body follows.\n\n"
            + table(["case", "rejected as", "median µs", "peak traced alloc"], rows, first_left=True))


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("a", "b", "c"), action="append",
                        help="run only this part (repeatable); default: all")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child is not None:
        _rss_child(args.rss_child)
        return
    parts = args.part or ["a", "b", "c"]
    started, load = time.perf_counter(), MachineLoad()
    print(f"Python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, {source_version()}\n")
    if "a" in parts:
        print("### (a) encode_frame + decode_frame in memory (float64 parameter set)\n")
        print(bench_memory() + "\n", flush=True)
    if "b" in parts:
        print("### (b) Fit over loopback TCP, Connection.send -> Connection.recv\n")
        print(bench_loopback() + "\n", flush=True)
    if "c" in parts:
        print("### (c) rejecting a frame that claims a 200 MiB body\n")
        print(bench_reject() + "\n", flush=True)
    print(load.summary())
    print(f"total wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
