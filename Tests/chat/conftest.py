"""Fixtures for the chat-node tests: a real redis-server (with an append-only file, so a restart keeps
what was acknowledged) and chat-node instances, all on free loopback ports."""

from __future__ import annotations

import pytest

import harness
from chatkit import ChatNode


@pytest.fixture
def redis():
    server = harness.RedisServer(appendonly=True)
    yield server
    server.stop()


@pytest.fixture
def nodes(redis):
    """Factory: nodes(2) starts two chat-node instances on the same Redis; all are stopped afterwards."""
    started: list[ChatNode] = []

    def start(count: int = 1, **env: str) -> list[ChatNode]:
        for _ in range(count):
            started.append(ChatNode(redis, index=len(started), **env))
        return started[-count:]

    yield start
    for node in started:
        if node.program.process.poll() is None:
            node.program.kill()
