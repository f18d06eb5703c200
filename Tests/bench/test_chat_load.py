"""`stickylab-bench chat-load`, the load generator of bench/bench_chat.py, against a real chat-node on a
real redis-server: it connects as Socket.IO clients with a session cookie, sends paced chat messages,
counts every delivery (of `chat`, or of the event it is told to count, here on socketio-testserver),
measures latency, and reports refusals and bad commands as JSON errors."""

from __future__ import annotations

import json
import select
import subprocess

import pytest
import requests
import socketio

import harness

PATH = "/socket.io/?EIO=4&transport=websocket"


class Generator:
    def __init__(self, *options: str):
        self.process = subprocess.Popen([str(harness.executable("stickylab-bench")), "chat-load", *options],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def command(self, cmd: str, **fields) -> dict:
        self.process.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        assert ready, f"no reply to {cmd} within 30 s"
        line = self.process.stdout.readline()
        assert line, f"chat-load exited ({self.process.wait()}) during {cmd}"
        return json.loads(line)

    def stop(self) -> int:
        self.process.stdin.close()
        return self.process.wait(timeout=30)


@pytest.fixture
def chat_node():
    redis = harness.RedisServer()
    port = harness.free_port()
    program = harness.Program("chat-node", env={"PORT": str(port), "REDIS_URL": redis.url, "SESSION_SECRET": "test",
                                                "LOG_LEVEL": "warning"})
    url = f"http://127.0.0.1:{port}"

    def healthy():
        assert program.process.poll() is None, program.output()
        try:
            return requests.get(url + "/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    harness.wait_until("chat-node to be healthy", healthy, timeout=30)
    yield port, url
    program.stop(timeout=20)
    redis.stop()


@pytest.fixture
def generator(request):
    process = Generator(*getattr(request, "param", ()))
    yield process
    if process.process.poll() is None:
        process.process.kill()
        process.process.wait()


def login(url: str, user: str) -> str:
    response = requests.post(url + "/user", data={"user": user}, allow_redirects=False, timeout=10)
    return response.headers["Set-Cookie"].split(";")[0]


# Sampled clients on the event loops of the others, or on one of their own (`--sampler-thread`, what
# bench_chat.py runs): counts and latencies come from every loop either way.
@pytest.mark.parametrize("generator", [(), ("--sampler-thread",), ("--threads", "2", "--sampler-thread"),
                                       ("--sampler-thread", "--read-every-ms", "50")],
                         indirect=True, ids=["one-loop", "sampler-thread", "two-loops-and-sampler", "batched-reads"])
def test_clients_receive_every_message_and_latency_is_measured(chat_node, generator):
    port, url = chat_node
    # Two sampled clients of five: with a sampler thread, the latencies come from its loop only, the
    # deliveries from both.
    clients = [{"host": "127.0.0.1", "port": port, "path": PATH, "cookie": login(url, f"user{i}"), "sample": i in (0, 3)}
               for i in range(5)]
    assert generator.command("open", clients=clients) == {"ok": True, "opened": 5}
    assert generator.command("latencies", record=True)["ok"]
    assert generator.command("send", rate=20, seconds=0.5, tag="t", senders=2) == {"ok": True, "sent": 10}

    def all_delivered():
        stats = generator.command("stats")
        assert stats["ok"] and stats["closed"] == 0, stats
        return stats["received"] >= 50

    harness.wait_until("50 deliveries (10 messages x 5 clients)", all_delivered, timeout=20)
    latencies = generator.command("latencies", record=False)
    assert latencies["ok"] and latencies["count"] == 20, latencies
    assert 0 < latencies["p50_ms"] <= latencies["p99_ms"] < 10_000
    # Each of the 10 messages reached both sampled clients: its first delivery is one of the samples,
    # and the spread from first to last is at most the largest sample.
    assert latencies["messages"] == 10, latencies
    assert 0 < latencies["first_p50_ms"] <= latencies["first_p99_ms"] <= latencies["p99_ms"]
    assert 0 <= latencies["spread_p50_ms"] <= latencies["spread_p99_ms"] < latencies["p99_ms"]
    assert generator.command("close") == {"ok": True}
    assert generator.stop() == 0


@pytest.mark.parametrize("generator", [("--sampler-thread", "--read-every-ms", "3000")], indirect=True)
def test_with_batched_reads_the_sampled_clients_read_at_once_and_the_others_on_their_tick(chat_node, generator):
    port, url = chat_node
    clients = [{"host": "127.0.0.1", "port": port, "path": PATH, "cookie": login(url, f"user{i}"), "sample": i < 2}
               for i in range(6)]
    assert generator.command("open", clients=clients) == {"ok": True, "opened": 6}
    assert generator.command("send", rate=20, seconds=0.5, tag="b", senders=2) == {"ok": True, "sent": 10}
    # The two sampled clients (the senders) read every message as it comes: 20 deliveries within
    # moments of the last send. The four others are read once every 3 s each, one of them on four
    # ticks of ten, 0.3 s apart and never two ticks in a row: from the first message until the
    # sampled deliveries are in (about 0.5 s), at most two of them were read, so at most
    # 20 + 2 x 10 deliveries are counted. (Clients that read at once would have 54 or more by then:
    # only the last message can still be on its way.)
    harness.wait_until("the sampled clients' deliveries", lambda: generator.command("stats")["received"] >= 20, timeout=10)
    assert generator.command("stats")["received"] <= 50
    # Nothing is lost: every delivery is counted within an interval.
    harness.wait_until("all 60 deliveries", lambda: generator.command("stats")["received"] == 60, timeout=10)
    assert generator.command("stats") == {"ok": True, "received": 60, "last_receive_age": pytest.approx(0, abs=10), "closed": 0}
    assert generator.stop() == 0


def test_a_bad_read_interval_is_refused_with_a_clear_message():
    result = subprocess.run([str(harness.executable("stickylab-bench")), "chat-load", "--read-every-ms", "60000"],
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and "--read-every-ms must be between 0 and 10000" in result.stderr, result.stderr


@pytest.mark.parametrize("stdin, stdout", [("file", "pipe"), ("pipe", "devnull"), ("pipe", "file")])
def test_stdin_or_stdout_that_cannot_be_polled_is_refused_with_a_clear_message(tmp_path, stdin, stdout):
    # NIO stops the process on a descriptor it cannot poll; chat-load says what it needs instead.
    commands = tmp_path / "commands"
    commands.write_text('{"cmd":"stats"}\n')
    with open(commands) as file_in, open(tmp_path / "out", "w") as file_out, open("/dev/null", "w") as devnull:
        result = subprocess.run([str(harness.executable("stickylab-bench")), "chat-load"],
                                stdin=file_in if stdin == "file" else subprocess.PIPE,
                                stdout={"pipe": subprocess.PIPE, "devnull": devnull, "file": file_out}[stdout],
                                stderr=subprocess.PIPE, input=None, timeout=30)
    assert result.returncode != 0
    expected = "stdin to be a pipe, a socket or a terminal, not a regular file" if stdin == "file" else \
        f"stdout to be a pipe, a socket or a terminal, not {'a device such as /dev/null' if stdout == 'devnull' else 'a regular file'}"
    assert expected in result.stderr.decode(), result.stderr.decode()
    assert "Fatal error" not in result.stderr.decode()


def test_another_event_is_counted_when_asked_for():
    """bench_socketio.py's broadcast receivers: chat-load clients on socketio-testserver, counting
    `broadcast` deliveries (not the server's `auth` greeting), from a python-socketio sender."""
    port = harness.free_port()
    server = harness.Program("socketio-testserver", ["--port", str(port)])
    generator = Generator("--event", "broadcast")
    sender = socketio.Client()
    try:
        harness.wait_until("socketio-testserver to listen", lambda: harness.is_listening(port), timeout=30)
        clients = [{"host": "127.0.0.1", "port": port, "path": PATH} for _ in range(3)]
        assert generator.command("open", clients=clients) == {"ok": True, "opened": 3}
        sender.connect(f"http://127.0.0.1:{port}", transports=["websocket"], wait_timeout=10)
        for index in range(5):
            sender.emit("broadcast", index)
        harness.wait_until("15 deliveries (5 broadcasts x 3 clients)", lambda: generator.command("stats")["received"] >= 15, timeout=20)
        # A sixth broadcast marks the end: once every client counted it, everything before it (and
        # any second count of it) has arrived too. Each broadcast counted once per client: 18.
        sender.emit("broadcast", 5)
        harness.wait_until("the sixth broadcast at every client", lambda: generator.command("stats")["received"] >= 18, timeout=20)
        stats = generator.command("stats")
        assert stats["received"] == 18 and stats["closed"] == 0, stats
        assert generator.stop() == 0
    finally:
        sender.disconnect()
        if generator.process.poll() is None:
            generator.process.kill()
            generator.process.wait()
        server.stop()


def test_a_bad_event_name_is_refused_with_a_clear_message():
    result = subprocess.run([str(harness.executable("stickylab-bench")), "chat-load", "--event", 'a"b'],
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and "--event must be letters, digits, - or _" in result.stderr, result.stderr


def test_a_client_without_a_session_is_reported_as_an_error(chat_node, generator):
    port, _ = chat_node
    reply = generator.command("open", clients=[{"host": "127.0.0.1", "port": port, "path": PATH, "cookie": ""}], timeout=20)
    assert not reply["ok"]
    assert f"client 0 (127.0.0.1:{port})" in reply["error"], reply


def test_unreachable_server_and_bad_commands_are_errors_and_the_generator_carries_on(generator):
    port = harness.free_port()
    reply = generator.command("open", clients=[{"host": "127.0.0.1", "port": port, "path": PATH}], timeout=20)
    assert not reply["ok"] and "could not connect" in reply["error"], reply
    assert "unknown command" in generator.command("fly")["error"]
    assert not generator.command("send", rate=0, seconds=1)["ok"]
    assert not generator.command("send", rate=5, seconds=1, tag="a b")["ok"]
    assert generator.command("send", rate=5, seconds=1)["error"].startswith("send: no client is open")
    generator.process.stdin.write("not json\n")
    generator.process.stdin.flush()
    assert "not a JSON command" in json.loads(generator.process.stdout.readline())["error"]
    assert generator.command("stats") == {"ok": True, "received": 0, "closed": 0}
    assert generator.stop() == 0
