"""Sessions and pages: express-session compatible cookies and Redis layout, login, logout (a POST; GET
only asks), login and logout forms posted by another site refused (CSRF), refusal of sockets without a
session, bad input on the login form."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import urllib.parse

import pytest
import requests
import socketio

import harness
from chatkit import SECRET, ChatClient, cookie_header, login


def redis_cli(redis, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(redis.port), *args], check=True, capture_output=True, text=True).stdout.strip()


def sign(value: str, secret: str) -> str:
    """npm cookie-signature, in Python: base64(HMAC-SHA256) without '=' padding."""
    mac = base64.b64encode(hmac.new(secret.encode(), value.encode(), hashlib.sha256).digest()).decode().rstrip("=")
    return f"{value}.{mac}"


def express_cookie(sid: str, secret: str = SECRET) -> str:
    return urllib.parse.quote("s:" + sign(sid, secret), safe="")


def test_login_sets_an_express_session_cookie_and_redis_record(redis, nodes):
    (node,) = nodes(1)
    page = requests.get(node.url + "/", timeout=10)
    assert page.status_code == 200 and 'action="/user"' in page.text
    # No other site may frame the page to trick a click on its buttons (clickjacking).
    assert page.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert page.headers["X-Frame-Options"] == "DENY"
    response = requests.post(node.url + "/user", data={"user": "ada"}, allow_redirects=False, timeout=10)
    assert response.status_code == 303 and response.headers["Location"] == "/"
    set_cookie = response.headers["Set-Cookie"]
    name, _, rest = set_cookie.partition("=")
    value = rest.split(";")[0]
    attributes = [part.strip() for part in rest.split(";")[1:]]
    assert name == "JSESSIONID"
    assert {"Path=/", "HttpOnly", "SameSite=Lax"} <= set(attributes)
    assert "Secure" not in attributes
    # The value is express-session's: encodeURIComponent("s:" + sid + "." + signature).
    decoded = urllib.parse.unquote(value)
    assert decoded.startswith("s:")
    sid = decoded[2:].rpartition(".")[0]
    assert decoded[2:] == sign(sid, SECRET)
    # connect-redis layout: sess:<sid>, JSON with the cookie and the user, one day.
    record = json.loads(redis_cli(redis, "GET", f"sess:{sid}"))
    assert record["user"] == "ada"
    assert record["cookie"]["httpOnly"] is True and record["cookie"]["path"] == "/"
    assert record["cookie"]["originalMaxAge"] is None
    assert 86_000 < int(redis_cli(redis, "TTL", f"sess:{sid}")) <= 86_400
    # Refresh: still logged in, and the cookie is set again (Cloud Foundry re-pins on it).
    chat = requests.get(node.url + "/", headers={"Cookie": f"JSESSIONID={value}"}, timeout=10)
    assert chat.status_code == 200 and 'data-user="ada"' in chat.text
    assert chat.headers["Set-Cookie"].startswith(f"JSESSIONID={value};")
    assert f"#0 · {node.guid}" in chat.text


def test_a_session_written_by_node_express_session_is_accepted(redis, nodes):
    (node,) = nodes(1)
    sid = "nodeSessionFromTheOriginalApp0001"
    redis_cli(redis, "SET", f"sess:{sid}",
              '{"cookie":{"originalMaxAge":null,"expires":null,"httpOnly":true,"path":"/"},"user":"grace"}', "EX", "600")
    page = requests.get(node.url + "/", headers={"Cookie": f"JSESSIONID={express_cookie(sid)}"}, timeout=10)
    assert 'data-user="grace"' in page.text


def test_forged_unsigned_and_other_secret_cookies_are_no_session(redis, nodes):
    (node,) = nodes(1)
    session = login(node.url, "ada")
    sid = urllib.parse.unquote(session.cookies["JSESSIONID"])[2:].rpartition(".")[0]
    for forged in [sid, urllib.parse.quote("s:" + sid), express_cookie(sid, "guessed"), express_cookie(sid)[:-2]]:
        page = requests.get(node.url + "/", headers={"Cookie": f"JSESSIONID={forged}"}, timeout=10)
        assert 'action="/user"' in page.text, forged
        with pytest.raises(socketio.exceptions.ConnectionError):
            client = harness.OrderedClient(reconnection=False)
            client.connect(node.url, headers={"Cookie": f"JSESSIONID={forged}"}, transports=["polling"], wait_timeout=5)


def test_secret_rotation_keeps_old_cookies_valid(redis, nodes):
    old, rotated = nodes(2, SESSION_SECRET="new-secret," + SECRET)
    session = requests.Session()
    session.post(old.url + "/user", data={"user": "ada"}, allow_redirects=False, timeout=10)
    value = session.cookies["JSESSIONID"]
    sid = urllib.parse.unquote(value)[2:].rpartition(".")[0]
    legacy = express_cookie(sid, SECRET)  # signed before the rotation
    page = requests.get(rotated.url + "/", headers={"Cookie": f"JSESSIONID={legacy}"}, timeout=10)
    assert 'data-user="ada"' in page.text
    assert express_cookie(sid, "new-secret") in page.headers["Set-Cookie"]


def test_socket_connect_is_refused_without_a_logged_in_session(redis, nodes):
    (node,) = nodes(1)
    errors = []
    client = harness.OrderedClient(reconnection=False)

    @client.event
    def connect_error(data):
        errors.append(data)

    with pytest.raises(socketio.exceptions.ConnectionError):
        client.connect(node.url, transports=["polling"], wait_timeout=5)
    assert errors and errors[0]["message"] == "not logged in"


def test_the_user_comes_from_the_session_never_from_the_client(redis, nodes):
    (node,) = nodes(1)
    ada = ChatClient(node, "ada")
    ack = ada.sio.call("chat", json.dumps({"action": "message", "msg": "hi", "user": "mallory", "id": "x1"}), timeout=10)
    assert ack["ok"]
    harness.wait_until("the line", lambda: ada.texts() == ["hi"])
    assert ada.lines[-1][1]["user"] == "ada"
    ada.close()


def session_id(session: requests.Session) -> str:
    return urllib.parse.unquote(session.cookies["JSESSIONID"])[2:].rpartition(".")[0]


def test_logout_destroys_the_session(redis, nodes):
    (node,) = nodes(1)
    session = login(node.url, "ada")
    sid = session_id(session)
    assert redis_cli(redis, "EXISTS", f"sess:{sid}") == "1"
    response = session.post(node.url + "/logout", allow_redirects=False, timeout=10)
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert redis_cli(redis, "EXISTS", f"sess:{sid}") == "0"
    page = requests.get(node.url + "/", headers={"Cookie": cookie_header(session) or f"JSESSIONID={express_cookie(sid)}"}, timeout=10)
    assert 'action="/user"' in page.text


def test_a_session_that_ended_is_said_on_the_login_page(redis, nodes):
    # Found by a user: a tab whose session expired (or whose Redis lost its data) came back to a
    # blank login form, with no word of why.
    (node,) = nodes(1)
    session = login(node.url, "ada")
    sid = session_id(session)
    assert "Your session has ended" not in requests.get(node.url + "/", timeout=10).text  # a first visit: no notice
    redis_cli(redis, "DEL", f"sess:{sid}")  # its TTL ran out
    page = session.get(node.url + "/", timeout=10)
    assert 'action="/user"' in page.text
    assert "Your session has ended (it expired, or the chat&#39;s data was reset): please log in again." in page.text or \
        "Your session has ended (it expired, or the chat's data was reset): please log in again." in page.text, page.text


def test_get_logout_asks_first_and_keeps_the_session(redis, nodes):
    # A GET that logged out could be sent by any other site (a link, a redirect: the Lax cookie goes
    # along on a top-level navigation) or by a link prefetcher. It now only asks.
    (node,) = nodes(1)
    session = login(node.url, "ada")
    sid = session_id(session)
    cookie = cookie_header(session)
    question = requests.get(node.url + "/logout", headers={"Cookie": cookie}, allow_redirects=False, timeout=10)
    assert question.status_code == 200 and question.headers["Content-Type"].startswith("text/html")
    assert "Log out of the chat?" in question.text and "<strong>ada</strong>" in question.text
    assert '<form method="post" action="/logout">' in question.text and '<button type="submit"' in question.text
    assert "Set-Cookie" not in question.headers and question.headers["Cache-Control"] == "no-store"
    assert redis_cli(redis, "EXISTS", f"sess:{sid}") == "1"
    page = requests.get(node.url + "/", headers={"Cookie": cookie}, timeout=10)
    assert 'data-user="ada"' in page.text
    # The chat page's own "Log out" is such a form too: one click.
    assert '<form class="logout" method="post" action="/logout"><button id="logout" type="submit">' in page.text
    # Not logged in (no cookie, or a session that is gone): nothing to ask, back to the start.
    for headers in [{}, {"Cookie": f"JSESSIONID={express_cookie('noSuchSession0000000000000000000')}"}]:
        response = requests.get(node.url + "/logout", headers=headers, allow_redirects=False, timeout=10)
        assert response.status_code == 303 and response.headers["Location"] == "/", headers


def sessions_in_redis(redis) -> set[str]:
    return set(redis_cli(redis, "--scan", "--pattern", "sess:*").split())


def test_a_login_form_posted_from_another_site_is_refused(redis, nodes):
    # Login CSRF: another site's page auto-submits a form to /user; the browser would store the
    # cookie and the victim would chat under the attacker's chosen name.
    (node,) = nodes(1)
    before = sessions_in_redis(redis)
    for headers in [{"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
                    {"Origin": f"http://127.0.0.1:{node.port + 1}", "Sec-Fetch-Site": "same-site"}]:
        response = requests.post(node.url + "/user", data={"user": "mallory"}, headers=headers, allow_redirects=False, timeout=10)
        assert response.status_code == 403, headers
        assert response.headers["Content-Type"].startswith("text/plain")
        assert response.text.startswith("Refused: this form was posted from another site (")
        assert f"Origin {headers['Origin']}" in response.text and "Log in from the chat's own page." in response.text
        assert "Set-Cookie" not in response.headers
    assert sessions_in_redis(redis) == before
    assert node.metrics()["chat_cross_site_refused_total"] == 4
    assert "chat_logins_total" not in node.metrics() or node.metrics()["chat_logins_total"] == 0
    output = node.program.output()
    assert "Refused a form post from another site" in output and "Origin http://evil.example" in output


def test_a_login_form_from_the_nodes_own_origin_is_accepted(redis, nodes):
    (node,) = nodes(1)
    for headers in [{"Origin": f"http://127.0.0.1:{node.port}"},
                    {"Origin": f"http://127.0.0.1:{node.port}", "Sec-Fetch-Site": "same-origin"},
                    {"Origin": f"http://127.0.0.1:{node.port}", "Sec-Fetch-Site": "same-site"},
                    # Behind a proxy that passes the client's host as X-Forwarded-Host.
                    {"Origin": "https://chat.example.com", "X-Forwarded-Host": "chat.example.com", "X-Forwarded-Proto": "https"}]:
        session = login(node.url, "ada", headers=headers)
        page = requests.get(node.url + "/", headers={"Cookie": cookie_header(session)}, timeout=10)
        assert 'data-user="ada"' in page.text, headers
    assert node.metrics()["chat_cross_site_refused_total"] == 0


def test_a_logout_posted_from_another_site_is_refused(redis, nodes):
    (node,) = nodes(1)
    session = login(node.url, "ada")
    sid = session_id(session)
    for headers in [{"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}]:
        response = session.post(node.url + "/logout", headers=headers, allow_redirects=False, timeout=10)
        assert response.status_code == 403, headers
        assert "Refused: this form was posted from another site" in response.text
        assert "Log out from the chat's own page." in response.text
        assert "Set-Cookie" not in response.headers
    assert redis_cli(redis, "EXISTS", f"sess:{sid}") == "1"
    page = requests.get(node.url + "/", headers={"Cookie": cookie_header(session)}, timeout=10)
    assert 'data-user="ada"' in page.text
    assert node.metrics()["chat_cross_site_refused_total"] == 2
    # The chat's own page logs out (what Chromium sends with the form).
    response = session.post(node.url + "/logout", headers={"Origin": node.url, "Sec-Fetch-Site": "same-origin"},
                            allow_redirects=False, timeout=10)
    assert response.status_code == 303
    assert redis_cli(redis, "EXISTS", f"sess:{sid}") == "0"


def test_secure_cookie_behind_an_https_proxy(redis, nodes):
    (node,) = nodes(1)
    response = requests.post(node.url + "/user", data={"user": "ada"}, headers={"X-Forwarded-Proto": "https"},
                             allow_redirects=False, timeout=10)
    assert "Secure" in [part.strip() for part in response.headers["Set-Cookie"].split(";")]


@pytest.mark.parametrize("name,reason", [
    ("", "Please type a name."),
    ("   ", "Please type a name."),
    ("x" * 33, "too long"),
    ("<script>alert(1)</script>", "may only contain"),
    ("bob\u0000", "may only contain"),
])
def test_bad_names_get_a_clear_error(redis, nodes, name, reason):
    (node,) = nodes(1)
    response = requests.post(node.url + "/user", data={"user": name}, allow_redirects=False, timeout=10)
    assert response.status_code == 400
    assert reason in response.text
    assert "<script>alert" not in response.text
    assert "Set-Cookie" not in response.headers


def test_unreadable_login_forms_are_refused(redis, nodes):
    (node,) = nodes(1)
    for body in [b"\xff\xfe%%%", b"user=%E0%A4%A", b"x" * 20_000]:
        response = requests.post(node.url + "/user", data=body, headers={"Content-Type": "application/x-www-form-urlencoded"},
                                 allow_redirects=False, timeout=10)
        assert response.status_code in (400, 413), body[:20]
    assert node.health().status_code == 200


def test_other_origins_are_refused_unless_allowed(redis, nodes):
    strict, open_to = nodes(1)[0], nodes(1, ALLOWED_ORIGINS="http://elsewhere.example")[0]
    handshake = "/socket.io/?EIO=4&transport=polling"
    assert requests.get(strict.url + handshake, headers={"Origin": "http://evil.example"}, timeout=10).status_code == 403
    assert requests.get(strict.url + handshake, headers={"Origin": strict.url}, timeout=10).status_code == 200
    assert requests.get(open_to.url + handshake, headers={"Origin": "http://elsewhere.example"}, timeout=10).status_code == 200
    assert requests.get(open_to.url + handshake, headers={"Origin": "http://evil.example"}, timeout=10).status_code == 403


def connect_error_of(url: str, cookie: str) -> str | None:
    """The CONNECT_ERROR message a logged-in cookie gets at `url`, or None when it is accepted."""
    errors = []
    client = harness.OrderedClient(reconnection=False)

    @client.event
    def connect_error(data):
        errors.append(data)

    try:
        client.connect(url, transports=["polling"], headers={"Cookie": cookie}, wait_timeout=5)
    except socketio.exceptions.ConnectionError:
        return errors[0]["message"] if errors else "refused"
    client.disconnect()
    return None


def test_sessions_in_memory_log_users_out_on_another_instance(redis, nodes):
    """SESSION_STORE=memory reproduces the original sample's bug on purpose: the session exists only
    on the instance that logged the user in, so any other instance sees a logged-out user."""
    first, second = nodes(2, SESSION_STORE="memory")
    session = login(first.url, "ada")
    cookie = cookie_header(session)
    sid = urllib.parse.unquote(session.cookies["JSESSIONID"])[2:].rpartition(".")[0]
    assert redis_cli(redis, "EXISTS", f"sess:{sid}") == "0"  # nothing in Redis
    assert connect_error_of(first.url, cookie) is None
    assert "ada" in requests.get(first.url + "/", headers={"Cookie": cookie}, timeout=10).text
    assert connect_error_of(second.url, cookie) == "not logged in"
    assert 'action="/user"' in requests.get(second.url + "/", headers={"Cookie": cookie}, timeout=10).text
    assert "SESSION_STORE=memory" in first.program.output()


def test_sessions_in_redis_survive_on_another_instance(redis, nodes):
    """The default: the same steps, and the other instance knows the user."""
    first, second = nodes(2)
    session = login(first.url, "ada")
    cookie = cookie_header(session)
    assert connect_error_of(second.url, cookie) is None
    assert 'action="/user"' not in requests.get(second.url + "/", headers={"Cookie": cookie}, timeout=10).text


def test_an_unknown_session_store_is_a_clear_error(redis):
    result = subprocess.run([str(harness.executable("chat-node"))], env={"SESSION_STORE": "disk", "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "SESSION_STORE" in result.stderr and "'disk' is not redis or memory" in result.stderr
