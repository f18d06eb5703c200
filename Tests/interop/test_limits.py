"""Limits and protocol rules seen from outside, through raw sockets: a client that stops reading is
closed and never slows the others; a replay may pass the limit; an unmasked frame is refused."""

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


def masked_frame(text: str) -> bytes:
    """A client text frame of any length."""
    payload = text.encode()
    mask = os.urandom(4)
    if len(payload) < 126:
        header = bytes([0x81, 0x80 | len(payload)])
    else:
        header = bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frames(raw: socket.socket, until: str):
    """The server's frames as (opcode, text), up to the one that starts with `until` or a close."""
    buffered = b""

    def take(count: int) -> bytes:
        nonlocal buffered
        while len(buffered) < count:
            chunk = raw.recv(65536)
            if not chunk:
                raise EOFError("the server closed the connection")
            buffered += chunk
        taken, buffered = buffered[:count], buffered[count:]
        return taken

    while True:
        first, second = take(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(take(2), "big")
        elif length == 127:
            length = int.from_bytes(take(8), "big")
        opcode, text = first & 0x0F, take(length)
        yield opcode, text
        if opcode == 8 or text.startswith(until.encode()):
            return


def test_a_replay_larger_than_the_limit_reaches_a_websocket_client_that_reads_slowly(small_buffer_server):
    # A recovery replay (one batch, emit(batch:)) of 10 MB against a limit of 64 KiB, to a client
    # that reads only after a second: the client is judged by what it fails to drain, not by what it
    # was owed. What follows the batch still gets through. Before, the write after the replay found
    # the socket over its limit and closed the client as slow, which came back for the same replay.
    # (10 MB: more than the kernel's send buffer takes, at most 4 MiB by default on Linux.)
    server = small_buffer_server
    raw = stalled_websocket(server.port)
    try:
        count, size = 400, 25_000
        raw.sendall(masked_frame(f'42["burst",{count},{size}]'))
        threading.Event().wait(1.0)
        raw.settimeout(30)
        items, opcodes = 0, set()
        try:
            for opcode, text in read_frames(raw, until='42["burst-done"'):
                opcodes.add(opcode)
                if text.startswith(b'42["burst-item"'):
                    items += 1
        except EOFError:
            opcodes.add(8)
        assert 8 not in opcodes, f"closed as slow after {items} of {count} replayed events"
        assert items == count
    finally:
        raw.close()


def test_a_client_that_never_drains_a_replay_is_still_closed_as_slow(small_buffer_server):
    # The room a replay gives is its own size, no more: a client that reads nothing after it is closed
    # once what waits for it passes the limit on top of the replay. The sender is not a receiver
    # (`to-room` skips it), so only the stalled client can be the slow one.
    server = small_buffer_server
    stalled = stalled_websocket(server.port)
    sender = harness.OrderedClient(reconnection=False)
    sender.connect(server.url, transports=["websocket"], wait_timeout=10)
    try:
        stalled.sendall(masked_frame('42["join","stalled"]'))
        stalled.sendall(masked_frame('42["burst",100,10000]'))  # 1 MB replay
        closed_before = server.program.output().count("Closing a slow client")
        payload = "x" * 10_000
        for index in range(1_000):  # then 10 MB: more than any kernel buffers for a client that reads nothing
            sender.emit("to-room", ("stalled", index, payload))
        harness.wait_until("the server to close the client that never drains",
                           lambda: server.program.output().count("Closing a slow client") > closed_before, timeout=60)
        assert server.program.output().count("Closing a slow client") == closed_before + 1, "only the stalled client"
    finally:
        sender.disconnect()
        stalled.close()


def test_an_unmasked_client_frame_closes_the_connection_with_a_protocol_error(small_buffer_server):
    # RFC 6455 5.1: clients mask every frame; a server must close the connection on one that is not.
    raw = stalled_websocket(small_buffer_server.port)
    try:
        raw.settimeout(10)
        payload = b'42["echo","unmasked"]'
        raw.sendall(bytes([0x81, len(payload)]) + payload)
        frames = list(read_frames(raw, until="never"))
        opcode, body = frames[-1]
        assert opcode == 8 and int.from_bytes(body[:2], "big") == 1002, frames
        assert not any(b"unmasked" in text for _, text in frames), "the unmasked frame was handled"
        assert raw.recv(1) == b"", "the connection stays open"
    finally:
        raw.close()
