"""Limits seen from outside: a client that stops reading is closed and never slows the others."""

from __future__ import annotations

import base64
import os
import socket
import threading

import pytest
import socketio

import harness
from sioserver import SocketIOTestServer


def masked_text_frame(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def stalled_websocket(port: int) -> socket.socket:
    """A WebSocket session joined to namespace '/' whose owner then never reads."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall((f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += raw.recv(1)
    assert b" 101 " in response.split(b"\r\n")[0], response
    raw.sendall(masked_text_frame("40"))
    return raw


@pytest.fixture(scope="module")
def small_buffer_server():
    started = SocketIOTestServer("--max-outbound-buffer", "65536")
    yield started
    started.stop()


def test_a_client_that_stops_reading_is_closed_and_others_get_everything(small_buffer_server):
    server = small_buffer_server
    stalled = stalled_websocket(server.port)
    fast = harness.OrderedClient(reconnection=False)
    received: list = []
    done = threading.Event()
    count, size = 300, 10_000

    @fast.on("broadcast")
    def on_broadcast(index, _payload):
        received.append(index)
        if len(received) == count:
            done.set()

    fast.connect(server.url, transports=["websocket"], wait_timeout=10)
    try:
        payload = "x" * size
        for index in range(count):
            fast.emit("broadcast", (index, payload))
        assert done.wait(60), f"the fast client got {len(received)} of {count} broadcasts"
        assert received == list(range(count))
        harness.wait_until("the server to close the stalled client",
                           lambda: "slow client" in server.program.output(), timeout=30)
        # What the stalled client can still read ends with the connection closed, well short of everything.
        stalled.settimeout(10)
        total = 0
        while True:
            chunk = stalled.recv(65536)
            if not chunk:
                break
            total += len(chunk)
        assert total < count * size
    finally:
        fast.disconnect()
        stalled.close()
