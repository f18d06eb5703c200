import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "python"))

import harness  # noqa: E402
import leftovers  # noqa: E402


def pytest_sessionstart(session):
    """Stops what a killed test run left running (it would hold ports, memory and CPU)."""
    session.config._stickylab_swept = leftovers.sweep()


@pytest.fixture
def redis():
    """A real redis-server on a free loopback port, with an append-only file (a restart keeps what was
    acknowledged); stopped after the test."""
    server = harness.RedisServer(appendonly=True)
    yield server
    server.stop()


def pytest_sessionfinish(session, exitstatus):
    """Logs and state of a failed run stay on disk for reading; a green run leaves nothing behind.
    A program a test started and did not stop is stopped here, and named in the report."""
    session.config._stickylab_leaked = leftovers.stop(leftovers.find(owner=os.environ[leftovers.MARKER]))
    if exitstatus != 0:
        kept = harness.keep_scratch()
        if kept is not None:
            session.config._stickylab_kept = kept


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    swept = getattr(config, "_stickylab_swept", [])
    if swept:
        terminalreporter.write_line(f"stopped {len(swept)} processes left running by a test run that was killed: "
                                    + ", ".join(str(process) for process in swept))
    leaked = getattr(config, "_stickylab_leaked", [])
    if leaked:
        terminalreporter.write_line(f"stopped {len(leaked)} processes that tests of this run left running: "
                                    + ", ".join(str(process) for process in leaked))
    kept = getattr(config, "_stickylab_kept", None)
    if kept is not None:
        terminalreporter.write_line(f"logs and state of the programs this run started: {kept}")
