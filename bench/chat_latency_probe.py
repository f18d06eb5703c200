#!/usr/bin/env python3
"""Where chat-node's send-to-delivery latency goes: p50/p99 at a few send rates and client counts, split
per message into its first delivery and the spread to its last (the fan-out), with the same generator
as bench_chat.py (`stickylab-bench chat-load`, with bench_chat.py's settings and environment). Not part of `make bench`: run it by
hand (`.venv/bin/python bench/chat_latency_probe.py`, release binaries by default), it prints a
markdown table. Bounded: every cell is a 4 s step.

Environment: PROBE_NODES (3), PROBE_CLIENTS (10,100,1000), PROBE_RATES (5,50,130,260)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import bench_chat
import harness

NODES = int(os.environ.get("PROBE_NODES", "3"))
CLIENTS = [int(c) for c in os.environ.get("PROBE_CLIENTS", "10,100,1000").split(",")]
RATES = [float(r) for r in os.environ.get("PROBE_RATES", "5,50,130,260").split(",")]
SECONDS = 4.0


async def probe(clients: int) -> list[tuple[float, ...]]:
    redis = harness.RedisServer()
    system = bench_chat.System("chat-node", redis, NODES, "chat-node")
    load = bench_chat.Load(system)
    rows = []
    try:
        await load.open(clients)
        await load.send_at(5, 1.0, "warm")
        await load.settle(5 * clients)
        for cell, rate in enumerate(RATES):
            await load.drain()
            await load.refresh()
            before = load.received
            meter = bench_chat.CPUMeter(system, load)
            await load.record_latencies()
            sent = await load.send_at(rate, SECONDS, f"p{cell}-{int(rate)}")
            await load.settle(before + sent * clients)
            reply = await load.latencies()
            p50, p99 = reply["p50_ms"], reply["p99_ms"]
            fan_out = tuple(reply[key] for key in bench_chat.FAN_OUT_KEYS)
            delivered = max(1, load.received - before)
            server, own = (seconds / delivered * 1e6 for seconds in meter.read())
            kernel = meter.server_kernel() / delivered * 1e6
            rows.append((rate, p50, p99, *fan_out, server, kernel, own))
            print(f"  {clients} clients, {rate:g} msg/s: p50 {p50:.1f} ms, p99 {p99:.1f} ms", file=sys.stderr, flush=True)
    finally:
        await load.close()
        system.stop()
        redis.stop()
    return rows


async def main() -> int:
    print("| chat-node instances | clients | send rate msg/s | p50 ms | p99 ms | first delivery p50 / p99 ms | "
          "first to last p50 / p99 ms | server CPU us per delivery | of which kernel | generator CPU us per delivery |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for clients in CLIENTS:
        for rate, p50, p99, first50, first99, spread50, spread99, server, kernel, own in await probe(clients):
            print(f"| {NODES} | {clients} | {rate:g} | {p50:.1f} | {p99:.1f} | {first50:.1f} / {first99:.1f} | "
                  f"{spread50:.1f} / {spread99:.1f} | {server:.1f} | {kernel:.1f} | {own:.1f} |", flush=True)
    print(f"\nLoad average (1 min): {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
