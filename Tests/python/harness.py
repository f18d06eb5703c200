"""Shared helpers for the Python-driven tests (interop, browser, acceptance): a real redis-server on a
free loopback port, the built executables, free ports, waiting on a port. Import with
`sys.path.insert(0, <repo>/Tests/python)` or through the conftest.py files that do it."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import engineio
import socketio

import leftovers
from leftovers import process_alive, process_stat  # noqa: F401 - one reader of /proc/<pid>/stat, used from here

# Every process the tests start carries this run's marker, so that the next run can stop what a killed
# one left behind (leftovers.py).
leftovers.mark_this_run()

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("STICKYLAB_BIN", REPO / ".build" / "debug"))
SOCKETIO_JS = REPO / ".deps" / "socket.io.min.js"

_scratch: Path | None = None
_keep_scratch = os.environ.get("STICKYLAB_KEEP_LOGS") == "1"


def scratch_dir(prefix: str) -> Path:
    """A new folder for one program's logs or state, inside one folder per test or benchmark run. That
    folder is removed when the run ends, unless it failed (`keep_scratch()`, called by the test
    session when a test failed) or STICKYLAB_KEEP_LOGS=1: the logs of a failure stay for reading."""
    global _scratch
    if _scratch is None:
        _scratch = Path(tempfile.mkdtemp(prefix="stickylab-run-"))
        atexit.register(_remove_scratch)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=_scratch))


def keep_scratch() -> Path | None:
    """Keeps this run's folder (a test failed); returns it, to be named in the report."""
    global _keep_scratch
    _keep_scratch = True
    return _scratch


def _remove_scratch():
    if _scratch is not None and not _keep_scratch:
        shutil.rmtree(_scratch, ignore_errors=True)


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


_handed_out: set[int] = set()


def free_port() -> int:
    """A free loopback port chosen at random below the kernel's ephemeral range (as the cluster's
    Probe.freePort does): a port from bind(0) can be taken as the source port of an outgoing
    connection before the program it is meant for binds it. Never the same port twice in one test
    run: a port handed out but not yet bound would look free again."""
    low, _ = _ephemeral_range()
    if low > 10_000:
        for _ in range(500):
            port = random.randrange(10_000, low)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(what: str, condition, timeout: float = 15.0, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    value = condition()
    if value:
        return value
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int], kernel_only: bool = False) -> float:
    """CPU time (utime + stime, or stime alone) of these processes, all their threads, in seconds;
    processes that are gone count 0. The fair measure on a shared machine."""
    total = 0
    for pid in pids:
        fields = process_stat(pid)
        if fields and len(fields) > 12:
            total += int(fields[12]) + (0 if kernel_only else int(fields[11]))
    return total / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def executable(name: str) -> Path:
    path = BIN / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: build first (`swift build`), or set STICKYLAB_BIN")
    return path


def built(name: str, marker: str) -> bool:
    """Whether the executable `name` is built and its --help mentions `marker` (for a benchmark that
    reports what it cannot measure instead of failing)."""
    try:
        result = subprocess.run([str(executable(name)), "--help"], capture_output=True, text=True, timeout=30)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return marker in result.stdout + result.stderr


class RedisServer:
    """redis-server on a free loopback port in a temporary folder; kill() and start() simulate a crash."""

    def __init__(self, password: str | None = None, appendonly: bool = False):
        self.port = free_port()
        self.password = password
        self.appendonly = appendonly
        self.dir = scratch_dir("redis-")
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}"

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--logfile", str(self.dir / "redis.log"),
                # Its process title would overwrite its environment, and with it this run's marker (leftovers.py).
                "--set-proc-title", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(f"redis-server on port {self.port}", lambda: self.process.poll() is None and is_listening(self.port))

    def kill(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def restart(self):
        self.kill()
        self.start()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class _OrderedEngineIOClient(engineio.Client):
    def _trigger_event(self, event, *args, **kwargs):
        if event == "message":
            kwargs["run_async"] = False
        return super()._trigger_event(event, *args, **kwargs)


class OrderedClient(socketio.Client):
    """A python-socketio client (5.x, threading) that handles messages in arrival order.

    python-engineio's threaded client runs every message handler in a new thread, so two events sent
    in order can reach the handlers out of order, and a handler that records "the last offset" can
    record an older one. This client runs them one after another on the read loop, as the asyncio
    client and the JavaScript client do. Its handlers must not block waiting for another packet."""

    def _engineio_client_class(self):
        return _OrderedEngineIOClient


class Program:
    """A built executable started in its own process group, output captured to a log file."""

    def __init__(self, name: str, args: list[str] | None = None, env: dict[str, str] | None = None, log_dir: Path | None = None):
        self.name = name
        self.log_path = Path(log_dir or scratch_dir(f"{name}-")) / f"{name}-{free_port()}.log"
        self._log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.process = subprocess.Popen([str(executable(name)), *(args or [])], env=full_env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int):
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def stop(self, timeout: float = 15.0) -> int:
        self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.process.wait()
        finally:
            self._log.close()

    def kill(self):
        self.signal(signal.SIGKILL)
        self.process.wait()
