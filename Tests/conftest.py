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
