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

import benchsetup  # noqa: E402,F401  (release binaries by default; Tests/python on the path)
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


APIS = {
    "async": "one Swift task per connection awaiting `pipeline` (on the cooperative pool)",
    "async-loop": "the same task with the connection's event loop as its executor "
                  "(`group.addTask(executorPreference: client.taskExecutor)`)",
    "futures": "`pipelineFuture` chained on the connection's event loop",
}


def main() -> int:
    lines = ["## Redis client (RedisClient vs redis-benchmark)", "",
             f"{REQUESTS:,} commands per run, pipeline depth {PIPELINE}, {CLIENTS} connections, 3-byte values, "
             f"best of {ROUNDS} alternating rounds against one redis-server on loopback. APIs: "
             + "; ".join(f"`{name}`: {text}" for name, text in APIS.items())
             + ". CPU = user+system time of the load generator per command. "
             f"Target: >= {TARGET}x redis-benchmark.", "",
             "| test | redis-benchmark ops/s | " + " | ".join(f"{name} ops/s | ratio" for name in APIS)
             + " | CPU us/cmd redis-benchmark | " + " | ".join(f"CPU us/cmd {name}" for name in APIS) + " |",
             "|---|---|" + "---|---|" * len(APIS) + "---|" + "---|" * len(APIS)]
    misses: dict[str, list[str]] = {name: [] for name in APIS}
    with harness.RedisServer() as server:
        for test in ["set", "get", "publish"]:
            ref = (0.0, 1e9)
            mine = {name: (0.0, 1e9) for name in APIS}
            for _ in range(ROUNDS):
                r = redis_benchmark(server.port, test)
                ref = (max(ref[0], r[0]), min(ref[1], r[1]))
                for name in APIS:
                    m = ours(server.port, test, name)
                    mine[name] = (max(mine[name][0], m[0]), min(mine[name][1], m[1]))
            cells = []
            for name in APIS:
                ratio = mine[name][0] / ref[0]
                if ratio < TARGET:
                    misses[name].append(test.upper())
                cells.append(f"{mine[name][0]:,.0f} | {ratio:.2f}x")
            lines.append(f"| {test.upper()} | {ref[0]:,.0f} | " + " | ".join(cells) + f" | {ref[1] * 1e6:.2f} | "
                         + " | ".join(f"{mine[name][1] * 1e6:.2f}" for name in APIS) + " |")
    lines.append("")
    for name in APIS:
        lines.append(f"- `{name}`: target " + ("met for every test." if not misses[name]
                                                 else f"NOT met for {', '.join(misses[name])}."))
    print("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
