"""Integration tests of the built `cluster` executable with a tiny test app (Tests/cluster/testapp.py):
real processes, a real redis-server, the real control socket. No proxy here (Tests/acceptance covers
cluster + sticky-proxy + chat-node)."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from cluster_run import ClusterRun, process_alive, app_command
from harness import executable, free_port, process_stat, wait_until


def config(instances=3, **overrides):
    """A fast cluster of the test app: checks every 50 ms, Diego's back-off shrunk 100 times."""
    base = {
        "app": {"name": "web", "command": app_command(), "instances": instances},
        "health_check": {"startup_interval": "50ms", "liveness_interval": "300ms"},
        "proxy": {"enabled": False},
        "stop": {"grace_period": "3s"},
        "time_scale": 0.01,
    }
    for section, values in overrides.items():
        if isinstance(values, dict):
            base.setdefault(section, {}).update(values)
        else:
            base[section] = values
    return base


def get(port, path="/", timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        return json.loads(response.read())


@pytest.fixture
def cluster(request):
    marker = request.node.get_closest_marker("cluster_config")
    run = ClusterRun(marker.args[0] if marker else config())
    yield run
    run.close()


def running(status, count):
    return sum(1 for i in status["instances"] if i["state"] == "running") == count and len(status["instances"]) == count


def test_instances_get_cloud_foundrys_environment(cluster):
    cluster.wait_ready()
    status = cluster.status()
    assert status["ready"] is True
    instances = {i["index"]: i for i in status["instances"]}
    assert sorted(instances) == [0, 1, 2]
    secrets = set()
    for index, instance in instances.items():
        env = get(instance["port"], "/env")
        assert env["PORT"] == str(instance["port"])
        assert env["CF_INSTANCE_INDEX"] == env["INSTANCE_INDEX"] == str(index)
        assert env["CF_INSTANCE_GUID"] == env["INSTANCE_GUID"] == instance["guid"]
        assert len(instance["guid"]) == 28 and [len(g) for g in instance["guid"].split("-")] == [8, 4, 4, 4, 4]
        assert env["CF_INSTANCE_ADDR"] == f"127.0.0.1:{instance['port']}"
        assert env["VCAP_APP_PORT"] == str(instance["port"]) and env["VCAP_APP_HOST"] == "0.0.0.0"
        assert env["MEMORY_LIMIT"] == "256m"
        application = json.loads(env["VCAP_APPLICATION"])
        assert application["application_name"] == "web" and application["uris"] == ["localhost", "127.0.0.1"]
        binding = json.loads(env["VCAP_SERVICES"])["redis"][0]
        assert binding["credentials"]["uri"] == env["REDIS_URL"]
        # The bound Redis really answers.
        with socket.create_connection(("127.0.0.1", binding["credentials"]["port"]), timeout=5) as connection:
            connection.sendall(b"PING\r\n")
            assert connection.recv(16) == b"+PONG\r\n"
        secrets.add(env["SESSION_SECRET"])
    assert len(secrets) == 1 and len(secrets.pop()) == 64, "one SESSION_SECRET shared by every instance"
    # `status --json` writes URLs as they are, for jq and eyes alike (not "redis:\/\/...").
    raw = cluster.ctl("status", "--json").stdout
    assert "\\/" not in raw and '"redis://127.0.0.1:' in raw


def test_kill_is_a_crash_restarted_at_once_with_a_new_guid(cluster):
    cluster.wait_ready()
    before = cluster.instances()[1]
    result = cluster.ctl("kill", "1")
    assert "SIGKILL" in result.stdout
    after = cluster.wait_status("web.1 back with a new guid", lambda s: s["instances"][1]["state"] == "running"
                                and s["instances"][1]["guid"] != before["guid"])["instances"][1]
    assert after["crashes"] == 1
    assert not process_alive(before["pid"])
    answer = get(after["port"])
    assert answer["index"] == "1" and answer["guid"] == after["guid"]
    cluster.expect("web.1 crashed: killed by signal 9 (SIGKILL) (crash count 1)", "web.1 restarting now with a new guid")


@pytest.mark.cluster_config(config(instances=1, app={"command": "sh -c 'echo starting; exit 3'"}))
def test_diego_back_off_with_time_scale(cluster):
    # Crashes 1 and 2 restart at once, crash 3 waits 30 s x 0.01 until the next 0.3 s tick.
    cluster.wait_for_output("restart in", timeout=30)
    cluster.expect("web.0 crashed: exited with code 3 (crash count 1)", "web.0 crashed: exited with code 3 (crash count 2)",
                   "web.0 crashed: exited with code 3 (crash count 3)")
    output = cluster.output()
    lines = output.splitlines()
    third = next(i for i, line in enumerate(lines) if "(crash count 3)" in line)
    assert "restart in" in lines[third + 1] and "crash count 3, diego back-off" in lines[third + 1]
    status = cluster.wait_status("crash count 5", lambda s: s["instances"][0]["crashes"] >= 5, timeout=30)
    assert status["instances"][0]["last_crash"] == "exited with code 3"


@pytest.mark.cluster_config(config(instances=1, app={"command": "sh -c 'exit 4'"}, time_scale=0.0001))
def test_diego_gives_up_at_crash_200(cluster):
    cluster.wait_for_output("gave up after 200 crashes", timeout=120)
    status = cluster.status()
    instance = status["instances"][0]
    assert instance["state"] == "gave-up" and instance["crashes"] == 200
    assert "crash count 201" not in cluster.output()
    # A user's start brings it back with the count reset.
    cluster.ctl("start", "0")
    cluster.wait_status("a new crash count", lambda s: 1 <= s["instances"][0]["crashes"] < 200)


def test_scale_up_and_down_removes_the_highest_indices_first(cluster):
    cluster.wait_ready()
    result = cluster.ctl("scale", "5", "--wait")
    assert "starting web.3, web.4" in result.stdout
    status = cluster.status()
    assert running(status, 5)
    pids = {i["index"]: i["pid"] for i in status["instances"]}
    result = cluster.ctl("scale", "-3", "--wait")
    assert "stopping web.4, web.3, web.2 (highest index first)" in result.stdout
    status = cluster.wait_status("2 instances", lambda s: running(s, 2))
    assert [i["index"] for i in status["instances"]] == [0, 1]
    assert {i["pid"] for i in status["instances"]} == {pids[0], pids[1]}, "the low indices were not touched"
    wait_until("removed instances gone", lambda: not any(process_alive(pids[i]) for i in (2, 3, 4)))
    cluster.expect("web.4 removed (scale-down)")
    cluster.ctl("scale", "+1", "--wait")
    assert [i["index"] for i in cluster.status()["instances"]] == [0, 1, 2]


@pytest.mark.cluster_config(config(instances=1, app={"env": {"TESTAPP_IGNORE_TERM": "1", "TESTAPP_CHILD": "1"}},
                                   stop={"grace_period": "500ms"}))
def test_stop_is_sigterm_then_sigkill_to_the_whole_group(cluster):
    cluster.wait_ready()
    pid = cluster.instances()[0]["pid"]
    output = cluster.wait_for_output("child pid ")
    child = int(output.split("child pid ")[1].split()[0])
    assert process_alive(child)
    cluster.ctl("stop", "0", "--wait")
    cluster.expect("web.0 stopping: SIGTERM to its process group, SIGKILL after 500ms", "got SIGTERM, ignoring it",
                   "web.0 still running 500ms after SIGTERM: SIGKILL", "web.0 stopped (killed by signal 9 (SIGKILL))")
    wait_until("app and its child gone", lambda: not process_alive(pid) and not process_alive(child))
    instance = cluster.instances()[0]
    assert instance["state"] == "stopped" and instance["crashes"] == 0
    cluster.ctl("start", "0", "--wait")
    assert cluster.instances()[0]["state"] == "running"
    # Starting a running instance does nothing, and says so (it used to answer "starting with a new guid").
    again = cluster.ctl("start", "0", check=False)
    assert again.returncode == 1 and "web.0 is already running; `cluster restart 0` restarts it" in again.stderr, again
    assert cluster.instances()[0]["pid"] != pid and cluster.instances()[0]["crashes"] == 0


@pytest.mark.cluster_config(config(instances=1, app={"env": {"TESTAPP_NEVER_LISTEN": "1"}}))
def test_a_command_waiting_on_the_cluster_does_not_keep_it_from_stopping(cluster):
    # `scale 2 --wait` waits for web.1, which never listens (its startup check would give up after
    # 60 s). Stopping the cluster meanwhile used to leave `cluster up` running, spinning a core, until
    # that wait's own deadline (about 75 s here).
    cluster.wait_ready()
    waiting = subprocess.Popen([str(executable("cluster")), "scale", "2", "--wait", "--state-dir", cluster.state_dir],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        cluster.expect("scaling web from 1 to 2")
        started = time.monotonic()
        assert cluster.down(timeout=60) == 0
        assert time.monotonic() - started < 30, "cluster up waited for the command's own deadline"
        _, errors = waiting.communicate(timeout=30)
        assert waiting.returncode == 1, errors
    finally:
        waiting.kill()


def test_graceful_stop_and_restart(cluster):
    cluster.wait_ready()
    before = cluster.instances()
    cluster.ctl("stop", "2", "--wait")
    cluster.expect("got SIGTERM, exiting", "web.2 stopped (exited with code 0)")
    assert cluster.instances()[2]["state"] == "stopped"
    cluster.ctl("restart", "0", "--wait")
    after = cluster.instances()
    assert after[0]["guid"] != before[0]["guid"] and after[0]["state"] == "running" and after[0]["crashes"] == 0
    assert after[1]["guid"] == before[1]["guid"]


def test_rolling_restart_one_at_a_time(cluster):
    cluster.wait_ready()
    before = cluster.instances()
    result = cluster.ctl("restart", "--all", "--rolling", "--wait")
    assert "rolling restart done" in result.stdout
    # Done means the old processes are gone too, as a Cloud Foundry deployment.
    assert not any(process_alive(before[index]["pid"]) for index in range(3))
    cluster.expect("cluster | rolling restart done")
    done = next(i for i, line in enumerate(cluster.output().splitlines()) if "cluster | rolling restart done" in line)
    for index in range(3):
        stopped = next(i for i, line in enumerate(cluster.output().splitlines())
                       if f"web.{index} (old, pid {before[index]['pid']}) stopped (exited with code 0)" in line)
        assert stopped < done
    after = cluster.instances()
    assert all(after[i]["guid"] != before[i]["guid"] and after[i]["state"] == "running" for i in range(3))
    # As Cloud Foundry's rolling strategy: each replacement starts while the old process serves, the old
    # one stops once the replacement is routable (healthy, without a proxy), then the next index.
    lines = cluster.output().splitlines()
    start = next(i for i, line in enumerate(lines) if "rolling restart:" in line)
    steps = []
    for line in lines[start + 1:]:
        said = line.split("| ", 1)[1] if "| " in line else line
        for index in range(3):
            old = f"web.{index} (old, pid {before[index]['pid']}) "
            if said.startswith(f"web.{index} rolling restart: a replacement starts"):
                steps.append((index, "replacement"))
            elif said.startswith(f"web.{index} healthy after"):
                steps.append((index, "healthy"))
            elif said.startswith(old + "stopping (its replacement is routable)"):
                steps.append((index, "old stopping"))
    assert steps == [(index, step) for index in range(3) for step in ("replacement", "healthy", "old stopping")], steps


@pytest.mark.cluster_config(config(instances=2, health_check={"type": "http", "endpoint": "/health"}))
def test_failed_liveness_check_is_a_crash(cluster):
    cluster.wait_ready()
    before = cluster.instances()[0]
    get(before["port"], "/unhealthy")
    status = cluster.wait_status("web.0 restarted", lambda s: s["instances"][0]["guid"] != before["guid"]
                                 and s["instances"][0]["state"] == "running")
    assert status["instances"][0]["crashes"] == 1
    cluster.expect(f"web.0 Instance became unhealthy: Failed to make HTTP request to '/health' on port {before['port']}: "
                   f"received status code 503; killing it (SIGKILL)")


@pytest.mark.cluster_config(config(instances=1, health_check={"startup_timeout": "1s"}, app={"env": {"TESTAPP_START_DELAY": "600"}}))
def test_never_healthy_after_the_startup_timeout(cluster):
    cluster.wait_for_output("Instance never healthy after 1s", timeout=30)
    cluster.expect("web.0 Instance never healthy after 1s: Failed to make TCP connection to port", "connection refused")
    # It listens nowhere: nothing to say about where it listens.
    assert " listens on " not in cluster.output()


def test_an_app_that_ignores_port_is_told_where_it_listens():
    """The classic first mistake on Cloud Foundry: the app listens on a port of its own. Diego's check only
    tries $PORT, so the instance is never healthy; the cluster says where it does listen."""
    own_port = free_port()
    app = f"{sys.executable} -m http.server {own_port} --bind 127.0.0.1"
    with ClusterRun(config(instances=1, app={"command": app}, health_check={"startup_timeout": "4s"})) as run:
        said = run.wait_for_output(f"web.0 listens on 127.0.0.1:{own_port} but not on its port ", timeout=30)
        hint = next(line for line in said.splitlines() if " listens on " in line)
        port = re.search(r"web\.0 started: pid \d+, port (\d+)", said).group(1)
        assert f"but not on its port {port} ($PORT): the health check only connects to $PORT" in hint
        assert "make the app listen on the port in $PORT" in hint
        # `cluster status` says it too, until the instance is healthy.
        assert run.instances()[0]["listening_hint"] == hint.split(" | ", 1)[1]
        assert hint.split(" | ", 1)[1] in run.ctl("status").stdout
        run.wait_for_output("web.0 Instance never healthy after 4s: Failed to make TCP connection to port", timeout=30)
        assert run.output().count(" listens on ") == 1  # once per start, not at every check


def test_instances_that_collide_on_a_fixed_port_are_told_why():
    """The same mistake with two instances: the second cannot bind the port the first took, and
    crashes with "Address already in use" at every restart. On Cloud Foundry each instance has a
    container of its own; here they share one machine, and the cluster says so, once, naming who holds
    the port."""
    own_port = free_port()
    app = f"{sys.executable} -m http.server {own_port} --bind 127.0.0.1"
    with ClusterRun(config(instances=2, app={"command": app}, health_check={"startup_timeout": "20s"})) as run:
        said = run.wait_for_output("is exiting after saying that an address is already in use", timeout=30)
        hint = next(line for line in said.splitlines() if "is exiting after saying" in line).split(" | ", 1)[1]
        loser = re.match(r"(web\.\d) is exiting", hint).group(1)
        winner = "web.1" if loser == "web.0" else "web.0"
        # The port of the run that crashed: the last start before the hint (the next one may follow it).
        before = said[:said.index("is exiting after saying")]
        port = re.findall(rf"{re.escape(loser)} started: pid \d+, port (\d+)", before)[-1]
        assert "Address already in use" in hint
        assert f"each with a port of its own in $PORT ({port} for this run of {loser})" in hint
        assert f"(listening on ports other than their $PORT: {winner} on 127.0.0.1:{own_port})" in hint
        assert hint.endswith("Make the app listen only on the port in $PORT, or give each instance its own port for anything else")
        index = int(loser[-1])
        assert run.instances()[index]["listening_hint"] == hint
        # Its crash loop goes on; the explanation is not repeated at every crash.
        run.wait_for_output(f"{loser} crashed: ", count=3, timeout=30)
        assert run.output().count("is exiting after saying that an address is already in use") == 1


@pytest.mark.cluster_config(config(app={"env": {"TESTAPP_START_DELAY": "1.5"}}))
def test_a_rolling_restart_skips_an_instance_stopped_during_its_turn_and_runs_alone(cluster):
    """Found by a user: `stop 0` while web.0's replacement was starting left the rolling restart
    waiting for good, and a second rolling restart was accepted and stopped the first one's
    replacements."""
    cluster.wait_ready()
    before = cluster.instances()
    assert "rolling restart of 3 instances started" in cluster.ctl("restart", "--all", "--rolling").stdout
    second = cluster.ctl("restart", "--all", "--rolling", check=False)
    assert second.returncode == 1 and "a rolling restart is already under way" in second.stderr + second.stdout, second
    cluster.expect("web.0 rolling restart: a replacement starts")
    cluster.ctl("stop", "0")
    cluster.expect("rolling restart: web.0 was stopped during its turn; skipped", timeout=30)
    cluster.expect("cluster | rolling restart done (web.0 skipped", timeout=60)
    after = cluster.instances()
    assert after[0]["state"] == "stopped"
    assert all(after[i]["guid"] != before[i]["guid"] and after[i]["state"] == "running" for i in (1, 2)), after
    # Done: another one is accepted now.
    assert "rolling restart done" in cluster.ctl("restart", "--all", "--rolling", "--wait").stdout


def test_a_second_fixed_port_is_named_when_a_rolling_restart_collides_with_the_old_process(tmp_path):
    """An app on $PORT that also listens on a fixed port of its own (a metrics port, a debugger's): one
    instance runs fine, but in a rolling restart its replacement starts while the old process still
    holds that port, and crashes. The cluster names the old process and the port."""
    fixed = free_port()
    app = tmp_path / "app.py"
    app.write_text(
        "import http.server, os, socket\n"
        "metrics = socket.socket()\n"
        f"metrics.bind(('127.0.0.1', {fixed}))\n"
        "metrics.listen()\n"
        "http.server.HTTPServer(('127.0.0.1', int(os.environ['PORT'])), http.server.SimpleHTTPRequestHandler).serve_forever()\n")
    with ClusterRun(config(instances=1, app={"command": f"{sys.executable} {app}"},
                           health_check={"startup_timeout": "20s"})) as run:
        run.wait_for_output("web.0 healthy after", timeout=30)
        run.ctl("restart", "--all", "--rolling")
        said = run.wait_for_output("is exiting after saying that an address is already in use", timeout=30)
        hint = next(line for line in said.splitlines() if "is exiting after saying" in line).split(" | ", 1)[1]
        assert hint.startswith("web.0 is exiting after saying"), hint
        assert f"(listening on ports other than their $PORT: web.0 (old) on 127.0.0.1:{fixed})" in hint
        # The old process keeps serving meanwhile.
        assert run.instances()[0]["replacing"]["state"] == "serving"


def test_logs_by_instance_and_follow(cluster):
    cluster.wait_ready()
    lines = cluster.ctl("logs", "1").stdout.splitlines()
    assert lines and all(" web.1 " in line or "cluster" in line and "web.1" in line for line in lines)
    assert any("testapp 1 listening" in line for line in lines)
    follower = subprocess.Popen([str(executable("cluster")), "logs", "-f", "-n", "1", "2", "--state-dir", cluster.state_dir],
                                stdout=subprocess.PIPE, text=True)
    try:
        time_to_wait = 30
        # Its one recent line arrives once it follows.
        assert " web.2 " in follower.stdout.readline()
        cluster.ctl("kill", "2")
        seen = []
        deadline = time.monotonic() + time_to_wait
        while time.monotonic() < deadline:
            line = follower.stdout.readline()
            seen.append(line)
            if "healthy after" in line:
                break
        assert any("web.2 crashed" in line for line in seen), seen
        assert any("web.2 healthy after" in line for line in seen), seen
    finally:
        follower.terminate()
        follower.wait()
    with open(os.path.join(cluster.state_dir, "logs", "cluster.log")) as log:
        assert "web.2 crashed" in log.read()


def redis_servers(port: int) -> list[int]:
    """The pids of the redis-server processes on `port`, by their command line (the tests' clusters run
    Redis with --set-proc-title no: cluster_run.ClusterRun)."""
    found = subprocess.run(["pgrep", "-f", f"^redis-server .* --port {port}( |$)"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def test_a_redis_command_during_the_back_off_after_a_crash_is_what_happens(cluster):
    # Redis crashes; its restart waits 0.5 s. A `redis start` in that wait used to be followed by the
    # delayed restart too: a second redis-server on the port, the first one no longer tracked. A
    # `redis stop` in that wait was undone by the delayed restart.
    cluster.wait_ready()
    port = int(cluster.status()["redis"]["url"].split(":")[2].split("/")[0])
    for count, (action, expected, why) in enumerate(
            (("start", "running", "started again"), ("stop", "stopped", "stopped")), start=1):
        (pid,) = redis_servers(port)
        os.kill(pid, signal.SIGKILL)
        cluster.wait_for_output("redis crashed", count=count)
        cluster.ctl("redis", action)
        # The back-off ends, and the supervisor says why it does not restart Redis.
        cluster.wait_for_output(f"redis is not restarted after its crash: it was {why} on request during the back-off")
        status = cluster.status()
        assert status["redis"]["state"] == expected, (action, status["redis"], cluster.recent_events())
        assert len(redis_servers(port)) == (1 if expected == "running" else 0), (action, redis_servers(port))
    cluster.ctl("redis", "start")


def test_redis_restart_keeps_the_port_and_the_data(cluster):
    cluster.wait_ready()
    env = get(cluster.instances()[0]["port"], "/env")
    port = json.loads(env["VCAP_SERVICES"])["redis"][0]["credentials"]["port"]

    def redis(command):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            connection.sendall(command)
            return connection.recv(64)
    assert redis(b"SET stickylab-test kept\r\n") == b"+OK\r\n"
    result = cluster.ctl("redis", "restart")
    assert "redis restarted" in result.stdout
    assert redis(b"GET stickylab-test\r\n") == b"$4\r\nkept\r\n"
    cluster.ctl("redis", "stop")
    assert cluster.status()["redis"]["state"] == "stopped"
    cluster.ctl("redis", "start")
    assert cluster.status()["redis"]["state"] == "running"


def test_a_frozen_instance_passes_the_port_check_and_resumes_by_itself(cluster):
    cluster.wait_ready()
    before = cluster.instances()[1]
    result = cluster.ctl("freeze", "1", "--for", "2s")
    assert f"web.1 (pid {before['pid']}) frozen for 2s" in result.stdout
    status = cluster.instances()[1]
    assert status["state"] == "running" and 0 < status["frozen_seconds"] <= 2
    table = cluster.ctl("status").stdout
    assert "running, frozen (resumes in " in table and "3/3 running (not ready)" in table, table
    with pytest.raises(OSError):  # the kernel accepts the connection; nothing answers
        get(before["port"], "/", timeout=0.5)
    refused = cluster.ctl("freeze", "1", check=False)
    assert refused.returncode == 1 and "web.1 is already frozen; it resumes in" in refused.stderr
    cluster.expect("web.1 resumed (SIGCONT) after 2s")
    assert get(before["port"])["guid"] == before["guid"]
    assert cluster.status()["ready"] is True
    after = cluster.instances()[1]
    # Liveness checks ran every 300 ms meanwhile: a port check cannot tell a hung app from a live one.
    assert after["guid"] == before["guid"] and after["crashes"] == 0 and "frozen_seconds" not in after
    # A stop during a freeze resumes the process first, so that it can handle SIGTERM.
    cluster.ctl("freeze", "2", "--for", "1m")
    cluster.ctl("stop", "2", "--wait")
    cluster.expect("web.2 resumed (SIGCONT) so that it can stop", "web.2 stopped (exited with code 0)")
    stopped = cluster.ctl("freeze", "2", check=False)
    assert stopped.returncode == 1 and "web.2 has no running process to freeze (it is stopped)" in stopped.stderr


@pytest.mark.cluster_config(config(instances=1, health_check={"type": "http", "endpoint": "/health", "timeout": "500ms"}))
def test_a_frozen_instance_fails_the_http_check_and_is_killed(cluster):
    cluster.wait_ready()
    before = cluster.instances()[0]
    cluster.ctl("freeze", "0", "--for", "1m")
    cluster.expect(f"web.0 Instance became unhealthy: Failed to make HTTP request to '/health' on port {before['port']}: timed out")
    status = cluster.wait_status("web.0 restarted", lambda s: s["instances"][0]["guid"] != before["guid"]
                                 and s["instances"][0]["state"] == "running")
    assert status["instances"][0]["crashes"] == 1 and "frozen_seconds" not in status["instances"][0]


def test_redis_freeze_answers_nothing_then_resumes_by_itself(cluster):
    cluster.wait_ready()
    env = get(cluster.instances()[0]["port"], "/env")
    port = json.loads(env["VCAP_SERVICES"])["redis"][0]["credentials"]["port"]

    def ping(timeout=1.0):
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64)
    assert ping() == b"+PONG\r\n"
    result = cluster.ctl("redis", "freeze", "--for", "2s")
    assert "redis frozen for 2s (SIGSTOP)" in result.stdout
    status = cluster.status()
    assert status["redis"]["state"].startswith("frozen, resumes in") and status["ready"] is False
    # The port still accepts connections (the kernel does), but nothing answers.
    with pytest.raises(socket.timeout):
        ping(timeout=0.5)
    refused = cluster.ctl("redis", "freeze", check=False)
    assert refused.returncode == 1 and "redis is already frozen; it resumes in" in refused.stderr
    cluster.expect("freezing Redis for 2s on request (SIGSTOP)", "redis resumed (SIGCONT) after 2s")
    assert ping(timeout=5) == b"+PONG\r\n" and cluster.status()["redis"]["state"] == "running"
    # A frozen Redis is resumed before it is asked to stop, so that it stops gracefully.
    cluster.ctl("redis", "freeze", "--for", "1m")
    cluster.ctl("redis", "stop")
    cluster.expect("redis resumed (SIGCONT) so that it can stop", "redis stopped (exited with code 0)")
    cluster.ctl("redis", "start")
    assert ping(timeout=5) == b"+PONG\r\n"


def redis_ping(port: int, timeout: float = 5.0) -> tuple[bytes | None, float]:
    """PING on a new connection to `port`: the answer (None when the connection was reset or closed
    instead) and how long it took."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
            connection.sendall(b"PING\r\n")
            answer = connection.recv(64)
    except ConnectionResetError:
        answer = b""
    return (answer or None), time.monotonic() - started


def test_each_instance_reaches_redis_through_a_link_that_can_be_slowed_cut_and_healed(cluster):
    cluster.wait_ready()
    redis_port = int(cluster.status()["redis"]["url"].split(":")[2].split("/")[0])
    links = {}
    for index, instance in cluster.instances().items():
        env = get(instance["port"], "/env")
        binding = json.loads(env["VCAP_SERVICES"])["redis"][0]["credentials"]
        assert env["REDIS_URL"] == f"redis://127.0.0.1:{binding['port']}" == binding["uri"]
        links[index] = binding["port"]
    # A relay of its own per instance, in front of the one Redis.
    assert len(set(links.values())) == 3 and redis_port not in links.values(), (links, redis_port)
    for port in links.values():
        assert redis_ping(port)[0] == b"+PONG\r\n"

    # A cut of one link: that instance's connections reset, new ones too; the others keep Redis.
    # (Faults last a few seconds: long enough for the checks below on a loaded machine.)
    result = cluster.ctl("redis", "cut", "--instance", "1", "--for", "4s")
    assert "the link to Redis of web.1 is cut for 4s; it heals by itself" in result.stdout
    assert redis_ping(links[1])[0] is None
    assert redis_ping(links[0])[0] == b"+PONG\r\n" and redis_ping(redis_port)[0] == b"+PONG\r\n"
    instances = cluster.instances()
    assert instances[1]["redis_link"]["fault"] == "cut" and 0 < instances[1]["redis_link"]["remaining_seconds"] <= 4
    assert "redis_link" not in instances[0]
    assert "web.1 link to Redis: cut, heals in" in cluster.ctl("status").stdout
    cluster.expect("web.1's link to Redis cut for 4s on request", "web.1's link to Redis healed (it was cut)")
    assert redis_ping(links[1])[0] == b"+PONG\r\n" and "redis_link" not in cluster.instances()[1]

    # A hang of one link: connections are accepted and nothing answers, until it heals.
    result = cluster.ctl("redis", "hang", "-i", "2", "--for", "3s")
    assert "the link to Redis of web.2 is hung for 3s; it heals by itself" in result.stdout
    with pytest.raises(socket.timeout):
        redis_ping(links[2], timeout=0.5)
    assert redis_ping(links[0])[0] == b"+PONG\r\n"
    assert cluster.instances()[2]["redis_link"]["fault"] == "hang"
    cluster.expect("web.2's link to Redis hung for 3s on request", "web.2's link to Redis healed (it was hung)")
    assert redis_ping(links[2])[0] == b"+PONG\r\n"

    # Every link slowed: each reply comes at least the latency late, through every relay.
    result = cluster.ctl("redis", "slow", "--latency", "300ms", "--jitter", "50ms", "--for", "1m")
    assert "the link to Redis of web.0, web.1 and web.2 is slow (+300ms ±50ms) for 1m" in result.stdout
    for port in links.values():
        answer, took = redis_ping(port)
        assert answer == b"+PONG\r\n" and took >= 0.25, (port, took)
    link = cluster.instances()[2]["redis_link"]
    assert link["fault"] == "slow" and link["latency_ms"] == 300 and link["jitter_ms"] == 50
    # Healed by hand, before its time.
    assert "healed the link to Redis of web.0, web.1 and web.2" in cluster.ctl("redis", "heal").stdout
    assert all("redis_link" not in instance for instance in cluster.instances().values())
    assert "nothing to heal" in cluster.ctl("redis", "heal", "-i", "0").stdout

    # A restarted instance keeps its link (same port), and the link keeps its fault.
    cluster.ctl("redis", "slow", "-i", "0", "--latency", "200ms")
    before = cluster.instances()[0]
    cluster.ctl("kill", "0")
    cluster.wait_status("web.0 restarted", lambda s: s["instances"][0]["guid"] != before["guid"] and s["instances"][0]["state"] == "running")
    after = cluster.instances()[0]
    env = get(after["port"], "/env")
    assert json.loads(env["VCAP_SERVICES"])["redis"][0]["credentials"]["port"] == links[0]
    assert after["redis_link"]["fault"] == "slow"

    # Wrong input: a usage error (64) before anything is sent, or the cluster's refusal (1).
    for args, code, message in (
            (("redis", "slow"), 64, "slow needs --latency"),
            (("redis", "slow", "--latency", "5ms", "--jitter", "10ms"), 64, "--jitter 10ms is more than --latency 5ms"),
            (("redis", "slow", "--latency", "20s"), 64, "--latency 20s is not from 1ms to 10s"),
            (("redis", "slow", "--latency", "fast"), 64, "--latency 'fast' is not a duration"),
            (("redis", "cut", "--for", "1h"), 64, "--for '1h' is not a duration from 100ms to 10m"),
            (("redis", "stop", "--instance", "1"), 64, "--instance goes with slow, hang, cut and heal only"),
            (("redis", "cut", "--latency", "1s"), 64, "--latency and --jitter go with slow only"),
            (("redis", "cut", "--instance", "7"), 1, "no instance 7: valid indices are 0, 1, 2"),
    ):
        refused = cluster.ctl(*args, check=False)
        assert refused.returncode == code and message in refused.stderr, (args, refused.returncode, refused.stderr)


def test_wrong_input_gets_a_clear_message_and_a_non_zero_exit(cluster):
    cluster.wait_ready()
    cases = [
        (["kill", "7"], "no instance 7: valid indices are 0, 1, 2"),
        (["stop", "3"], "valid indices are 0, 1, 2"),
        (["scale", "many"], "'many' is not a count"),
        (["scale", "500"], "the count must be 0 to 100"),
        (["scale", "-9"], "cannot scale from 3 to -6"),
        # Parsed by the running supervisor: 3 + this overflowed and crashed it, every instance with it.
        (["scale", "+9223372036854775807"], "cannot scale from 3 by +9223372036854775807 instances: the count must be 0 to 100"),
        (["restart"], "give an instance index or --all"),
        (["restart", "1", "--rolling"], "--rolling goes with --all"),
        (["redis", "flush"], "flush"),
        (["redis", "stop", "--for", "2s"], "--for goes with freeze, slow, hang and cut only"),
        (["freeze", "5"], "no instance 5: valid indices are 0, 1, 2"),
        (["freeze", "0", "--for", "0s"], "--for '0s' is not a duration from 100ms to 10m"),
        (["redis", "freeze", "--for", "1y"], "--for '1y' is not a duration from 100ms to 10m"),
        # Parsed by the running supervisor: this overflowed and crashed it, every instance with it.
        (["freeze", "0", "--for", "1e12"], "--for '1e12' is not a duration from 100ms to 10m"),
        # ArgumentParser read `-1` as an option and said "Missing expected argument '<index>'".
        (["kill", "-1"], "an instance index is 0 or more, not -1"),
        (["restart", "-1"], "an instance index is 0 or more, not -1"),
        (["logs", "-2"], "an instance index is 0 or more, not -2"),
        (["stop", "one"], "'one' is not an instance index"),
        (["start", "1", "2"], "give one instance index, not 1 2"),
        (["logs", "9"], "no instance 9: valid indices are 0, 1, 2"),
    ]
    for args, message in cases:
        result = cluster.ctl(*args, check=False)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
    cluster.ctl("stop", "1", "--wait")
    result = cluster.ctl("kill", "1", check=False)
    assert result.returncode == 1 and "web.1 is not running (it is stopped)" in result.stderr
    # Stopping it again does not claim to stop it (it said "web.1 stopped (SIGTERM ...)" and exited 0).
    result = cluster.ctl("stop", "1", check=False)
    assert result.returncode == 1 and "web.1 is already stopped; `cluster start 1` starts it again" in result.stderr
    # A second cluster on the same state folder is refused.
    second = ClusterRun(config(), state_dir=cluster.state_dir)
    assert second.program.process.wait(timeout=30) == 1
    assert "a cluster is already running with the state folder" in second.output()
    second.close()


def test_chaos_kills_random_running_instances_keeps_some_and_waits_for_recovery(cluster):
    cluster.wait_ready()
    before = {i["index"]: i["guid"] for i in cluster.instances().values()}
    result = cluster.ctl("chaos", "--every", "400ms", "--for", "2s", "--keep", "1", "--redis-every", "1s", "--seed", "7",
                         "--settle", "20s", timeout=60)
    lines = result.stdout.splitlines()
    assert "chaos | every 400ms for 2s: kill (SIGKILL) one running instance at random, leaving at least 1 running; " \
           "restart Redis every 1s; seed 7" in lines[0], lines[0]
    kills = [line for line in lines if "killed with SIGKILL" in line]
    skips = [line for line in lines if "| skip:" in line]
    assert len(kills) + len(skips) == 5, lines  # at 0.4, 0.8, 1.2, 1.6 and 2.0 s
    assert kills, lines
    assert all("and --keep 1 leaves them alone" in line for line in skips)
    assert len([line for line in lines if "| redis restart:" in line]) == 2, lines
    done = next(line for line in lines if "| done:" in line)
    assert f"{len(kills)} kill" in done and "2 Redis restarts" in done
    assert "| ready again after" in lines[-1] and "3/3 running" in lines[-1], lines
    after = cluster.instances()
    assert all(i["state"] == "running" for i in after.values())
    killed = {int(line.split("web.")[1].split(" ")[0]) for line in kills}
    assert all(after[index]["guid"] != before[index] for index in killed), "a killed instance came back with a new guid"
    assert sum(i["crashes"] for i in after.values()) >= len(kills)


def test_chaos_freezes_instances_and_redis_and_waits_until_they_resume(cluster):
    cluster.wait_ready()
    before = {i["index"]: i["guid"] for i in cluster.instances().values()}
    result = cluster.ctl("chaos", "--every", "300ms", "--for", "1s", "--fault", "freeze", "--freeze-for", "800ms", "--keep", "0",
                         "--redis-every", "1s", "--redis-fault", "freeze", "--seed", "3", "--settle", "20s", timeout=60)
    lines = result.stdout.splitlines()
    assert "chaos | every 300ms for 1s: freeze (SIGSTOP for 800ms, then SIGCONT) one running instance at random; " \
           "freeze Redis for 800ms every 1s; seed 3" in lines[0], lines[0]
    frozen = [line for line in lines if "frozen for 800ms; it resumes by itself" in line]
    assert len(frozen) == 3, lines  # at 0.3, 0.6 and 0.9 s: never one that is still frozen
    assert len([line for line in lines if "| redis freeze: redis frozen for 800ms (SIGSTOP)" in line]) == 1, lines
    assert "| done: 3 freezes, 1 Redis freeze in " in "\n".join(lines), lines
    # Ready again only once everything has resumed: nothing is frozen any more when chaos returns.
    assert "| ready again after" in lines[-1] and "3/3 running" in lines[-1], lines
    status = cluster.status()
    assert status["ready"] is True and status["redis"]["state"] == "running"
    assert all("frozen_seconds" not in i for i in status["instances"])
    # A freeze is a hang, not a crash: with a port check, every instance lived through it.
    assert {i["index"]: i["guid"] for i in status["instances"]} == before
    assert all(i["crashes"] == 0 for i in status["instances"])
    cluster.expect("redis resumed (SIGCONT) after 800ms")


def test_chaos_cuts_instances_off_redis_while_they_run(cluster):
    cluster.wait_ready()
    before = {i["index"]: i["guid"] for i in cluster.instances().values()}
    result = cluster.ctl("chaos", "--every", "300ms", "--for", "1s", "--fault", "redis-cut,redis-hang", "--freeze-for", "500ms",
                         "--keep", "0", "--seed", "3", "--settle", "20s", timeout=60)
    lines = result.stdout.splitlines()
    assert "chaos | every 300ms for 1s: cut from Redis (its link reset for 500ms, Redis up for the others) or hang its link to " \
           "Redis (nothing through for 500ms, Redis up for the others) one running instance at random, the fault at random too; " \
           "seed 3" in lines[0], lines[0]
    cuts = [line for line in lines if "is cut for 500ms; it heals by itself" in line]
    hangs = [line for line in lines if "is hung for 500ms; it heals by itself" in line]
    assert len(cuts) + len(hangs) == 3, lines
    assert f"| done: {len(cuts)} link cut" in result.stdout and f", {len(hangs)} link hang" in result.stdout, lines
    assert "| ready again after" in lines[-1] and "3/3 running" in lines[-1], lines
    # Every cut heals by itself; a cut is not a crash: every instance ran through it.
    status = cluster.wait_status("every link healed", lambda s: all("redis_link" not in i for i in s["instances"]))
    assert {i["index"]: i["guid"] for i in status["instances"]} == before
    assert all(i["crashes"] == 0 for i in status["instances"])
    cluster.expect(*(f"link to Redis healed (it was {what})" for what, seen in (("cut", cuts), ("hung", hangs)) if seen))


def test_chaos_with_a_bad_option_or_without_a_cluster_says_so(cluster, tmp_path):
    cases = [
        (["chaos", "--every", "10ms"], "--every must be at least 100ms"),
        (["chaos", "--every", "soon"], "--every 'soon' is not a duration"),
        (["chaos", "--every", "1e12"], "--every '1e12' is not a duration"),  # was a crash: nanoseconds overflowed
        (["chaos", "--for", "0s"], "--for must be more than 0s"),
        (["chaos", "--for", "25h"], "--for must be at most 24h"),
        (["chaos", "--keep=-1"], "--keep must be 0 or more"),
        (["chaos", "--redis-every", "100ms"], "--redis-every must be at least 1s"),
        (["chaos", "--fault", "nuke"], "--fault 'nuke' is not kill, restart, freeze, redis-cut or redis-hang"),
        (["chaos", "--fault", "kill,nuke"], "--fault 'kill,nuke' is not kill, restart, freeze, redis-cut or redis-hang"),
        (["chaos", "--redis-fault", "freeze"], "--redis-fault goes with --redis-every"),
        (["chaos", "--redis-every", "1m", "--redis-fault", "crash"], "crash"),
        (["chaos", "--freeze-for", "2s"], "--freeze-for goes with --fault freeze, redis-cut or redis-hang, or --redis-fault freeze"),
        (["chaos", "--fault", "freeze", "--freeze-for", "20m"], "--freeze-for must be from 100ms to 10m (not 20m0s)"),
        (["chaos", "--redis-every", "2s", "--redis-fault", "freeze", "--freeze-for", "5s"],
         "--freeze-for (5s) must be shorter than --redis-every (2s) with --redis-fault freeze"),
    ]
    for args, message in cases:
        result = cluster.ctl(*args, check=False)
        assert result.returncode == 64, (args, result.returncode, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    result = subprocess.run([str(executable("cluster")), "chaos", "--every", "500ms", "--for", "1s", "--state-dir", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "no cluster is running with the state folder" in result.stderr


def test_chaos_gives_up_on_a_cluster_that_does_not_recover(cluster):
    # With Diego's back-off shrunk 100 times, a kill restarts at once; a stopped instance never comes
    # back by itself, so the cluster is not ready when the settle time ends, and chaos says so.
    cluster.wait_ready()
    cluster.ctl("stop", "2", "--wait")
    result = cluster.ctl("chaos", "--every", "200ms", "--for", "200ms", "--fault", "restart", "--keep", "2", "--settle", "1s",
                         check=False, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "| skip: 2 of 3 instances serving, and --keep 2 leaves them alone" in result.stdout
    assert "| NOT ready 1s after the last fault: 2/3 running" in result.stdout
    # A run that could fault nothing is refused instead of passing (it used to say "0 kills" and exit 0).
    result = cluster.ctl("chaos", "--every", "200ms", "--for", "1s", "--keep", "3", check=False, timeout=60)
    assert result.returncode == 1 and "--keep 3 leaves all 3 instances alone: no fault could happen" in result.stderr, result
    result = cluster.ctl("chaos", "--every", "10s", "--for", "2s", check=False, timeout=60)
    assert result.returncode == 64 and "--for 2s ends before the first fault (at 10s)" in result.stderr, result


@contextlib.contextmanager
def status_watch(*args: str):
    """`cluster status --watch ARGS` running; Ctrl-C (SIGINT) at the end, which must end it with 0."""
    watch = subprocess.Popen([str(executable("cluster")), "status", "--watch", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        yield watch
        watch.send_signal(signal.SIGINT)
        _, errors = watch.communicate(timeout=30)
        assert watch.returncode == 0, (watch.returncode, errors)
    finally:
        if watch.poll() is None:
            watch.kill()


def test_status_watch_shows_each_change_as_it_happens_and_ends_on_ctrl_c(cluster, tmp_path):
    cluster.wait_ready()
    with status_watch("--interval", "200ms", "--state-dir", cluster.state_dir) as watch:
        lines: list[str] = []

        def read_until(pattern: str) -> str:
            deadline = time.monotonic() + 30
            while True:
                assert time.monotonic() < deadline, f"no line matching {pattern} in 30 s: {''.join(lines[-40:])}"
                line = watch.stdout.readline()
                assert line, f"the watch ended: {''.join(lines)}{watch.stderr.read()}"
                lines.append(line)
                if re.search(pattern, line):
                    return line.rstrip("\n")
        read_until(r"^cluster status every 200ms, \d\d:\d\d:\d\d \(Ctrl-C to stop\)$")
        read_until(r"^app web: 3/3 running$")
        before = cluster.instances()[1]
        cluster.ctl("kill", "1")
        # Under the table, kept on the following screens: what happened to web.1. (Restarted at once,
        # it may be running again by the next screen: then no state change shows.)
        line = read_until(r"web\.1 .*crash count 1")
        assert re.fullmatch(r"\d\d:\d\d:\d\d web\.1 (running -> starting, )?crash count 1, new guid [0-9a-f]{8}: "
                            r"killed by signal 9 \(SIGKILL\)", line), line
        assert before["guid"][:8] not in line
        cluster.ctl("redis", "stop")
        read_until(r"^\d\d:\d\d:\d\d redis running -> stopped$")

    # One line of JSON per interval, for a script.
    with status_watch("--json", "--interval", "200ms", "--state-dir", cluster.state_dir) as as_json:
        statuses = [json.loads(as_json.stdout.readline()) for _ in range(2)]
        assert all(len(status["instances"]) == 3 and status["redis"]["state"] == "stopped" for status in statuses), statuses

    # No cluster there: said on the screen, and the watch waits for one.
    with status_watch("--interval", "200ms", "--state-dir", str(tmp_path)) as nothing:
        seen = [nothing.stdout.readline() for _ in range(8)]
        assert any(f"cluster: no cluster is running with the state folder {tmp_path}" in line for line in seen), seen
        assert "waiting for it: the screen comes back when a cluster answers\n" in seen, seen

    for args, message in ((["--interval", "1s"], "--interval goes with --watch"),
                          (["--watch", "--interval", "50ms"], "--interval must be from 200ms to 1m (not 50ms)"),
                          (["--watch", "--interval", "soon"], "--interval 'soon' is not a duration")):
        bad = cluster.ctl("status", *args, check=False)
        assert bad.returncode == 64 and message in bad.stderr, (args, bad.returncode, bad.stderr)


def test_chaos_interrupted_says_what_it_did_and_exits_130(cluster):
    cluster.wait_ready()
    process = subprocess.Popen([str(executable("cluster")), "chaos", "--every", "300ms", "--for", "1m", "--state-dir", cluster.state_dir],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    while not any("killed with SIGKILL" in line for line in lines):
        line = process.stdout.readline()
        assert line, f"chaos ended early: {lines} {process.stderr.read()}"
        lines.append(line)
    process.send_signal(signal.SIGINT)
    rest, errors = process.communicate(timeout=30)
    assert process.returncode == 130, (process.returncode, lines, rest, errors)
    assert "| interrupted: 1 kill" in rest or "| interrupted: 2 kills" in rest, rest
    assert "ready again" not in rest


def test_errors_before_anything_starts(tmp_path):
    cluster = str(executable("cluster"))
    state = ["--state-dir", str(tmp_path / "state")]
    cases = [
        ([cluster, "status", *state], 1, "no cluster is running with the state folder"),
        ([cluster, "up", "--config", str(tmp_path / "missing.yml"), *state], 1, "cannot read the config file"),
        ([cluster, "up", "--affinity", "sticky", *state], 64, "sticky"),
        ([cluster, "up", "--no-proxy", "--app", "no-such-program --x", *state], 1, "'no-such-program' is not in"),
        # A flag's value is a usage error (64), as ArgumentParser's own are; a config file's is not (1).
        ([cluster, "up", "--no-proxy", "--instances", "101", "--app", "true", *state], 64, "--instances '101' is not valid: expected 0 to 100"),
        ([cluster, "up", "--redis-url", "http://x", "--app", "true", *state], 64, "--redis-url 'http://x' is not valid"),
        ([cluster, "up", "--time-scale", "0", "--app", "true", *state], 64, "--time-scale '0' is not valid"),
        # Checked before the cluster is asked, so the real problem is named even with no cluster.
        ([cluster, "freeze", "0", "--for", "5x", *state], 64, "--for '5x' is not a duration from 100ms to 10m"),
        ([cluster, "redis", "freeze", "--for", "1h", *state], 64, "--for '1h' is not a duration from 100ms to 10m"),
    ]
    bad = tmp_path / "bad.yml"
    bad.write_text("proxy:\n  afinity: cf\n")
    cases.append(([cluster, "up", "--config", str(bad), *state], 1, f"{bad}:2: unknown key 'proxy.afinity'"))
    # A wrong value is named where it was set: the file and its line, as written; or the flag.
    wrong = tmp_path / "wrong.yml"
    wrong.write_text("app:\n  command: 'true'\n  instances: 500\nproxy:\n  enabled: off\n")
    cases.append(([cluster, "up", "--config", str(wrong), *state], 1, f"{wrong}:3: app.instances = '500' is not valid: expected 0 to 100"))
    cases.append(([cluster, "up", "--config", str(wrong), "--instances=-1", *state], 64, "--instances '-1' is not valid"))
    for args, code, message in cases:
        result = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert result.returncode == code, (args, result.returncode, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    # A refused `up` removes the state folder it created (it left logs/ and redis/ there).
    assert not (tmp_path / "state").exists(), sorted(str(p) for p in (tmp_path / "state").rglob("*"))


def test_down_and_ctrl_c_leave_no_process_behind(cluster):
    cluster.wait_ready()
    pids = [i["pid"] for i in cluster.instances().values()] + [cluster.status()["redis"]["pid"]]
    assert cluster.down() == 0
    cluster.expect("cluster stopped: every process it started has exited")
    assert not any(process_alive(pid) for pid in pids)
    assert not os.path.exists(os.path.join(cluster.state_dir, "control.sock"))
    # Ctrl-C (SIGINT to cluster) does the same.
    again = ClusterRun(config(instances=2), state_dir=cluster.state_dir)
    try:
        again.wait_ready()
        pids = [i["pid"] for i in again.instances().values()] + [again.status()["redis"]["pid"]]
        os.kill(again.pid, signal.SIGINT)
        assert again.program.process.wait(timeout=60) == 0
        assert not any(process_alive(pid) for pid in pids)
    finally:
        again.close()


def test_under_timeout_the_stop_is_graceful(tmp_path):
    # timeout(1) signals its child and then its own process group, so `cluster up` receives SIGTERM
    # twice at once. That used to count as a second Ctrl-C: everything SIGKILLed, Redis included.
    config_file = tmp_path / "cluster.yml"
    config_file.write_text(json.dumps(config(instances=2)))
    result = subprocess.run(["timeout", "-s", "TERM", "8", str(executable("cluster")), "up", "--config", str(config_file),
                             "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "NO_COLOR": "1"})
    out = result.stdout + result.stderr
    assert "cluster is up" in out and "stopping (received SIGTERM)" in out, out[-3000:]
    assert "killing every process now" not in out, out[-3000:]
    assert out.count("got SIGTERM, exiting") == 2 and "web.0 stopped (exited with code 0)" in out, out[-3000:]
    assert "redis stopped (exited with code 0)" in out and "cluster stopped: every process it started has exited" in out


@pytest.mark.cluster_config(config(instances=1, app={"env": {"TESTAPP_IGNORE_TERM": "1"}}, stop={"grace_period": "30s"}))
def test_a_second_ctrl_c_kills_everything_at_once(cluster):
    cluster.wait_ready()
    pid = cluster.instances()[0]["pid"]
    os.kill(cluster.pid, signal.SIGINT)
    cluster.expect("stopping (received SIGINT)", "got SIGTERM, ignoring it")

    def second_ctrl_c_taken():
        # A Ctrl-C within 250 ms of the first is taken as its twin and logged; press again until one
        # is taken as a second Ctrl-C.
        if "killing every process now" not in cluster.output() and cluster.program.process.poll() is None:
            os.kill(cluster.pid, signal.SIGINT)
        return "received SIGINT again: killing every process now (SIGKILL)" in cluster.output()
    wait_until("a second Ctrl-C to kill everything", second_ctrl_c_taken, interval=0.1)
    assert cluster.program.process.wait(timeout=30) is not None
    wait_until("the instance gone", lambda: not process_alive(pid))


def test_the_next_up_cleans_up_after_a_cluster_killed_with_sigkill(cluster):
    cluster.wait_ready()
    pids = [i["pid"] for i in cluster.instances().values()] + [cluster.status()["redis"]["pid"]]
    os.kill(cluster.pid, signal.SIGKILL)
    cluster.program.process.wait(timeout=10)
    assert all(process_alive(pid) for pid in pids), "orphans are left behind"
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        again = ClusterRun(config(instances=1), state_dir=cluster.state_dir)
        try:
            again.wait_ready()
            assert "was killed and left" in again.output()
            assert "cleaned up" in again.output()
            assert not any(process_alive(pid) for pid in pids)
            assert process_alive(bystander.pid), "only our processes are killed"
            assert again.status()["ready"] is True
        finally:
            again.close()
    finally:
        bystander.kill()
        bystander.wait()


def test_down_stops_what_a_cluster_killed_with_sigkill_left(cluster):
    cluster.wait_ready()
    status = cluster.status()
    pids = [i["pid"] for i in status["instances"]] + [status["redis"]["pid"]]
    os.kill(cluster.pid, signal.SIGKILL)
    # Not reaped yet (as when its parent is slow to reap it): a zombie is a dead cluster too.
    wait_until("the cluster a zombie", lambda: (process_stat(cluster.pid) or ["?"])[0] == "Z")
    assert all(process_alive(pid) for pid in pids), "orphans are left behind"
    # Any command says why the cluster cannot answer, and what to do about what it left.
    result = cluster.ctl("status", check=False)
    assert result.returncode == 1, result
    assert "no cluster is running with the state folder" in result.stderr, result.stderr
    assert f"was killed and left {len(pids)} processes running" in result.stderr, result.stderr
    assert "`cluster down` stops them" in result.stderr, result.stderr
    # down stops them (it said "no cluster is running" and left them running).
    result = cluster.ctl("down")
    assert "was killed and left" in result.stdout and "stopping them" in result.stdout, result.stdout
    assert f"cleaned up {len(pids)} leftover processes" in result.stdout, result.stdout
    assert not any(process_alive(pid) for pid in pids)
    cluster.program.process.wait(timeout=10)
    # Then there is nothing left to stop.
    result = cluster.ctl("down", check=False)
    assert result.returncode == 1 and "no cluster is running" in result.stderr and "stops them" not in result.stderr, result
    # And where to read what the last one said.
    result = cluster.ctl("logs", check=False)
    assert result.returncode == 1 and "The last one's log is in " in result.stderr and "logs/cluster.log" in result.stderr, result


def test_an_external_redis_and_the_process_health_check():
    from harness import RedisServer
    with RedisServer(password="s3cret") as redis:
        # A host name, a password and a database: all kept, and the instances reach it through relays.
        url = f"redis://:s3cret@localhost:{redis.port}/3"
        run = ClusterRun(config(instances=2, health_check={"type": "process"}, redis={"url": url}))
        try:
            run.wait_ready()
            cluster_output = run.output()
            assert f"using the Redis at redis://:***@localhost:{redis.port}/3 (external: " in cluster_output
            assert "healthy after" in cluster_output and "(process check)" in cluster_output
            assert "redis restart" not in cluster_output and "redis cut -i 1 --for 10s" in cluster_output
            links = {}
            for index, instance in run.instances().items():
                # `process`: healthy as soon as it runs, before it listens.
                run.expect(f"listening on {instance['port']}")
                env = get(instance["port"], "/env")
                credentials = json.loads(env["VCAP_SERVICES"])["redis"][0]["credentials"]
                links[index] = credentials["port"]
                assert env["REDIS_URL"] == f"redis://:s3cret@127.0.0.1:{links[index]}/3" == credentials["uri"]
                assert credentials["password"] == "s3cret" and credentials["host"] == "127.0.0.1"
            assert len(set(links.values())) == 2 and redis.port not in links.values(), (links, redis.port)
            for port in links.values():
                assert redis_ping(port)[0].startswith(b"-NOAUTH")
            status = run.status()
            assert status["redis"]["state"] == "external" and status["redis"]["url"] == f"redis://:***@localhost:{redis.port}/3"
            refused = run.ctl("redis", "restart", check=False)
            assert refused.returncode == 1 and "Redis is external" in refused.stderr and "does not manage it" in refused.stderr
            # Its links are the cluster's: one cut, the other still through, Redis untouched.
            result = run.ctl("redis", "cut", "-i", "1", "--for", "4s")
            assert "the link to Redis of web.1 is cut for 4s" in result.stdout
            assert redis_ping(links[1])[0] is None
            assert redis_ping(links[0])[0].startswith(b"-NOAUTH") and redis_ping(redis.port)[0].startswith(b"-NOAUTH")
            run.expect("web.1's link to Redis healed (it was cut)")
            assert redis_ping(links[1])[0].startswith(b"-NOAUTH")
            for index, port in links.items():
                run.expect(f"web.{index} started: pid ", f", Redis through its link 127.0.0.1:{port}")
            # Redis itself gone: the instance sees its connection reset by the link, and the cluster
            # says why once (the instance's own log names only the link's address), then its return.
            redis.kill()
            assert redis_ping(links[0])[0] is None and redis_ping(links[0])[0] is None
            run.expect(f"web.0's link (127.0.0.1:{links[0]}) cannot reach Redis at localhost:{redis.port}: connection refused; "
                       "web.0 sees each connection it opens there accepted, then reset, until Redis answers")
            redis.start()
            assert redis_ping(links[0])[0].startswith(b"-NOAUTH")
            run.expect(f"web.0's link (127.0.0.1:{links[0]}) reaches Redis at localhost:{redis.port} again")
            assert run.output().count("web.0's link (") == 2
        finally:
            run.close()
