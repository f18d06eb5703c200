"""Interop fixtures: the test-only Socket.IO server (socketio-testserver) on a free loopback port."""

from __future__ import annotations

import pytest

from sioserver import SocketIOTestServer


@pytest.fixture(scope="module")
def server():
    started = SocketIOTestServer()
    yield started
    started.stop()
