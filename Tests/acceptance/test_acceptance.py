"""The acceptance test of the cluster (issue 6), end to end through the built executables.

`cluster up` with 3 chat-node instances, sticky-proxy in `cf` mode and the embedded Redis. 30
python-socketio clients, half long-polling only and half WebSocket only, log in through the proxy and
chat. Then, one after the other:
- kill -9 the instance holding the most clients: every client of it reconnects through the proxy to a
  live instance, is still logged in as the same user, and receives every message sent meanwhile, none
  twice; the killed instance comes back with a new guid;
- `cluster scale 5`, then `cluster scale 1` (the clients of the removed instances move to the last one);
- `cluster redis restart`;
- `cluster restart --all --rolling`: every client moves to a replacement, recovered;
- `cluster chaos` on 3 instances while a client keeps sending: nothing lost, nothing twice; then the
  same with freezes (instances and Redis) instead of kills;
- `cluster redis cut -i I`: one instance partitioned from Redis keeps its clients, loses nothing;
- `cluster redis hang -i I` past chat-node's Redis timeout: a message resent with the same id while
  its first attempt was held is stored once.
Finally the teaching case: long-polling without affinity (`--affinity none`) gets Engine.IO's
"Session ID unknown"; with `cf` it does not.
"""

from __future__ import annotations

import collections
import json
import subprocess
import uuid

import chatkit
import pytest

from cluster_run import ClusterRun, chat_cluster
from harness import executable, wait_until

CLIENTS = 30


class ProxiedChatClient(chatkit.ChatClient):
    """A chat user behind the proxy. Its cookies (JSESSIONID from chat-node, __VCAP_ID__ from the proxy)
    live in one cookie jar that the Engine.IO client shares, as in a browser: when the proxy re-pins
    the user after a crash, the new __VCAP_ID__ is used by every following long-polling request."""

    def connect(self, url: str, recover: bool = True):
        sio = chatkit.RecordingClient(reconnection=False, http_session=self.session)
        sio.on("*", self._on_event)
        sio.on("disconnect", lambda *reason: self.disconnected.set())
        auth = {"pid": self.pid, "offset": self.offset} if recover and self.pid and self.offset else None
        self.disconnected.clear()
        self.welcome = None
        chatkit.connect_or_close(sio, url, auth=auth, transports=chatkit.TRANSPORTS[self.transport], wait_timeout=15)
        self.pid = getattr(sio, "last_connect", {}).get("pid")
        self.sio = sio
        wait_until(f"{self.name}'s welcome", lambda: self.welcome is not None, timeout=15)
        self.recovered = bool(self.welcome.get("recovered"))

    @property
    def instance(self) -> int:
        return int(self.welcome["index"])

    def heal(self, url: str):
        """Reconnects through the proxy (retrying while the cluster settles), recovering the session."""
        def attempt():
            if self.sio is not None:
                chatkit.release(self.sio)
            try:
                self.connect(url)
                return True
            except Exception:  # noqa: BLE001 - refused or cut while instances come and go: try again
                return False
        wait_until(f"{self.name} reconnected through the proxy", attempt, timeout=60, interval=0.2)


@pytest.fixture(scope="module")
def cluster():
    run = ClusterRun(chat_cluster(affinity="cf"))
    try:
        run.wait_ready(timeout=120)
        yield run
    finally:
        run.close()


@pytest.fixture(scope="module")
def clients(cluster):
    url = cluster.proxy_url()
    users = []
    try:
        for number in range(CLIENTS):
            transport = "polling" if number % 2 == 0 else "websocket"
            users.append(ProxiedChatClient(url, f"user{number:02d}", transport=transport))
        yield users
    finally:
        for user in users:
            try:
                user.close()
            except Exception:  # noqa: BLE001
                pass


def send_meanwhile(sender: ProxiedChatClient, tag: str, count: int = 5) -> list[str]:
    ids = []
    for number in range(count):
        message_id = f"{tag}-{number}-{uuid.uuid4().hex[:8]}"
        sender.send_until_stored(f"{tag} message {number}", message_id)
        ids.append(message_id)
    return ids


def assert_everyone_has(clients, ids, cluster):
    try:
        wait_until("every client to have every message", lambda: all(c.has_ids(ids) for c in clients), timeout=60)
    except TimeoutError:
        missing = {c.name: [i for i in ids if i not in set(c.message_ids())] for c in clients if not c.has_ids(ids)}
        raise AssertionError(f"messages missing: {missing}\n{cluster.recent_events()}") from None
    for client in clients:
        assert client.duplicates == [], f"{client.name} received {client.duplicates} twice"
        mine = client.message_ids()
        assert len(mine) == len(set(mine)), f"{client.name} has a message twice"
        order = chatkit.stream_order(client.offsets())
        assert order == sorted(order), f"{client.name} received lines out of order"


def heal_all(clients, url, cluster, expected_instances):
    for client in clients:
        if client.disconnected.is_set() or client.instance not in expected_instances:
            client.heal(url)
        assert client.welcome["user"] == client.name, "still logged in as the same user"
        assert client.instance in expected_instances, (client.name, client.welcome)


def running_indices(cluster) -> set[int]:
    return {i["index"] for i in cluster.status()["instances"] if i["state"] == "running"}


def test_three_instances_serve_thirty_clients(cluster, clients):
    assert len(clients) == CLIENTS
    per_instance = collections.Counter(c.instance for c in clients)
    assert set(per_instance) == {0, 1, 2}, per_instance
    assert all(c.welcome["user"] == c.name for c in clients)
    ids = send_meanwhile(clients[0], "hello", count=3)
    assert_everyone_has(clients, ids, cluster)


def test_kill_9_the_busiest_instance(cluster, clients):
    url = cluster.proxy_url()
    per_instance = collections.Counter(c.instance for c in clients)
    victim = per_instance.most_common(1)[0][0]
    old_guid = cluster.instances()[victim]["guid"]
    victims = [c for c in clients if c.instance == victim]
    survivor = next(c for c in clients if c.instance != victim)
    cluster.ctl("kill", str(victim))
    for client in victims:
        assert client.disconnected.wait(30), f"{client.name} did not notice that its instance died"
    ids = send_meanwhile(survivor, "after-kill")
    for client in victims:
        client.heal(url)
        assert client.welcome["user"] == client.name
        assert client.recovered, f"{client.name} was not recovered: {client.welcome}"
    assert_everyone_has(clients, ids, cluster)
    status = cluster.wait_status("the killed instance back", lambda s: s["instances"][victim]["state"] == "running")
    assert status["instances"][victim]["guid"] != old_guid, "a restarted instance has a new guid"
    assert status["instances"][victim]["crashes"] == 1
    # The whole room still works after the failover.
    assert_everyone_has(clients, send_meanwhile(clients[1], "after-failover", count=2), cluster)


def test_scale_to_five_then_to_one(cluster, clients):
    url = cluster.proxy_url()
    cluster.ctl("scale", "5", "--wait")
    assert running_indices(cluster) == {0, 1, 2, 3, 4}
    # A new user lands on the new instances too.
    newcomers = [ProxiedChatClient(url, f"late{n}", transport="websocket") for n in range(6)]
    try:
        everyone = clients + newcomers
        assert_everyone_has(everyone, send_meanwhile(clients[0], "five"), cluster)
        cluster.ctl("scale", "1", "--wait")
        cluster.wait_status("only chat.0", lambda s: [i["index"] for i in s["instances"]] == [0])
        survivor = next((c for c in everyone if c.instance == 0 and not c.disconnected.is_set()), None)
        if survivor is None:
            survivor = clients[0]
            survivor.heal(url)
        ids = send_meanwhile(survivor, "after-scale-down")
        heal_all(everyone, url, cluster, {0})
        assert_everyone_has(everyone, ids, cluster)
    finally:
        for client in newcomers:
            client.close()


def test_redis_restart(cluster, clients):
    url = cluster.proxy_url()
    result = cluster.ctl("redis", "restart")
    assert "redis restarted" in result.stdout
    ids = send_meanwhile(clients[0] if not clients[0].disconnected.is_set() else clients[1], "after-redis")
    heal_all(clients, url, cluster, running_indices(cluster))
    assert_everyone_has(clients, ids, cluster)


def test_a_rolling_restart_loses_nothing(cluster, clients):
    """`restart --all --rolling`, as Cloud Foundry's rolling strategy: each replacement is routable before
    its old process gets SIGTERM; the old one tells its clients to reconnect, and they land on a live
    instance, still logged in, and recover what was sent while they were away."""
    url = cluster.proxy_url()
    before = {i["index"]: i["guid"] for i in cluster.status()["instances"]}
    result = cluster.ctl("restart", "--all", "--rolling", "--wait", timeout=180)
    assert "rolling restart done" in result.stdout, result.stdout
    status = cluster.wait_status("every old process gone",
                                 lambda s: all(i.get("replacing") is None and i["state"] == "running" for i in s["instances"]))
    assert all(i["guid"] != before[i["index"]] for i in status["instances"]), "every instance has a new guid"
    for client in clients:
        assert client.disconnected.wait(30), f"{client.name} was not told to reconnect by its old instance"
    sender = clients[0]
    sender.heal(url)
    ids = send_meanwhile(sender, "after-rolling")
    heal_all(clients, url, cluster, running_indices(cluster))
    for client in clients[1:]:
        assert client.recovered, f"{client.name} was not recovered: {client.welcome}"
    assert_everyone_has(clients, ids, cluster)


def send_during_chaos(cluster, sender: ProxiedChatClient, tag: str, *chaos_args: str) -> tuple[int, str, list[str]]:
    """Runs `cluster chaos` with these options while `sender` sends one message after each line it prints
    (each fault, then the end): right after an instance went down, while its clients are reconnecting.
    The sender reconnects through the proxy whenever its instance dies, as the page does, and resends
    with the same id until the message is stored. Returns chaos's exit code, its output and the ids."""
    url = cluster.proxy_url()
    chaos = subprocess.Popen([str(executable("cluster")), "chaos", *chaos_args, "--state-dir", cluster.state_dir],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ids = []
    lines = []
    try:
        for line in chaos.stdout:
            lines.append(line)
            message_id = f"{tag}-{len(ids)}-{uuid.uuid4().hex[:8]}"
            while True:
                if sender.disconnected.is_set():
                    sender.heal(url)
                try:
                    sender.send_until_stored(f"during {tag} {len(ids)}", message_id, deadline=10)
                    break
                except TimeoutError:
                    continue
            ids.append(message_id)
        chaos.wait(timeout=180)
    finally:
        if chaos.poll() is None:
            chaos.kill()
    return chaos.returncode, "".join(lines), ids


def test_a_chaos_run_loses_nothing(cluster, clients):
    """`cluster chaos` kills a random instance every second for 3 s while one client sends after each fault,
    reconnecting through the proxy whenever its instance dies, as the page does: afterwards every
    client, reconnected and recovered, has every message once, in order. An instance that crashes a
    third time (the kill test above counts) waits for Diego's back-off, 30 s and the next 30 s
    convergence tick: hence the long --settle."""
    url = cluster.proxy_url()
    cluster.ctl("scale", "3", "--wait")
    returncode, output, ids = send_during_chaos(cluster, clients[1], "chaos",
                                                "--every", "1s", "--for", "3s", "--seed", "11", "--settle", "120s")
    assert returncode == 0, output
    assert "killed with SIGKILL" in output and "ready again" in output, output
    assert len(ids) >= 3, ids
    heal_all(clients, url, cluster, running_indices(cluster))
    assert_everyone_has(clients, ids, cluster)


def test_a_chaos_run_of_freezes_loses_nothing(cluster, clients):
    """Hangs instead of crashes: `cluster chaos --fault freeze` stops a random instance for 1.5 s every
    second, and Redis for 1.5 s every 2 s, while one client sends after each line. With the port
    health check nobody dies: clients of a frozen instance wait, sends through a frozen Redis get an
    error ack or none and are resent with the same id. Afterwards every client has every message
    once, in order, and every instance is the same process (no crash)."""
    url = cluster.proxy_url()
    cluster.ctl("scale", "3", "--wait")
    cluster.wait_ready(timeout=120)
    guids = {i["index"]: i["guid"] for i in cluster.instances().values()}
    returncode, output, ids = send_during_chaos(cluster, clients[1], "freeze",
                                                "--every", "1s", "--for", "4s", "--fault", "freeze", "--freeze-for", "1.5s",
                                                "--redis-every", "2s", "--redis-fault", "freeze", "--seed", "5", "--settle", "60s")
    assert returncode == 0, output
    assert "frozen for 1.5s" in output and "| redis freeze: redis frozen for 1.5s" in output and "ready again" in output, output
    assert len(ids) >= 4, ids
    heal_all(clients, url, cluster, running_indices(cluster))
    assert_everyone_has(clients, ids, cluster)
    assert {i["index"]: i["guid"] for i in cluster.instances().values()} == guids, "a freeze is a hang, not a crash"


def test_an_instance_cut_off_redis_keeps_its_clients_and_loses_nothing(cluster, clients):
    """`cluster redis cut -i I`: one instance partitioned from Redis while the others keep it. Its
    clients stay connected to it; what they send is refused ("not stored") and resent with the same id
    until the link heals; what the others send meanwhile reaches them once it has healed (the gap
    filled from the history). Nothing lost, nothing twice, in order, and no instance restarted."""
    url = cluster.proxy_url()
    cluster.ctl("scale", "3", "--wait")
    cluster.wait_ready(timeout=120)
    heal_all(clients, url, cluster, running_indices(cluster))
    guids = {i["index"]: i["guid"] for i in cluster.instances().values()}
    victim = clients[0].instance
    cut_off = [c for c in clients if c.instance == victim]
    other = next(c for c in clients if c.instance != victim)
    result = cluster.ctl("redis", "cut", "--instance", str(victim), "--for", "5s")
    assert f"the link to Redis of chat.{victim} is cut for 5s" in result.stdout
    beside = send_meanwhile(other, "beside-the-cut", 3)
    # Refused while the link is cut, stored once it heals.
    refused = clients[0].send("in the cut", f"in-the-cut-probe-{uuid.uuid4().hex[:8]}", timeout=10)
    assert refused.get("ok") is False, refused
    inside = send_meanwhile(clients[0], "in-the-cut", 2)
    cluster.expect(f"chat.{victim}'s link to Redis healed (it was cut)")
    assert not any(c.disconnected.is_set() for c in cut_off), "a partition from Redis keeps the clients' sockets"
    assert_everyone_has(clients, beside + inside, cluster)
    assert {i["index"]: i["guid"] for i in cluster.instances().values()} == guids, "a cut link is not a crash"


def test_a_message_sent_into_a_hung_link_is_stored_once(cluster, clients):
    """`cluster redis hang -i I` for longer than chat-node's Redis timeout (5 s): a message sent into
    it gets no answer from Redis; chat-node gives up on the command (an error ack, "not stored") and
    the page resends it with the same id. When the link heals, the first attempt, held meanwhile,
    reaches Redis after all: the id is stored once, so every client has the message once."""
    url = cluster.proxy_url()
    cluster.wait_ready(timeout=120)
    heal_all(clients, url, cluster, running_indices(cluster))
    sender = clients[0]
    result = cluster.ctl("redis", "hang", "--instance", str(sender.instance), "--for", "7s")
    assert f"the link to Redis of chat.{sender.instance} is hung for 7s" in result.stdout
    message_id = f"into-the-hang-{uuid.uuid4().hex[:8]}"
    first = sender.send("into the hang", message_id, timeout=15)
    assert first.get("ok") is False, first
    sender.send_until_stored("into the hang", message_id)
    cluster.expect(f"chat.{sender.instance}'s link to Redis healed (it was hung)")
    assert_everyone_has(clients, [message_id], cluster)


def engineio_polling_errors(base_url: str, sessions: int = 10, requests_per_session: int = 6) -> tuple[int, int]:
    """Logged-in long-polling Engine.IO sessions done by hand: (requests answered "Session ID unknown", requests)."""
    unknown = total = 0
    for number in range(sessions):
        http = chatkit.login(base_url, f"poller{number}")
        handshake = http.get(base_url + "/socket.io/?EIO=4&transport=polling", timeout=10)
        assert handshake.status_code == 200, handshake.text
        sid = json.loads(handshake.text[1:])["sid"]
        session_url = f"{base_url}/socket.io/?EIO=4&transport=polling&sid={sid}"
        # POSTs only: they are answered at once (a GET would be held as a long-poll).
        for body in ["40"] + ['42["join","{}"]'] * (requests_per_session - 1):
            response = http.post(session_url, data=body, timeout=30)
            total += 1
            if response.status_code == 400 and '"Session ID unknown"' in response.text:
                unknown += 1
            elif response.status_code != 200:
                raise AssertionError(f"unexpected answer {response.status_code}: {response.text}")
        http.close()
    return unknown, total


def test_long_polling_needs_affinity(cluster):
    """The teaching case: the same long-polling sessions, with cf affinity and without any."""
    cluster.ctl("scale", "3", "--wait")
    unknown, total = engineio_polling_errors(cluster.proxy_url())
    assert unknown == 0, f"with cf affinity {unknown} of {total} requests got 'Session ID unknown'"
    without = ClusterRun(chat_cluster(affinity="none"))
    try:
        without.wait_ready(timeout=120)
        unknown, total = engineio_polling_errors(without.proxy_url())
        assert unknown > 0, f"without affinity no request of {total} got 'Session ID unknown'"
        # Round robin over 3 instances: about two requests in three land on the wrong instance.
        assert unknown >= total // 3, (unknown, total)
        # And the instance that got such a request says why, in the cluster's log, and so does the proxy.
        without.expect("Session ID unknown: a long-polling request for session", "make it sticky")
        without.expect("An Engine.IO long-polling request for session", "sticky-proxy runs with affinity none, so every request is balanced")
    finally:
        without.close()
    # chat-node sets JSESSIONID: with cf affinity the proxy had nothing to say.
    assert "An Engine.IO" not in cluster.output()


def test_long_polling_breaks_behind_a_second_router():
    """Section 5 of Cloud Foundry's behaviour: a second router in front (`proxy.front_router`) also
    routes with __VCAP_ID__; the two overwrite each other's cookie and stickiness flips."""
    behind = ClusterRun(chat_cluster(front_router=True))
    try:
        behind.wait_ready(timeout=120)
        # Users (and this test) go through the front router.
        assert behind.status()["front_router"]["url"] == behind.proxy_url().replace("127.0.0.1", "localhost") + "/"
        unknown, total = engineio_polling_errors(behind.proxy_url())
        # Every other request is balanced by one router or the other: a third or more go astray.
        assert unknown >= total // 4, (unknown, total)
        table = behind.ctl("status").stdout
        assert "front  http://localhost:" in table and "(a second router in front, affinity cf, running)" in table, table
        # Both routers say why, in the cluster's log: each never had the instance the cookie names.
        for source in ("front   |", "proxy   |"):
            wait_until(f"the {source} router to explain", lambda: any(
                f" {source} " in line and "Another router on this client's path also routes with __VCAP_ID__" in line
                for line in behind.output().splitlines()))
    finally:
        behind.close()
    # The fix for a load balancer in front: a cookie of its own (HAProxy's), and __VCAP_ID__ passes through.
    fixed = ClusterRun(chat_cluster(front_router=True, front_router_affinity="haproxy"))
    try:
        fixed.wait_ready(timeout=120)
        fixed.expect("the front router pins with a cookie of its own, SERVERID, and the app router's cookie passes through")
        unknown, total = engineio_polling_errors(fixed.proxy_url())
        assert unknown == 0, f"with HAProxy's cookie in front {unknown} of {total} requests got 'Session ID unknown'"
        assert "Another router on this client's path" not in fixed.output()
    finally:
        fixed.close()
