"""The cluster with the real sticky-proxy in front of the test app: routes registered once healthy,
unregistered at once on a crash and after the exit on a stop, the printed URL working, unknown hosts
getting Cloud Foundry's 404, the proxy itself supervised, status counters read from the proxy."""

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import socketio

from cluster_run import ClusterRun, app_command, process_alive
from harness import executable, wait_until


def config(instances=3, **overrides):
    base = {
        "app": {"name": "web", "command": app_command(), "instances": instances},
        "health_check": {"startup_interval": "50ms", "liveness_interval": "300ms"},
        "proxy": {"port": 0},
        "stop": {"grace_period": "3s"},
        "time_scale": 0.01,
    }
    for section, values in overrides.items():
        base.setdefault(section, {}).update(values)
    return base


@pytest.fixture
def cluster():
    run = ClusterRun(config())
    yield run
    run.close()


def proxy_url(cluster) -> str:
    match = re.search(r"open (http://localhost:\d+/)", cluster.output())
    assert match, cluster.output()[-2000:]
    return match.group(1)


# What a request through the proxy can fail with: refused, reset, or a response cut short.
FETCH_FAILURES = (OSError, http.client.HTTPException)


def fetch(url, host=None):
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def served_by(url, count=30):
    """The instance indices that answered `count` requests; a failed request adds its status as a string."""
    answers = set()
    for _ in range(count):
        try:
            status, _, body = fetch(url)
        except FETCH_FAILURES as error:
            answers.add(f"error {error}")
            continue
        answers.add(int(json.loads(body)["index"]) if status == 200 else f"status {status}")
    return answers


def test_the_printed_url_reaches_every_instance_and_other_hosts_get_404(cluster):
    cluster.wait_ready()
    url = proxy_url(cluster)
    assert served_by(url) == {0, 1, 2}
    assert served_by(url.replace("localhost", "127.0.0.1")) == {0, 1, 2}
    status, headers, body = fetch(url, host="elsewhere.example")
    assert status == 404
    assert headers.get("X-Cf-Routererror") == "unknown_route"
    assert b"elsewhere.example" in body
    cluster.expect(*(f"web.{index} registered with the proxy" for index in range(3)))
    output = cluster.output()
    # Registered only once healthy.
    lines = output.splitlines()
    for index in range(3):
        healthy = next(i for i, line in enumerate(lines) if f"web.{index} healthy after" in line)
        registered = next(i for i, line in enumerate(lines) if f"web.{index} registered with the proxy" in line)
        assert healthy < registered


def session_cookies(url: str, path: str = "/session") -> list[str]:
    """The names of the cookies a first GET of `path` (/session: a new session) through the proxy sets."""
    port = int(re.search(r":(\d+)/", url).group(1))
    connection = http.client.HTTPConnection("localhost", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return [value.split("=", 1)[0] for value in response.headers.get_all("Set-Cookie") or []]
    finally:
        connection.close()


def test_the_proxys_settings_come_from_the_config():
    # Current gorouter: __VCAP_ID_META__ beside __VCAP_ID__; proxy.vcap_id_meta: off for older routers.
    # proxy.sticky_sessions_for_auth_negotiate (off by default, as router.sticky_sessions_for_auth_negotiate):
    # a Negotiate challenge gets a __VCAP_ID__ of its own. proxy.empty_pool_timeout (0 by default): with
    # no instance left the route answers 503 no_endpoints for that long instead of 404 at once.
    settings = ((None, ["JSESSIONID", "__VCAP_ID__", "__VCAP_ID_META__"], [], (404, "unknown_route")),
                ("off", ["JSESSIONID", "__VCAP_ID__"], ["__VCAP_ID__"], (503, "no_endpoints")))
    for setting, expected, negotiate, emptied in settings:
        proxy = {} if setting is None else {"vcap_id_meta": setting, "sticky_sessions_for_auth_negotiate": "on",
                                            "empty_pool_timeout": "60s"}
        with ClusterRun(config(instances=1, proxy=proxy)) as cluster:
            cluster.wait_ready()
            assert session_cookies(proxy_url(cluster)) == expected, setting
            assert session_cookies(proxy_url(cluster), "/negotiate") == negotiate, setting
            cluster.ctl("stop", "0", "--wait")
            cluster.wait_for_output("web.0 unregistered from the proxy")
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(proxy_url(cluster), timeout=10)
            assert (answer.value.code, answer.value.headers["X-Cf-Routererror"]) == emptied, setting
            # `cluster status` reads the proxy's counters afresh: the answer just given is in them.
            errors = cluster.status()["proxy_traffic"]["router_errors"]
            assert errors[emptied[1]] == 1, errors


def test_a_crash_unregisters_at_once_a_stop_after_the_exit(cluster):
    cluster.wait_ready()
    url = proxy_url(cluster)
    cluster.ctl("stop", "1", "--wait")
    wait_until("web.1 unregistered", lambda: "web.1 unregistered from the proxy" in cluster.output())
    lines = cluster.output().splitlines()
    stopped = next(i for i, line in enumerate(lines) if "web.1 stopped" in line)
    unregistered = next(i for i, line in enumerate(lines) if "web.1 unregistered from the proxy" in line)
    assert stopped < unregistered, "a stopped instance leaves the routes after it has exited"
    assert served_by(url) == {0, 2}
    cluster.ctl("kill", "2")
    wait_until("web.2 unregistered", lambda: "web.2 unregistered from the proxy" in cluster.output())
    cluster.wait_status("web.2 back", lambda s: s["instances"][2]["state"] == "running" and s["instances"][2]["crashes"] == 1)
    wait_until("web.2 registered again", lambda: cluster.output().count("web.2 registered with the proxy") >= 2)
    assert served_by(url) == {0, 2}
    cluster.ctl("scale", "1", "--wait")
    wait_until("only web.0 is routed", lambda: served_by(url, 10) == {0})


def test_a_rolling_restart_starts_the_replacement_first_so_an_app_of_one_instance_keeps_serving():
    # Cloud Foundry's rolling strategy: the new instance starts while the old one serves, and the old
    # one stops once the new one is routable. The cluster used to stop first: an app of one instance
    # had no endpoint while it restarted (the proxy answered 404 unknown_route).
    with ClusterRun(config(instances=1, app={"env": {"TESTAPP_START_DELAY": "2"}})) as cluster:
        cluster.wait_ready()
        url = proxy_url(cluster)
        before = cluster.instances()[0]
        answers, failures = [], []
        done = threading.Event()

        def load():
            while not done.is_set():
                try:
                    status, _, body = fetch(url)
                except FETCH_FAILURES as error:
                    failures.append(f"error {error}")
                    continue
                if status == 200:
                    answers.append(json.loads(body)["guid"])
                else:
                    failures.append(f"status {status}: {body[:200]!r}")
        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        try:
            result = cluster.ctl("restart", "--all", "--rolling")
            assert "rolling restart of 1 instance started: one at a time, each replacement routable before its old process stops" \
                in result.stdout, result.stdout
            # While the replacement starts (2 s), the old process serves, and status says so.
            status = cluster.wait_status("the replacement starting", lambda s: s["instances"][0].get("replacing") is not None)
            replacing = status["instances"][0]["replacing"]
            assert replacing["pid"] == before["pid"] and replacing["guid"] == before["guid"], replacing
            assert replacing["state"] == "serving", replacing
            assert status["instances"][0]["guid"] != before["guid"] and status["instances"][0]["state"] == "starting"
            table = cluster.ctl("status").stdout
            assert f"web.0 replacing its old process (pid {before['pid']}, guid {before['guid']}): serving until this one is routable" in table, table
            assert "app web: 0/1 running, 1 being replaced (the old process serves meanwhile)" in table, table
            cluster.expect("rolling restart done", f"web.0 (old, pid {before['pid']}) stopped (exited with code 0)", timeout=30)
            wait_until("the old process gone", lambda: not process_alive(before["pid"]))
            wait_until("answers from the replacement", lambda: answers and answers[-1] != before["guid"], timeout=15)
        finally:
            done.set()
            thread.join(timeout=30)
        after = cluster.instances()[0]
        assert after["guid"] != before["guid"] and after["pid"] != before["pid"] and after.get("replacing") is None
        assert failures == [], f"{len(failures)} of {len(failures) + len(answers)} requests failed: {failures[:5]}\n{cluster.recent_events()}"
        assert before["guid"] in answers and after["guid"] in answers
        # The old process stopped only once the new one was routable, and left the routes after its exit.
        lines = cluster.output().splitlines()
        old = f"web.0 (old, pid {before['pid']})"
        registered = [i for i, line in enumerate(lines) if "web.0 registered with the proxy" in line]
        stopping = next(i for i, line in enumerate(lines) if f"{old} stopping (its replacement is routable)" in line)
        stopped = next(i for i, line in enumerate(lines) if f"{old} stopped" in line)
        assert len(registered) == 2 and registered[1] < stopping < stopped, "\n".join(lines[-40:])
        wait_until("the old registration taken out", lambda: f"{old} unregistered from the proxy" in cluster.output())
        lines = cluster.output().splitlines()
        assert stopped < next(i for i, line in enumerate(lines) if f"{old} unregistered from the proxy" in line)


def test_a_failing_readiness_check_takes_an_instance_out_of_the_route_pool_without_restarting_it():
    with ClusterRun(config(readiness_check={"type": "http", "endpoint": "/ready", "interval": "100ms"})) as cluster:
        cluster.wait_ready()
        url = proxy_url(cluster)
        lines = cluster.output().splitlines()
        for index in range(3):
            # Healthy first, routed only once the readiness check has passed.
            healthy = next(i for i, line in enumerate(lines) if f"web.{index} healthy after" in line)
            ready = next(i for i, line in enumerate(lines) if f"web.{index} passed its readiness check" in line)
            registered = next(i for i, line in enumerate(lines) if f"web.{index} registered with the proxy" in line)
            assert healthy < ready < registered, "\n".join(lines[-40:])
        assert served_by(url) == {0, 1, 2}
        before = cluster.instances()[1]
        fetch(f"http://127.0.0.1:{before['port']}/not-ready")
        cluster.expect("web.1 failed its readiness check: Failed to make HTTP request to '/ready'",
                       "received status code 503; marked not ready and removed from the route pool (it keeps running; nothing is restarted)",
                       "web.1 unregistered from the proxy")
        wait_until("web.1 out of the pool", lambda: served_by(url, 12) == {0, 2})
        status = cluster.status()
        one = status["instances"][1]
        assert (one["state"], one["routable"], one["crashes"], one["pid"]) == ("running", False, 0, before["pid"]), one
        assert status["ready"] is False
        assert "1 not routable (readiness check failing)" in cluster.ctl("status").stdout
        # It stays out while the check keeps failing, said once.
        served_by(url, 10)
        assert cluster.output().count("web.1 failed its readiness check") == 1
        fetch(f"http://127.0.0.1:{before['port']}/make-ready")
        wait_until("web.1 routed again", lambda: served_by(url, 12) == {0, 1, 2})
        assert cluster.output().count("web.1 passed its readiness check") == 2
        after = cluster.status()["instances"][1]
        assert (after["routable"], after["crashes"], after["pid"], after["guid"]) == (True, 0, before["pid"], before["guid"]), after


def test_an_unregister_the_proxy_did_not_take_is_sent_again(cluster):
    # The proxy hangs (SIGSTOP) while web.1 stops: its unregister times out. It used to be dropped, and
    # the proxy went on routing to the stopped instance until its stale prune (120 s).
    cluster.wait_ready()
    url = proxy_url(cluster)
    proxy_pid = cluster.status()["proxy"]["pid"]
    os.kill(proxy_pid, signal.SIGSTOP)
    try:
        cluster.ctl("stop", "1", "--wait")
        cluster.expect("could not unregister web.1 with the proxy", timeout=20)
    finally:
        os.kill(proxy_pid, signal.SIGCONT)
    # Sent again with the next registration heartbeat (every 20 s).
    cluster.expect("web.1 unregistered from the proxy", timeout=45)
    assert 1 not in served_by(url, 12)


def test_status_reads_connections_and_request_rates_from_the_proxy(cluster):
    cluster.wait_ready()
    url = proxy_url(cluster)

    def busy(status):
        served_by(url, 20)
        return any((i.get("requests_per_second") or 0) > 0 for i in status["instances"])
    status = cluster.wait_status("a request rate", busy, timeout=30)
    assert all(i.get("connections") is not None for i in status["instances"])
    table = cluster.ctl("status").stdout
    assert "CONNECTIONS" in table and "REQ/S" in table


def test_the_proxy_is_restarted_and_routes_registered_again(cluster):
    cluster.wait_ready()
    url = proxy_url(cluster)
    pid = cluster.status()["proxy"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until("old proxy gone", lambda: not process_alive(pid))
    cluster.wait_status("proxy running again", lambda s: s["proxy"]["state"] == "running" and s["proxy"]["pid"] != pid)
    wait_until("routes back", lambda: served_by(url, 10) == {0, 1, 2}, timeout=30)
    cluster.expect("proxy crashed (killed by signal 9 (SIGKILL)); restarting it in")


def test_the_routers_access_log_is_in_the_cluster_output_like_cf_logs(cluster):
    """As `cf logs` shows the router's RTR lines: each request through the proxy, in gorouter's format,
    with the routing decision, among the cluster's lines; `proxy.access_log: off` leaves them out."""
    cluster.wait_ready()
    url = proxy_url(cluster)
    status, _, _ = fetch(url + "?access-log-probe")
    assert status == 200
    cluster.expect("\"GET /?access-log-probe HTTP/1.1\" 200", "routing_decision:")
    quiet = ClusterRun(config(proxy={"port": 0, "access_log": False}))
    try:
        quiet.wait_ready()
        status, _, _ = fetch(proxy_url(quiet) + "?quiet-probe")
        assert status == 200
        # Off: the proxy runs without an access log at all (so no line can arrive later either).
        pid = quiet.status()["proxy"]["pid"]
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            arguments = f.read().split(b"\0")
        assert b"--admin-port" in arguments and b"--access-log" not in arguments
        # The admin token is in the proxy's environment, not on its command line, which `ps` shows
        # to every user of the machine.
        assert not any(b"token" in argument for argument in arguments), arguments
        with open(f"/proc/{pid}/environ", "rb") as f:
            assert any(entry.startswith(b"STICKY_PROXY_ADMIN_TOKEN=") and len(entry) > 30 for entry in f.read().split(b"\0"))
    finally:
        quiet.close()


def socketio_cluster(cookie: str = "") -> ClusterRun:
    """Three instances of the benchmark's python-socketio peer (bench/chat_peer.py: python-socketio on
    aiohttp with AsyncRedisManager, nothing of stickylab's in it), with `cookie` as its session cookie."""
    peer = Path(__file__).resolve().parents[2] / "bench" / "chat_peer.py"
    app = f"{sys.executable} {peer} --port $PORT --redis $REDIS_URL" + (f" --cookie {cookie}" if cookie else "")
    return ClusterRun(config(instances=3, app={"command": app}))


def chat_over_polling(url: str, wait: float = 10) -> list:
    """A python-socketio client on long-polling only: connects, sends three messages, returns the acks.
    Raises socketio's ConnectionError when the connection is not made within `wait` seconds."""
    client = socketio.Client(reconnection=False)
    try:
        client.connect(url, transports=["polling"], wait_timeout=wait)
        return [client.call("chat", f"hello {n}", timeout=10) for n in range(3)]
    finally:
        # Without waiting for the pending long-poll GET, which python-engineio's client otherwise waits
        # out (up to 25 s).
        client.eio.disconnect(abort=True)


def test_a_socketio_app_without_a_session_cookie_breaks_on_long_polling_and_the_proxy_says_why():
    """What happens to most Socket.IO apps on Cloud Foundry: python-socketio sets no JSESSIONID, so the
    router balances each long-polling request and the session is on one instance in three. The app
    only logs "Invalid session"; the proxy says which request, which instance, and what to do."""
    with socketio_cluster() as run:
        run.wait_ready()
        url = proxy_url(run)
        failures = 0
        for _ in range(4):  # the first polling request after the handshake misses with probability 2/3
            try:
                chat_over_polling(url, wait=3)
            except socketio.exceptions.ConnectionError:
                failures += 1
        assert failures > 0, "long-polling through a proxy without affinity should have failed"
        said = run.wait_for_output("An Engine.IO long-polling request for session ", timeout=15)
        hint = next(line for line in said.splitlines() if "An Engine.IO long-polling request" in line)
        assert "without affinity (routing_decision balanced), and the app answered 400" in hint
        assert re.search(r"reached instance [0-2] \([0-9a-f-]{28}\)", hint), hint
        assert "no JSESSIONID cookie with __VCAP_ID__" in hint and 'cookie="JSESSIONID" in python-socketio' in hint


def test_the_same_app_with_its_session_cookie_named_jsessionid_is_sticky():
    """The fix the hint gives, applied: python-socketio's `cookie="JSESSIONID"`. The router pins the
    client after the handshake and every request of the session reaches its instance."""
    with socketio_cluster(cookie="JSESSIONID") as run:
        run.wait_ready()
        url = proxy_url(run)
        for _ in range(4):
            assert chat_over_polling(url) == [{"ok": True}] * 3
        # The access log is written in batches: wait for the four handshakes and their requests.
        run.wait_for_output('routing_decision:"new_session"', count=4, timeout=15)
        run.wait_for_output('routing_decision:"sticky_hit"', count=12, timeout=15)
        decisions = re.findall(r'routing_decision:"([a-z_]+)"', run.output())
        assert "balanced" not in decisions, decisions
        assert "An Engine.IO" not in run.output()


def test_chaos_says_what_clients_got_through_the_proxy_and_fails_past_max_5xx(cluster):
    """A team's CI gate: faults while clients use the app, then what the proxy counted meanwhile, and
    exit 1 when more responses were 5xx than --max-5xx allows."""
    cluster.wait_ready()
    url = proxy_url(cluster)
    assert fetch(url)[0] == 200  # before the run: not counted in it
    stop = threading.Event()
    answered = []

    def load(path):
        while not stop.is_set():
            try:
                answered.append(fetch(url + path)[0])
            except FETCH_FAILURES:
                answered.append("failed")
            stop.wait(0.02)

    worker = threading.Thread(target=load, args=("status",), daemon=True)
    worker.start()
    try:
        calm = cluster.ctl("chaos", "--every", "500ms", "--for", "1s", "--seed", "3", "--settle", "20s", "--max-5xx", "0", timeout=60)
    finally:
        stop.set()
        worker.join()
    line = calm.stdout.splitlines()[-1]
    assert "chaos | through the proxy meanwhile: " in line, calm.stdout
    total = int(re.search(r"meanwhile: ([\d,]+) responses? \(2xx ([\d,]+)\)", line).group(1).replace(",", ""))
    assert 0 < total <= len(answered) + 1, (line, len(answered))
    assert "; no router errors;" in line and "routing: balanced " in line
    # `cluster status --json` has the proxy's counters since it started.
    traffic = cluster.status()["proxy_traffic"]
    assert traffic["responses"]["2xx"] >= total, traffic
    assert all(count == 0 for count in traffic["router_errors"].values()), traffic

    # The app answering 500s while the instances are killed: the run fails past --max-5xx 2.
    stop.clear()
    worker = threading.Thread(target=load, args=("status?code=500",), daemon=True)
    worker.start()
    try:
        failing = cluster.ctl("chaos", "--every", "500ms", "--for", "1s", "--seed", "3", "--settle", "20s", "--max-5xx", "2",
                              check=False, timeout=60)
    finally:
        stop.set()
        worker.join()
    assert failing.returncode == 1, failing.stdout + failing.stderr
    lines = failing.stdout.splitlines()
    assert "| ready again after" in lines[-3], lines
    assert re.search(r"\| through the proxy meanwhile: [\d,]+ responses \(5xx [\d,]+\)", lines[-2]), lines
    assert re.search(r"\| FAILED: \d+ responses were 5xx \(all from the app\), more than --max-5xx 2$", lines[-1]), lines
    assert answered.count(500) > 2


def test_chaos_max_5xx_needs_the_proxy_and_a_count(tmp_path):
    bad = subprocess.run([str(executable("cluster")), "chaos", "--max-5xx=-1", "--state-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 64 and "--max-5xx must be 0 or more (not -1)" in bad.stderr, bad.stderr
    with ClusterRun(config(instances=1, proxy={"enabled": False})) as run:
        run.wait_ready()
        refused = run.ctl("chaos", "--every", "1s", "--for", "1s", "--max-5xx", "0", check=False, timeout=60)
        assert refused.returncode == 1
        assert "--max-5xx counts the proxy's responses, and this cluster has no proxy answering (absent): drop --max-5xx" in refused.stderr


def test_chaos_users_see_an_app_replace_the_sessions_it_kept_in_a_killed_instance(cluster, tmp_path):
    """Any app, not only chat-node: simulated users browse /session, a session kept in each instance's
    memory. A user the router moves off a killed instance gets a new JSESSIONID from the instance it
    lands on: a lost session, and the run fails past --max-lost-sessions. Every loss follows a move."""
    cluster.wait_ready()
    report_file = tmp_path / "chaos.json"
    result = cluster.ctl("chaos", "--every", "500ms", "--for", "1s", "--seed", "3", "--settle", "20s", "--users", "6",
                         "--users-path", "/session", "--users-every", "50ms", "--max-lost-sessions", "0", "--report", str(report_file),
                         check=False, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert re.search(r"\| 6 simulated users, each with its own cookies: GET /session through http://localhost:\d+/ every 50ms$",
                     lines[0]), lines
    users = next(line for line in lines if "| simulated users meanwhile: " in line)
    match = re.search(r"meanwhile: 6 users, ([\d,]+) requests \(2xx [\d,]+.*\), answered in p50 [^;]+; 6 sessions started; (\d) users? moved to another "
                      r"instance \((\d+) times?\); (\d+) sessions? LOST by (\d) users? \(the app set a new JSESSIONID \d+ times?\)", users)
    assert match, users
    moved_users, moves, lost, lost_users = (int(match.group(n)) for n in (2, 3, 4, 5))
    assert 1 <= lost <= moves and 1 <= lost_users <= moved_users <= 6, users
    assert lines[-1].endswith(f"| FAILED: the simulated users lost {lost} session{'s' if lost != 1 else ''}, more than --max-lost-sessions 0"), lines
    # --report: the same run as JSON.
    report = json.loads(report_file.read_text())
    assert report["outcome"] == "sessions-lost" and report["seed"] == 3, report
    assert report["faults"]["kill"] >= 1 and report["ready_again_seconds"] is not None, report
    assert report["proxy_traffic"]["responses"]["2xx"] > 0, report
    got = report["users"]
    assert (got["count"], got["users_moved"], got["moves"], got["sessions_lost"], got["users_with_losses"]) == (
        6, moved_users, moves, lost, lost_users), report
    assert got["requests"] == int(match.group(1).replace(",", "")) and got["losses"] == {"replaced": lost}, report
    assert got["response_times"]["count"] > 0 and 0 < got["response_times"]["p50_ms"] <= got["response_times"]["p99_ms"], report
    assert report["failures"] == [lines[-1].split("chaos | ", 1)[1]], report
    # A report that cannot be written fails before any fault.
    unwritable = cluster.ctl("chaos", "--every", "500ms", "--for", "1s", "--report", str(tmp_path / "nowhere" / "chaos.json"), check=False)
    assert unwritable.returncode == 1 and "killed" not in unwritable.stdout, unwritable.stdout + unwritable.stderr
    assert (f"cluster: cannot write the report to {tmp_path / 'nowhere' / 'chaos.json'} (does its folder exist, and may you write "
            "there?)") in unwritable.stderr, unwritable.stderr
    # An app that sends a logged-out user to its login form: each user logs in, and a redirect to
    # /login after a move is a lost session (the user logs in again).
    redirected = cluster.ctl("chaos", "--every", "500ms", "--for", "1s", "--seed", "3", "--settle", "20s", "--users", "6",
                             "--users-path", "/private", "--users-login", "/login", "--users-every", "50ms", "--max-lost-sessions", "0",
                             check=False, timeout=60)
    assert redirected.returncode == 1, redirected.stdout + redirected.stderr
    users = next(line for line in redirected.stdout.splitlines() if "| simulated users meanwhile: " in line)
    match = re.search(r"; 6 sessions started; \d users? moved to another instance \((\d+) times?\); (\d+) sessions? LOST by \d users? "
                      r"\((\d+) redirects? to /login \(logged out\)\)", users)
    assert match and 1 <= int(match.group(2)) == int(match.group(3)) <= int(match.group(1)), users
    # The options that need --users say so.
    bad = cluster.ctl("chaos", "--users-check", "x", check=False)
    assert bad.returncode == 64 and "--users-check needs --users N (the simulated users it is about)" in bad.stderr, bad.stderr


@contextlib.contextmanager
def session_users(cluster, *args: str):
    """`cluster users 2 ARGS`, browsing the test app's /session every 50 ms; killed if the test fails first."""
    users = subprocess.Popen([str(executable("cluster")), "users", "2", "--users-path", "/session", "--users-every", "50ms", *args,
                              "--state-dir", cluster.state_dir], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield users
    finally:
        if users.poll() is None:
            users.kill()


def sessions_visited_twice(cluster) -> int:
    """How many sessions the running instances keep that had two visits or more: a simulated user's
    second request comes only after it has recorded the answer to its first (its session, its instance)."""
    count = 0
    for instance in cluster.status()["instances"]:
        if instance["state"] == "running" and instance.get("port"):
            try:
                count += sum(1 for visits in json.loads(fetch(f"http://127.0.0.1:{instance['port']}/sessions")[2])["visits"] if visits >= 2)
            except FETCH_FAILURES:
                pass
    return count


def test_users_stuck_on_frozen_instances_show_in_the_response_times(cluster):
    """A hang is not a crash: nothing restarts and no session is lost, and the users' summary is where
    it shows, as answers that took a second or more."""
    cluster.wait_ready()
    with session_users(cluster, "--for", "8s") as users:
        assert "2 simulated users" in users.stdout.readline()
        wait_until("both users with their sessions", lambda: sessions_visited_twice(cluster) >= 2, timeout=30)
        for index in range(3):
            cluster.ctl("freeze", str(index), "--for", "1500ms")
        out, err = users.communicate(timeout=60)
    assert users.returncode == 0, out + err
    summary = out.splitlines()[-1]
    assert re.search(r"\), answered in p50 [\d.]+m?s, p99 [\d.]+m?s, longest [1-4](\.\d+)?s \([\d,]+ took 1s or "
                     r"more\); 2 sessions started; none moved to another instance; no session lost$", summary), summary


def test_cluster_users_tells_each_move_and_loss_as_it_happens_and_sums_up_on_ctrl_c(cluster):
    """`cluster users` alone, as a teacher runs it next to a terminal that kills instances: a line per
    user moved off the killed instance, with the instances' names, saying it lost its session (the
    app keeps sessions in memory); the summary and exit 1 past --max-lost-sessions at the end of --for.
    Without --for it runs until Ctrl-C, which ends it with the summary (exit 0)."""
    cluster.wait_ready()
    users = subprocess.Popen([str(executable("cluster")), "users", "6", "--users-path", "/session", "--users-every", "50ms", "--for", "4s",
                              "--max-lost-sessions", "0", "--state-dir", cluster.state_dir],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = users.stdout.readline()
        assert re.search(r"users \| 6 simulated users, each with its own cookies: GET /session through http://localhost:\d+/ "
                         r"every 50ms for 4s$", first), first
        wait_until("every user with its session and its instance", lambda: sessions_visited_twice(cluster) >= 6, timeout=30)
        cluster.ctl("kill", "1")
        out, err = users.communicate(timeout=60)
    finally:
        if users.poll() is None:
            users.kill()
    assert users.returncode == 1, out + err
    lines = out.splitlines()
    moves = [line for line in lines if re.search(r"\| user-\d moved from web\.1 to web\.[02] and LOST its session "
                                                 r"\(the app set a new JSESSIONID\)$", line)]
    assert moves, out
    summary = next(line for line in lines if "| simulated users: 6 users, " in line)
    assert "; 6 sessions started; " in summary and " LOST by " in summary, summary
    assert lines[-1].endswith(" more than --max-lost-sessions 0"), lines

    before = sessions_visited_twice(cluster)
    with session_users(cluster) as endless:
        assert endless.stdout.readline().rstrip().endswith(" every 50ms until Ctrl-C")
        wait_until("both users with their sessions", lambda: sessions_visited_twice(cluster) >= before + 2, timeout=30)
        endless.send_signal(signal.SIGINT)
        out, err = endless.communicate(timeout=30)
    assert endless.returncode == 0, out + err
    summary = out.splitlines()[-1]
    assert re.search(r"\| simulated users: 2 users, [\d,]+ requests \(2xx [\d,]+\), answered in p50 [^;]+; 2 sessions started; none moved to another "
                     r"instance; no session lost$", summary), out
    # A login form of the app's own: sent as given, {user} replaced by each user's name.
    def login(form: str, path: str = "/login") -> str:
        run = cluster.ctl("users", "2", "--users-path", "/private", "--users-login", path, "--users-login-form", form,
                          "--users-every", "50ms", "--for", "1s")
        return run.stdout.splitlines()[-1]
    assert re.search(r"\| simulated users: 2 users, [\d,]+ requests \(2xx [\d,]+, 3xx 2\), answered in p50 [^;]+; 2 sessions started; ", login(
        "user={user}&password=secret"))
    assert re.search(r"\| simulated users: 2 users, [\d,]+ requests \(4xx [\d,]+\), answered in p50 [^;]+; 0 sessions started ", login(
        "user={user}&password=wrong"))
    # A login form with a CSRF token from the login page: the page first, then the POST with its token
    # (form-encoded: testapp's tokens hold "+/="); every page after it is the user's (no 3xx but the
    # two logins' own redirects).
    assert re.search(r"\| simulated users: 2 users, [\d,]+ requests \(2xx [\d,]+, 3xx 2\), answered in p50 [^;]+; 2 sessions started; none moved "
                     r"to another instance; no session lost$", login("user={user}&_csrf={field:_csrf}", "/csrf-login"))
    # Without the token the app refuses every login.
    without = login("user={user}", "/csrf-login")
    assert re.search(r"requests \(4xx [\d,]+\), answered in p50 [^;]+; 0 sessions started", without), without
    # A field the page does not have: said, with what to do.
    wrong = login("user={user}&_csrf={field:token}", "/csrf-login")
    assert re.search(r"; the login page /csrf-login had no field \"token\" \([\d,]+ times\): name a field of its form in "
                     r"--users-login-form's \{field:NAME\}", wrong), wrong
    bad = subprocess.run([str(executable("cluster")), "users", "2", "--users-login", "/login", "--users-login-form", "user={name}",
                          "--state-dir", cluster.state_dir], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 64 and "--users-login-form has an unknown placeholder {name}: use {user}" in bad.stderr, bad.stderr
    bad = subprocess.run([str(executable("cluster")), "users", "0", "--state-dir", cluster.state_dir], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == 64 and "the number of users must be from 1 to 1000 (not 0)" in bad.stderr, bad.stderr


def test_cluster_users_see_every_move_without_affinity():
    """Found by a user: with --affinity none no __VCAP_ID__ is set, so the simulated users said
    "none moved" while the proxy spread their requests over every instance. The cluster gives its
    proxy a trace key (gorouter's router.trace_key); the users send it and read X-Vcap-Backend."""
    run = ClusterRun(config(proxy={"affinity": "none"}))
    try:
        run.wait_ready()
        # Two users over three instances: round-robin sends each somewhere else every time (three
        # users would each keep one instance, the cursor going round in step with them).
        result = run.ctl("users", "2", "--users-path", "/session", "--users-every", "50ms", "--for", "2s", timeout=60)
        moves = [line for line in result.stdout.splitlines() if re.search(r"\| user-\d moved from web\.\d to web\.\d", line)]
        assert len(moves) >= 4, result.stdout
        summary = result.stdout.splitlines()[-1]
        assert "2 users moved to another instance" in summary, summary
    finally:
        run.close()
