"""Section 1 of cloud-foundry-behaviour.md (gorouter's sticky sessions), default mode `cf`, with the built
sticky-proxy and real backend processes."""

import threading
import time
import urllib.parse

import harness
import websocket

from proxy_support import cookie_named, served_by, set_cookies

SESSION = "set_cookie=" + urllib.parse.quote("JSESSIONID=abc123; Path=/")


def session_path(cookie: str, path: str = "/login") -> str:
    return f"{path}?set_cookie={urllib.parse.quote(cookie)}"


def test_app_setting_jsessionid_gets_vcap_id_of_the_serving_instance(proxy, backends):
    backends_started = backends(3)
    for backend in backends_started:
        proxy.register(backend)
    response = proxy.get(session_path("JSESSIONID=abc123; Path=/"))
    vcap = cookie_named(response, "__VCAP_ID__")
    assert vcap == f"__VCAP_ID__={served_by(response)}; Path=/; HttpOnly"
    assert cookie_named(response, "JSESSIONID") == "JSESSIONID=abc123; Path=/"
    proxy.wait_for_log(lambda line: 'routing_decision:"new_session"' in line)


def test_request_with_both_cookies_sticks_to_its_instance(proxy, backends):
    started = backends(3)
    for backend in started:
        proxy.register(backend)
    target = started[1].instance_id
    for _ in range(9):
        response = proxy.get("/", cookies={"JSESSIONID": "abc", "__VCAP_ID__": target})
        assert served_by(response) == target
        # Sticky to the same instance and no session cookie in the response: nothing to set.
        assert cookie_named(response, "__VCAP_ID__") is None
    proxy.wait_for_log(lambda line: 'routing_decision:"sticky_hit"' in line and f'pinned_instance_id:"{target}"' in line)


def test_host_prefixed_session_cookie_triggers_like_jsessionid(proxy, backends):
    """Current gorouter reads `__Host-JSESSIONID` (RFC 6265bis) as JSESSIONID: in the app's response,
    where it gets __VCAP_ID__, and in the client's request, which then sticks."""
    started = backends(3)
    for backend in started:
        proxy.register(backend)
    response = proxy.get(session_path("__Host-JSESSIONID=abc; Path=/; Secure"))
    pinned = served_by(response)
    assert cookie_named(response, "__VCAP_ID__") == f"__VCAP_ID__={pinned}; Path=/; HttpOnly; Secure"
    for _ in range(6):
        again = proxy.get("/", cookies={"__Host-JSESSIONID": "abc", "__VCAP_ID__": pinned})
        assert served_by(again) == pinned


def test_vcap_id_alone_is_ignored(proxy, backends):
    started = backends(3)
    for backend in started:
        proxy.register(backend)
    target = started[0].instance_id
    served = {served_by(proxy.get("/", cookies={"__VCAP_ID__": target})) for _ in range(9)}
    assert served == {b.instance_id for b in started}


def test_other_trigger_cookie_names_are_configurable(proxy_factory, backends):
    proxy = proxy_factory("--sticky-cookie-names", "SESSION,connect.sid")
    started = backends(2)
    for backend in started:
        proxy.register(backend)
    target = started[1].instance_id
    assert {served_by(proxy.get("/", cookies={"connect.sid": "s1", "__VCAP_ID__": target})) for _ in range(4)} == {target}
    # JSESSIONID is no longer a trigger.
    response = proxy.get(session_path("JSESSIONID=x"))
    assert cookie_named(response, "__VCAP_ID__") is None
    response = proxy.get(session_path("SESSION=x"))
    assert cookie_named(response, "__VCAP_ID__") is not None


def test_sticky_request_resending_the_session_cookie_gets_vcap_id_again(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    response = proxy.get(session_path("JSESSIONID=abc"), cookies={"JSESSIONID": "abc", "__VCAP_ID__": backend.instance_id})
    assert served_by(response) == backend.instance_id
    assert cookie_named(response, "__VCAP_ID__").startswith(f"__VCAP_ID__={backend.instance_id};")


def test_vcap_id_copies_the_session_cookie_attributes(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    cookie = "JSESSIONID=abc; Path=/; Secure; SameSite=None; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=3600; Partitioned"
    vcap = cookie_named(proxy.get(session_path(cookie)), "__VCAP_ID__")
    assert vcap == (f"__VCAP_ID__={backend.instance_id}; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Max-Age=3600; "
                    "HttpOnly; Secure; SameSite=None; Partitioned")


def test_vcap_id_path_is_the_route_context_path(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend, uris=["localhost/app"])
    vcap = cookie_named(proxy.get(session_path("JSESSIONID=abc; Path=/", path="/app/login")), "__VCAP_ID__")
    assert vcap == f"__VCAP_ID__={backend.instance_id}; Path=/app; HttpOnly"


def test_secure_cookies_setting_forces_secure(proxy_factory, backends):
    proxy = proxy_factory("--secure-cookies")
    (backend,) = backends(1)
    proxy.register(backend)
    vcap = cookie_named(proxy.get(session_path("JSESSIONID=abc")), "__VCAP_ID__")
    assert vcap == f"__VCAP_ID__={backend.instance_id}; Path=/; HttpOnly; Secure"


def test_deleting_the_session_cookie_deletes_vcap_id(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    for deletion in ["JSESSIONID=; Max-Age=0", "JSESSIONID=; Expires=Thu, 01 Jan 1970 00:00:00 GMT"]:
        response = proxy.get(session_path(deletion, "/logout"), cookies={"JSESSIONID": "abc", "__VCAP_ID__": backend.instance_id})
        vcap = cookie_named(response, "__VCAP_ID__")
        assert "Max-Age=0" in vcap, vcap


def test_app_set_vcap_id_is_never_overridden(proxy, backends):
    (backend,) = backends(1)
    proxy.register(backend)
    path = "/login?set_cookie=" + urllib.parse.quote("JSESSIONID=abc") + "&set_cookie=" + urllib.parse.quote("__VCAP_ID__=chosen-by-app")
    response = proxy.get(path)
    vcaps = [c for c in set_cookies(response) if c.startswith("__VCAP_ID__=")]
    assert vcaps == ["__VCAP_ID__=chosen-by-app"]


def test_pinned_instance_gone_falls_back_silently_and_repins(proxy, backends):
    gone, alive = backends(2)
    proxy.register(alive)
    response = proxy.get("/", cookies={"JSESSIONID": "abc", "__VCAP_ID__": gone.instance_id})
    assert response.status_code == 200
    assert served_by(response) == alive.instance_id
    # Even though the app set no cookie, the client is re-pinned, with default attributes.
    assert cookie_named(response, "__VCAP_ID__") == f"__VCAP_ID__={alive.instance_id}; Path=/; HttpOnly"
    proxy.wait_for_log(lambda line: 'routing_decision:"fallback_instance_gone"' in line and gone.instance_id in line)


def test_vcap_id_meta_keeps_the_attributes_and_restores_them_after_a_fallback(proxy, backends):
    """Current gorouter: __VCAP_ID_META__ beside __VCAP_ID__ keeps its attributes (a browser never sends
    attributes back); when the pinned instance is gone and the app sets no new session cookie, the
    refreshed __VCAP_ID__ gets them back, with what is left of its Max-Age."""
    first, second = backends(2)
    proxy.register(first)
    cookie = "JSESSIONID=abc; Path=/; Secure; SameSite=Strict; Max-Age=600"
    before = time.time()
    response = proxy.get(session_path(cookie))
    after = time.time()
    vcap = cookie_named(response, "__VCAP_ID__")
    meta = cookie_named(response, "__VCAP_ID_META__")
    assert vcap == f"__VCAP_ID__={first.instance_id}; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Strict"
    # The same attributes, so that both go together; Max-Age kept as the time it runs out.
    value, attributes = meta.split(";", 1)
    assert attributes == " Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Strict", meta
    fields = value.removeprefix("__VCAP_ID_META__=").split("&")
    assert fields[0] == "secure" and fields[2] == "samesite=strict", meta
    ends = int(fields[1].removeprefix("maxage="))
    assert int(before) + 600 <= ends <= int(after) + 601, (meta, before, after)

    # The instance goes; the other one serves the next request and sets no cookie.
    proxy.unregister(first)
    proxy.register(second)
    response = proxy.get("/", cookies={"JSESSIONID": "abc", "__VCAP_ID__": first.instance_id, "__VCAP_ID_META__": value.split("=", 1)[1]})
    assert served_by(response) == second.instance_id
    refreshed = cookie_named(response, "__VCAP_ID__")
    prefix = f"__VCAP_ID__={second.instance_id}; Path=/; Max-Age="
    assert refreshed.startswith(prefix) and refreshed.endswith("; HttpOnly; Secure; SameSite=Strict"), refreshed
    remaining = int(refreshed.removeprefix(prefix).split(";")[0])
    assert 0 < remaining <= 600 and remaining >= ends - int(time.time()) - 1, (refreshed, ends)
    # Not re-issued on a fallback: the client keeps the one it has.
    assert cookie_named(response, "__VCAP_ID_META__") is None


def test_vcap_id_meta_off_reproduces_older_routers(proxy_factory, backends):
    proxy = proxy_factory("--vcap-id-meta", "off")
    first, second = backends(2)
    proxy.register(first)
    response = proxy.get(session_path("JSESSIONID=abc; Path=/; Secure; SameSite=Strict; Max-Age=600"))
    assert cookie_named(response, "__VCAP_ID_META__") is None
    proxy.unregister(first)
    proxy.register(second)
    meta = "secure&maxage=" + str(int(time.time()) + 600) + "&samesite=strict"
    response = proxy.get("/", cookies={"JSESSIONID": "abc", "__VCAP_ID__": first.instance_id, "__VCAP_ID_META__": meta})
    assert cookie_named(response, "__VCAP_ID__") == f"__VCAP_ID__={second.instance_id}; Path=/; HttpOnly"


NEGOTIATE_CHALLENGE = "/?status=401&header=" + urllib.parse.quote("WWW-Authenticate: Negotiate")
NEGOTIATE_TOKEN = {"Authorization": "Negotiate YIIGhgYGKwYBBQUCoIIGejCCBnag"}


def test_negotiate_handshakes_stay_on_their_instance_when_turned_on(proxy_factory, backends):
    """gorouter's router.sticky_sessions_for_auth_negotiate (off by default): a Negotiate challenge (401,
    WWW-Authenticate: Negotiate) gets __VCAP_ID__ for 60 s, SameSite=Strict; the client's next steps
    (Authorization: Negotiate with __VCAP_ID__, no session cookie) go to that instance; when it is gone
    the request fails with 502 instead of going on, half authenticated, elsewhere."""
    proxy = proxy_factory("--sticky-sessions-for-auth-negotiate")
    started = backends(3)
    for backend in started:
        proxy.register(backend)
    challenge = proxy.get(NEGOTIATE_CHALLENGE)
    assert challenge.status_code == 401
    pinned = served_by(challenge)
    assert cookie_named(challenge, "__VCAP_ID__") == f"__VCAP_ID__={pinned}; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
    assert cookie_named(challenge, "__VCAP_ID_META__") is None
    for _ in range(6):
        step = proxy.get("/", cookies={"__VCAP_ID__": pinned}, headers=NEGOTIATE_TOKEN)
        assert served_by(step) == pinned
        assert cookie_named(step, "__VCAP_ID__") is None
    proxy.wait_for_log(lambda line: 'routing_decision:"sticky_hit"' in line and f'pinned_instance_id:"{pinned}"' in line)

    proxy.unregister(next(backend for backend in started if backend.instance_id == pinned))
    failed = proxy.get("/", cookies={"__VCAP_ID__": pinned}, headers=NEGOTIATE_TOKEN)
    assert failed.status_code == 502
    assert failed.headers["X-Cf-Routererror"] == "endpoint_failure (No endpoints available)"
    assert failed.text == "502 Bad Gateway: Registered endpoint failed to handle the request.\n"
    proxy.wait_for_log(lambda line: 'routing_decision:"required_instance_unavailable"' in line and f'pinned_instance_id:"{pinned}"' in line)
    harness.wait_until("the proxy to say why", lambda: f"A Negotiate authentication step pinned to instance '{pinned}' got 502: that instance "
                       "is not in the route's pool" in proxy.program.output())
    # Without Negotiate the same pin falls back, as always.
    fallback = proxy.get("/", cookies={"JSESSIONID": "s", "__VCAP_ID__": pinned})
    assert fallback.status_code == 200 and served_by(fallback) != pinned


def test_negotiate_handshakes_are_not_sticky_by_default(proxy, backends):
    first, second = backends(2)
    proxy.register(first)
    proxy.register(second)
    assert cookie_named(proxy.get(NEGOTIATE_CHALLENGE), "__VCAP_ID__") is None
    proxy.unregister(first)
    response = proxy.get("/", cookies={"JSESSIONID": "s", "__VCAP_ID__": first.instance_id}, headers=NEGOTIATE_TOKEN)
    assert response.status_code == 200 and served_by(response) == second.instance_id


def test_pinned_instance_at_max_conns_falls_back(proxy_factory, backends):
    proxy = proxy_factory("--max-conns", "1")
    busy, free = backends(2)
    proxy.register(busy)
    proxy.register(free)
    slow = threading.Thread(target=lambda: proxy.get("/?delay=2", cookies={"JSESSIONID": "a", "__VCAP_ID__": busy.instance_id}))
    slow.start()
    harness.wait_until("the slow request to be in flight", lambda: proxy.routes()["localhost"][0]["in_flight"] + proxy.routes()["localhost"][1]["in_flight"] == 1)
    response = proxy.get("/", cookies={"JSESSIONID": "a", "__VCAP_ID__": busy.instance_id})
    assert served_by(response) == free.instance_id
    assert cookie_named(response, "__VCAP_ID__").startswith(f"__VCAP_ID__={free.instance_id};")
    slow.join()
    proxy.wait_for_log(lambda line: 'routing_decision:"fallback_overloaded"' in line)


def test_stickiness_applies_to_the_first_attempt_only(proxy, backends):
    dead, alive = backends(2)
    proxy.register(dead)
    proxy.register(alive)
    dead.kill()
    response = proxy.get("/", cookies={"JSESSIONID": "abc", "__VCAP_ID__": dead.instance_id})
    assert response.status_code == 200
    assert served_by(response) == alive.instance_id
    assert cookie_named(response, "__VCAP_ID__").startswith(f"__VCAP_ID__={alive.instance_id};")
    proxy.wait_for_log(lambda line: 'routing_decision:"retry_after_error"' in line and "attempts:2" in line)


def test_failed_sticky_target_is_still_tried_first(proxy, backends):
    flaky, other = backends(2)
    proxy.register(flaky, uris=["localhost", "flaky.local"])
    proxy.register(other)
    # Mark `flaky` failed: on its own route, a request whose connection is reset before any response.
    assert proxy.get("/__reset_before_response", host="flaky.local").status_code == 502
    listing = {e["private_instance_id"]: e for e in proxy.routes()["localhost"]}
    assert "failed_until" in listing[flaky.instance_id]
    assert "failed_until" not in listing[other.instance_id]
    # The balancer skips it...
    assert {served_by(proxy.get("/")) for _ in range(6)} == {other.instance_id}
    # ...but a request pinned to it still goes there first.
    for _ in range(3):
        assert served_by(proxy.get("/", cookies={"JSESSIONID": "abc", "__VCAP_ID__": flaky.instance_id})) == flaky.instance_id


def test_websocket_upgrade_is_sticky_by_default(proxy, backends):
    started = backends(3)
    for backend in started:
        proxy.register(backend)
    target = started[2].instance_id
    for _ in range(4):
        ws = websocket.create_connection(f"ws://127.0.0.1:{proxy.port}/ws", host="localhost",
                                         cookie=f"JSESSIONID=abc; __VCAP_ID__={target}", timeout=10)
        ws.send("whoami")
        assert ws.recv() == target
        ws.close()


def test_websocket_affinity_off_reproduces_cf_before_2024(proxy_factory, backends):
    proxy = proxy_factory("--websocket-affinity", "off")
    started = backends(3)
    for backend in started:
        proxy.register(backend)
    target = started[2].instance_id
    served = set()
    for _ in range(6):
        ws = websocket.create_connection(f"ws://127.0.0.1:{proxy.port}/ws", host="localhost",
                                         cookie=f"JSESSIONID=abc; __VCAP_ID__={target}", timeout=10)
        ws.send("whoami")
        served.add(ws.recv())
        ws.close()
    assert served == {b.instance_id for b in started}
    # Plain HTTP requests stay sticky.
    assert {served_by(proxy.get("/", cookies={"JSESSIONID": "abc", "__VCAP_ID__": target})) for _ in range(3)} == {target}
