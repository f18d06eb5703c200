"""Access log in gorouter's format, the live decision feed, Prometheus metrics, and graceful shutdown,
with the built sticky-proxy and real backend processes."""

import json
import re
import signal
import socket
import threading
import time

import requests
import websocket

import harness
from proxy_support import APP_ID, TOKEN

LINE = re.compile(
    r'^(?P<host>\S+) - \[(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z)\] "(?P<method>\S+) (?P<uri>\S+) (?P<proto>HTTP/1\.[01])" '
    r'(?P<status>\d{3}|"-") (?P<bytes_in>\d+) (?P<bytes_out>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" '
    r'"(?P<client>[^"]*)" "(?P<backend>[^"]*)" x_forwarded_for:"(?P<xff>[^"]*)" x_forwarded_proto:"(?P<xfp>[^"]*)" '
    r'vcap_request_id:"(?P<vcap>[^"]*)" response_time:(?P<rt>[\d.]+|"-") gorouter_time:(?P<gt>[\d.]+|"-") '
    r'app_id:"(?P<app>[^"]*)" app_index:"(?P<index>[^"]*)" instance_id:"(?P<instance>[^"]*)" '
    r'x_cf_routererror:"(?P<error>[^"]*)" routing_decision:"(?P<decision>[^"]*)" '
    r'pinned_instance_id:"(?P<pinned>[^"]*)" attempts:(?P<attempts>\d+)$'
)


def test_access_log_lines_follow_gorouters_format(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    response = proxy.request("POST", "/submit?x=1", data=b"12345", headers={"User-Agent": "tester/1", "Referer": "http://r/"})
    line = proxy.wait_for_log(lambda line: "/submit" in line)
    match = LINE.match(line)
    assert match, line
    fields = match.groupdict()
    assert fields["host"] == "localhost"
    assert fields["method"] == "POST" and fields["uri"] == "/submit?x=1" and fields["proto"] == "HTTP/1.1"
    assert fields["status"] == "200"
    assert fields["bytes_in"] == "5"
    assert int(fields["bytes_out"]) == len(response.content)
    assert fields["referer"] == "http://r/" and fields["agent"] == "tester/1"
    assert fields["client"].startswith("127.0.0.1:")
    assert fields["backend"] == f"127.0.0.1:{backend.port}"
    assert fields["xff"] == "127.0.0.1" and fields["xfp"] == "http"
    assert fields["vcap"] == response.headers["X-Vcap-Request-Id"]
    assert float(fields["rt"]) >= float(fields["gt"]) >= 0
    assert fields["app"] == APP_ID and fields["index"] == "0" and fields["instance"] == backend.instance_id
    assert fields["error"] == "-" and fields["decision"] == "balanced" and fields["pinned"] == "-" and fields["attempts"] == "1"


def test_access_log_counts_body_bytes_without_chunk_framing(proxy, backends):
    # gorouter logs the bytes of the bodies (Go reads and writes them de-chunked); the chunk sizes
    # and line ends used to be counted too.
    (backend,) = backends(1)
    proxy.register(backend)
    response = proxy.request("POST", "/chunked-both?chunked=1", data=iter([b"abc", b"defgh"]))
    assert response.status_code == 200
    line = proxy.wait_for_log(lambda line: "/chunked-both" in line)
    fields = LINE.match(line).groupdict()
    assert fields["bytes_in"] == "8", line
    assert int(fields["bytes_out"]) == len(response.content), line


def test_access_log_of_router_errors_has_dashes(proxy):
    response = proxy.get("/missing", host="ghost.local")
    line = proxy.wait_for_log(lambda line: "/missing" in line)
    fields = LINE.match(line).groupdict()
    assert fields["status"] == "404"
    # The error body the router wrote is counted, as gorouter's body_bytes_sent.
    assert int(fields["bytes_out"]) == len(response.content) > 0, line
    assert fields["backend"] == "-" and fields["app"] == "-" and fields["instance"] == "-"
    assert fields["error"] == "unknown_route"
    # No app was reached: all of it is the router's time, as gorouter logs it (it used to be "-").
    assert fields["rt"] != '"-"' and fields["gt"] == fields["rt"], line


def test_decision_feed_streams_each_routing_decision(proxy, backends):
    first, second = backends(2)
    proxy.register(first)
    proxy.register(second)
    events = []
    connected = threading.Event()

    def listen():
        with requests.get(proxy.admin + "/events", headers={"Authorization": f"Bearer {TOKEN}"}, stream=True, timeout=30) as response:
            assert response.headers["Content-Type"] == "text/event-stream"
            for raw in response.iter_lines():
                if raw.startswith(b":"):
                    connected.set()
                    continue
                if raw.startswith(b"data: "):
                    events.append(json.loads(raw[6:]))
                    if len(events) == 4:
                        return

    listener = threading.Thread(target=listen)
    listener.start()
    assert connected.wait(10)  # the greeting comes after the subscription
    proxy.get("/a")
    proxy.get("/b", cookies={"JSESSIONID": "x", "__VCAP_ID__": second.instance_id})
    proxy.get("/c", cookies={"JSESSIONID": "x", "__VCAP_ID__": "gone-gone-gone"})
    proxy.get("/d", host="ghost.local")
    listener.join(timeout=20)
    assert [e["path"] for e in events] == ["/a", "/b", "/c", "/d"]
    assert events[0]["decision"] == "balanced"
    assert events[1]["decision"] == "sticky_hit" and events[1]["instance_id"] == second.instance_id
    assert events[1]["pinned_instance_id"] == second.instance_id
    assert events[2]["decision"] == "fallback_instance_gone" and events[2]["pinned_instance_id"] == "gone-gone-gone"
    # No route, no decision: the feed says none (as the access log's "-"), not "balanced".
    assert events[3]["status"] == 404 and events[3]["router_error"] == "unknown_route", events[3]
    assert "decision" not in events[3] and "instance_id" not in events[3], events[3]
    for event in events[:3]:
        assert event["status"] == 200 and event["attempt"] == 1 and event["method"] == "GET" and event["host"] == "localhost"
        assert event["vcap_request_id"] and event["time"].endswith("Z") and event["instance_index"] in ("0", "1")


def test_metrics_are_served_in_prometheus_format(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    proxy.get("/")
    proxy.get("/", host="ghost.local")
    text = requests.get(proxy.admin + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).text
    assert 'sticky_proxy_responses_total{code="2xx"} 1' in text
    assert 'sticky_proxy_responses_total{code="4xx"} 1' in text
    assert 'sticky_proxy_routing_decisions_total{decision="balanced"} 1' in text
    assert 'sticky_proxy_router_errors_total{error="unknown_route"} 1' in text
    assert "sticky_proxy_routes 1" in text and "sticky_proxy_endpoints 1" in text
    assert "sticky_proxy_request_duration_seconds_count 2" in text


def test_graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    result = {}

    def slow():
        result["response"] = proxy.get("/?delay=1.5")

    thread = threading.Thread(target=slow)
    thread.start()
    harness.wait_until("the slow request in flight", lambda: proxy.routes()["localhost"][0]["in_flight"] == 1)
    proxy.program.signal(signal.SIGTERM)
    harness.wait_until("the listener to close", lambda: not harness.is_listening(proxy.port))
    thread.join()
    assert result["response"].status_code == 200
    assert result["response"].headers["Connection"] == "close"
    assert proxy.program.process.wait(timeout=20) == 0
    assert_stopped_cleanly(proxy)


def assert_stopped_cleanly(proxy):
    """After SIGTERM: "stopped" is the last word, and SwiftNIO complained about nothing (a task scheduled
    on a loop that had shut down prints an ERROR line, and will be a crash in later SwiftNIO versions)."""
    output = proxy.program.output()
    assert "sticky-proxy stopped" in output
    assert not [line for line in output.splitlines() if line.startswith("ERROR") or "Cannot schedule" in line], output


def test_drain_timeout_closes_tunnels_and_stuck_requests(proxy_factory, backends):
    proxy = proxy_factory("--drain-timeout", "1s")
    (backend,) = backends(1)
    proxy.register(backend)
    ws = websocket.create_connection(f"ws://127.0.0.1:{proxy.port}/ws", host="localhost", timeout=10)
    ws.send("hi")
    assert ws.recv() == "hi"
    stuck = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    stuck.sendall(b"GET /?delay=20 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    harness.wait_until("the stuck request in flight", lambda: proxy.routes()["localhost"][0]["in_flight"] == 1)
    started = time.monotonic()
    proxy.program.signal(signal.SIGTERM)
    assert proxy.program.process.wait(timeout=15) == 0
    assert time.monotonic() - started < 10
    assert stuck.recv(1024) == b""
    ws.settimeout(5)
    try:
        ws.recv()
        closed = False
    except (websocket.WebSocketConnectionClosedException, ConnectionError):
        closed = True
    assert closed
    stuck.close()
    assert_stopped_cleanly(proxy)
    # The router cut the request off, not the client: no 499 in the access log, and the log says why.
    (line,) = [line for line in proxy.access_log_lines() if "/?delay=20" in line]
    fields = LINE.match(line).groupdict()
    assert fields["status"] == '"-"' and fields["error"] == "-", line
    assert "drain timeout reached" in proxy.program.output()
