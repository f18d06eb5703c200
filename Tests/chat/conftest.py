"""Fixtures for the chat-node tests: chat-node instances on the real redis-server of Tests/conftest.py,
all on free loopback ports."""

from __future__ import annotations

import pytest

from chatkit import ChatNode


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
