"""Helpers for sticky-proxy's conformance tests: the built `sticky-proxy` and real backend processes
(`backend.py`) on free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

import harness  # noqa: E402

HERE = Path(__file__).resolve().parent
APP_ID = "6e5a3b1c-1d2e-4f30-8a4b-5c6d7e8f9a0b"
TOKEN = "test-admin-token"


def instance_guid() -> str:
    """A Diego instance GUID: the first 28 characters of a UUID."""
    return str(uuid.uuid4())[:28]


class Backend:
    """One app instance: backend.py in its own process."""

    def __init__(self, index: int = 0, instance_id: str | None = None, app_id: str = APP_ID, log_dir: Path | None = None):
        self.index = str(index)
        self.instance_id = instance_id or instance_guid()
        self.app_id = app_id
        self.port = harness.free_port()
        self.log_path = Path(log_dir or harness.scratch_dir("backend-")) / f"backend-{self.port}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "backend.py"), "--port", str(self.port), "--instance-id", self.instance_id,
             "--index", self.index, "--app-id", app_id],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        harness.wait_until(f"backend on port {self.port}", lambda: self._alive() and harness.is_listening(self.port))

    def _alive(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"backend exited: {self.log_path.read_text(errors='replace')}")
        return True

    def registration(self, uris=("localhost",), **extra) -> dict:
        message = {"host": "127.0.0.1", "port": self.port, "uris": list(uris), "app": self.app_id,
                   "private_instance_id": self.instance_id, "private_instance_index": self.index,
                   "stale_threshold_in_seconds": 120}
        message.update(extra)
        return message

    def stats(self) -> dict:
        return requests.get(f"http://127.0.0.1:{self.port}/__stats", timeout=5).json()

    def kill(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self):
        self.kill()
        self._log.close()


class Proxy:
    """The built sticky-proxy with its admin API, on free ports."""

    def __init__(self, *args: str, log_dir: Path | None = None):
        self.port = harness.free_port()
        self.admin_port = harness.free_port()
        self.dir = Path(log_dir or harness.scratch_dir("proxy-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.access_log = self.dir / "access.log"
        self.args = ["--port", str(self.port), "--admin-port", str(self.admin_port), "--admin-token", TOKEN,
                     "--access-log", str(self.access_log), *args]
        self.program = harness.Program("sticky-proxy", self.args, log_dir=self.dir)
        harness.wait_until("sticky-proxy to listen", self._ready, timeout=20)

    def _ready(self) -> bool:
        if self.program.process.poll() is not None:
            raise RuntimeError(f"sticky-proxy exited with {self.program.process.returncode}: {self.program.output()}")
        return harness.is_listening(self.port) and harness.is_listening(self.admin_port)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def admin_headers(self) -> dict:
        return {"Authorization": f"Bearer {TOKEN}"}

    def register(self, backend: Backend | dict, uris=("localhost",), **extra):
        message = backend.registration(uris, **extra) if isinstance(backend, Backend) else backend
        response = requests.post(f"{self.admin}/routes/register", data=json.dumps(message), headers=self.admin_headers(), timeout=10)
        assert response.status_code == 204, response.text

    def unregister(self, backend: Backend | dict, uris=("localhost",), **extra):
        message = backend.registration(uris, **extra) if isinstance(backend, Backend) else backend
        response = requests.post(f"{self.admin}/routes/unregister", data=json.dumps(message), headers=self.admin_headers(), timeout=10)
        assert response.status_code == 204, response.text

    def routes(self) -> dict:
        response = requests.get(f"{self.admin}/routes", headers=self.admin_headers(), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def get(self, path: str = "/", host: str = "localhost", cookies: dict | None = None, headers: dict | None = None,
            **kwargs) -> requests.Response:
        all_headers = {"Host": host}
        if cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        all_headers.update(headers or {})
        return requests.get(self.base + path, headers=all_headers, timeout=kwargs.pop("timeout", 30), **kwargs)

    def request(self, method: str, path: str = "/", host: str = "localhost", headers: dict | None = None, **kwargs):
        all_headers = {"Host": host}
        all_headers.update(headers or {})
        return requests.request(method, self.base + path, headers=all_headers, timeout=kwargs.pop("timeout", 30), **kwargs)

    def access_log_lines(self) -> list[str]:
        if not self.access_log.exists():
            return []
        return [line for line in self.access_log.read_text().splitlines() if line]

    def wait_for_log(self, predicate, what="an access log line") -> str:
        def find():
            for line in self.access_log_lines():
                if predicate(line):
                    return line
            return None
        return harness.wait_until(what, find, timeout=10)

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.program.process.pid}/fd"))

    def stop(self, timeout: float = 20.0) -> int:
        return self.program.stop(timeout=timeout)


def set_cookies(response: requests.Response) -> list[str]:
    return response.raw.headers.getlist("Set-Cookie")


def cookie_named(response: requests.Response, name: str) -> str | None:
    for value in set_cookies(response):
        if value.split("=", 1)[0].strip() == name:
            return value
    return None


def served_by(response: requests.Response) -> str:
    return response.headers["X-Backend-Instance"]


def raw_request(port: int, data: bytes, timeout: float = 10.0, read_until_close: bool = True) -> bytes:
    """Sends raw bytes to the proxy and returns everything read until the connection closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close and b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)
