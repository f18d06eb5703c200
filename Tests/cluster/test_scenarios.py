"""Scenario files of Configs/scenarios run as a user runs them: `cluster up --config <file>` with the
real chat-node and the embedded Redis, then the commands the file's comment gives, checking that what
it says happens does happen."""

import json
import time
import urllib.error
import urllib.request

from cluster_run import ClusterRun, chat_cluster
from harness import REPO, SOCKETIO_JS, wait_until

SCENARIOS = REPO / "Configs" / "scenarios"


def scenario(name: str, *args: str) -> ClusterRun:
    """`cluster up --config Configs/scenarios/<name>` on a free proxy port."""
    return ClusterRun(SCENARIOS / name, args=["--port", "0", *args], env={"SOCKETIO_CLIENT_JS": str(SOCKETIO_JS)})


def health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def redis_down(port: int) -> bool:
    status, report = health(port)
    return status == 503 and report["redis"] == "down"


def test_deep_health_check_turns_a_redis_blip_into_an_outage():
    with scenario("deep-health-check.yml") as cluster:
        cluster.wait_ready()
        before = cluster.instances()
        assert len(before) == 3 and all(instance["state"] == "running" for instance in before.values())
        cluster.ctl("redis", "stop")
        # Every instance fails its liveness check on /health and is killed.
        for index, instance in before.items():
            cluster.expect(f"chat.{index} Instance became unhealthy: Failed to make HTTP request to '/health' on port "
                           f"{instance['port']}: received status code 503; killing it (SIGKILL)")
        # The restarts cannot reach Redis: exit code 4 at once, the crash count climbs into the back-off.
        cluster.expect("chat-node cannot reach Redis at", "crashed: exited with code 4")
        cluster.wait_status("every instance in Diego's back-off (crash 3 or more)",
                            lambda s: all(i["crashes"] >= 3 and i["state"] != "running" for i in s["instances"]), timeout=60)
        cluster.ctl("redis", "start")
        back = cluster.wait_status("every instance running again", lambda s: all(i["state"] == "running" for i in s["instances"]),
                                   timeout=90)
        assert all(i["guid"] != before[i["index"]]["guid"] for i in back["instances"])
        for instance in back["instances"]:
            assert health(instance["port"])[0] == 200


def test_deep_health_check_turns_a_partition_of_one_instance_into_a_crash_loop_of_it():
    with scenario("deep-health-check.yml") as cluster:
        cluster.wait_ready()
        before = cluster.instances()
        cluster.ctl("redis", "cut", "--instance", "1", "--for", "5s")
        cluster.expect(f"chat.1 Instance became unhealthy: Failed to make HTTP request to '/health' on port {before[1]['port']}: "
                       "received status code 503; killing it (SIGKILL)")
        # Its restarts cannot reach Redis through the cut link either: into Diego's back-off.
        cluster.wait_status("chat.1 in Diego's back-off", lambda s: s["instances"][1]["crashes"] >= 3, timeout=30)
        cluster.expect("chat.1's link to Redis healed (it was cut)")
        back = cluster.wait_status("chat.1 running again", lambda s: s["instances"][1]["state"] == "running", timeout=60)
        # The others kept Redis and their processes all along.
        after = {i["index"]: i for i in back["instances"]}
        assert all(after[i]["guid"] == before[i]["guid"] and after[i]["crashes"] == 0 for i in (0, 2)), (
            f"{instance_lines(before, after)}\n{cluster.recent_events()}")
        assert after[1]["guid"] != before[1]["guid"] and health(after[1]["port"])[0] == 200


def test_the_same_blip_with_a_port_check_loses_no_instance():
    with scenario("deep-health-check.yml", "--health-check", "port") as cluster:
        cluster.wait_ready()
        before = cluster.instances()
        cluster.ctl("redis", "stop")
        # The app knows Redis is gone ...
        wait_until("every /health saying Redis is down", lambda: all(redis_down(i["port"]) for i in before.values()))
        # ... and the port checks that run meanwhile keep every instance. Nothing happening is the
        # point, so this waits for two and a half liveness intervals (2 s in the file, which
        # ClusterConfigTests checks): the supervisor reports no passed check to wait on.
        time.sleep(5)
        during = cluster.instances()
        assert all(during[i]["guid"] == before[i]["guid"] and during[i]["state"] == "running" and during[i]["crashes"] == 0
                   for i in before), cluster.recent_events()
        assert "became unhealthy" not in cluster.output()
        cluster.ctl("redis", "start")
        wait_until("every /health at 200 again", lambda: all(health(i["port"])[0] == 200 for i in before.values()))
        assert all(i["crashes"] == 0 for i in cluster.instances().values())


def test_the_same_endpoint_as_a_readiness_check_takes_the_app_off_the_router_and_back_without_a_restart():
    with scenario("deep-health-check.yml", "--health-check", "port", "--readiness-check", "http") as cluster:
        cluster.wait_ready()
        before = cluster.instances()
        url = cluster.proxy_url()

        def answer():
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return response.status, response.headers.get("X-Cf-Routererror")
            except urllib.error.HTTPError as error:
                return error.code, error.headers.get("X-Cf-Routererror")

        assert answer() == (200, None)
        cluster.ctl("redis", "stop")
        for index, instance in before.items():
            cluster.expect(f"chat.{index} failed its readiness check: Failed to make HTTP request to '/health' on port "
                           f"{instance['port']}: received status code 503; marked not ready and removed from the route pool "
                           "(it keeps running; nothing is restarted)")
        # No instance left in the pool: the route is gone, as on Cloud Foundry.
        wait_until("the proxy answering 404 unknown_route", lambda: answer() == (404, "unknown_route"))
        during = cluster.instances()
        # Still running, out of the pool, and not restarted (the same guid, the crash count it had).
        assert all(during[i]["state"] == "running" and during[i]["routable"] is False and during[i]["guid"] == before[i]["guid"]
                   and during[i]["crashes"] == before[i]["crashes"] for i in before), (
            f"{instance_lines(before, during)}\n{cluster.recent_events()}")
        cluster.ctl("redis", "start")
        wait_until("the app routed again", lambda: answer() == (200, None), timeout=30)
        # The proxy answers as soon as one instance is back; each comes back when its own Redis client
        # and subscription have reconnected. A failed check of an instance still out of the pool says
        # nothing new, so the cut below must find chat.1 routed.
        after = cluster.wait_status("every instance routed again",
                                    lambda s: all(i["routable"] is True for i in s["instances"]), timeout=30)
        after = {instance["index"]: instance for instance in after["instances"]}
        assert all(after[i]["guid"] == before[i]["guid"] and after[i]["crashes"] == before[i]["crashes"] for i in before), (
            f"{instance_lines(before, after)}\n{cluster.recent_events()}")
        assert "became unhealthy" not in cluster.output()
        # One instance partitioned from Redis: it alone leaves the pool, the app keeps answering.
        cluster.ctl("redis", "cut", "--instance", "1", "--for", "3s")
        # The second time it says so: the first was for the Redis stop above.
        cluster.wait_for_output(f"chat.1 failed its readiness check: Failed to make HTTP request to '/health' on port {before[1]['port']}",
                                count=2, timeout=15)
        during = cluster.instances()
        assert during[1]["routable"] is False and during[0]["routable"] is True and during[2]["routable"] is True, (
            f"{instance_lines(before, during)}\n{cluster.recent_events()}")
        assert answer() == (200, None)
        cluster.expect("chat.1's link to Redis healed (it was cut)")
        cluster.wait_status("chat.1 routed again", lambda s: s["instances"][1]["routable"] is True, timeout=30)
        assert cluster.instances()[1]["guid"] == before[1]["guid"]


def instance_lines(before: dict[int, dict], now: dict[int, dict]) -> str:
    """A line per instance, before and now: what a failed assertion on the status shows."""
    def line(i: dict | None) -> str:
        if i is None:
            return "gone"
        return f"{i['state']}, routable {i.get('routable')}, guid {i.get('guid')}, crashes {i['crashes']}"
    return "\n".join(f"chat.{index}: before {line(before.get(index))}; now {line(now.get(index))}"
                     for index in sorted(set(before) | set(now)))


# `cluster chaos --users`: simulated users who log in to chat-node and browse it while instances are killed.
USERS = ["--every", "1s", "--for", "2s", "--seed", "5", "--settle", "60s", "--users", "6", "--users-every", "50ms",
         "--users-login", "/user", "--users-check", "data-user=", "--max-lost-sessions", "0"]


def users_line(output: str) -> str:
    lines = [line for line in output.splitlines() if "chaos | simulated users meanwhile: " in line]
    assert len(lines) == 1, output
    return lines[0]


def test_simulated_users_lose_sessions_kept_in_memory_and_keep_those_in_redis():
    """The lesson of the sessions-in-memory scenario, as a CI gate: the same chaos run with the same
    simulated users fails on chat-node with SESSION_STORE=memory (a user the router moves off a killed
    instance lands on one that never heard of its session and gets the login page) and passes with the
    sessions in Redis (moved, and still logged in)."""
    with scenario("sessions-in-memory.yml") as run:
        run.wait_ready(timeout=120)
        lost = run.ctl("chaos", *USERS, check=False, timeout=120)
    assert lost.returncode == 1, lost.stdout + lost.stderr
    assert "6 simulated users, each with its own cookies: GET / through http://localhost:" in lost.stdout, lost.stdout
    line = users_line(lost.stdout)
    assert "; 6 sessions started;" in line, line
    assert "moved to another instance" in line, line
    assert "LOST by" in line and 'without "data-user=" (logged out)' in line, line
    assert "keep them in a store all instances share, such as Redis" in line, line
    assert lost.stdout.splitlines()[-1].endswith("more than --max-lost-sessions 0"), lost.stdout
    assert "FAILED: the simulated users lost " in lost.stdout.splitlines()[-1], lost.stdout

    with ClusterRun(chat_cluster()) as run:
        run.wait_ready(timeout=120)
        kept = run.ctl("chaos", *USERS, check=False, timeout=120)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    line = users_line(kept.stdout)
    assert "; 6 sessions started;" in line and "moved to another instance" in line, line
    assert line.endswith("; no session lost"), line
    assert "killed with SIGKILL" in kept.stdout, kept.stdout
