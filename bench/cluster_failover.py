"""Failover benchmark of the cluster (called by bench_cluster.py, or alone: `python
bench/cluster_failover.py [clients]`).

N socket.io clients (python-socketio on asyncio, WebSocket, spread over a few load-generator processes)
log in through sticky-proxy (cf affinity) on 3 chat-node instances. kill -9 the instance holding the
most clients; for each of its clients, measure the time from the kill until it is reconnected through
the proxy and recovered (its Socket.IO session restored from pid + offset). Meanwhile a client on
another instance keeps sending; afterwards every client must hold every acknowledged message exactly
once (lost and duplicated must be 0).

Reference, same run, same clients: a planned reconnect (the clients of that instance disconnect and
reconnect through the proxy while nothing fails). CPU seconds of every process during the failover
show whether the servers or the load generator were the limit (2 shared cores)."""

from __future__ import annotations

import asyncio
import collections
import json
import multiprocessing
import os
import random
import resource
import statistics
import sys
import time
import uuid

import benchsetup  # noqa: E402,F401  (release binaries by default; Tests/python on the path)

from cluster_run import ClusterRun, chat_cluster  # noqa: E402
import harness  # noqa: E402

P99_TARGET = 1.5
SEND_INTERVAL = 0.2


# ---------------------------------------------------------------- one load-generator process

def worker_main(connection, base: str, names: list[str]):
    """Runs in its own process: its users, driven by commands from the parent."""
    import aiohttp
    import socketio

    class RecordingAsyncClient(socketio.AsyncClient):
        async def _handle_connect(self, namespace, data):
            if isinstance(data, dict):
                self.last_connect = dict(data)
            await super()._handle_connect(namespace, data)

    class User:
        def __init__(self, name: str):
            self.name = name
            self.http = None
            self.sio = None
            self.pid = None
            self.offset = None
            self.welcome = None
            self.welcomed = asyncio.Event()
            self.disconnected = asyncio.Event()
            self.ids: set[str] = set()
            self.duplicates = 0
            self.failures: list[str] = []

        async def login(self):
            # unsafe: accept cookies for 127.0.0.1, as a browser does.
            self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=aiohttp.ClientTimeout(total=30))
            async with self.http.post(base + "/user", data={"user": self.name}, allow_redirects=False) as response:
                if response.status != 303:
                    raise RuntimeError(f"login of {self.name} answered {response.status}")

        async def connect(self):
            if self.sio is not None:
                try:
                    await self.sio.disconnect()
                except Exception:  # noqa: BLE001 - already gone
                    pass
            sio = RecordingAsyncClient(reconnection=False, http_session=self.http)
            sio.on("*", self.on_event)

            async def on_disconnect(*reason, client=sio):
                if client is self.sio:  # only the current connection's loss counts
                    self.disconnected.set()
            sio.on("disconnect", on_disconnect)
            auth = {"pid": self.pid, "offset": self.offset} if self.pid and self.offset else None
            self.welcome = None
            self.welcomed.clear()
            self.disconnected.clear()
            self.sio = sio
            await sio.connect(base, auth=auth, transports=["websocket"], wait_timeout=15)
            self.pid = getattr(sio, "last_connect", {}).get("pid")
            await asyncio.wait_for(self.welcomed.wait(), 15)

        async def reconnect_until_recovered(self) -> float:
            while True:
                try:
                    await self.connect()
                    return time.monotonic()
                except Exception as error:  # noqa: BLE001 - refused or cut while the cluster settles: jittered retry
                    self.failures.append(f"{type(error).__name__}: {error}"[:120])
                    await asyncio.sleep(random.uniform(0.05, 0.25))

        async def on_event(self, event, *args):
            if args and isinstance(args[-1], str):
                self.offset = args[-1]
            if event == "chat" and len(args) == 2:
                message_id = json.loads(args[0]).get("id")
                if message_id:
                    if message_id in self.ids:
                        self.duplicates += 1
                    self.ids.add(message_id)
            elif event == "welcome":
                self.welcome = args[0]
                self.welcomed.set()

        @property
        def instance(self) -> int:
            return int(self.welcome["index"])

    async def limited(coroutines, limit=40):
        semaphore = asyncio.Semaphore(limit)

        async def run(coroutine):
            async with semaphore:
                return await coroutine
        return await asyncio.gather(*(run(c) for c in coroutines))

    async def main():
        loop = asyncio.get_running_loop()
        users = [User(name) for name in names]
        failovers: list[asyncio.Task] = []
        sender_task = None
        acked: list[str] = []
        stop_sending = asyncio.Event()

        async def send_loop(sender):
            number = 0
            message_id = f"{os.getpid()}-{number}-{uuid.uuid4().hex[:6]}"
            while not stop_sending.is_set():
                # An unacknowledged message is resent with the same id (the server stores each id once).
                try:
                    ack = await sender.sio.call("chat", json.dumps({"action": "message", "msg": f"m{number}", "id": message_id}), timeout=5)
                    if isinstance(ack, dict) and ack.get("ok"):
                        acked.append(message_id)
                        number += 1
                        message_id = f"{os.getpid()}-{number}-{uuid.uuid4().hex[:6]}"
                except Exception:  # noqa: BLE001 - resent
                    pass
                # 5 messages/s: each is delivered to every client, and 1,000 python-socketio clients
                # decoding a fast stream would make the load generator, not the cluster, the bottleneck.
                await asyncio.sleep(SEND_INTERVAL)

        async def failover(user):
            await asyncio.wait_for(user.disconnected.wait(), 30)
            noticed_at = time.monotonic()
            recovered_at = await user.reconnect_until_recovered()
            return recovered_at, bool(user.welcome.get("recovered")), noticed_at, user.failures[-3:]

        while True:
            command, *args = await loop.run_in_executor(None, connection.recv)
            if command == "connect":
                await limited([u.login() for u in users])
                await limited([u.connect() for u in users])
                connection.send(("connected", {u.name: u.instance for u in users}))
            elif command == "planned":
                victims = [u for u in users if u.instance == args[0]]
                connection.send(("planned", await asyncio.gather(*(v.reconnect_until_recovered() for v in victims))))
            elif command == "arm":
                failovers = [asyncio.create_task(failover(u)) for u in users if u.instance == args[0]]
                connection.send(("armed", len(failovers)))
            elif command == "send":
                sender = next((u for u in users if u.instance != args[0]), None)
                if sender is not None:
                    stop_sending.clear()
                    sender_task = asyncio.create_task(send_loop(sender))
                connection.send(("sending", sender is not None))
            elif command == "collect":
                connection.send(("collected", await asyncio.wait_for(asyncio.gather(*failovers), 120)))
            elif command == "stop":
                stop_sending.set()
                if sender_task is not None:
                    await sender_task
                connection.send(("acked", list(acked)))
            elif command == "verify":
                expected = set(args[0])
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and not all(expected <= u.ids for u in users):
                    await asyncio.sleep(0.1)
                connection.send(("verified", sum(len(expected - u.ids) for u in users), sum(u.duplicates for u in users)))
            elif command == "close":
                for user in users:
                    try:
                        if user.sio is not None:
                            await user.sio.disconnect()
                    except Exception:  # noqa: BLE001
                        pass
                    if user.http is not None:
                        await user.http.close()
                connection.send(("closed",))
                return

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * len(names) + 512)), hard))
    asyncio.run(main())


# ---------------------------------------------------------------- the parent

class Workers:
    """The load-generator processes; the last one only hosts the sender (its own event loop, so that a
    reconnect storm in the others does not delay its sends)."""

    def __init__(self, base: str, count: int, processes: int):
        context = multiprocessing.get_context("spawn")
        self.connections = []
        self.processes = []
        groups = [[f"bench{n:04d}" for n in range(number, count, processes)] for number in range(processes)] + [["bench-sender"]]
        for names in groups:
            parent, child = context.Pipe()
            process = context.Process(target=worker_main, args=(child, base, names), daemon=True)
            process.start()
            self.connections.append(parent)
            self.processes.append(process)

    def ask(self, command, *args, only_sender: bool = False, timeout: float = 300):
        targets = self.connections[-1:] if only_sender else self.connections
        for connection in targets:
            connection.send((command, *args))
        answers = []
        for connection in targets:
            if not connection.poll(timeout):
                raise TimeoutError(f"a load generator did not answer {command} within {timeout}s")
            answers.append(connection.recv()[1:])
        return answers

    def close(self):
        try:
            self.ask("close", timeout=60)
        except Exception:  # noqa: BLE001
            pass
        for process in self.processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def scenario(cluster: ClusterRun, base: str, count: int, processes: int) -> list[str]:
    workers = Workers(base, count, processes)
    try:
        started = time.monotonic()
        placement: dict[str, int] = {}
        for (answer,) in workers.ask("connect"):
            placement.update(answer)
        connect_time = time.monotonic() - started
        sender_instance = placement.pop("bench-sender")
        per_instance = collections.Counter(placement.values())
        # The instance holding the most clients, other than the sender's.
        victim = next(index for index, _ in per_instance.most_common() if index != sender_instance)

        planned_start = time.monotonic()
        planned = [t - planned_start for (times,) in workers.ask("planned", victim) for t in times]

        status = cluster.status()
        pids = {f"chat.{i['index']}": i["pid"] for i in status["instances"] if i.get("pid")}
        pids["proxy"] = status["proxy"]["pid"]
        pids["redis"] = status["redis"]["pid"]
        # The supervisor relays every instance's Redis traffic (`cluster redis slow|hang|cut`): a server too.
        pids["cluster"] = cluster.program.process.pid
        pids.update({f"load generator {n}": p.pid for n, p in enumerate(workers.processes)})

        workers.ask("arm", victim)
        (sending,) = workers.ask("send", victim, only_sender=True)
        if not sending[0]:
            raise RuntimeError("no sender outside the victim instance")
        time.sleep(0.5)  # a few messages flow before the kill
        cpu_before = {name: harness.cpu_seconds([pid]) for name, pid in pids.items()}
        kill_at = time.monotonic()
        cluster.ctl("kill", str(victim))
        results = [r for (answer,) in workers.ask("collect") for r in answer]
        window = time.monotonic() - kill_at
        cpu = {name: max(0.0, harness.cpu_seconds([pid]) - cpu_before[name]) for name, pid in pids.items() if name != f"chat.{victim}"}
        # The killed instance's successor started after the kill: all its CPU time counts.
        successor = next((i.get("pid") for i in cluster.status()["instances"] if i["index"] == victim), None)
        cpu[f"chat.{victim} (restarted)"] = harness.cpu_seconds([successor]) if successor else 0.0
        time.sleep(0.5)  # and a few after the recovery
        ((acked,),) = workers.ask("stop", only_sender=True)
        lost = duplicated = 0
        for verified_lost, verified_duplicated in workers.ask("verify", acked):
            lost += verified_lost
            duplicated += verified_duplicated
    finally:
        workers.close()

    times = [result[0] - kill_at for result in results]
    noticed = [result[2] - kill_at for result in results]
    recovered = sum(1 for result in results if result[1])
    failures = collections.Counter(failure for result in results for failure in result[3])
    p50, p99 = statistics.median(times), percentile(times, 0.99)
    reference_p50, reference_p99 = statistics.median(planned), percentile(planned, 0.99)
    servers = sum(v for k, v in cpu.items() if not k.startswith("load"))
    generator = sum(v for k, v in cpu.items() if k.startswith("load"))
    lines = [
        f"{count} WebSocket clients (python-socketio on asyncio, {processes} load-generator processes) logged in through sticky-proxy "
        f"(cf) on 3 chat-node instances ({', '.join(f'chat.{i}: {n}' for i, n in sorted(per_instance.items()))}), connected in "
        f"{connect_time:.1f} s. kill -9 of chat.{victim} ({len(results)} clients) while a sender on chat.{sender_instance} (its own "
        f"process) sends a message every {SEND_INTERVAL * 1000:.0f} ms, resending unacknowledged ones with the same id.", "",
        "| | p50 | p99 | max |", "|---|---|---|---|",
        f"| failover: kill -9 -> reconnected and recovered | {p50 * 1000:.0f} ms | {p99 * 1000:.0f} ms | {max(times) * 1000:.0f} ms |",
        f"| of which: kill -9 -> the client sees its connection closed | {statistics.median(noticed) * 1000:.0f} ms | "
        f"{percentile(noticed, 0.99) * 1000:.0f} ms | {max(noticed) * 1000:.0f} ms |",
        f"| reference: planned reconnect of the same clients | {reference_p50 * 1000:.0f} ms | {reference_p99 * 1000:.0f} ms | "
        f"{max(planned) * 1000:.0f} ms |",
        f"| ratio failover / reference | {p50 / reference_p50:.2f} | {p99 / reference_p99:.2f} | |", "",
        f"Sessions recovered: {recovered} of {len(results)}. Messages acknowledged during the failover: {len(acked)}; lost "
        f"(client x message pairs missing): {lost}; duplicated: {duplicated}. Failed reconnect attempts (retried after 50-250 ms): "
        f"{sum(failures.values())}{': ' + '; '.join(f'{n}x {text}' for text, n in failures.most_common(3)) if failures else ''}.", "",
        f"CPU seconds used during the {window:.2f} s failover window: servers {servers:.2f} "
        f"({', '.join(f'{k} {v:.2f}' for k, v in cpu.items() if not k.startswith('load'))}), load generator {generator:.2f}; "
        f"{servers / max(1, len(results)) * 1000:.1f} ms of server CPU per recovered client.",
    ]
    verdicts = [f"p99 {p99:.2f} s {'<=' if p99 <= P99_TARGET else '>'} {P99_TARGET} s ({'met' if p99 <= P99_TARGET else 'MISSED'})",
                f"messages lost {lost} ({'met' if lost == 0 else 'MISSED: must be 0'})"]
    lines.append("Targets: " + "; ".join(verdicts) + ".")
    return lines


def run(count: int = 1000, processes: int = 6) -> list[str]:
    lines = ["### Failover: kill -9 the busiest instance", ""]
    cluster = ClusterRun(chat_cluster(affinity="cf", log_level="warning"))
    try:
        cluster.wait_ready(timeout=120)
        lines += scenario(cluster, cluster.proxy_url(), count, processes)
    except Exception as error:  # noqa: BLE001 - a benchmark reports, it does not crash
        lines.append(f"Failed: {type(error).__name__}: {error}")
    finally:
        cluster.close()
    return lines


if __name__ == "__main__":
    print("\n".join(run(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 6)))
