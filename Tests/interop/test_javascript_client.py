"""The official JavaScript client 4.8.1 (the browser bundle, unchanged) in Node against the Swift
server: polling only (through a small XMLHttpRequest stand-in), WebSocket only, and polling upgraded to
WebSocket. The checks run in Tests/interop/js/interop-client.js and recovery-client.js.

The WebSocket is Node's own when the installed node has one: Node 22+, or 20.10+/21 with
--experimental-websocket, which is passed only when node accepts it and needs it (probed once). Debian 12's
nodejs (18.20.4, what `make deps` installs) has none and rejects the flag ("bad option"); there the clients
use Tests/interop/js/websocket-standin.js, a small RFC 6455 client on node:http. Each result says which
ran ("webSocket": "node" | "standin"), and the tests check it is the expected one.

STICKYLAB_JS_WEBSOCKET=standin runs the stand-in even on a node with a WebSocket (to test the stand-in
there); =node requires Node's own (the clients fail without it); unset or =auto picks as above."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import harness
from sioserver import SocketIOTestServer

CLIENT = Path(__file__).resolve().parent / "js" / "interop-client.js"


@functools.cache
def _node() -> tuple[tuple[str, ...], bool]:
    """The command to start node with, and whether that node has its own WebSocket."""
    node = shutil.which("node")
    assert node, "node is missing: run `make deps`"

    def has_websocket(*flags: str) -> bool:
        probe = subprocess.run([node, *flags, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                               capture_output=True, text=True, timeout=30)
        return probe.returncode == 0

    if has_websocket():
        return (node, "--no-warnings"), True
    if has_websocket("--experimental-websocket"):
        return (node, "--experimental-websocket", "--no-warnings"), True
    return (node, "--no-warnings"), False


def run_client(script: Path, *args: str, checks: str = "JavaScript client checks", websocket: str | None = None) -> dict:
    """`websocket`: STICKYLAB_JS_WEBSOCKET for this run only (else the environment's)."""
    command, native = _node()
    assert harness.SOCKETIO_JS.exists(), f"{harness.SOCKETIO_JS} is missing: run `make deps`"
    environment = dict(os.environ, **({"STICKYLAB_JS_WEBSOCKET": websocket} if websocket else {}))
    completed = subprocess.run([*command, str(script), str(harness.SOCKETIO_JS), *args],
                               capture_output=True, text=True, timeout=120, env=environment)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the JavaScript client:\n{completed.stdout}\n{completed.stderr}"
    result = json.loads(lines[-1])
    assert result.get("ok"), f"{checks} failed: {json.dumps(result, indent=2)}\n{completed.stderr}"
    choice = environment.get("STICKYLAB_JS_WEBSOCKET", "auto")
    expected = {"standin": "standin", "node": "node"}.get(choice, "node" if native else "standin")
    assert result.get("webSocket") == expected, f"the client ran WebSocket {result.get('webSocket')!r}, expected {expected!r}"
    return result


@pytest.mark.parametrize("mode", ["polling", "websocket", "upgrade"])
def test_official_javascript_client(server, mode):
    result = run_client(CLIENT, server.url, mode, "1000")
    assert result["transport"] == ("polling" if mode == "polling" else "websocket")
    assert result["refusalMessage"] == "not authorized"


@pytest.mark.parametrize("mode", ["websocket", "upgrade"])
def test_the_websocket_standin_runs_the_official_client_here_too(server, mode):
    """The stand-in is what a fresh Debian 12 runs (its Node 18 has no WebSocket); forced here so
    that a machine with a newer Node still checks it."""
    result = run_client(CLIENT, server.url, mode, "200", websocket="standin")
    assert result["transport"] == "websocket"


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
    run_client(RECOVERY_CLIENT, recovery_server.url, mode, checks="recovery checks")
