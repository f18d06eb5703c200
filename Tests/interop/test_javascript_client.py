"""The official JavaScript client 4.8.1 (the browser bundle, unchanged) in Node 20 against the Swift
server: polling only (through a small XMLHttpRequest stand-in), WebSocket only (Node's experimental
WebSocket), and polling upgraded to WebSocket. The checks run in Tests/interop/js/interop-client.js."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import harness
from sioserver import SocketIOTestServer

CLIENT = Path(__file__).resolve().parent / "js" / "interop-client.js"


@pytest.mark.parametrize("mode", ["polling", "websocket", "upgrade"])
def test_official_javascript_client(server, mode):
    node = shutil.which("node")
    assert node, "node is missing: run `make deps`"
    assert harness.SOCKETIO_JS.exists(), f"{harness.SOCKETIO_JS} is missing: run `make deps`"
    completed = subprocess.run(
        [node, "--experimental-websocket", "--no-warnings", str(CLIENT), str(harness.SOCKETIO_JS), server.url, mode, "1000"],
        capture_output=True, text=True, timeout=120)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the JavaScript client:\n{completed.stdout}\n{completed.stderr}"
    result = json.loads(lines[-1])
    assert result.get("ok"), f"JavaScript client checks failed: {json.dumps(result, indent=2)}\n{completed.stderr}"
    assert result["transport"] == ("polling" if mode == "polling" else "websocket")
    assert result["refusalMessage"] == "not authorized"


RECOVERY_CLIENT = Path(__file__).resolve().parent / "js" / "recovery-client.js"


@pytest.fixture(scope="module")
def recovery_server():
    started = SocketIOTestServer("--recovery", "60")
    yield started
    started.stop()


@pytest.mark.parametrize("mode", ["polling", "websocket", "upgrade"])
def test_official_javascript_client_recovers(recovery_server, mode):
    """Connection state recovery: the transport drops, the client comes back with socket.recovered
    === true, the same id, and the broadcasts it missed, in order."""
    completed = subprocess.run(
        ["node", "--experimental-websocket", "--no-warnings", str(RECOVERY_CLIENT), str(harness.SOCKETIO_JS), recovery_server.url, mode],
        capture_output=True, text=True, timeout=120)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the JavaScript client:\n{completed.stdout}\n{completed.stderr}"
    result = json.loads(lines[-1])
    assert result.get("ok"), f"recovery checks failed: {json.dumps(result, indent=2)}\n{completed.stderr}"
