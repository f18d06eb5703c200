"""Processes a killed test run left behind, and stopping them.

Every process a test starts carries STICKYLAB_TEST_RUN=<pid>:<start time> of the test run that started
it (the pytest process, or the Swift test runner: Tests/TestSupport/TestRun.swift). Most are started in
sessions of their own, so a test run killed from outside (a CI timeout, kill -9, a closed terminal)
leaves them running: redis-servers, chat-nodes, proxies, clusters. The next run stops every process
whose run is gone: `make test` runs this file first, and the Python test session does at its start.

Run as a script, it stops them and says what it stopped."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = "STICKYLAB_TEST_RUN"


def start_time(pid: int) -> int | None:
    """The kernel's start time of a process (clock ticks since boot), None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def token(pid: int) -> str:
    return f"{pid}:{start_time(pid) or 0}"


def mark_this_run() -> str:
    """Marks the processes this Python process starts from now on (through os.environ); a marker
    inherited from an outer test run is kept."""
    return os.environ.setdefault(MARKER, token(os.getpid()))


def run_alive(marker: str) -> bool:
    pid, _, start = marker.partition(":")
    try:
        return start_time(int(pid)) == int(start)
    except ValueError:
        return False


@dataclass
class Process:
    pid: int
    group: int
    command: str
    marker: str

    def __str__(self):
        return f"{self.command} (pid {self.pid})"


def _marked() -> list[Process]:
    prefix = (MARKER + "=").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # gone, or another user's
        marker = next((item[len(prefix):].decode(errors="replace") for item in environ.split(b"\0") if item.startswith(prefix)), None)
        if marker is None:
            continue
        command = stat[stat.find("(") + 1:stat.rfind(")")]
        fields = stat.rpartition(")")[2].split()
        if fields and fields[0] == "Z":
            continue
        found.append(Process(pid, int(fields[2]), command, marker))
    return found


def find(owner: str | None = None) -> list[Process]:
    """The marked processes whose test run has ended (owner None), or those of the run `owner`; never
    this process or its ancestors."""
    protected = set()
    pid = os.getpid()
    while pid > 1:
        protected.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return [process for process in _marked() if process.pid not in protected
            and (process.marker == owner if owner is not None else not run_alive(process.marker))]


def stop(processes: list[Process], grace: float = 5.0) -> list[Process]:
    """SIGTERM to each process, and to its process group when it leads one (a program started in a
    session of its own, with what it started), then SIGKILL to what still runs after `grace` seconds;
    never to the group of this process. SIGTERM first, so that a `cluster up` stops what it started
    (its Redis, whose process title hides the marker, among them). Returns those that were running."""
    own_group = os.getpgid(0)
    stopped = [process for process in processes if _running(process.pid) and start_time(process.pid) is not None]

    def signal_all(sig: int, targets: list[Process]):
        for process in targets:
            if process.group == process.pid and process.group != own_group:
                try:
                    os.killpg(process.group, sig)
                except OSError:
                    pass
            try:
                os.kill(process.pid, sig)
            except OSError:
                pass

    def wait(seconds: float) -> list[Process]:
        deadline = time.monotonic() + seconds
        while True:
            running = [process for process in stopped if _running(process.pid)]
            if not running or time.monotonic() >= deadline:
                return running
            time.sleep(0.02)

    signal_all(signal.SIGTERM, stopped)
    stubborn = wait(grace)
    if stubborn:
        signal_all(signal.SIGKILL, stubborn)
        wait(5.0)
    return stopped


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def sweep() -> list[Process]:
    """Stops what killed test runs left running; returns what it stopped."""
    return stop(find())


def main() -> int:
    stopped = sweep()
    if stopped:
        print(f"stopped {len(stopped)} processes left running by a test run that was killed: "
              + ", ".join(str(process) for process in stopped))
    return 0


if __name__ == "__main__":
    sys.exit(main())
