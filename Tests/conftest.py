import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "python"))

import harness  # noqa: E402


@pytest.fixture
def redis():
    """A real redis-server on a free loopback port, with an append-only file (a restart keeps what was
    acknowledged); stopped after the test."""
    server = harness.RedisServer(appendonly=True)
    yield server
    server.stop()


def pytest_sessionfinish(session, exitstatus):
    """Logs and state of a failed run stay on disk for reading; a green run leaves nothing behind."""
    if exitstatus != 0:
        kept = harness.keep_scratch()
        if kept is not None:
            session.config._stickylab_kept = kept


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    kept = getattr(config, "_stickylab_kept", None)
    if kept is not None:
        terminalreporter.write_line(f"logs and state of the programs this run started: {kept}")
