#!/usr/bin/env python3
"""Redis client benchmark: pipelined SET, GET and PUBLISH through stickylab's RedisClient beside
redis-benchmark, same server, same pipeline depth and connections, in the same run, alternating rounds.
Reports throughput ratios and CPU time per command (utime+stime from the kernel, per process), which
compares fairly when the shared 2-core machine is busy. Prints a markdown section."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Tests" / "python"))
import harness  # noqa: E402

REQUESTS = int(os.environ.get("BENCH_REDIS_REQUESTS", "400000"))
PIPELINE = int(os.environ.get("BENCH_REDIS_PIPELINE", "16"))
CLIENTS = int(os.environ.get("BENCH_REDIS_CLIENTS", "4"))
ROUNDS = int(os.environ.get("BENCH_REDIS_ROUNDS", "3"))
TARGET = 0.7


def cpu_of(args: list[str]) -> tuple[str, float]:
    before = os.times()
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    after = os.times()
    return out, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def redis_benchmark(port: int, test: str) -> tuple[float, float]:
    args = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-n", str(REQUESTS), "-P", str(PIPELINE),
            "-c", str(CLIENTS), "-d", "3", "--csv", "-r", "100000"]
    args += ["PUBLISH", "bench", "xxx"] if test == "publish" else ["-t", test]
    out, cpu = cpu_of(args)
    rows = list(csv.reader(io.StringIO(out)))
    return float(rows[-1][1]), cpu / REQUESTS


def ours(port: int, test: str, api: str) -> tuple[float, float]:
    args = [str(harness.executable("stickylab-bench")), "redis", "--url", f"redis://127.0.0.1:{port}", "--test", test,
            "--requests", str(REQUESTS), "--pipeline", str(PIPELINE), "--clients", str(CLIENTS), "--data-size", "3",
            "--api", api]
    out, cpu = cpu_of(args)
    return json.loads(out.strip().splitlines()[-1])["ops_per_sec"], cpu / REQUESTS


def main() -> int:
    lines = ["## Redis client (RedisClient vs redis-benchmark)", "",
             f"{REQUESTS:,} commands per run, pipeline depth {PIPELINE}, {CLIENTS} connections, 3-byte values, "
             f"best of {ROUNDS} alternating rounds against one redis-server on loopback. "
             f"`async`: one Swift task per connection awaiting `pipeline`; `futures`: `pipelineFuture` chained on the "
             f"connection's event loop. CPU = user+system time of the load generator per command. "
             f"Target: >= {TARGET}x redis-benchmark.", "",
             "| test | redis-benchmark ops/s | RedisClient async ops/s | ratio | RedisClient futures ops/s | ratio | "
             "CPU us/cmd redis-benchmark | CPU us/cmd async | CPU us/cmd futures |",
             "|---|---|---|---|---|---|---|---|---|"]
    misses = []
    with harness.RedisServer() as server:
        for test in ["set", "get", "publish"]:
            ref, mine_async, mine_futures = (0.0, 1e9), (0.0, 1e9), (0.0, 1e9)
            for _ in range(ROUNDS):
                r = redis_benchmark(server.port, test)
                a = ours(server.port, test, "async")
                f = ours(server.port, test, "futures")
                ref = (max(ref[0], r[0]), min(ref[1], r[1]))
                mine_async = (max(mine_async[0], a[0]), min(mine_async[1], a[1]))
                mine_futures = (max(mine_futures[0], f[0]), min(mine_futures[1], f[1]))
            ra, rf = mine_async[0] / ref[0], mine_futures[0] / ref[0]
            if max(ra, rf) < TARGET:
                misses.append(test)
            lines.append(f"| {test.upper()} | {ref[0]:,.0f} | {mine_async[0]:,.0f} | {ra:.2f}x | {mine_futures[0]:,.0f} | {rf:.2f}x | "
                          f"{ref[1] * 1e6:.2f} | {mine_async[1] * 1e6:.2f} | {mine_futures[1] * 1e6:.2f} |")
    lines.append("")
    lines.append("Target met for every test." if not misses else f"Target NOT met for: {', '.join(misses)}.")
    print("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
