#!/usr/bin/env python3
"""chat-node benchmark: 3 instances, 1,000 clients in one room through Redis, against the same job in
python-socketio with AsyncRedisManager (bench/chat_peer.py), with the same load generator in the
same run. Reports delivered messages per second (each message reaches every client), p50/p99 latency
from send to delivery at half of chat-node's maximum rate, server CPU time per delivered message (fair
when the load generator saturates first on 2 shared cores), and chat-node's memory per idle client
at 10,000 connected clients on one instance. Prints a markdown section; exits 0 even when a target is
missed, and says so.

The load generator is one asyncio process speaking Engine.IO v4 / Socket.IO v5 over WebSocket with
aiohttp (the same frames for both servers: `42["chat","{\\"action\\":\\"message\\",...}"]`)."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "Tests" / "python"))
import harness  # noqa: E402

CLIENTS = int(os.environ.get("BENCH_CHAT_CLIENTS", "1000"))
NODES = int(os.environ.get("BENCH_CHAT_NODES", "3"))
SENDERS = int(os.environ.get("BENCH_CHAT_SENDERS", "20"))
STEP_SECONDS = float(os.environ.get("BENCH_CHAT_STEP_SECONDS", "4"))
RATES = [int(r) for r in os.environ.get("BENCH_CHAT_RATES", "5,10,20,40,80,160,320,640").split(",")]
IDLE_CLIENTS = int(os.environ.get("BENCH_CHAT_IDLE_CLIENTS", "10000"))
USERS = 100
TARGET_RATIO = 10
TARGET_P99_MS = 25
TARGET_IDLE_BYTES = 8 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        except (FileNotFoundError, IndexError, ValueError):
            pass
    return total


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def wait_healthy(url: str, program: harness.Program):
    def healthy():
        if program.process.poll() is not None:
            raise RuntimeError(f"{program.name} exited:\n{program.output()[-2000:]}")
        try:
            return requests.get(url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False
    harness.wait_until(f"{url} to be healthy", healthy, timeout=60)


class System:
    """N instances of one server implementation on one Redis."""

    def __init__(self, name: str, redis: harness.RedisServer, count: int, kind: str, **env: str):
        self.name = name
        self.kind = kind
        self.programs: list[harness.Program] = []
        self.urls: list[str] = []
        for index in range(count):
            port = harness.free_port()
            if kind == "chat-node":
                variables = {"PORT": str(port), "REDIS_URL": redis.url, "SESSION_SECRET": "bench", "CF_INSTANCE_INDEX": str(index),
                             "LOG_LEVEL": "warning", **env}
                program = harness.Program("chat-node", env=variables)
            else:
                program = PythonProgram([sys.executable, str(ROOT / "bench" / "chat_peer.py"), "--port", str(port), "--redis", redis.url])
            self.programs.append(program)
            self.urls.append(f"http://127.0.0.1:{port}")
        for url, program in zip(self.urls, self.programs):
            wait_healthy(url, program)
        self.cookies = self.login() if kind == "chat-node" else [""]

    def login(self) -> list[str]:
        cookies = []
        for index in range(USERS):
            response = requests.post(self.urls[index % len(self.urls)] + "/user", data={"user": f"user{index}"},
                                     allow_redirects=False, timeout=10)
            cookies.append(response.headers["Set-Cookie"].split(";")[0])
        return cookies

    @property
    def pids(self) -> list[int]:
        return [program.process.pid for program in self.programs]

    def stop(self):
        for program in self.programs:
            program.stop(timeout=20)


class PythonProgram(harness.Program):
    """harness.Program for a command that is not a built executable."""

    def __init__(self, command: list[str]):
        import subprocess
        import tempfile
        self.name = "chat_peer"
        self.log_path = Path(tempfile.mkdtemp(prefix="stickylab-peer-")) / "peer.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)


class Load:
    """Clients speaking Engine.IO/Socket.IO over WebSocket, counting chat deliveries."""

    def __init__(self, system: System):
        self.system = system
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.received = 0
        self.last_receive = 0.0
        self.recording = False
        self.latencies: list[int] = []
        self.closed = 0
        self.tasks: list[asyncio.Task] = []
        self.session: aiohttp.ClientSession | None = None

    async def open(self, count: int, urls: list[str] | None = None):
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))
        urls = urls or self.system.urls
        start = len(self.sockets)
        for batch in range(start, start + count, 200):
            ready = [asyncio.get_running_loop().create_future() for _ in range(min(200, start + count - batch))]
            for offset, future in enumerate(ready):
                index = batch + offset
                url = urls[index % len(urls)]
                cookie = self.system.cookies[index % len(self.system.cookies)]
                self.tasks.append(asyncio.create_task(self.client(index, url, cookie, future)))
            await asyncio.wait_for(asyncio.gather(*ready), timeout=120)

    async def client(self, index: int, url: str, cookie: str, ready: asyncio.Future):
        headers = {"Cookie": cookie} if cookie else None
        ws = await self.session.ws_connect(url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket",
                                           headers=headers, autoping=False, max_msg_size=0, compress=0)
        opening = await ws.receive_str()
        assert opening.startswith("0"), opening
        self.sockets.append(ws)
        await ws.send_str("40")
        sample = index % 10 == 0
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = message.data
                if data.startswith('42["chat"'):
                    self.received += 1
                    self.last_receive = time.perf_counter()
                    if sample and self.recording:
                        start = data.find("~T")
                        if start >= 0:
                            self.latencies.append(time.perf_counter_ns() - int(data[start + 2:data.find("~E", start)]))
                elif data == "2":
                    await ws.send_str("3")
                elif data.startswith("40"):
                    if not ready.done():
                        ready.set_result(True)
                elif data.startswith("44"):
                    if not ready.done():
                        ready.set_exception(RuntimeError(f"refused: {data}"))
        finally:
            self.closed += 1

    async def send_at(self, rate: float, seconds: float, tag: str) -> int:
        """`rate` messages per second in total, from SENDERS clients, for `seconds`; returns how many were sent."""
        senders = min(SENDERS, len(self.sockets))
        interval = senders / rate
        begin = time.perf_counter()
        end = begin + seconds
        counts = [0] * senders

        async def sender(k: int):
            ws = self.sockets[(k * len(self.sockets)) // senders]
            due = begin + k * interval / senders
            while due < end:
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                stamp = time.perf_counter_ns()
                payload = json.dumps({"action": "message", "msg": f"~T{stamp}~E", "id": f"{tag}-{k}-{counts[k]}"})
                await ws.send_str("42" + json.dumps(["chat", payload]))
                counts[k] += 1
                due += interval

        await asyncio.gather(*(sender(k) for k in range(senders)))
        return sum(counts)

    async def settle(self, expected: int, timeout: float = 5.0):
        """Waits until `expected` deliveries arrived, or nothing arrived for 1 s, or `timeout`."""
        deadline = time.perf_counter() + timeout
        while self.received < expected and time.perf_counter() < deadline:
            if self.last_receive and time.perf_counter() - self.last_receive > 1.0:
                break
            await asyncio.sleep(0.05)

    async def close(self):
        for ws in list(self.sockets):
            await ws.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session:
            await self.session.close()


async def measure(system: System) -> dict:
    load = Load(system)
    await load.open(CLIENTS)
    clients = len(load.sockets)
    await load.send_at(5, 1.0, "warm")
    await load.settle(load.received + 5 * clients)
    steps = []
    for rate in RATES:
        before = load.received
        cpu_before = cpu_seconds(system.pids)
        began = time.perf_counter()
        sent = await load.send_at(rate, STEP_SECONDS, f"r{rate}")
        await load.settle(before + sent * clients)
        elapsed = max(load.last_receive, began + STEP_SECONDS) - began
        delivered = load.received - before
        cpu = cpu_seconds(system.pids) - cpu_before
        kept_up = delivered >= 0.97 * sent * clients and elapsed <= STEP_SECONDS + 1.0
        steps.append({"rate": rate, "sent": sent, "delivered": delivered, "per_second": delivered / elapsed,
                      "cpu_us": cpu / max(1, delivered) * 1e6, "kept_up": kept_up})
        print(f"  {system.name}: {rate} msg/s -> {delivered / elapsed:,.0f} delivered/s "
              f"({delivered}/{sent * clients}, {elapsed:.1f}s){'' if kept_up else ' (fell behind)'}", file=sys.stderr, flush=True)
        if not kept_up or load.closed:
            break
    sustained = [step for step in steps if step["kept_up"]]
    best = max(sustained or steps, key=lambda step: step["per_second"])
    half_rate = max(1.0, best["per_second"] / 2 / clients)
    load.latencies.clear()
    load.recording = True
    before = load.received
    sent = await load.send_at(half_rate, 5.0, "half")
    await load.settle(before + sent * clients)
    load.recording = False
    latencies = sorted(load.latencies)
    p50 = latencies[len(latencies) // 2] / 1e6 if latencies else float("nan")
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1e6 if latencies else float("nan")
    result = {"clients": clients, "steps": steps, "max": best["per_second"], "max_rate": best["rate"],
              "cpu_us": statistics.median(step["cpu_us"] for step in (sustained or steps)), "half_rate": half_rate,
              "p50": p50, "p99": p99, "closed": load.closed}
    await load.close()
    return result


async def idle_memory(redis: harness.RedisServer) -> dict:
    system = System("chat-node idle", redis, 1, "chat-node", KEY_PREFIX="idle:")
    pid = system.pids[0]
    load = Load(system)
    try:
        await load.open(200)
        baseline = rss_bytes(pid)
        await load.open(IDLE_CLIENTS)
        connected = len(load.sockets) - 200
        loaded = rss_bytes(pid)
        return {"clients": connected, "baseline": baseline, "loaded": loaded, "per_client": (loaded - baseline) / max(1, connected)}
    finally:
        await load.close()
        system.stop()


def row(name: str, result: dict) -> str:
    return (f"| {name} | {result['clients']} | {result['max']:,.0f} | {result['max_rate']} | {result['cpu_us']:.1f} | "
            f"{result['half_rate']:.0f} | {result['p50']:.1f} | {result['p99']:.1f} |")


async def main() -> int:
    results = {}
    for name, kind in [("chat-node", "chat-node"), ("python-socketio + AsyncRedisManager", "peer")]:
        redis = harness.RedisServer()
        system = System(name, redis, NODES, kind)
        try:
            print(f"bench_chat: {name}, {NODES} instances, {CLIENTS} clients", file=sys.stderr, flush=True)
            results[name] = await measure(system)
        finally:
            system.stop()
            redis.stop()
    redis = harness.RedisServer()
    try:
        memory = await idle_memory(redis)
    finally:
        redis.stop()

    swift, peer = results["chat-node"], results["python-socketio + AsyncRedisManager"]
    ratio = swift["max"] / peer["max"] if peer["max"] else float("inf")
    cpu_ratio = peer["cpu_us"] / swift["cpu_us"] if swift["cpu_us"] else float("inf")
    lines = [
        "## chat-node (3 instances, one room, through Redis) vs python-socketio + AsyncRedisManager",
        "",
        f"{NODES} instances per system on one redis-server, {CLIENTS} WebSocket clients spread over them, {SENDERS} of them "
        f"sending; every message reaches every client. Send rate stepped up ({', '.join(map(str, RATES))} msg/s, "
        f"{STEP_SECONDS:.0f} s each) until a system falls behind; latency measured at half of that system's maximum. "
        "Same load generator (one asyncio process) for both.",
        "",
        "| system | clients | max delivered msg/s | at send rate msg/s | server CPU us per delivered msg | half-max send rate msg/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
        row("chat-node", swift),
        row("python-socketio + AsyncRedisManager", peer),
        "",
        f"- Throughput ratio: **{ratio:.1f}x** (target >= {TARGET_RATIO}x): {'met' if ratio >= TARGET_RATIO else 'NOT met'}.",
        f"- Server CPU per delivered message: python-socketio needs **{cpu_ratio:.1f}x** chat-node's "
        f"(the fair comparison when the load generator saturates first).",
        f"- chat-node p99 at half its maximum: **{swift['p99']:.1f} ms** (target <= {TARGET_P99_MS} ms): "
        f"{'met' if swift['p99'] <= TARGET_P99_MS else 'NOT met'}.",
        f"- Idle memory: {memory['clients']} clients on one chat-node: RSS {memory['baseline'] / 2**20:.1f} MiB -> "
        f"{memory['loaded'] / 2**20:.1f} MiB, **{memory['per_client'] / 1024:.1f} KB per client** "
        f"(target <= {TARGET_IDLE_BYTES // 1024} KB): {'met' if memory['per_client'] <= TARGET_IDLE_BYTES else 'NOT met'}.",
    ]
    for name, result in results.items():
        if result["closed"]:
            lines.append(f"- {name}: {result['closed']} client connections closed during the run (slow clients cut off).")
    print("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
