#!/usr/bin/env python3
"""Runs every bench/bench_*.py in turn (each measures its reference in the same run), prints their
markdown sections and saves them to bench-results/latest.md. Copy the figures into docs/benchmarks.md."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    only = set(sys.argv[1:])
    scripts = sorted((ROOT / "bench").glob("bench_*.py"))
    names = [s.stem.removeprefix("bench_") for s in scripts]
    unknown = sorted(only - set(names))
    if unknown:
        # `--help`, or a name mistyped: say what there is instead of running nothing.
        print(f"usage: bench/run.py [NAME ...] (make bench BENCH=NAME); names: {', '.join(names)}", file=sys.stderr)
        if unknown != ["--help"] and unknown != ["-h"]:
            print(f"bench: no benchmark called {', '.join(unknown)}", file=sys.stderr)
            return 2
        return 0
    if only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in only]
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    sections = [
        f"# stickylab benchmarks, {datetime.datetime.now().isoformat(timespec='seconds')}, {cores} cores, "
        f"1-minute load average {load:.1f} at the start",
        "",
    ]
    if load > cores / 2:
        print(
            f"bench: the machine is already busy (1-minute load average {load:.1f} on {cores} cores): every figure, "
            "the latencies most, will be worse than on a quiet machine; the ratios against the references compare best",
            file=sys.stderr,
            flush=True,
        )
    failed = []
    for script in scripts:
        print(f"bench: running {script.name} ...", file=sys.stderr, flush=True)
        result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True)
        if result.returncode != 0:
            failed.append(script.name)
            sections.append(f"## {script.name}: FAILED (exit {result.returncode})\n\n```\n{result.stderr[-3000:]}\n```\n")
        else:
            sections.append(result.stdout)
        print(sections[-1], flush=True)
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text("\n".join(sections))
    print(f"bench: results saved to {out / 'latest.md'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
