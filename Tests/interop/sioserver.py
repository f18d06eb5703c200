"""The test-only Socket.IO server (socketio-testserver) on a free loopback port, for the interop tests."""

from __future__ import annotations

import harness


class SocketIOTestServer:
    def __init__(self, *args: str):
        self.port = harness.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.program = harness.Program("socketio-testserver", ["--port", str(self.port), *args])
        harness.wait_until(f"socketio-testserver on port {self.port}",
                           lambda: self._alive() and harness.is_listening(self.port))

    def _alive(self) -> bool:
        if self.program.process.poll() is not None:
            raise RuntimeError(f"socketio-testserver exited with {self.program.process.returncode}:\n{self.program.output()}")
        return True

    def stop(self) -> int:
        return self.program.stop()
