"""The comparison modes: `none` (no affinity), `haproxy` (inserted cookie with redispatch), `ip-hash`
(nginx style), with the built sticky-proxy and real backend processes."""

import socket
import urllib.parse

from proxy_support import cookie_named, served_by


def test_none_mode_balances_every_request_and_sets_no_cookie(proxy_factory, backends):
    proxy = proxy_factory("--affinity", "none")
    started = backends(3)
    for backend in started:
        proxy.register(backend)
    first = started[0].instance_id
    responses = [proxy.get("/login?set_cookie=" + urllib.parse.quote("JSESSIONID=a"), cookies={"JSESSIONID": "a", "__VCAP_ID__": first})
                 for _ in range(6)]
    assert {served_by(r) for r in responses} == {b.instance_id for b in started}
    assert all(cookie_named(r, "__VCAP_ID__") is None for r in responses)
    proxy.wait_for_log(lambda line: 'routing_decision:"balanced"' in line)


def test_haproxy_mode_inserts_its_cookie_and_sticks(proxy_factory, backends):
    proxy = proxy_factory("--affinity", "haproxy")
    started = backends(3)
    for backend in started:
        proxy.register(backend)
    first = proxy.get("/")
    server = served_by(first)
    assert cookie_named(first, "SERVERID") == f"SERVERID={server}; path=/"
    assert first.headers["Cache-Control"] == "private"
    for _ in range(5):
        response = proxy.get("/", cookies={"SERVERID": server, "other": "1"})
        assert served_by(response) == server
        assert cookie_named(response, "SERVERID") is None
        # indirect: the app never sees the proxy's cookie.
        assert response.json()["headers"]["cookie"] == ["other=1"]


def test_haproxy_mode_redispatches_when_the_server_is_down(proxy_factory, backends):
    proxy = proxy_factory("--affinity", "haproxy")
    down, up = backends(2)
    proxy.register(down)
    proxy.register(up)
    down.kill()
    response = proxy.get("/", cookies={"SERVERID": down.instance_id})
    assert response.status_code == 200
    assert served_by(response) == up.instance_id
    assert cookie_named(response, "SERVERID") == f"SERVERID={up.instance_id}; path=/"
    # Now marked down: redispatched at once, without a failed attempt.
    response = proxy.get("/", cookies={"SERVERID": down.instance_id})
    assert served_by(response) == up.instance_id
    proxy.wait_for_log(lambda line: 'routing_decision:"fallback_instance_gone"' in line and "attempts:1" in line)


def test_ip_hash_mode_pins_a_client_address(proxy_factory, backends):
    proxy = proxy_factory("--affinity", "ip-hash")
    started = backends(3)
    for backend in started:
        proxy.register(backend)
    by_address = {}
    for octet in range(1, 9):
        address = f"127.0.0.{octet}"
        served = set()
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", proxy.port), source_address=(address, 0), timeout=10) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
            instance = reply.split(b"X-Backend-Instance: ")[1].split(b"\r\n")[0].decode()
            served.add(instance)
        assert len(served) == 1, address
        by_address[address] = served.pop()
    # Different addresses spread over the instances.
    assert len(set(by_address.values())) > 1
    assert cookie_named(proxy.get("/"), "SERVERID") is None
