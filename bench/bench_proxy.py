#!/usr/bin/env python3
"""sticky-proxy against HAProxy 2.6 and nginx, same backend, same run.

HTTP: wrk through sticky-proxy (affinity cf, the request pinned with JSESSIONID + __VCAP_ID__),
HAProxy (`cookie SERVERID insert indirect nocache`, pinned with SERVERID) and nginx (`hash
$cookie_jsessionid consistent`), in front of one nginx backend with two listeners (a small body).
Rounds alternate between the proxies and the median is reported, with the proxy's CPU time per
request (utime + stime from /proc), which compares fairly when the load generator saturates first.

WebSocket: echo throughput (16 KiB binary frames, several connections, a window of frames in flight)
through sticky-proxy and HAProxy to one asyncio echo backend, with the proxy's CPU time per MiB.

Everything listens on free 127.0.0.1 ports and is stopped at the end. Prints a markdown section and
exits 0 even when a target is missed (it says so).

    .venv/bin/python bench/bench_proxy.py [--duration 6] [--rounds 3] [--connections 50]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import benchsetup  # noqa: E402,F401  (release binaries by default; Tests/python on the path)
import harness  # noqa: E402

BIN = harness.BIN
INSTANCES = ["aaaaaaaa-0000-4000-8000-0001", "aaaaaaaa-0000-4000-8000-0002"]
APP = "6e5a3b1c-1d2e-4f30-8a4b-5c6d7e8f9a0b"


def wait_for(port: int, process: subprocess.Popen, what: str, timeout: float = 20):
    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        return harness.is_listening(port)

    harness.wait_until(f"{what} to listen on {port}", up, timeout=timeout)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = harness.process_stat(int(entry.name))
            if fields and len(fields) > 1 and fields[1] == str(pid):
                found.append(int(entry.name))
    return found


class Service:
    def __init__(self, name: str, args: list[str], port: int, workdir: Path, cpu_of_children: bool = False):
        self.name = name
        self.port = port
        self.log = open(workdir / f"{name}.log", "wb")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.cpu_of_children = cpu_of_children
        wait_for(port, self.process, name)

    def pids(self) -> list[int]:
        return children(self.process.pid) if self.cpu_of_children else [self.process.pid]

    def cpu(self) -> float:
        return harness.cpu_seconds(self.pids())

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


def tool(name: str) -> str:
    for folder in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"]:
        if Path(folder, name).exists():
            return str(Path(folder, name))
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"{name} is not installed: run `make deps`")
    return found


def wrk(port: int, header: str, duration: int, connections: int) -> tuple[float, float, int]:
    out = subprocess.run(
        [tool("wrk"), "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-H", header, "-H", "Host: localhost",
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw {errors.group(1)} error responses on port {port}")
    return rps, float(p99.group(1)) * scale, requests


# --- configurations -------------------------------------------------------------------------------

def nginx_backend_conf(workdir: Path, ports: list[int]) -> Path:
    servers = "\n".join(f'  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello from instance {i}\\n"; }} }}'
                        for i, port in enumerate(ports))
    conf = workdir / "backend.conf"
    conf.write_text(textwrap.dedent(f"""\
        worker_processes 1;
        daemon off;
        pid {workdir}/backend.pid;
        error_log {workdir}/backend-error.log warn;
        events {{ worker_connections 4096; }}
        http {{
          access_log off;
          keepalive_requests 1000000;
        """) + servers + "\n}\n")
    return conf


def nginx_proxy_conf(workdir: Path, port: int, backends: list[int], threads: int) -> Path:
    upstream = "\n".join(f"    server 127.0.0.1:{b};" for b in backends)
    conf = workdir / "nginx-proxy.conf"
    conf.write_text(textwrap.dedent(f"""\
        worker_processes {threads};
        daemon off;
        pid {workdir}/nginx-proxy.pid;
        error_log {workdir}/nginx-proxy-error.log warn;
        events {{ worker_connections 8192; }}
        http {{
          access_log off;
          keepalive_requests 1000000;
          upstream app {{
            hash $cookie_jsessionid consistent;
        {upstream}
            keepalive 128;
          }}
          server {{
            listen 127.0.0.1:{port};
            location / {{
              proxy_pass http://app;
              proxy_http_version 1.1;
              proxy_set_header Connection "";
              proxy_set_header Host $host;
            }}
          }}
        }}
        """))
    return conf


def haproxy_conf(workdir: Path, port: int, backends: list[int], threads: int, name: str = "haproxy") -> Path:
    servers = "\n".join(f"  server s{i + 1} 127.0.0.1:{b} cookie s{i + 1}" for i, b in enumerate(backends))
    conf = workdir / f"{name}.cfg"
    conf.write_text(textwrap.dedent(f"""\
        global
          maxconn 8000
          nbthread {threads}
        defaults
          mode http
          timeout connect 5s
          timeout client 900s
          timeout server 900s
          timeout tunnel 900s
          option http-keep-alive
        frontend fe
          bind 127.0.0.1:{port}
          default_backend be
        backend be
          balance roundrobin
          cookie SERVERID insert indirect nocache
          option redispatch
        """) + servers + "\n")
    return conf


def routes_file(workdir: Path, backends: list[int]) -> Path:
    lines = ["routes:"]
    for index, port in enumerate(backends):
        lines += [f"  - host: 127.0.0.1", f"    port: {port}", "    uris: [localhost, 127.0.0.1]", f"    app: {APP}",
                  f"    private_instance_id: {INSTANCES[index]}", f'    private_instance_index: "{index}"']
    path = workdir / f"routes-{backends[0]}.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


# --- WebSocket echo -------------------------------------------------------------------------------

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def ws_echo_server(port: int):
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            key = re.search(rb"(?i)sec-websocket-key:\s*(\S+)", head).group(1)
            accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            while True:
                first = await reader.readexactly(2)
                length = first[1] & 0x7F
                if length == 126:
                    length = struct.unpack("!H", await reader.readexactly(2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", await reader.readexactly(8))[0]
                mask = await reader.readexactly(4) if first[1] & 0x80 else b""
                payload = await reader.readexactly(length)
                if mask and mask != b"\0\0\0\0":
                    payload = (int.from_bytes(payload, "big") ^ int.from_bytes((mask * (length // 4 + 1))[:length], "big")).to_bytes(length, "big")
                writer.write(ws_header(first[0] & 0x0F, length, masked=False) + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, AttributeError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port, limit=1 << 22)
    async with server:
        await server.serve_forever()


def ws_header(opcode: int, length: int, masked: bool) -> bytes:
    first = bytes([0x80 | opcode])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        header = first + bytes([mask_bit | length])
    elif length < 65536:
        header = first + bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        header = first + bytes([mask_bit | 127]) + struct.pack("!Q", length)
    return header + (b"\0\0\0\0" if masked else b"")


async def ws_load(port: int, connections: int, seconds: float, size: int, window: int) -> tuple[float, float]:
    """Echoed MiB/s and messages/s over all connections."""
    frame = ws_header(2, size, masked=True) + os.urandom(size)  # a zero mask leaves the payload as is
    echoed = [0]
    stop_at = time.monotonic() + seconds

    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        key = base64.b64encode(os.urandom(16))
        writer.write(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Cookie: JSESSIONID=x; __VCAP_ID__=" + INSTANCES[0].encode() + b"; SERVERID=s1\r\n"
                     b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head[:200]
        in_flight = 0
        reply_header = len(ws_header(2, size, masked=False))
        while time.monotonic() < stop_at:
            while in_flight < window:
                writer.write(frame)
                in_flight += 1
            await writer.drain()
            await reader.readexactly(reply_header + size)
            in_flight -= 1
            echoed[0] += 1
        writer.close()

    started = time.monotonic()
    await asyncio.gather(*[one() for _ in range(connections)])
    elapsed = time.monotonic() - started
    return echoed[0] * size / (1 << 20) / elapsed, echoed[0] / elapsed


def run_ws_load(port: int, seconds: float) -> tuple[float, float]:
    return asyncio.run(ws_load(port, connections=8, seconds=seconds, size=16 * 1024, window=4))


# --- main -----------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()

    proxy_binary = BIN / "sticky-proxy"
    if not proxy_binary.exists():
        print(f"{proxy_binary} is missing: run `make build-release` first", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    services: list[Service] = []
    try:
        backend_ports = [harness.free_port(), harness.free_port()]
        backend_conf = nginx_backend_conf(workdir, backend_ports)
        backend = Service("backend", [tool("nginx"), "-c", str(backend_conf), "-p", str(workdir)], backend_ports[0], workdir)
        services.append(backend)
        wait_for(backend_ports[1], backend.process, "backend")

        sticky_port, haproxy_port, nginx_port = harness.free_port(), harness.free_port(), harness.free_port()
        sticky = Service("sticky-proxy", [str(proxy_binary), "--port", str(sticky_port), "--admin-port", "0", "--threads", str(args.threads),
                                          "--routes-file", str(routes_file(workdir, backend_ports))], sticky_port, workdir)
        haproxy = Service("haproxy", [tool("haproxy"), "-f", str(haproxy_conf(workdir, haproxy_port, backend_ports, args.threads))],
                          haproxy_port, workdir)
        nginx = Service("nginx-proxy", [tool("nginx"), "-c", str(nginx_proxy_conf(workdir, nginx_port, backend_ports, args.threads)),
                                        "-p", str(workdir)], nginx_port, workdir, cpu_of_children=True)
        services += [sticky, haproxy, nginx]

        targets = [
            ("sticky-proxy (cf, sticky hit)", sticky, f"Cookie: JSESSIONID=x; __VCAP_ID__={INSTANCES[0]}"),
            ("HAProxy 2.6 (cookie insert)", haproxy, "Cookie: SERVERID=s1"),
            ("nginx (hash on JSESSIONID)", nginx, "Cookie: JSESSIONID=x"),
        ]
        for _, service, header in targets:  # warm-up: connections, caches
            wrk(service.port, header, 2, args.connections)
        direct = [wrk(backend_ports[0], "X-Bench: direct", args.duration, args.connections)[0] for _ in range(1)]

        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in targets}
        for _ in range(args.rounds):
            for name, service, header in targets:
                before = service.cpu()
                rps, p99, requests = wrk(service.port, header, args.duration, args.connections)
                cpu = service.cpu() - before
                results[name].append((rps, p99, cpu / requests * 1e6))

        def median(name: str, index: int) -> float:
            return statistics.median(r[index] for r in results[name])

        reference = targets[1][0]
        ref_rps, ref_p99, ref_cpu = median(reference, 0), median(reference, 1), median(reference, 2)
        lines = [
            "## sticky-proxy",
            "",
            f"HTTP, wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} alternating rounds (median), "
            f"{args.threads} threads per proxy, nginx backend with two listeners; direct to the backend: {direct[0]:,.0f} req/s.",
            "",
            "| proxy | req/s | p99 (ms) | proxy CPU µs/request | req/s vs HAProxy | p99 vs HAProxy | CPU vs HAProxy |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, _, _ in targets:
            rps, p99, cpu = median(name, 0), median(name, 1), median(name, 2)
            lines.append(f"| {name} | {rps:,.0f} | {p99:.2f} | {cpu:.1f} | {rps / ref_rps:.2f}x | {p99 / ref_p99:.2f}x | {cpu / ref_cpu:.2f}x |")

        # WebSocket echo
        ws_port = harness.free_port()
        ws_backend = subprocess.Popen([sys.executable, __file__, "--ws-echo-server", str(ws_port)], start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(ws_port, ws_backend, "websocket echo backend")
        ws_sticky_port, ws_haproxy_port = harness.free_port(), harness.free_port()
        ws_sticky = Service("sticky-proxy-ws", [str(proxy_binary), "--port", str(ws_sticky_port), "--admin-port", "0", "--threads",
                                                str(args.threads), "--routes-file", str(routes_file(workdir, [ws_port]))], ws_sticky_port, workdir)
        ws_haproxy = Service("haproxy-ws", [tool("haproxy"), "-f", str(haproxy_conf(workdir, ws_haproxy_port, [ws_port], args.threads, "haproxy-ws"))],
                             ws_haproxy_port, workdir)
        services += [ws_sticky, ws_haproxy]
        ws_targets = [("sticky-proxy", ws_sticky), ("HAProxy 2.6", ws_haproxy)]
        ws_results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in ws_targets}
        run_ws_load(ws_port, 1)
        direct_ws = run_ws_load(ws_port, args.duration)[0]
        for _ in range(args.rounds):
            for name, service in ws_targets:
                before = service.cpu()
                mib, messages = run_ws_load(service.port, args.duration)
                cpu = service.cpu() - before
                ws_results[name].append((mib, messages, cpu / max(mib * args.duration, 1e-9) * 1000))
        ws_backend.terminate()
        ws_backend.wait(timeout=10)

        def ws_median(name: str, index: int) -> float:
            return statistics.median(r[index] for r in ws_results[name])

        ws_ref = ("HAProxy 2.6",)
        lines += [
            "",
            f"WebSocket echo, 8 connections, 16 KiB binary frames, 4 in flight per connection, {args.duration}s, "
            f"{args.rounds} alternating rounds (median); direct to the echo backend: {direct_ws:,.1f} MiB/s "
            "(the Python echo backend and client share the 2 cores: compare the CPU column).",
            "",
            "| proxy | MiB/s | messages/s | proxy CPU ms/MiB | MiB/s vs HAProxy | CPU vs HAProxy |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, _ in ws_targets:
            lines.append(
                f"| {name} | {ws_median(name, 0):,.1f} | {ws_median(name, 1):,.0f} | {ws_median(name, 2):.2f} | "
                f"{ws_median(name, 0) / ws_median(ws_ref[0], 0):.2f}x | {ws_median(name, 2) / ws_median(ws_ref[0], 2):.2f}x |")

        sticky_name = targets[0][0]
        verdicts = [
            ("HTTP req/s >= 1.0x HAProxy", median(sticky_name, 0) >= ref_rps),
            ("HTTP p99 no worse than HAProxy", median(sticky_name, 1) <= ref_p99),
            ("WebSocket throughput >= 1.0x HAProxy", ws_median("sticky-proxy", 0) >= ws_median("HAProxy 2.6", 0)),
        ]
        lines += ["", "Targets: " + "; ".join(f"{what}: {'met' if ok else 'MISSED'}" for what, ok in verdicts) + "."]
        print("\n".join(lines))
        return 0
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--ws-echo-server":
        try:
            asyncio.run(ws_echo_server(int(sys.argv[2])))
        except KeyboardInterrupt:
            pass
        sys.exit(0)
    sys.exit(main())
