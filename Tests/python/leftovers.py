"""Processes a killed test run left behind, and stopping them.

Every process a test starts carries STICKYLAB_TEST_RUN=<pid>:<start time> of the test run that started
it (the pytest process, or the Swift test runner: Tests/TestSupport/TestRun.swift). Most are started in
sessions of their own, so a test run killed from outside (a CI timeout, kill -9, a closed terminal)
leaves them running: redis-servers, chat-nodes, proxies, clusters. The next run stops every process
whose run is gone: `make test` runs this file first, and the Python test session does at its start.

Run as a script, it stops them and says what it stopped."""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

MARKER = "STICKYLAB_TEST_RUN"


def _stat(pid: int) -> tuple[str, list[str]] | None:
    """/proc/<pid>/stat: the command name and the fields after it; None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.find("(") + 1:text.rfind(")")], text.rpartition(")")[2].split()


def process_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (index 0 is the state, 1 the parent pid,
    2 the process group, 11 utime, 12 stime, 19 the start time), or None when the process is gone."""
    stat = _stat(pid)
    return stat[1] if stat else None


def process_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie."""
    fields = process_stat(pid)
    return bool(fields) and fields[0] != "Z"


def start_time(pid: int) -> int | None:
    """The kernel's start time of a process (clock ticks since boot), None when it is gone."""
    fields = process_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


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
    """The running (not zombie) processes that carry a marker."""
    prefix = (MARKER + "=").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue  # gone, or another user's
        marker = next((item[len(prefix):].decode(errors="replace") for item in environ.split(b"\0") if item.startswith(prefix)), None)
        stat = _stat(pid)
        if marker is None or stat is None or stat[1][0] == "Z":
            continue
        found.append(Process(pid, int(stat[1][2]), stat[0], marker))
    return found


def find(owner: str | None = None) -> list[Process]:
    """The marked processes whose test run has ended (owner None), or those of the run `owner`; never
    this process or its ancestors."""
    protected = set()
    pid = os.getpid()
    while pid > 1 and pid not in protected:
        protected.add(pid)
        fields = process_stat(pid)
        pid = int(fields[1]) if fields else 0
    return [process for process in _marked() if process.pid not in protected
            and (process.marker == owner if owner is not None else not run_alive(process.marker))]


def _signal(fds: dict[int, Process], sig: int):
    """`sig` to each process through its pidfd (never to a process that took a dead one's pid), and to
    its process group when it leads one (a program started in a session of its own, with what it
    started); never to the group of this process."""
    own_group = os.getpgid(0)
    for fd, process in fds.items():
        if process.group == process.pid and process.group != own_group:
            try:
                os.killpg(process.group, sig)
            except OSError:
                pass
        try:
            signal.pidfd_send_signal(fd, sig)
        except OSError:
            pass


def _wait_gone(fds: dict[int, Process], seconds: float):
    """Waits until each process has exited (its pidfd becomes readable: an event from the kernel, not
    a poll of /proc) or `seconds` pass; the pidfds of those gone are closed and leave `fds`."""
    deadline = time.monotonic() + seconds
    while fds and (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(list(fds), [], [], remaining)
        for fd in ready:
            os.close(fd)
            del fds[fd]


def stop(processes: list[Process], grace: float = 5.0) -> list[Process]:
    """SIGTERM to each process (and the group it leads), then SIGKILL to what still runs after
    `grace` seconds. SIGTERM first, so that a `cluster up` stops what it started (a Redis whose
    process title hides the marker, when its config does not turn the title off as the tests'
    clusters do, among them). Returns those that were running."""
    fds: dict[int, Process] = {}
    for process in processes:
        try:
            fds[os.pidfd_open(process.pid)] = process
        except ProcessLookupError:
            continue  # gone already
    stopped = list(fds.values())
    try:
        _signal(fds, signal.SIGTERM)
        _wait_gone(fds, grace)
        if fds:
            _signal(fds, signal.SIGKILL)
            _wait_gone(fds, 5.0)
    finally:
        for fd in fds:
            os.close(fd)
    return stopped


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
