"""Section 3 of cloud-foundry-behaviour.md (routing table) and the 404 of section 2, with the built
sticky-proxy and real backend processes."""

import json

import requests

import harness
from proxy_support import TOKEN, Backend, served_by


def test_unknown_host_answers_404_unknown_route(proxy):
    response = proxy.get("/anything", host="nowhere.example.com:8080")
    assert response.status_code == 404
    assert response.headers["X-Cf-Routererror"] == "unknown_route"
    assert response.text == "404 Not Found: Requested route ('nowhere.example.com:8080') does not exist.\n"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["X-Vcap-Request-Id"]


def test_registered_route_is_served_and_host_port_is_ignored(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend, uris=["localhost", "127.0.0.1"])
    assert served_by(proxy.get("/", host="localhost")) == backend.instance_id
    assert served_by(proxy.get("/", host=f"localhost:{proxy.port}")) == backend.instance_id
    assert served_by(proxy.get("/", host=f"127.0.0.1:{proxy.port}")) == backend.instance_id
    assert served_by(proxy.get("/", host="LOCALHOST")) == backend.instance_id


def test_longest_context_path_wins_on_segment_boundaries(proxy, backends):
    root, api, api_v2 = backends(3)
    proxy.register(root, uris=["app.local"])
    proxy.register(api, uris=["app.local/api"])
    proxy.register(api_v2, uris=["app.local/api/v2"])
    assert served_by(proxy.get("/", host="app.local")) == root.instance_id
    assert served_by(proxy.get("/api", host="app.local")) == api.instance_id
    assert served_by(proxy.get("/api/users?x=1", host="app.local")) == api.instance_id
    assert served_by(proxy.get("/api/v2/users", host="app.local")) == api_v2.instance_id
    assert served_by(proxy.get("/apiary", host="app.local")) == root.instance_id


def last_instance_leaves(proxy, backends):
    """Two instances on localhost, unregistered one after the other (the one left serves everything):
    the first instance, and the answer to a request once none is left."""
    first, second = backends(2)
    proxy.register(first)
    proxy.register(second)
    proxy.unregister(first)
    assert {served_by(proxy.get("/")) for _ in range(4)} == {second.instance_id}
    proxy.unregister(second)
    return first, proxy.get("/")


def test_route_with_no_endpoint_left_answers_404_at_once(proxy, backends):
    _, response = last_instance_leaves(proxy, backends)
    assert response.status_code == 404
    assert response.headers["X-Cf-Routererror"] == "unknown_route"
    assert proxy.routes() == {}


def test_unregister_of_an_old_instance_keeps_its_successor_on_the_same_port(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    stale = backend.registration(["localhost"])
    stale["private_instance_id"] = "00000000-0000-0000-0000-0000"
    proxy.unregister(stale)
    assert served_by(proxy.get("/")) == backend.instance_id


def test_endpoints_not_refreshed_within_the_stale_threshold_are_pruned(proxy_factory, backends):
    proxy = proxy_factory("--stale-threshold", "1s", "--prune-interval", "200ms")
    fresh, stale = backends(2)
    proxy.register(fresh)
    proxy.register(stale)
    assert len(proxy.routes()["localhost"]) == 2

    def only_fresh_left():
        proxy.register(fresh)  # the cluster re-sends its registrations
        return [e["private_instance_id"] for e in proxy.routes().get("localhost", [])] == [fresh.instance_id]

    harness.wait_until("the stale endpoint to be pruned", only_fresh_left, timeout=10, interval=0.2)
    assert served_by(proxy.get("/")) == fresh.instance_id


def test_stale_threshold_of_a_registration_is_honoured(proxy_factory, backends):
    proxy = proxy_factory("--prune-interval", "200ms")
    (backend,) = backends(1)
    proxy.register(backend, stale_threshold_in_seconds=1)
    harness.wait_until("pruning after the registration's own threshold", lambda: proxy.routes() == {}, timeout=10, interval=0.2)
    assert proxy.get("/").status_code == 404


def test_a_stale_threshold_beyond_the_proxys_own_is_capped_not_a_crash(proxy, backends):
    """A threshold over the proxy's own is capped to it, as in gorouter. One so large that it overflowed
    when turned into nanoseconds (over about 292 years) crashed the proxy, routes and connections
    included, from one registration."""
    (backend,) = backends(1)
    for seconds in [121, 10_000_000_000, 2**63 - 1]:
        proxy.register(backend, stale_threshold_in_seconds=seconds)
        (endpoint,) = proxy.routes()["localhost"]
        assert endpoint["stale_threshold_in_seconds"] == 120, seconds
    assert proxy.get("/").status_code == 200


def test_routes_listing_shows_each_endpoint_with_counters(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend, uris=["localhost", "127.0.0.1"], tags={"component": "chat-node"})
    for _ in range(3):
        proxy.get("/")
    routes = proxy.routes()
    assert set(routes) == {"localhost", "127.0.0.1"}
    (endpoint,) = routes["localhost"]
    assert endpoint["address"] == f"127.0.0.1:{backend.port}"
    assert endpoint["app"] == backend.app_id
    assert endpoint["private_instance_id"] == backend.instance_id
    assert endpoint["private_instance_index"] == backend.index
    assert endpoint["tags"] == {"component": "chat-node"}
    assert endpoint["stale_threshold_in_seconds"] == 120
    assert endpoint["updated_at"].endswith("Z")
    assert endpoint["in_flight"] == 0
    assert endpoint["requests_total"] == 3
    assert endpoint["open_tunnels"] == 0
    assert "failed_until" not in endpoint
    # One instance, one set of counters, whichever route it was reached by.
    assert routes["127.0.0.1"][0]["requests_total"] == 3


def test_admin_api_requires_the_bearer_token(proxy, backends):
    (backend,) = backends(1)
    for method, path in [("GET", "/routes"), ("POST", "/routes/register"), ("GET", "/metrics"), ("GET", "/events")]:
        response = requests.request(method, proxy.admin + path, data=json.dumps(backend.registration()), timeout=5)
        assert response.status_code == 401, path
        assert "Authorization: Bearer" in response.json()["error"]
        wrong = requests.request(method, proxy.admin + path, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401
    assert requests.get(proxy.admin + "/health", timeout=5).status_code == 200


def test_admin_api_rejects_bad_registrations_with_a_clear_message(proxy):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    cases = [
        ("not json", "not a route registration"),
        (json.dumps({"host": "127.0.0.1", "uris": ["x"]}), '"port" is missing'),
        (json.dumps({"host": "127.0.0.1", "port": 0, "uris": ["x"]}), "not a TCP port"),
        (json.dumps({"host": "127.0.0.1", "port": 80, "uris": []}), '"uris" is empty'),
        (json.dumps({"host": "127.0.0.1", "port": 80, "uris": ["x"], "options": {"loadbalancing": "random"}}),
         "round-robin or least-connection"),
    ]
    for body, message in cases:
        response = requests.post(proxy.admin + "/routes/register", data=body, headers=headers, timeout=5)
        assert response.status_code == 400, body
        assert message in response.json()["error"], response.text
    assert requests.get(proxy.admin + "/nope", headers=headers, timeout=5).status_code == 404


def test_static_routes_file_serves_without_the_admin_api(proxy_factory, backends, tmp_path):
    (backend,) = backends(1)
    routes = tmp_path / "routes.yml"
    routes.write_text(
        "routes:\n"
        f"  - host: 127.0.0.1\n    port: {backend.port}\n    uris: [static.local]\n"
        f"    app: {backend.app_id}\n    private_instance_id: {backend.instance_id}\n    private_instance_index: \"0\"\n"
    )
    proxy = proxy_factory("--routes-file", str(routes), "--stale-threshold", "1s", "--prune-interval", "100ms")
    assert served_by(proxy.get("/", host="static.local")) == backend.instance_id
    # Static routes are never pruned.
    listing = proxy.routes()
    assert listing["static.local"][0]["static"] is True


def test_settings_that_cannot_work_stop_the_proxy_with_a_message_naming_the_flag(tmp_path):
    cases = [
        (["--threads", "100000"], "--threads must be from 1 to 1024"),  # was accepted: every pid of the machine
        (["--threads", "0"], "--threads must be from 1 to 1024"),
        (["--port", "70000"], "--port 70000 is not a TCP port (0-65535)"),
        (["--dial-timeout", "0"], "--dial-timeout must be more than 0"),
        (["--dial-timeout", "1e12"], "--dial-timeout '1e12' is not a duration: it is longer than the longest allowed, about 31 years"),
        (["--request-timeout", "1m30"], "--request-timeout '1m30' is not a duration: write a number and a unit"),
        # A value starting with a dash is the value (it used to be "Missing value for '--dial-timeout'").
        (["--dial-timeout", "-1s"], "--dial-timeout '-1s' is not a duration: a duration cannot be negative"),
        (["--port", "-1"], "--port -1 is not a TCP port (0-65535)"),
        (["--max-conns", "-1"], "--max-conns must be 0 (no limit) or more"),
        (["--stale-threshold", "0"], "--stale-threshold must be more than 0"),
        # gorouter takes either alone and then does nothing: refused here, saying what to add.
        (["--empty-pool-response-code-503"], "--empty-pool-response-code-503 needs --empty-pool-timeout"),
        (["--empty-pool-timeout", "30s"], "--empty-pool-timeout 30s does nothing without --empty-pool-response-code-503"),
    ]
    for args, message in cases:
        program = harness.Program("sticky-proxy", ["--port", "0", "--admin-port", "0", *args], log_dir=tmp_path)
        assert program.process.wait(timeout=20) == 64, args
        assert message in program.output(), (args, program.output())
    # A duration as cluster takes it (one reading for both): starts.
    program = harness.Program("sticky-proxy", ["--port", "0", "--admin-port", "0", "--request-timeout", "1m30s"], log_dir=tmp_path)
    try:
        harness.wait_until("the proxy to start", lambda: "sticky-proxy: proxy on" in program.output(), timeout=20, interval=0.1)
    finally:
        assert program.stop() == 0


def test_bad_routes_file_stops_the_proxy_with_a_message(tmp_path):
    routes = tmp_path / "routes.yml"
    routes.write_text("routes:\n  - host: 127.0.0.1\n    port: 99999\n    uris: [x]\n")
    program = harness.Program("sticky-proxy", ["--port", "0", "--admin-port", "0", "--routes-file", str(routes)], log_dir=tmp_path)
    assert program.process.wait(timeout=20) != 0
    assert "not a TCP port" in program.output()


def test_empty_pool_timeout_keeps_a_route_with_no_instance_answering_503(proxy_factory, backends):
    """gorouter's empty_pool_response_code_503 with empty_pool_timeout: the route whose last instance
    left answers 503 no_endpoints (cacheable for 2 s, as gorouter sends it) instead of 404, until a
    prune finds it empty for longer than the timeout; an instance registering meanwhile is served."""
    proxy = proxy_factory("--empty-pool-response-code-503", "--empty-pool-timeout", "2s", "--prune-interval", "200ms")
    first, response = last_instance_leaves(proxy, backends)
    assert response.status_code == 503
    assert response.headers["X-Cf-Routererror"] == "no_endpoints"
    assert response.headers["Cache-Control"] == "public,max-age=2"
    assert response.text == "503 Service Unavailable: Requested route ('localhost') has no available endpoints.\n"
    assert proxy.routes() == {"localhost": []}
    # Another host is still unknown; an X-CF-APP-INSTANCE naming no instance is still a 400.
    assert proxy.get("/", host="elsewhere.local").status_code == 404
    targeted = proxy.get("/", headers={"X-CF-APP-INSTANCE": f"{first.app_id}:0"})
    assert (targeted.status_code, targeted.headers["X-Cf-Routererror"]) == (400, "unknown_route")
    harness.wait_until("the proxy to say the route is kept", lambda: "route kept with no instance" in proxy.program.output())
    proxy.register(first)
    assert served_by(proxy.get("/")) == first.instance_id
    proxy.unregister(first)
    assert proxy.get("/").status_code == 503

    def gone() -> bool:
        response = proxy.get("/")
        assert response.status_code in (503, 404), response.text
        return response.status_code == 404

    harness.wait_until("the empty route to be deleted", gone, timeout=15, interval=0.2)
    assert proxy.get("/").headers["X-Cf-Routererror"] == "unknown_route"
    assert proxy.routes() == {}
    harness.wait_until("the proxy to say the route is deleted", lambda: "route deleted after empty_pool_timeout" in proxy.program.output())
