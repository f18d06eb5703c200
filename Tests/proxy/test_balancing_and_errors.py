"""Section 2 of cloud-foundry-behaviour.md (balancing, retries, errors, timeouts) and instance
targeting from section 1, with the built sticky-proxy and real backend processes."""

import collections
import threading
import time

import requests

import harness
from proxy_support import APP_ID, served_by


def test_round_robin_spreads_requests_evenly(proxy, backends):
    started = backends(3)
    for backend in started:
        proxy.register(backend)
    counts = collections.Counter(served_by(proxy.get("/")) for _ in range(30))
    assert counts == {b.instance_id: 10 for b in started}


def test_sticky_requests_do_not_move_the_round_robin_cursor(proxy, backends):
    # gorouter advances a pool's round-robin index only when it balances. Here every new client is
    # followed by one sticky request of an earlier client: if sticky hits moved the cursor too, with
    # two instances every new client would land on the same one.
    started = backends(2)
    for backend in started:
        proxy.register(backend)
    pinned = started[0].instance_id
    counts = collections.Counter()
    for _ in range(10):
        counts[served_by(proxy.get("/"))] += 1
        assert served_by(proxy.get("/", cookies={"JSESSIONID": "a", "__VCAP_ID__": pinned})) == pinned
    assert counts == {b.instance_id: 5 for b in started}


def test_round_robin_cursor_starts_at_a_random_endpoint(proxy_factory, backends):
    started = backends(3)
    firsts = set()
    for _ in range(12):
        proxy = proxy_factory()
        for backend in started:
            proxy.register(backend)
        firsts.add(served_by(proxy.get("/")))
        proxy.stop()
        if len(firsts) > 1:
            break
    assert len(firsts) > 1


def test_least_connection_prefers_the_idle_instance(proxy_factory, backends):
    proxy = proxy_factory("--balancing", "least-connection")
    busy, idle = backends(2)
    proxy.register(busy)
    proxy.register(idle)
    # Occupy one instance with slow requests, whichever it is.
    slow = [threading.Thread(target=lambda: proxy.get("/?delay=2")) for _ in range(1)]
    for thread in slow:
        thread.start()
    harness.wait_until("a slow request in flight", lambda: sum(e["in_flight"] for e in proxy.routes()["localhost"]) == 1)
    loaded = next(e["private_instance_id"] for e in proxy.routes()["localhost"] if e["in_flight"] == 1)
    served = {served_by(proxy.get("/")) for _ in range(6)}
    assert loaded not in served
    for thread in slow:
        thread.join()


def test_route_registration_can_choose_least_connection(proxy, backends):
    busy, idle = backends(2)
    proxy.register(busy, options={"loadbalancing": "least-connection"})
    proxy.register(idle, options={"loadbalancing": "least-connection"})
    assert proxy.routes()["localhost"][0]["load_balancing"] == "least-connection"
    slow = threading.Thread(target=lambda: proxy.get("/?delay=2"))
    slow.start()
    harness.wait_until("a slow request in flight", lambda: sum(e["in_flight"] for e in proxy.routes()["localhost"]) == 1)
    loaded = next(e["private_instance_id"] for e in proxy.routes()["localhost"] if e["in_flight"] == 1)
    assert loaded not in {served_by(proxy.get("/")) for _ in range(6)}
    slow.join()


def test_every_endpoint_at_max_conns_answers_503(proxy_factory, backends):
    proxy = proxy_factory("--max-conns", "1")
    (backend,) = backends(1)
    proxy.register(backend)
    slow = threading.Thread(target=lambda: proxy.get("/?delay=2"))
    slow.start()
    harness.wait_until("the slow request in flight", lambda: proxy.routes()["localhost"][0]["in_flight"] == 1)
    response = proxy.get("/")
    assert response.status_code == 503
    assert response.headers["X-Cf-Routererror"] == "Connection Limit Reached"
    assert response.text == "503 Service Unavailable: Requested route ('localhost') has reached the connection limit.\n"
    slow.join()


def test_connect_failure_is_retried_on_another_endpoint_and_marked_failed(proxy, backends):
    dead, alive = backends(2)
    proxy.register(dead)
    proxy.register(alive)
    dead.kill()
    for _ in range(6):
        assert served_by(proxy.get("/")) == alive.instance_id
    listing = {e["private_instance_id"]: e for e in proxy.routes()["localhost"]}
    assert "failed_until" in listing[dead.instance_id]
    # Skipped for 30 s: only one request ever tried the dead instance.
    assert listing[dead.instance_id]["requests_total"] == 1


def test_failed_endpoint_is_tried_again_after_retry_after_failure(proxy_factory, backends):
    proxy = proxy_factory("--retry-after-failure", "500ms")
    dead, alive = backends(2)
    proxy.register(dead)
    proxy.register(alive)
    dead.kill()
    proxy.get("/")
    before = {e["private_instance_id"]: e["requests_total"] for e in proxy.routes()["localhost"]}[dead.instance_id]

    def dead_tried_again():
        proxy.get("/")
        return {e["private_instance_id"]: e["requests_total"] for e in proxy.routes()["localhost"]}[dead.instance_id] > before

    harness.wait_until("the failed endpoint to be tried again", dead_tried_again, timeout=10, interval=0.1)


def test_at_most_three_attempts_on_distinct_endpoints_then_502(proxy, backends):
    started = backends(4)
    for backend in started:
        proxy.register(backend)
        backend.kill()
    response = proxy.get("/")
    assert response.status_code == 502
    assert response.headers["X-Cf-Routererror"].startswith("endpoint_failure (dial tcp 127.0.0.1:")
    assert "connection refused" in response.headers["X-Cf-Routererror"]
    assert response.text == "502 Bad Gateway: Registered endpoint failed to handle the request.\n"
    tried = [e for e in proxy.routes()["localhost"] if e["requests_total"] > 0]
    assert len(tried) == 3
    assert all(e["requests_total"] == 1 for e in tried)
    proxy.wait_for_log(lambda line: '" 502 ' in line and "attempts:3" in line)


def test_eof_before_response_is_retried_for_idempotent_requests(proxy, backends):
    flaky, good = backends(2)
    proxy.register(flaky)
    proxy.register(good)
    for _ in range(4):
        response = proxy.get(f"/?close_on={flaky.instance_id}")
        assert response.status_code == 200
        assert served_by(response) == good.instance_id
    proxy.wait_for_log(lambda line: 'routing_decision:"retry_after_error"' in line and "attempts:2" in line)


def test_a_retry_goes_to_an_instance_registered_while_the_request_was_in_flight(proxy, backends):
    # gorouter's retries read the route's pool as it is at each attempt. A request that started while
    # its route had one instance, which then reset, used to get a 502 although a replacement had been
    # registered meanwhile (seen in a rolling restart of an app of one instance).
    old, replacement = backends(2)
    proxy.register(old)
    answer = {}
    request = threading.Thread(target=lambda: answer.update(response=proxy.get(f"/?hold_on={old.instance_id}&reset_on={old.instance_id}")))
    request.start()
    harness.wait_until("the request to go to the old instance", lambda: proxy.routes()["localhost"][0]["requests_total"] == 1, timeout=10,
                       interval=0.02)
    proxy.register(replacement)
    # Only now does the old instance reset the request.
    requests.get(f"http://127.0.0.1:{old.port}/__release", timeout=5).raise_for_status()
    request.join(timeout=30)
    response = answer["response"]
    assert response.status_code == 200, (response.status_code, response.text)
    assert served_by(response) == replacement.instance_id
    line = proxy.wait_for_log(lambda line: "/?hold_on=" in line)
    assert "attempts:2" in line and 'routing_decision:"retry_after_error"' in line, line


def test_eof_on_a_non_idempotent_request_is_not_retried(proxy, backends):
    flaky, good = backends(2)
    proxy.register(flaky)
    proxy.register(good)
    # Round-robin alternates: of two POSTs, one meets the closing instance first.
    statuses = sorted(proxy.request("POST", f"/?close_on={flaky.instance_id}", data=b"payload").status_code for _ in range(2))
    assert statuses == [200, 502]
    line = proxy.wait_for_log(lambda line: '"POST /?close_on' in line and '" 502 ' in line)
    assert "attempts:1" in line
    assert 'x_cf_routererror:"endpoint_failure (EOF)"' in line


def test_idempotency_key_makes_a_post_retriable(proxy, backends):
    flaky, good = backends(2)
    proxy.register(flaky)
    proxy.register(good)
    for _ in range(4):
        response = proxy.request("POST", f"/?close_on={flaky.instance_id}", data=b"payload", headers={"Idempotency-Key": "k1"})
        assert response.status_code == 200
        assert response.json()["body_length"] == 7
    proxy.wait_for_log(lambda line: '"POST /?close_on' in line and "attempts:2" in line)


def test_eof_before_response_does_not_mark_the_endpoint_failed(proxy, backends):
    # gorouter marks an endpoint failed on dial errors and a reset on read only: an app that closes
    # a connection without answering stays in rotation (it used to be skipped for 30 s).
    (backend,) = backends(1)
    proxy.register(backend)
    response = proxy.get("/__close_before_response")
    assert response.status_code == 502
    assert response.headers["X-Cf-Routererror"] == "endpoint_failure (EOF)"
    assert "failed_until" not in proxy.routes()["localhost"][0]


def test_reset_before_response_marks_the_endpoint_failed(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    response = proxy.request("POST", "/__reset_before_response", data=b"x")
    assert response.status_code == 502
    # Go's words: "read tcp <address>: read: connection reset by peer" (it used to say "connect:").
    assert response.headers["X-Cf-Routererror"].endswith(": read: connection reset by peer)"), response.headers["X-Cf-Routererror"]
    assert "failed_until" in proxy.routes()["localhost"][0]


def test_error_responses_from_the_app_are_never_retried(proxy, backends):
    started = backends(3)
    for backend in started:
        proxy.register(backend)
    response = proxy.get("/?status=503")
    assert response.status_code == 503
    assert "X-Cf-Routererror" not in response.headers
    assert sum(e["requests_total"] for e in proxy.routes()["localhost"]) == 1


def test_backend_dying_mid_response_closes_the_client_connection(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    import requests

    started = time.monotonic()
    try:
        proxy.get("/__die_mid_response", timeout=10)
        raised = False
    except requests.exceptions.RequestException:
        raised = True
    assert raised
    assert time.monotonic() - started < 9
    line = proxy.wait_for_log(lambda line: "/__die_mid_response" in line)
    assert "endpoint_failure" in line


def test_request_timeout_answers_502(proxy_factory, backends):
    proxy = proxy_factory("--request-timeout", "500ms")
    (backend,) = backends(1)
    proxy.register(backend)
    response = proxy.get("/?delay=5")
    assert response.status_code == 502
    assert response.headers["X-Cf-Routererror"] == "endpoint_failure (context deadline exceeded)"


def test_targeting_an_instance_with_x_cf_app_instance(proxy, backends):
    started = backends(3)
    for backend in started:
        proxy.register(backend)
    for backend in started:
        for _ in range(2):
            response = proxy.get("/", headers={"X-CF-APP-INSTANCE": f"{APP_ID}:{backend.index}"})
            assert served_by(response) == backend.instance_id
            assert "x-cf-app-instance" not in response.json()["headers"]
    proxy.wait_for_log(lambda line: 'routing_decision:"targeted"' in line)
    # Pinned to one instance, targeting another: gorouter re-pins the client to the targeted one.
    pinned, targeted = started[0], started[1]
    response = proxy.get("/", cookies={"JSESSIONID": "s", "__VCAP_ID__": pinned.instance_id},
                         headers={"X-CF-APP-INSTANCE": f"{APP_ID}:{targeted.index}"})
    assert served_by(response) == targeted.instance_id
    assert f"__VCAP_ID__={targeted.instance_id};" in response.headers.get("Set-Cookie", "")
    # Pinned to the one it targets: nothing to set.
    response = proxy.get("/", cookies={"JSESSIONID": "s", "__VCAP_ID__": targeted.instance_id},
                         headers={"X-CF-APP-INSTANCE": f"{APP_ID}:{targeted.index}"})
    assert "Set-Cookie" not in response.headers


def test_malformed_x_cf_app_instance_answers_400(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    for value in ["nope", f"{APP_ID}", f"{APP_ID}:", f"{APP_ID}:x", f"{APP_ID.upper()}:0", f"{APP_ID}:0:1"]:
        response = proxy.get("/", headers={"X-CF-APP-INSTANCE": value})
        assert response.status_code == 400, value
        assert response.headers["X-Cf-Routererror"] == "invalid_cf_app_instance_header"
        assert response.text == "400 Bad Request: Invalid X-CF-App-Instance Header\n"
    # As gorouter's lookup, the header is checked before the route: a host with no route gets the
    # same 400 (it used to get 404 unknown_route), and an empty header counts as none.
    response = proxy.get("/", host="nowhere.example", headers={"X-CF-APP-INSTANCE": "nope"})
    assert (response.status_code, response.headers["X-Cf-Routererror"]) == (400, "invalid_cf_app_instance_header")
    assert served_by(proxy.get("/", headers={"X-CF-APP-INSTANCE": ""})) == backend.instance_id


def test_unknown_instance_in_x_cf_app_instance_answers_400_unknown_route(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    response = proxy.get("/", headers={"X-CF-APP-INSTANCE": f"{APP_ID}:7"})
    assert response.status_code == 400
    assert response.headers["X-Cf-Routererror"] == "unknown_route"
    assert response.text == f"400 Bad Request: Requested instance ('7') with guid ('{APP_ID}') does not exist for route ('localhost')\n"
    # A host with no route at all, and a well-formed header: gorouter answers the instance's 400
    # (it used to be the route's 404).
    response = proxy.get("/", host="nowhere.example", headers={"X-CF-APP-INSTANCE": f"{APP_ID}:0"})
    assert (response.status_code, response.headers["X-Cf-Routererror"]) == (400, "unknown_route")
    assert response.text == f"400 Bad Request: Requested instance ('0') with guid ('{APP_ID}') does not exist for route ('nowhere.example')\n"
    assert response.headers["Cache-Control"] == "no-cache, no-store"


def test_missing_host_answers_400_empty_host(proxy, backends):
    from proxy_support import raw_request

    reply = raw_request(proxy.port, b"GET / HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.0 400 Bad Request\r\n")
    assert b"X-Cf-Routererror: empty_host" in reply
    # gorouter lets this one be cached for 2 s (its other lookup errors: no-cache, no-store).
    assert b"\r\nCache-Control: public,max-age=2\r\n" in reply
    assert reply.endswith(b"400 Bad Request: Request had empty Host header\n")
    # HTTP/1.1 requires Host: Go's server refuses the request before the router sees it, as it refuses
    # two Host headers, each with its reason, and closes the connection.
    for request, reason in [
        (b"GET / HTTP/1.1\r\n\r\n", b"missing required Host header"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"too many Host headers"),
    ]:
        reply = raw_request(proxy.port, request)
        assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply
        assert b"\r\nConnection: close\r\n" in reply
        assert reply.endswith(b"\r\n\r\n400 Bad Request: " + reason), reply


def test_client_going_away_is_logged_as_499(proxy, backends):
    import socket

    (backend,) = backends(1)
    proxy.register(backend)
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"GET /gone?delay=1 HTTP/1.1\r\nHost: localhost\r\n\r\n")
        harness.wait_until("the request in flight", lambda: proxy.routes()["localhost"][0]["in_flight"] == 1)
    line = proxy.wait_for_log(lambda line: "/gone" in line)
    assert '" 499 ' in line
    harness.wait_until("in-flight count back to 0", lambda: proxy.routes()["localhost"][0]["in_flight"] == 0)
