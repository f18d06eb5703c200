"""Helpers for the chat-node tests: start chat-node instances on free loopback ports, and a chat client
on python-socketio that logs in over HTTP, keeps its Socket.IO session id (pid) and last offset, and
recovers on ANY instance by sending them in its CONNECT auth, as the protocol defines."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

import requests
import socketio

import harness

SECRET = "test-secret"
TRANSPORTS = {"polling": ["polling"], "websocket": ["websocket"], "upgrade": ["polling", "websocket"]}


class ChatNode:
    """One chat-node process. `kill()` is kill -9; `terminate()` is SIGTERM and returns the exit code."""

    def __init__(self, redis: harness.RedisServer, index: int = 0, **env: str):
        self.port = int(env["PORT"]) if env.get("PORT") else harness.free_port()
        self.index = index
        self.url = f"http://127.0.0.1:{self.port}"
        self.guid = str(uuid.uuid4())[:28]
        variables = {
            "PORT": str(self.port), "REDIS_URL": redis.url, "SESSION_SECRET": SECRET, "CF_INSTANCE_INDEX": str(index),
            "CF_INSTANCE_GUID": self.guid, "SOCKETIO_CLIENT_JS": str(harness.SOCKETIO_JS), "LOG_LEVEL": "info",
        }
        variables.update(env)
        self.program = harness.Program("chat-node", env=variables)
        harness.wait_until(f"chat-node on port {self.port} to be healthy", self.healthy, timeout=30)

    def healthy(self) -> bool:
        if self.program.process.poll() is not None:
            raise RuntimeError(f"chat-node exited with {self.program.process.returncode}:\n{self.program.output()}")
        try:
            return requests.get(self.url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def health(self) -> requests.Response:
        return requests.get(self.url + "/health", timeout=5)

    def kill(self):
        self.program.kill()

    def terminate(self, timeout: float = 30) -> int:
        return self.program.stop(timeout=timeout)

    def metrics(self) -> dict[str, float]:
        values = {}
        for line in requests.get(self.url + "/metrics", timeout=5).text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values


def login(url: str, name: str, headers: dict | None = None) -> requests.Session:
    session = requests.Session()
    response = session.post(url + "/user", data={"user": name}, headers=headers or {}, allow_redirects=False, timeout=10)
    assert response.status_code == 303, response.text
    return session


def cookie_header(session: requests.Session) -> str:
    return "; ".join(f"{name}={value}" for name, value in session.cookies.items())


class RecordingClient(harness.OrderedClient):
    """python-socketio does not keep the CONNECT reply's pid: keep it, to recover later."""

    def _handle_connect(self, namespace, data):
        if isinstance(data, dict):
            self.last_connect = dict(data)
        super()._handle_connect(namespace, data)


def release(sio):
    """Disconnects a python-socketio client, also one its server already dropped. python-engineio's
    write loop of a dropped client still waits up to ping interval + ping timeout + 5 s on its queue,
    then logs "packet queue is empty, aborting": after the last tests, to a closed stream, as a
    traceback in the output of a run that passed. A None in its queue ends it at once."""
    try:
        sio.disconnect()
    except Exception:  # noqa: BLE001 - the transport is already gone
        pass
    if sio.eio.state != "connected":
        sio.eio.queue.put(None)


def connect_or_close(sio, url: str, **options):
    """`sio.connect`, releasing the client when it fails half way (its Engine.IO session open, the
    namespace refused or timed out) instead of leaving its threads running."""
    try:
        sio.connect(url, **options)
    except Exception:
        release(sio)
        raise


class ChatClient:
    """A user in the chat. Records every chat line it receives with its offset (stream id)."""

    def __init__(self, node: ChatNode | str, name: str, transport: str = "websocket", session: requests.Session | None = None):
        """`session`: another tab of that login (its cookies) instead of logging in anew."""
        self.name = name
        self.transport = transport
        url = node if isinstance(node, str) else node.url
        self.session = session if session is not None else login(url, name)
        self.lock = threading.Lock()
        self.lines: list[tuple[str, dict]] = []  # (offset, line), in arrival order
        self.seen: set[str] = set()
        self.duplicates: list[str] = []
        self.events: list[tuple[str, tuple]] = []
        self.offset: str | None = None
        self.pid: str | None = None
        self.recovered: bool | None = None
        self.welcome: dict | None = None
        self.online: list[str] = []
        self.sio: RecordingClient | None = None
        self.disconnected = threading.Event()
        self.connect(url)

    # connection

    def connect(self, url: str, recover: bool = True):
        sio = RecordingClient(reconnection=False)
        sio.on("*", self._on_event)
        sio.on("disconnect", lambda *reason: self.disconnected.set())
        auth = {"pid": self.pid, "offset": self.offset} if recover and self.pid and self.offset else None
        previous_pid = self.pid
        self.disconnected.clear()
        connect_or_close(sio, url, headers={"Cookie": cookie_header(self.session)}, auth=auth,
                         transports=TRANSPORTS[self.transport], wait_timeout=15)
        reply = getattr(sio, "last_connect", {})
        self.pid = reply.get("pid")
        self.recovered = auth is not None and self.pid == previous_pid
        self.sio = sio
        harness.wait_until(f"{self.name}'s welcome", lambda: self.welcome is not None, timeout=10)

    def reconnect(self, url: str):
        """After its instance died: connect to another one, recovering the session."""
        if self.sio is not None:
            release(self.sio)
        self.welcome = None
        self.connect(url)

    def close(self):
        if self.sio is not None:
            release(self.sio)

    # events

    def _on_event(self, event, *args):
        with self.lock:
            self.events.append((event, args))
            if args and isinstance(args[-1], str):
                self.offset = args[-1]  # what the official client does: the last string argument
            if event == "chat" and len(args) == 2:
                offset, line = args[1], json.loads(args[0])
                if offset in self.seen:
                    self.duplicates.append(offset)
                else:
                    self.seen.add(offset)
                    self.lines.append((offset, line))
            elif event == "welcome":
                self.welcome = args[0]
            elif event == "online":
                self.online = list(args[0].get("users", []))

    def send(self, text: str, message_id: str | None = None, timeout: float = 10) -> dict:
        payload = {"action": "message", "msg": text}
        if message_id is not None:
            payload["id"] = message_id
        return self.sio.call("chat", json.dumps(payload), timeout=timeout)

    def send_until_stored(self, text: str, message_id: str, deadline: float = 60) -> dict:
        """What the page does: resend with the same id until the server acknowledges it as stored."""
        end = time.monotonic() + deadline
        while True:
            try:
                ack = self.send(text, message_id, timeout=5)
                if ack.get("ok"):
                    return ack
            except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError):
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"{self.name}: message {message_id} never acknowledged")
            time.sleep(0.1)

    def texts(self) -> list[str]:
        with self.lock:
            return [line["msg"] for _, line in self.lines if line["action"] == "message"]

    def message_ids(self) -> list[str]:
        with self.lock:
            return [line.get("id") for _, line in self.lines if line["action"] == "message"]

    def offsets(self) -> list[str]:
        with self.lock:
            return [offset for offset, _ in self.lines]

    def has_ids(self, ids) -> bool:
        mine = set(self.message_ids())
        return all(i in mine for i in ids)


def stream_order(offsets: list[str]) -> list[tuple[int, int]]:
    return [tuple(int(part) for part in offset.split("-")) for offset in offsets]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


class StreamReadHold:
    """A TCP relay in front of Redis that, once armed, holds the first stream read after an offset
    (`XRANGE key (<id> ...`, what chat-node sends to catch a socket up) for `seconds` before passing
    it on; everything else, and every other connection, passes at once. `holding` is set while the
    read is held. Bytes on the held connection keep their order (later commands wait behind it)."""

    def __init__(self, redis_port: int, seconds: float):
        self.redis_port = redis_port
        self.seconds = seconds
        self.port = harness.free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.armed = threading.Event()
        self.holding = threading.Event()
        self.released = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.redis_port))
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, commands: bool):
        while True:
            try:
                data = source.recv(65536)
                if not data:
                    break
                if commands and self.armed.is_set() and b"XRANGE" in data and b"\r\n(" in data:
                    self.armed.clear()
                    self.holding.set()
                    time.sleep(self.seconds)
                    self.holding.clear()
                    self.released.set()
                target.sendall(data)
            except OSError:
                break
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        for s in self._sockets:
            try:
                s.close()
            except OSError:
                pass
