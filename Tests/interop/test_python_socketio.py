"""python-socketio 5.x (a client nobody here wrote) against the Swift server: polling only, WebSocket
only, and polling upgraded to WebSocket. Each sends and receives 1,000 messages in order, uses acks
both ways and a binary payload, and is refused with a readable message when the auth hook says no."""

from __future__ import annotations

import threading

import pytest
import socketio

import harness

MODES = {"polling": ["polling"], "websocket": ["websocket"], "upgrade": ["polling", "websocket"]}
COUNT = 1000


def connect(server, mode: str, auth: dict | None = None) -> socketio.Client:
    client = harness.OrderedClient(reconnection=False)
    client.connect(server.url, transports=MODES[mode], auth=auth or {"token": "good"}, wait_timeout=10)
    return client


@pytest.mark.parametrize("mode", MODES)
def test_thousand_messages_in_order(server, mode):
    client = connect(server, mode)
    try:
        if mode == "upgrade":
            harness.wait_until("the upgrade to WebSocket", lambda: client.transport() == "websocket", timeout=10)
        received: list = []
        done = threading.Event()

        @client.on("echo")
        def on_echo(value):
            received.append(value)
            if len(received) == COUNT:
                done.set()

        for index in range(COUNT):
            client.emit("echo", {"seq": index, "text": f"message {index}"})
        assert done.wait(30), f"only {len(received)} of {COUNT} echoes came back"
        assert [value["seq"] for value in received] == list(range(COUNT))
        assert all(value["text"] == f"message {value['seq']}" for value in received)
        assert client.transport() == ("polling" if mode == "polling" else "websocket")
    finally:
        client.disconnect()


@pytest.mark.parametrize("mode", MODES)
def test_acks_both_ways_and_binary(server, mode):
    client = connect(server, mode)
    try:
        assert client.call("echo-ack", "ping", timeout=10) == "ping"

        answers: list = []
        answered = threading.Event()

        @client.on("emit-with-ack")
        def on_question(*args):
            if args == ("question",) and not answers:
                answers.append(("asked",) + args)
                return "answer", "question"
            answers.append(args)
            answered.set()
            return None

        client.emit("emit-with-ack", "question")
        assert answered.wait(10), "the server's ack round trip did not complete"
        assert answers[-1] == ("answer", "question")

        payload = bytes([0, 1, 2, 253, 254, 255])
        assert client.call("echo-ack", {"name": "file", "data": payload}, timeout=10) == {"name": "file", "data": payload}
        echoed: list = []
        got = threading.Event()

        @client.on("echo")
        def on_echo(value):
            echoed.append(value)
            got.set()

        client.emit("echo", payload)
        assert got.wait(10)
        assert echoed == [payload]
    finally:
        client.disconnect()


@pytest.mark.parametrize("mode", MODES)
def test_refused_with_a_readable_message(server, mode):
    client = harness.OrderedClient(reconnection=False)
    errors: list = []

    @client.event
    def connect_error(data):
        errors.append(data)

    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(server.url, transports=MODES[mode], auth={"token": "bad"}, wait_timeout=10)
    client.disconnect()
    assert errors, "no connect_error event"
    message = errors[0]["message"] if isinstance(errors[0], dict) else errors[0]
    assert message == "not authorized"
