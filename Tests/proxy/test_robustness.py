"""Robustness: request smuggling, oversized headers, slow clients, byte-exact tunnelling, declined
upgrades, many connections, with the built sticky-proxy and real backend processes."""

import asyncio
import os
import resource
import socket
import subprocess
import time
import urllib.parse

import pytest
import websocket

import harness
from proxy_support import raw_request, set_cookies


def read_response(sock: socket.socket) -> bytes:
    """One complete response with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, data
        body += chunk
    return head + b"\r\n\r\n" + body


def test_content_length_with_transfer_encoding_is_rejected(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    reply = raw_request(proxy.port, b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
                                    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"/smuggled" not in reply
    assert backend.stats()["requests"] == 1  # only this stats request


def test_duplicate_content_length_is_rejected(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    reply = raw_request(proxy.port, b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbody")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    reply = raw_request(proxy.port, b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nbody")
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert backend.stats()["requests"] == 1


def test_http_versions_are_taken_as_gos_server_takes_them(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    # HTTP/2 (or later) in an HTTP/1 request line: 505, as Go answers in gorouter.
    reply = raw_request(proxy.port, b"GET / HTTP/2.0\r\nHost: localhost\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), reply
    assert reply.endswith(b"\r\n\r\nunsupported protocol version"), reply
    # A later HTTP/1 minor version is served as HTTP/1.1.
    reply = raw_request(proxy.port, b"GET / HTTP/1.2\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n"), reply
    assert backend.stats()["requests"] == 2  # the HTTP/1.2 request and this stats request


def test_bare_line_feeds_get_an_answer_at_once(proxy, backends):
    # The proxy reads heads strictly: a bare LF is refused. A head whose lines all end with a bare LF
    # used to be awaited until the header read timeout (30 s) with no answer.
    (backend,) = backends(1)
    proxy.register(backend)
    reply = raw_request(proxy.port, b"GET / HTTP/1.1\nHost: localhost\n\n", timeout=20)
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
    # The same from the app: 502 at once, not after the backend's response timeout.
    reply = raw_request(proxy.port, b"GET /__bare_lf_response HTTP/1.1\r\nHost: localhost\r\n\r\n", timeout=20,
                        read_until_close=False)
    assert reply.startswith(b"HTTP/1.1 502 Bad Gateway\r\n"), reply
    assert backend.stats()["requests"] == 2  # the bare-LF request never reached it


def test_header_section_over_the_limit_answers_431(proxy_factory, backends):
    proxy = proxy_factory("--max-header-bytes", "8192")
    (backend,) = backends(1)
    proxy.register(backend)
    reply = raw_request(proxy.port, b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert proxy.get("/", headers={"X-Fits": "a" * 4000}).status_code == 200


def test_slow_client_is_closed_after_the_header_read_timeout(proxy_factory, backends):
    proxy = proxy_factory("--header-read-timeout", "500ms")
    (backend,) = backends(1)
    proxy.register(backend)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: local")
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed, without a response
        assert time.monotonic() - started < 9
    # An idle keep-alive connection is not a slow client.
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 OK")
        sock.settimeout(1.5)
        try:
            data = sock.recv(1024)
        except socket.timeout:
            data = None
        assert data is None  # still open after three header timeouts


def test_websocket_frames_are_tunnelled_byte_exact(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    ws = websocket.create_connection(f"ws://127.0.0.1:{proxy.port}/ws", host="localhost", timeout=10)
    for size in [0, 1, 125, 126, 65535, 65536, 1_000_000]:
        payload = os.urandom(size)
        ws.send_binary(payload)
        assert ws.recv() == payload
    ws.send("whoami")
    assert ws.recv() == backend.instance_id
    ws.close()
    harness.wait_until("the tunnel count back to 0", lambda: proxy.routes()["localhost"][0]["open_tunnels"] == 0)


def test_bytes_right_behind_the_upgrade_request_are_not_lost(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        early = b"early bytes sent with the upgrade request\n"
        sock.sendall(b"GET /__raw HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n" + early)
        received = b""
        expected_tail = b"hello-from-backend\n" + early
        while not received.endswith(expected_tail):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
        assert rest == expected_tail  # the backend's bytes right behind its 101, then our echo
        assert harness.wait_until("a tunnel", lambda: proxy.routes()["localhost"][0]["open_tunnels"] == 1)
        assert proxy.routes()["localhost"][0]["in_flight"] == 0  # upgraded: no longer in flight
        blob = os.urandom(3_000_000)
        sock.sendall(blob)
        echoed = b""
        while len(echoed) < len(blob):
            chunk = sock.recv(1 << 20)
            assert chunk
            echoed += chunk
        assert echoed == blob
    harness.wait_until("the tunnel to close", lambda: proxy.routes()["localhost"][0]["open_tunnels"] == 0)
    assert proxy.routes()["localhost"][0]["in_flight"] == 0


def test_declined_upgrade_closes_the_client_connection_cleanly(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    reply = raw_request(proxy.port, b"GET /__decline HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 Forbidden")
    assert b"connection: close" in head.lower()
    assert body == b"upgrade declined"  # then the connection closed (raw_request read until EOF)


def test_upgraded_connections_have_no_request_timeout(proxy_factory, backends):
    proxy = proxy_factory("--request-timeout", "300ms", "--idle-timeout", "300ms")
    (backend,) = backends(1)
    proxy.register(backend)
    ws = websocket.create_connection(f"ws://127.0.0.1:{proxy.port}/ws", host="localhost", timeout=10)
    ws.send("first")
    assert ws.recv() == "first"
    ws.settimeout(1.2)  # four request timeouts of silence
    try:
        ws.recv()
    except websocket.WebSocketTimeoutException:
        pass
    ws.settimeout(10)
    ws.send("still open")
    assert ws.recv() == "still open"
    ws.close()


def test_idle_keep_alive_connections_are_closed_after_the_idle_timeout(proxy_factory, backends):
    proxy = proxy_factory("--idle-timeout", "500ms")
    (backend,) = backends(1)
    proxy.register(backend)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert read_response(sock).startswith(b"HTTP/1.1 200 OK")
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the proxy
        assert time.monotonic() - started < 9


def test_ten_thousand_concurrent_connections_leak_no_file_descriptor(proxy, backends):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # 10,000 client sockets here, and as many in the proxy (it raises its own limit to the hard one).
    assert hard == resource.RLIM_INFINITY or hard >= 10_500, (
        f"this test needs 10,500 open files and the hard limit is {hard}: raise it (ulimit -Hn, or LimitNOFILE)")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    (backend,) = backends(1)
    proxy.register(backend)
    proxy.get("/")
    baseline = proxy.open_fds()
    count = 10_000

    async def scenario():
        connections = []
        for start in range(0, count, 500):
            batch = await asyncio.gather(*[asyncio.open_connection("127.0.0.1", proxy.port) for _ in range(min(500, count - start))])
            connections.extend(batch)
        assert len(connections) == count
        # Every connection is open at once; a tenth of them also make a request.
        async def exchange(reader, writer):
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            return head.startswith(b"HTTP/1.1 200")
        results = []
        for start in range(0, count, 10 * 100):
            batch = connections[start:start + 1000:10]
            results += await asyncio.gather(*[exchange(r, w) for r, w in batch])
        assert all(results) and len(results) == count // 10
        peak = proxy.open_fds()
        for _, writer in connections:
            writer.close()
        await asyncio.gather(*[w.wait_closed() for _, w in connections], return_exceptions=True)
        return peak

    peak = asyncio.run(scenario())
    assert peak >= count

    def only_pooled_connections_left():
        # Every descriptor above the baseline must be a keep-alive connection to the app, kept in
        # the pool (the backend counts them; its own /__stats connection is one more).
        pooled = backend.stats()["open_connections"] - 1
        return proxy.open_fds() <= baseline + pooled

    harness.wait_until("client descriptors to be released", only_pooled_connections_left, timeout=30, interval=0.2)
    assert proxy.get("/").status_code == 200
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("which", ["proxy", "admin"])
def test_a_port_in_use_is_a_clear_error_and_exit_1(which):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        free = harness.free_port()
        proxy_port, admin_port = (busy, free) if which == "proxy" else (free, busy)
        result = subprocess.run([str(harness.executable("sticky-proxy")), "--port", str(proxy_port), "--admin-port",
                                 str(admin_port), "--admin-token", "t"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"127.0.0.1:{busy}: the port is already in use" in result.stderr
    # Nothing else: no NIO complaint about a loop that was already shut down.
    assert result.stderr.strip().count("\n") == 0, result.stderr


def test_an_app_cookie_with_an_impossible_expiry_date_is_passed_on(proxy_factory, backends):
    """Found by `make fuzz`: an `Expires` with more digits than any date has (an app can write anything)
    overflowed the date arithmetic and crashed the proxy, dropping every connection. Such a text is
    not a date, so the session cookie is no deletion: the session starts and is pinned as usual."""
    proxy = proxy_factory()
    (backend,) = backends(1)
    proxy.register(backend)
    for expires in ["Sun, 06 Nov 9999999999999999 08:49:37 GMT", "Sun, 06 Nov 1994 99999999999999999:49:37 GMT",
                    "Sun, 99999999999999999999 Nov 1994 08:49:37 GMT"]:
        cookie = f"JSESSIONID=abc; Expires={expires}"
        response = proxy.get("/?set_cookie=" + urllib.parse.quote(cookie))
        assert response.status_code == 200, response.text
        assert cookie in set_cookies(response)
        assert any(c.startswith("__VCAP_ID__=") for c in set_cookies(response)), set_cookies(response)
    assert proxy.get("/").status_code == 200  # the same process, still serving
