"""Section 5 of cloud-foundry-behaviour.md: affinity breaks behind a second router. Two sticky-proxies
in a row, as a second Cloud Foundry router, or an app that forwards through its own route (an API
gateway), in front of the app's router: both route with __VCAP_ID__, each takes the other's cookie for
an instance that is gone and overwrites it, and every other request lands on any instance."""

import urllib.parse

import harness

from proxy_support import cookie_named, instance_guid, served_by

FRONT_APP = "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5"


def browse(proxy, path: str, jar: dict) -> object:
    """One request as a browser makes it: the jar's cookies sent, its Set-Cookie lines kept."""
    response = proxy.get(path, cookies=dict(jar) or None)
    for value in response.raw.headers.getlist("Set-Cookie"):
        name, _, rest = value.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0]
    return response


def test_two_routers_in_a_row_overwrite_each_others_vcap_id_and_stickiness_flips(proxy_factory, backends):
    inner = proxy_factory()
    started = backends(3)
    for backend in started:
        inner.register(backend)
    front = proxy_factory()
    inner_guid = instance_guid()
    front.register({"host": "127.0.0.1", "port": inner.port, "uris": ["localhost"], "app": FRONT_APP,
                    "private_instance_id": inner_guid, "private_instance_index": "0"})
    login = "/login?set_cookie=" + urllib.parse.quote("JSESSIONID=abc; Path=/")

    # Through the app's router alone, a client stays on the instance that set its session.
    jar: dict = {}
    pinned = served_by(browse(inner, login, jar))
    assert {served_by(browse(inner, "/", jar)) for _ in range(8)} == {pinned}

    # Through both: the inner router's __VCAP_ID__ reaches the browser (the front one never
    # overrides a __VCAP_ID__ the "app" sets); the front one does not know that GUID, falls back and
    # sets its own; the inner one then does not know THAT GUID, falls back, and sets another instance's.
    jar = {}
    first = browse(front, login, jar)
    assert jar["__VCAP_ID__"] == served_by(first)
    cookies, served = [], []
    for _ in range(8):
        response = browse(front, "/", jar)
        cookies.append(jar["__VCAP_ID__"])
        served.append(served_by(response))
    assert cookies[0::2] == [inner_guid] * 4, cookies
    assert all(cookie in {b.instance_id for b in started} for cookie in cookies[1::2]), cookies
    # Each fallback in the inner router takes the next instance round-robin: the client meets them all.
    assert set(served) == {b.instance_id for b in started}, served
    front.wait_for_log(lambda line: 'routing_decision:"fallback_instance_gone"' in line)
    inner.wait_for_log(lambda line: f'routing_decision:"fallback_instance_gone" pinned_instance_id:"{inner_guid}"' in line)

    # A Socket.IO client's long-polling requests meet "Session ID unknown" (here: 400 from the app) on
    # every request that a router sends elsewhere; each router says why: it never had the instance the
    # cookie names (the front one: an instance of the app's router; that one: the front router's).
    poll = "/socket.io/?EIO=4&transport=polling&sid=abc123&status=400"
    assert [browse(front, poll, jar).status_code for _ in range(2)] == [400, 400]
    for router, foreign in ((inner, inner_guid), (front, None)):
        named = f"'{foreign}'" if foreign else "'"
        harness.wait_until("the routers to explain", lambda: f"was pinned by its __VCAP_ID__ cookie to instance {named}" in router.program.output()
                           and "Another router on this client's path also routes with __VCAP_ID__" in router.program.output())
    # One router alone never says so, even after its instances change GUIDs (a crash and restart).
    jar = {}
    browse(inner, login, jar)
    gone = next(backend for backend in started if backend.instance_id == jar["__VCAP_ID__"])
    inner.unregister(gone)
    assert browse(inner, poll, jar).status_code == 400
    inner.wait_for_log(lambda line: f'pinned_instance_id:"{gone.instance_id}"' in line and "fallback_instance_gone" in line)
    assert f"to instance '{gone.instance_id}'" not in inner.program.output()
