"""Headers gorouter adds and removes (cloud-foundry-behaviour.md section 2), with the built sticky-proxy
and a real backend process that echoes what it received."""

import re
import time

from proxy_support import APP_ID, raw_request


def received(proxy, headers=None, path="/"):
    response = proxy.get(path, headers=headers or {})
    assert response.status_code == 200
    return response, {k: v for k, v in response.json()["headers"].items()}


def test_x_forwarded_for_is_appended(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    _, headers = received(proxy)
    assert headers["x-forwarded-for"] == ["127.0.0.1"]
    _, headers = received(proxy, {"X-Forwarded-For": "203.0.113.7, 198.51.100.2"})
    assert headers["x-forwarded-for"] == ["203.0.113.7, 198.51.100.2, 127.0.0.1"]


def test_x_forwarded_proto_is_set_only_when_absent(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    _, headers = received(proxy)
    assert headers["x-forwarded-proto"] == ["http"]
    _, headers = received(proxy, {"X-Forwarded-Proto": "https"})
    assert headers["x-forwarded-proto"] == ["https"]


def test_x_vcap_request_id_is_new_and_echoed_on_the_response(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    response, headers = received(proxy, {"X-Vcap-Request-Id": "client-chosen"})
    (sent,) = headers["x-vcap-request-id"]
    assert sent != "client-chosen"
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", sent)
    assert response.headers["X-Vcap-Request-Id"] == sent
    second, headers2 = received(proxy)
    assert headers2["x-vcap-request-id"] != [sent]


def test_x_request_start_is_added_when_absent(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    before = int(time.time() * 1000)
    _, headers = received(proxy)
    (start,) = headers["x-request-start"]
    assert before - 1000 <= int(start) <= int(time.time() * 1000) + 1000
    _, headers = received(proxy, {"X-Request-Start": "42"})
    assert headers["x-request-start"] == ["42"]


def test_instance_headers_are_set_on_every_attempt(proxy, backends):
    dead, alive = backends(2)
    proxy.register(dead)
    proxy.register(alive)
    dead.kill()
    for _ in range(4):
        _, headers = received(proxy, {"X-CF-InstanceID": "spoofed"})
        assert headers["x-cf-applicationid"] == [APP_ID]
        assert headers["x-cf-instanceid"] == [alive.instance_id]
        assert headers["x-cf-instanceindex"] == [alive.index]


def test_hop_by_hop_headers_are_removed(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    _, headers = received(proxy, {
        "Connection": "keep-alive, X-Private-Hop",
        "X-Private-Hop": "secret",
        "Keep-Alive": "timeout=5",
        "Proxy-Connection": "keep-alive",
        "TE": "trailers",
        "Proxy-Authorization": "Basic abc",
        "X-End-To-End": "kept",
    })
    for name in ["connection", "x-private-hop", "keep-alive", "proxy-connection", "te", "proxy-authorization"]:
        assert name not in headers, name
    assert headers["x-end-to-end"] == ["kept"]


def test_hop_by_hop_headers_of_the_response_are_removed(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    response = proxy.get("/?header=Connection:%20X-Secret&header=X-Secret:%201&header=Keep-Alive:%20timeout=5&header=X-Kept:%20yes")
    assert "X-Secret" not in response.headers
    assert "Keep-Alive" not in response.headers
    assert response.headers["X-Kept"] == "yes"


def test_chunked_and_close_delimited_responses_are_reframed(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    chunked = proxy.get("/?chunked=1")
    assert chunked.json()["instance_id"] == backend.instance_id
    close_delimited = proxy.get("/?nolength=1")
    assert close_delimited.json()["instance_id"] == backend.instance_id
    # An HTTP/1.0 client gets a close-delimited body for a chunked backend response.
    reply = raw_request(proxy.port, b"GET /?chunked=1 HTTP/1.0\r\nHost: localhost\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert b"transfer-encoding" not in head.lower()
    assert backend.instance_id.encode() in body
    # An app that sends Content-Length with chunked: the chunks frame the body, the length is
    # dropped (as Go's transport does), so no client reads a wrong length.
    for version in (b"1.1", b"1.0"):
        reply = raw_request(
            proxy.port, b"GET /?chunked=1&header=Content-Length:%205 HTTP/" + version + b"\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/" + version + b" 200"), head
        assert b"content-length" not in head.lower(), head
        assert (b"transfer-encoding: chunked" in head.lower()) == (version == b"1.1"), head
        if version == b"1.1":
            assert body.endswith(b"\r\n0\r\n\r\n"), body[-20:]
            body = b"".join(body.split(b"\r\n")[1::2])  # the chunks' data (the backend writes 7 bytes each)
        assert backend.instance_id.encode() in body, body


def test_head_requests_get_no_body(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    for path in ["/", "/?chunked=1"]:
        reply = raw_request(proxy.port, f"HEAD {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert body == b""


def test_request_bodies_stream_through_both_framings(proxy, backends):
    import hashlib

    (backend,) = backends(1)
    proxy.register(backend)
    payload = bytes(range(256)) * 4096  # 1 MiB
    response = proxy.request("POST", "/upload", data=payload)
    assert response.json()["body_length"] == len(payload)
    assert response.json()["body_sha256"] == hashlib.sha256(payload).hexdigest()

    def chunks():
        for start in range(0, len(payload), 65536):
            yield payload[start:start + 65536]

    response = proxy.request("POST", "/upload", data=chunks())
    assert response.json()["body_length"] == len(payload)
    assert response.json()["headers"]["transfer-encoding"] == ["chunked"]


def test_expect_100_continue_is_relayed(proxy, backends):
    import socket

    (backend,) = backends(1)
    proxy.register(backend)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        interim = sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        sock.sendall(b"hello")
        final = b""
        while b"body_length" not in final:
            final += sock.recv(65536)
        assert b"HTTP/1.1 200" in final


def test_large_responses_stream_intact(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    size = 8 * 1024 * 1024
    response = proxy.get(f"/__big?size={size}")
    pattern = bytes(range(256))
    assert response.content == (pattern * (size // 256 + 1))[:size]


def test_keep_alive_connections_to_the_app_are_reused(proxy, backends):
    import requests

    (backend,) = backends(1)
    proxy.register(backend)
    before = backend.stats()["connections"]
    session = requests.Session()
    for _ in range(20):
        assert session.get(proxy.base + "/", headers={"Host": "localhost"}, timeout=10).status_code == 200
    # One pooled connection from the proxy, plus the stats request itself.
    assert backend.stats()["connections"] - before == 2


def test_an_absolute_form_target_routes_by_its_own_host(proxy, backends):
    """As Go's server in gorouter: `GET http://host/path` is routed by the URL's host, not the Host
    header, and by its path; the app gets the target as sent and the URL's host as Host; the access
    log shows the path. A target that is neither a path nor a URL is a 400."""
    (backend,) = backends(1)
    proxy.register(backend, uris=("localhost", "localhost/api"))
    import json

    for version, host_line in ((b"1.1", b"Host: elsewhere.test\r\n"), (b"1.0", b"")):
        reply = raw_request(
            proxy.port, b"GET http://LocalHost:80/api/x?y=1 HTTP/" + version + b"\r\n" + host_line + b"Connection: close\r\n\r\n")
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/" + version + b" 200"), reply
        seen = json.loads(body)
        assert seen["target"] == "http://LocalHost:80/api/x?y=1"
        assert seen["headers"]["host"] == ["LocalHost:80"]
    line = proxy.wait_for_log(lambda line: "/api/x?y=1" in line)
    assert '"GET /api/x?y=1 HTTP/1.1"' in line and line.startswith("LocalHost:80 "), line
    # The Host header alone no longer routes it elsewhere: an absolute URL to an unknown host is a 404.
    reply = raw_request(proxy.port, b"GET http://nowhere.test/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 404 ") and b"Requested route ('nowhere.test') does not exist." in reply, reply
    for target in (b"?x=1", b"localhost/x"):
        reply = raw_request(proxy.port, b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), (target, reply)


def test_trace_key_headers_name_the_router_and_the_instance(proxy_factory, backends):
    """gorouter's router.trace_key: a request whose X-Vcap-Trace equals it is told which router and
    which instance answered (X-Vcap-Router, X-Vcap-Backend, X-Cf-Routeendpoint); others are not."""
    proxy = proxy_factory("--trace-key", "s3cret-key")
    (backend,) = backends(1)
    proxy.register(backend)
    traced = proxy.get("/", headers={"X-Vcap-Trace": "s3cret-key"})
    address = f"127.0.0.1:{backend.port}"
    assert traced.headers["X-Vcap-Backend"] == address and traced.headers["X-Cf-Routeendpoint"] == address, traced.headers
    assert traced.headers["X-Vcap-Router"] == "127.0.0.1"
    for headers in ({"X-Vcap-Trace": "wrong"}, {}):
        assert "X-Vcap-Backend" not in proxy.get("/", headers=headers).headers
    # Without --trace-key, nothing is traced whatever the request says.
    plain = proxy_factory()
    plain.register(backend)
    assert "X-Vcap-Backend" not in plain.get("/", headers={"X-Vcap-Trace": "s3cret-key"}).headers
