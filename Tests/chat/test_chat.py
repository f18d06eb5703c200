"""The chat across instances: one global order, recovery after kill -9 / SIGTERM / a Redis restart
(every missed message exactly once, in order, on ANY instance), presence, bad input, metrics."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import redis as redis_py
import requests

import harness
from chatkit import ChatClient, StreamReadHold, login, stream_order


def assert_exactly_once_in_order(client: ChatClient, ids: list[str]):
    assert not client.duplicates, f"{client.name} got duplicates: {client.duplicates}"
    offsets = client.offsets()
    assert stream_order(offsets) == sorted(stream_order(offsets)), f"{client.name} got lines out of order"
    received = [i for i in client.message_ids() if i in set(ids)]
    assert sorted(received) == sorted(ids), f"{client.name} is missing {set(ids) - set(received)}"
    assert len(received) == len(set(received))


def test_clients_on_two_instances_see_each_others_messages_in_the_same_order(nodes):
    one, two = nodes(2)
    clients = [ChatClient(one, "ada", "websocket"), ChatClient(one, "bob", "polling"),
               ChatClient(two, "cy", "upgrade"), ChatClient(two, "dee", "polling")]
    sent: list[str] = []
    lock = threading.Lock()

    def chatter(client: ChatClient):
        for index in range(25):
            message_id = f"{client.name}-{index}"
            ack = client.send(f"{client.name} says {index} <i>", message_id)
            assert ack["ok"] and ack["id"] == message_id and not ack["duplicate"]
            with lock:
                sent.append(message_id)

    threads = [threading.Thread(target=chatter, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(sent) == 100
    for client in clients:
        harness.wait_until(f"{client.name} to get all 100", lambda c=client: c.has_ids(sent), timeout=30)
        assert_exactly_once_in_order(client, sent)
    orders = [[i for i in client.message_ids() if i in set(sent)] for client in clients]
    assert all(order == orders[0] for order in orders), "clients disagree on the order"
    # Lines carry the server time and the instance that handled them.
    line = clients[2].lines[-1][1]
    assert isinstance(line["time"], int) and line["instance"] in (one.guid, two.guid)
    for client in clients:
        client.close()


def test_logging_out_closes_the_sessions_chat_connections_on_every_instance(nodes):
    # Two tabs of one login, on two instances. Logging out in one used to leave the other chatting
    # under the user's name until it happened to reconnect.
    one, two = nodes(2)
    here = ChatClient(one, "ada")
    there = ChatClient(two, "ada", "polling", session=here.session)
    bob = ChatClient(two, "bob")
    assert there.send("from the second tab", "tab-1")["ok"]
    response = here.session.post(one.url + "/logout", allow_redirects=False, timeout=10)
    assert response.status_code in (302, 303), response.status_code
    for tab in (here, there):
        assert tab.disconnected.wait(10), "a tab of the logged-out session is still connected"
        with tab.lock:
            assert any(event == "logged_out" for event, _ in tab.events), f"{tab.transport} tab was not told"
    # Its pages cannot come back: the session is gone (the CONNECT is refused: "not logged in").
    with pytest.raises(Exception, match="failed to connect"):
        ChatClient(two, "ada", session=here.session)
    assert not bob.disconnected.is_set()
    assert bob.send("still here", "tab-2")["ok"]
    bob.close()


def test_logging_in_as_someone_else_ends_the_replaced_sessions_tabs(nodes):
    # A login replaces the browser's session (the old one is destroyed). Its tabs, on any instance,
    # used to go on chatting under the old name until they happened to reconnect.
    one, two = nodes(2)
    ada = ChatClient(one, "ada")
    other_tab = ChatClient(two, "ada", "polling", session=ada.session)
    response = ada.session.post(one.url + "/user", data={"user": "bob"}, allow_redirects=False, timeout=10)
    assert response.status_code in (302, 303), response.status_code
    for tab in (ada, other_tab):
        assert tab.disconnected.wait(10), f"a {tab.transport} tab of the replaced session is still connected"
        with tab.lock:
            assert any(event == "logged_out" for event, _ in tab.events)
    bob = ChatClient(one, "bob", session=ada.session)
    assert bob.welcome["user"] == "bob"
    bob.close()


def test_a_login_while_redis_is_down_gets_the_login_form_again(redis, nodes):
    # The 503 used to be a text page that reloaded itself; a reload of POST /user is a GET of /user,
    # which is no page (404), where the user stayed even once Redis was back.
    (node,) = nodes(1)
    redis.kill()
    try:
        response = requests.post(node.url + "/user", data={"user": "ada"}, allow_redirects=False, timeout=10)
        assert response.status_code == 503
        assert response.headers["Content-Type"].startswith("text/html") and "Refresh" not in response.headers
        assert "The chat&#39;s Redis is unavailable right now" in response.text or "Redis is unavailable right now" in response.text
        assert '<form' in response.text and "127.0.0.1" not in response.text.split("<form")[0]
    finally:
        redis.start()


def test_a_logout_while_redis_is_down_asks_again_with_the_reason(redis, nodes):
    # The 503 was a text page that reloaded itself; a reload of POST /logout is a GET, which only asks:
    # one more click, and no word of why the first one did nothing.
    (node,) = nodes(1)
    session = login(node.url, "ada")
    redis.kill()
    try:
        response = session.post(node.url + "/logout", allow_redirects=False, timeout=10)
        assert response.status_code == 503 and response.headers["Retry-After"] == "2"
        assert response.headers["Content-Type"].startswith("text/html") and "Refresh" not in response.headers
        assert "Set-Cookie" not in response.headers, "the session was not ended: the cookie stays"
        assert "Redis is unavailable right now, so you are still logged in" in response.text
        assert '<form method="post" action="/logout">' in response.text and "logged in as" not in response.text
        assert "127.0.0.1" not in response.text.split("<footer")[0]
    finally:
        redis.start()
    # The same button, once Redis is back (the instance reconnects), logs out.
    response = harness.wait_until("a logout once Redis is back", lambda: (
        lambda answer: answer if answer.status_code != 503 else None)(session.post(node.url + "/logout", allow_redirects=False, timeout=10)))
    assert response.status_code == 303 and "Max-Age=0" in response.headers["Set-Cookie"]


def test_a_logout_published_while_an_instance_resubscribes_still_ends_its_tabs(redis, nodes):
    # Every subscriber connection is cut, and the logout is published before instance two has
    # subscribed again: its pub/sub message is lost. Instance two then looks its sessions up.
    one, two = nodes(2)
    here = ChatClient(one, "ada")
    there = ChatClient(two, "ada", "websocket", session=here.session)
    admin = redis_py.Redis(port=redis.port)
    admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    response = here.session.post(one.url + "/logout", allow_redirects=False, timeout=10)
    assert response.status_code in (302, 303)
    assert there.disconnected.wait(15), "the other tab of the logged-out session is still connected"


def test_the_same_message_id_is_stored_once(nodes):
    (node,) = nodes(1)
    ada = ChatClient(node, "ada")
    first = ada.send("once", "dup-1")
    again = ada.send("once", "dup-1")
    assert first["ok"] and again["ok"] and again["duplicate"] and again["offset"] == first["offset"]
    ada.send("marker", "dup-2")
    harness.wait_until("the marker", lambda: "dup-2" in ada.message_ids())
    assert ada.message_ids().count("dup-1") == 1
    ada.close()


def test_a_fresh_page_gets_the_recent_history(nodes):
    one, two = nodes(2)
    ada = ChatClient(one, "ada")
    ids = [f"h{i}" for i in range(5)]
    for message_id in ids:
        ada.send("history " + message_id, message_id)
    late = ChatClient(two, "bob", "polling")
    harness.wait_until("history on the other instance", lambda: late.has_ids(ids))
    assert_exactly_once_in_order(late, ids)
    assert late.welcome["recovered"] is False
    assert late.offset == late.offsets()[-1]  # the welcome carries the recovery position
    ada.close()
    late.close()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_kill_9_clients_recover_every_missed_message_on_the_other_instance(nodes, transport):
    doomed, survivor = nodes(2)
    moving = [ChatClient(doomed, f"mover{i}", transport) for i in range(3)]
    staying = ChatClient(survivor, "stayer", "websocket")
    before = [f"before-{i}" for i in range(5)]
    for message_id in before:
        assert staying.send("before " + message_id, message_id)["ok"]
    for client in moving:
        harness.wait_until(f"{client.name} before the crash", lambda c=client: c.has_ids(before))
    doomed.kill()
    for client in moving:
        assert client.disconnected.wait(30), f"{client.name} did not notice the crash"
    during = [f"during-{i}" for i in range(10)]
    for message_id in during:
        assert staying.send("while the instance is dead " + message_id, message_id)["ok"]
    for client in moving:
        client.reconnect(survivor.url)
        assert client.recovered, f"{client.name} was not recovered (pid changed)"
        assert client.welcome["recovered"] is True
    after = []
    for client in moving:
        message_id = f"after-{client.name}"
        ack = client.send("back " + message_id, message_id)
        assert ack["ok"]
        after.append(message_id)
    everything = before + during + after
    for client in moving + [staying]:
        harness.wait_until(f"{client.name} to have everything", lambda c=client: c.has_ids(everything), timeout=30)
        assert_exactly_once_in_order(client, everything)
    # Still logged in as the same user after the failover.
    names = {line["user"] for _, line in staying.lines if line.get("id", "").startswith("after-")}
    assert names == {client.name for client in moving}
    assert survivor.metrics()['chat_recoveries_total{result="recovered"}'] >= 3
    for client in moving + [staying]:
        client.close()


@pytest.mark.parametrize("transport", ["polling", "websocket"])
def test_a_client_that_missed_more_than_its_queue_holds_recovers(nodes, transport):
    # 600 lines of about 2 KB while the client is away: 1.3 MB owed, over the 1 MiB a client's queue
    # may hold. Replayed line by line, the replay closed a long-polling client as slow; it came back
    # with the same offset, got the same replay, and so on while its offset stayed in the log.
    one, two = nodes(2)
    away = ChatClient(one, "away", transport)
    talker = ChatClient(two, "talker", "websocket")
    assert talker.send("before", "big-0")["ok"]
    harness.wait_until("the first line", lambda: away.has_ids(["big-0"]))
    away.close()
    ids = [f"big-{index}" for index in range(1, 601)]
    for message_id in ids:
        assert talker.send(message_id + " " + "x" * 1990, message_id)["ok"]
    away.reconnect(one.url)
    assert away.recovered and away.welcome["recovered"] is True
    harness.wait_until("every missed line", lambda: away.has_ids(ids), timeout=60)
    assert_exactly_once_in_order(away, ids)
    assert not away.disconnected.is_set(), "the client was closed"
    assert away.send("still here", "big-after")["ok"]
    away.close()
    talker.close()


def test_an_instance_delivers_more_lines_than_its_subscription_queue_holds(nodes):
    # The hub takes at most 1,024 subscription events into its queue at a time (ChatHub.backlogLimit)
    # and counts each one out; one not counted out would stall the live delivery after that many (the
    # position check, off here, would then deliver the rest late, from the stream).
    (node,) = nodes(1, HISTORY_LIMIT="2000", POSITION_CHECK_MS="0")
    listener = ChatClient(node, "listener")
    talker = ChatClient(node, "talker")
    ids = [f"many-{index}" for index in range(1_100)]
    for message_id in ids:  # without waiting for each ack: the lines arrive faster than one by one
        talker.sio.emit("chat", json.dumps({"action": "message", "msg": message_id, "id": message_id}))
    harness.wait_until("every line", lambda: listener.has_ids(ids), timeout=60)
    assert_exactly_once_in_order(listener, ids)
    listener.close()
    talker.close()


def leave_and_miss(node, prefix: str, count: int) -> tuple[ChatClient, ChatClient, list[str]]:
    """"away" sees one line and leaves; "talker" then sends `count` lines: away, talker, and the ids
    away missed."""
    away = ChatClient(node, "away")
    talker = ChatClient(node, "talker")
    assert talker.send("before", f"{prefix}-0")["ok"]
    harness.wait_until("the first line", lambda: away.has_ids([f"{prefix}-0"]))
    away.close()
    missed = [f"{prefix}-{index}" for index in range(1, count + 1)]
    for message_id in missed:
        assert talker.send(message_id, message_id)["ok"]
    return away, talker, missed


def test_a_client_whose_session_expired_still_gets_every_line_after_its_offset(nodes, redis):
    # Away longer than RECOVERY_WINDOW (its session snapshot gone), but the stream still holds its
    # offset: it used to get only the last RECENT_HISTORY lines, a silent hole before them. When the
    # stream no longer holds the offset, the welcome says lines are missing (the page shows it).
    (node,) = nodes(1, RECENT_HISTORY="20")
    admin = redis_py.Redis(port=redis.port)
    away, talker, ids = leave_and_miss(node, "exp", 50)
    for key in admin.scan_iter("chat:sio:*"):
        admin.delete(key)  # the recovery window passed
    away.reconnect(node.url)
    assert not away.recovered and away.welcome["recovered"] is False and "gap" not in away.welcome
    harness.wait_until("every line after its offset", lambda: away.has_ids(ids), timeout=20)
    assert_exactly_once_in_order(away, ["exp-0", *ids])

    # Now the stream loses the client's position (trimmed to its last 5 lines).
    away.close()
    more = [f"exp-{index}" for index in range(51, 61)]
    for message_id in more:
        assert talker.send(message_id, message_id)["ok"]
    admin.xtrim("chat:history", maxlen=5, approximate=False)
    for key in admin.scan_iter("chat:sio:*"):
        admin.delete(key)
    away.reconnect(node.url)
    assert away.welcome.get("gap") is True, away.welcome
    harness.wait_until("the recent lines", lambda: away.has_ids(more[-5:]), timeout=20)
    away.close()
    talker.close()


def test_a_client_recovering_on_a_new_instance_gets_more_than_a_page_of_missed_lines(nodes):
    # HISTORY_LIMIT 20, 30 lines missed: the stream keeps them all (its trimming is approximate), and
    # the instance the client comes back to started after they were sent, so none is in its memory.
    # It read one page of 20 from Redis and the 10 after it were lost.
    (first,) = nodes(1, HISTORY_LIMIT="20")
    away = ChatClient(first, "away")
    assert away.send("before", "page-0")["ok"]
    harness.wait_until("the first line", lambda: away.has_ids(["page-0"]))
    away.close()
    sender = ChatClient(first, "sender")
    ids = [f"page-{index}" for index in range(1, 31)]
    for message_id in ids:
        assert sender.send(message_id, message_id)["ok"]
    (late,) = nodes(1, HISTORY_LIMIT="20")
    away.reconnect(late.url)
    assert away.recovered
    harness.wait_until("every missed line", lambda: away.has_ids(ids), timeout=20)
    assert_exactly_once_in_order(away, ids)
    away.close()
    sender.close()


@pytest.mark.parametrize("hold", [3, 7], ids=["slow-read", "read-times-out"])
def test_a_slow_catch_up_read_does_not_hold_up_live_delivery(nodes, redis, hold):
    # A client comes back with an offset older than what the instance holds in memory (it started
    # after those lines), so its lines are read from the stream. That read ran inside the delivery
    # loop: while it took, no line reached anyone on the instance; hundreds of clients failing over
    # to a fresh instance each held it up in turn. Here the read is held in a relay between the
    # instance and Redis; a line sent meanwhile must reach a listener there during the hold. Held
    # 7 s, the read times out (5 s): the client then got only the lines read so far and never the
    # rest; the read is now tried again.
    (other,) = nodes(1, HISTORY_LIMIT="20")
    away, talker, missed = leave_and_miss(other, "hold", 30)
    relay = StreamReadHold(redis.port, seconds=hold)
    try:
        (fresh,) = nodes(1, HISTORY_LIMIT="20", REDIS_URL=relay.url)
        listener = ChatClient(fresh, "listener")
        relay.armed.set()
        returning = threading.Thread(target=away.reconnect, args=(fresh.url,), daemon=True)
        returning.start()
        assert relay.holding.wait(10), "the catch-up read never reached Redis"
        assert talker.send("live while the read is held", "hold-live")["ok"]
        harness.wait_until("the live line, or the end of the hold",
                           lambda: listener.has_ids(["hold-live"]) or relay.released.is_set(), timeout=20)
        assert listener.has_ids(["hold-live"]) and not relay.released.is_set(), \
            "the live line waited for another socket's catch-up read"
        returning.join(20)
        assert away.recovered and away.welcome["recovered"] is True
        harness.wait_until("every missed line and the live one", lambda: away.has_ids([*missed, "hold-live"]), timeout=20)
        assert_exactly_once_in_order(away, [*missed, "hold-live"])
        # The welcome comes after the replay and before any live line.
        events = [event for event, _ in away.events]
        welcome_at = len(events) - 1 - events[::-1].index("welcome")
        replayed = [json.loads(args[0]).get("id") for event, args in away.events[:welcome_at] if event == "chat"]
        assert set(missed) <= set(replayed), "the welcome came before the replay"
        listener.close()
        away.close()
    finally:
        relay.close()
    talker.close()


def test_many_clients_catching_up_at_once_while_the_chat_goes_on_get_every_line_once(nodes):
    # Twenty clients fail over at once to an instance that started after the lines they missed, while
    # another user keeps talking: each reads its lines from the stream on its own while the instance
    # delivers the live lines; every client ends with every line once, in stream order.
    (first,) = nodes(1)
    movers = [ChatClient(first, f"mover{index}", "websocket" if index % 2 else "polling") for index in range(20)]
    talker = ChatClient(first, "talker")
    assert talker.send("before", "many-0")["ok"]
    for client in movers:
        harness.wait_until(f"{client.name}'s first line", lambda c=client: c.has_ids(["many-0"]))
        client.close()
    missed = [f"many-{index}" for index in range(1, 61)]
    for message_id in missed:
        assert talker.send(message_id, message_id)["ok"]
    (fresh,) = nodes(1)
    live: list[str] = []
    stop = threading.Event()

    def keep_talking():
        index = 0
        while not stop.is_set():
            message_id = f"many-live-{index}"
            if talker.send(message_id, message_id)["ok"]:
                live.append(message_id)
            index += 1
            time.sleep(0.01)

    speaker = threading.Thread(target=keep_talking, daemon=True)
    speaker.start()
    returning = [threading.Thread(target=client.reconnect, args=(fresh.url,), daemon=True) for client in movers]
    for thread in returning:
        thread.start()
    for thread in returning:
        thread.join(60)
    harness.wait_until("lines after the clients came back", lambda: len(live) >= 20)
    stop.set()
    speaker.join(10)
    for client in movers:
        assert client.recovered, f"{client.name} was not recovered"
        harness.wait_until(f"{client.name} to have every line", lambda c=client: c.has_ids([*missed, *live]), timeout=30)
        assert_exactly_once_in_order(client, [*missed, *live])
    for client in movers:
        client.close()
    talker.close()


def test_sigterm_drains_and_loses_nothing_acknowledged(nodes):
    leaving, staying = nodes(2, DRAIN_TIMEOUT="5")
    ada = ChatClient(leaving, "ada", "polling")
    cy = ChatClient(leaving, "cy", "websocket")
    bob = ChatClient(staying, "bob")
    acked: list[str] = []
    stop = threading.Event()

    def chatter():
        index = 0
        while not stop.is_set():
            message_id = f"bob-{index}"
            ack = bob.send("tick " + message_id, message_id)
            if ack.get("ok"):
                acked.append(message_id)
            index += 1
            time.sleep(0.01)

    thread = threading.Thread(target=chatter)
    thread.start()
    harness.wait_until("some traffic", lambda: len(acked) >= 10)
    started = time.monotonic()
    code = leaving.terminate(timeout=30)
    elapsed = time.monotonic() - started
    assert code == 0, leaving.program.log_path.read_text()
    assert elapsed < 15, f"SIGTERM took {elapsed:.1f}s with DRAIN_TIMEOUT=5"
    for client in (ada, cy):
        assert client.disconnected.wait(10), f"{client.name} was not told to reconnect"
        client.reconnect(staying.url)
        assert client.recovered, f"{client.name} was not recovered"
    harness.wait_until("more traffic", lambda: len(acked) >= 30)
    stop.set()
    thread.join(30)
    for client in (ada, cy):
        harness.wait_until(f"{client.name} to have every acknowledged message", lambda c=client: c.has_ids(acked), timeout=30)
        assert_exactly_once_in_order(client, acked)
    assert "chat-node stopped" in leaving.program.log_path.read_text()
    for client in (ada, cy, bob):
        client.close()


def test_redis_restart_mid_chat_loses_nothing_acknowledged(redis, nodes):
    one, two = nodes(2)
    ada = ChatClient(one, "ada")
    bob = ChatClient(two, "bob", "polling")
    acked: list[str] = []
    errors: list[dict] = []
    stop = threading.Event()

    def chatter(client: ChatClient):
        index = 0
        while not stop.is_set():
            message_id = f"{client.name}-{index}"
            try:
                ack = client.send("tick " + message_id, message_id, timeout=5)
            except Exception:  # noqa: BLE001 - a timeout is "not sent": resend the same id
                continue
            if ack.get("ok"):
                acked.append(message_id)
                index += 1
            else:
                errors.append(ack)
                assert ack["retryable"] is True and "Redis" in ack["error"]
                time.sleep(0.05)

    threads = [threading.Thread(target=chatter, args=(client,)) for client in (ada, bob)]
    for thread in threads:
        thread.start()
    harness.wait_until("traffic before the restart", lambda: len(acked) >= 20)
    redis.kill()
    harness.wait_until("/health to report Redis down", lambda: one.health().status_code == 503, timeout=20)
    assert one.health().json()["redis"] == "down"
    redis.start()
    harness.wait_until("/health to recover", lambda: one.health().status_code == 200 and two.health().status_code == 200, timeout=30)
    count = len(acked)
    harness.wait_until("traffic after the restart", lambda: len(acked) >= count + 20, timeout=30)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert errors, "no send failed while Redis was down: the test did not test the outage"
    for client in (ada, bob):
        harness.wait_until(f"{client.name} to have every acknowledged message", lambda c=client: c.has_ids(acked), timeout=30)
        assert_exactly_once_in_order(client, acked)
    ada.close()
    bob.close()


def test_a_frozen_redis_answers_every_send_and_loses_nothing(redis, nodes):
    # A Redis that hangs instead of dying (SIGSTOP here; a long fork or a network partition in
    # production): each command times out (5 s) and its connection is replaced. A send that arrived
    # as its connection was being replaced used to get no answer at all, ever.
    one, two = nodes(2)
    ada = ChatClient(one, "ada")
    bob = ChatClient(two, "bob", "polling")
    ids = [f"frozen-{index}" for index in range(28)]
    acks: dict[str, object] = {}
    os.kill(redis.process.pid, signal.SIGSTOP)
    try:
        def send(message_id: str):
            try:
                acks[message_id] = ada.send("while frozen " + message_id, message_id, timeout=20)
            except Exception as error:  # noqa: BLE001 - the failure this test is about
                acks[message_id] = error
        threads = []
        for message_id in ids:  # spread past a command timeout (5 s), so that some meet a reconnection
            threads.append(threading.Thread(target=send, args=(message_id,)))
            threads[-1].start()
            time.sleep(0.25)
        for thread in threads:
            thread.join(30)
    finally:
        os.kill(redis.process.pid, signal.SIGCONT)
    unanswered = {i: a for i, a in acks.items() if not isinstance(a, dict)}
    assert not unanswered and len(acks) == len(ids), f"sends without an answer: {unanswered}"
    assert all(a["ok"] is False and a["retryable"] is True for a in acks.values()), acks
    # What the page does next: resend with the same id until stored. Each is stored once.
    for message_id in ids:
        ada.send_until_stored("while frozen " + message_id, message_id)
    for client in (ada, bob):
        harness.wait_until(f"{client.name} to have every message", lambda c=client: c.has_ids(ids), timeout=30)
        assert_exactly_once_in_order(client, ids)
    ada.close()
    bob.close()


def store_without_publishing(redis, message_id: str) -> str:
    """What a pub/sub loss looks like to chat-node: a line in the stream whose PUBLISH nobody received."""
    line = {"action": "message", "user": "ghost", "msg": "stored, never published", "id": message_id,
            "time": int(time.time() * 1000), "instance": "test"}
    return redis_py.Redis(port=redis.port).xadd("chat:history", {"m": json.dumps(line)})


SEQUENCE_GAPS = 'chat_pubsub_gaps_total{detected_by="sequence"}'
POSITION_CHECK_GAPS = 'chat_pubsub_gaps_total{detected_by="position_check"}'


def test_a_line_the_subscription_missed_is_delivered_before_the_next_one(redis, nodes):
    """Each published line names the entry before it: the next line reveals the loss at once."""
    (node,) = nodes(1, POSITION_CHECK_MS="0")
    ada = ChatClient(node, "ada")
    bob = ChatClient(node, "bob", "polling")
    ada.send_until_stored("before", "before-1")
    store_without_publishing(redis, "missed-1")
    ada.send_until_stored("after", "after-1")
    for client in (ada, bob):
        harness.wait_until(f"{client.name} to get the next line", lambda c=client: c.has_ids(["after-1"]), timeout=10)
        assert_exactly_once_in_order(client, ["before-1", "missed-1", "after-1"])
    assert node.metrics()[SEQUENCE_GAPS] == 1
    assert "which the subscription never delivered" in node.program.output()
    ada.close()
    bob.close()


def test_a_last_line_the_subscription_missed_is_delivered_by_the_position_check(redis, nodes):
    """No line follows the lost one: the periodic check of the stream's newest id finds it."""
    (node,) = nodes(1, POSITION_CHECK_MS="200")
    ada = ChatClient(node, "ada", "polling")
    ada.send_until_stored("before", "before-2")
    store_without_publishing(redis, "missed-2")
    harness.wait_until("the missed line", lambda: ada.has_ids(["missed-2"]), timeout=10)
    assert_exactly_once_in_order(ada, ["before-2", "missed-2"])
    # At least this one; on a slow machine a line merely in flight for over 200 ms counts too.
    assert node.metrics()[POSITION_CHECK_GAPS] >= 1
    assert "the subscription has not delivered it" in node.program.output()
    ada.close()


def test_without_the_position_check_a_last_missed_line_stays_missed(redis, nodes):
    """The control for the test above: with POSITION_CHECK_MS=0 nothing notices that loss. Time is
    measured in presence heartbeats (1 s apart): two online lists pushed after the loss, so more than
    the two 200 ms checks the test above needs have passed. No chat line is published meanwhile
    (one would reveal the loss through the chain of ids)."""
    (node,) = nodes(1, POSITION_CHECK_MS="0", PRESENCE_INTERVAL="1", PRESENCE_TTL="3")
    ada = ChatClient(node, "ada")
    ada.send_until_stored("before", "before-3")
    store_without_publishing(redis, "missed-3")
    bob = ChatClient(node, "bob")
    harness.wait_until("a heartbeat's online list with bob", lambda: "bob" in ada.online, timeout=10)
    cy = ChatClient(node, "cy")
    harness.wait_until("the next heartbeat's online list with cy", lambda: "cy" in ada.online, timeout=10)
    for client in (ada, bob, cy):
        assert "missed-3" not in client.message_ids()
    assert node.metrics()[POSITION_CHECK_GAPS] == 0
    for client in (ada, bob, cy):
        client.close()


def test_bad_input_gets_a_clear_error_and_never_a_crash(nodes):
    (node,) = nodes(1, MAX_MESSAGE_BYTES="100")
    ada = ChatClient(node, "ada", "polling")
    cases = [
        ("not json", "Malformed"),
        (json.dumps({"action": "message", "msg": 5}), "must be a string"),
        (json.dumps({"action": "message", "msg": "   "}), "Empty"),
        (json.dumps({"action": "message", "msg": "x" * 101}), "too long"),
        (json.dumps({"action": "message", "msg": "a\u0007b"}), "control characters"),
        (json.dumps({"action": "message", "msg": "ok", "id": "bad id with spaces"}), "id"),
        (json.dumps([1, 2, 3]), "Malformed"),
    ]
    for payload, reason in cases:
        ack = ada.sio.call("chat", payload, timeout=10)
        assert ack["ok"] is False and ack["retryable"] is False and reason in ack["error"], (payload, ack)
    for raw in [None, 42, [1], {"msg": {"nested": True}}]:
        ack = ada.sio.call("chat", raw, timeout=10)
        assert ack["ok"] is False
    ada.sio.emit("chat", "not json")  # without an ack: a chat_error event
    harness.wait_until("a chat_error event", lambda: any(event == "chat_error" for event, _ in ada.events))
    xss = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    assert ada.send(xss, "xss-1")["ok"]  # markup is text: stored and shown as typed
    harness.wait_until("the xss line", lambda: xss in ada.texts())
    assert node.health().status_code == 200
    assert node.metrics()["chat_rejected_total"] >= 11
    ada.close()


def test_a_page_that_does_not_exist_says_so_and_leads_back_to_the_chat(nodes):
    (node,) = nodes(1)
    for method, path in [("GET", "/nope<b>x</b>"), ("POST", "/"), ("DELETE", "/user")]:
        response = requests.request(method, node.url + path, timeout=10)
        assert response.status_code == 404, (method, path)
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert "Page not found" in response.text and '<a href="/">' in response.text
        assert "<b>" not in response.text  # the path is shown as text
        assert f'data-testid="instance">#0 · {node.guid}</strong>' in response.text  # which instance answered
    assert requests.get(node.url + "/", timeout=10).status_code == 200


def test_a_first_request_asking_for_an_upgrade_that_does_not_happen_gets_an_answer(nodes):
    # NIO's upgrade handler lost such a request's head: the client got an empty reply, and a 502
    # ("endpoint failed") through sticky-proxy. `curl --http2 http://...` asks for h2c on every request.
    (node,) = nodes(1)
    result = subprocess.run(["curl", "-s", "--http2", "-o", "/dev/null", "-D", "-", node.url + "/"],
                            capture_output=True, text=True, timeout=30)
    head = result.stdout.lower()
    assert head.startswith("http/1.1 200"), result
    assert "connection: close" in head  # NIO's decoder takes what follows as h2c: one request per connection

    def first_line(request: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw:
            raw.sendall(request)
            reply = b""
            while b"\r\n" not in reply:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                reply += chunk
            return reply.split(b"\r\n")[0]

    handshake = (b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\n")
    key = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    assert first_line(handshake + b"Sec-WebSocket-Version: 13\r\n\r\n") == b"HTTP/1.1 400 Bad Request"  # no key
    assert first_line(handshake + key + b"Sec-WebSocket-Version: 8\r\n\r\n") == b"HTTP/1.1 400 Bad Request"
    assert first_line(b"GET /health HTTP/1.1\r\nHost: localhost\r\nUpgrade: foo\r\n\r\n") == b"HTTP/1.1 200 OK"
    assert first_line(handshake + key + b"Sec-WebSocket-Version: 13\r\n\r\n") == b"HTTP/1.1 101 Switching Protocols"
    assert node.health().status_code == 200


def test_a_request_head_over_the_limit_gets_431_not_a_hang(nodes):
    # NIO's decoder stops at 80 KB of head; on a connection's first request nothing answered or closed,
    # and the client (or sticky-proxy in front) waited forever.
    (node,) = nodes(1)
    response = requests.get(node.url + "/", headers={"X-Big": "a" * 90_000}, timeout=10)
    assert response.status_code == 431 and response.headers["connection"] == "close"
    assert requests.get(node.url + "/health", timeout=10).status_code == 200


def test_a_client_cannot_forge_a_line_in_the_log(nodes):
    # A session id from a query string (percent-decoded) and an Engine.IO packet type are the
    # client's text: in the log they are quoted with control characters escaped, so a newline in them
    # cannot start a line of its own. (Both used to be written as they came.)
    (node,) = nodes(1)
    forged = "forged notice chat-node: [ChatApp] pretend"
    response = requests.get(node.url + "/socket.io/", timeout=10,
                            params={"EIO": "4", "transport": "polling", "sid": "\n" + forged + "\r"})
    assert response.status_code == 400
    with socket.create_connection(("127.0.0.1", node.port), timeout=10) as raw:
        raw.sendall(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 101")
        payload = ("\n" + forged).encode()
        raw.sendall(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)  # masked with zeros
        raw.settimeout(10)
        while raw.recv(4096):  # until the server closes the session
            pass
    harness.wait_until("both attempts in the log", lambda: "Session ID unknown" in node.program.output()
                       and "Engine.IO packet type" in node.program.output(), timeout=10)
    lines = node.program.output().splitlines()
    assert not [line for line in lines if line.startswith("forged")], "a client started a log line"
    assert any("session \"\\n" + forged + "\\r\"" in line for line in lines)
    assert any("packet type 0xa" in line for line in lines)


def test_the_original_clients_protocol_still_works(nodes):
    (node,) = nodes(1)
    ada = ChatClient(node, "ada")
    ada.sio.emit("join", "{}")
    harness.wait_until("the join line", lambda: any(line["action"] == "control" and line["msg"] == " joined the channel"
                                                     and line["user"] == "ada" for _, line in ada.lines))
    ada.sio.emit("chat", json.dumps({"action": "message", "msg": "no id, no ack"}))
    harness.wait_until("the line", lambda: "no id, no ack" in ada.texts())
    ada.close()


def control_lines(client: ChatClient, user: str, text: str) -> int:
    with client.lock:
        return sum(1 for _, line in client.lines if line["action"] == "control" and line["user"] == user and line["msg"] == text)


def test_presence_across_instances_and_a_killed_instances_users_leave(nodes):
    fast = {"PRESENCE_INTERVAL": "1", "PRESENCE_TTL": "3"}
    one, two = nodes(2, **fast)
    ada = ChatClient(one, "ada")
    bob = ChatClient(two, "bob")
    harness.wait_until("both online everywhere", lambda: ada.online == ["ada", "bob"] and bob.online == ["ada", "bob"], timeout=15)
    one.kill()
    harness.wait_until("ada to go offline", lambda: bob.online == ["bob"], timeout=20)
    harness.wait_until("a left line for ada", lambda: any(line["action"] == "control" and line["user"] == "ada"
                                                          and line["msg"] == " left the channel" for _, line in bob.lines), timeout=20)
    bob.close()


def test_a_user_announced_just_before_their_instance_dies_gets_a_left_line(nodes):
    # grace arrives on instance one right behind ada, within the 0.5 s that separate its presence
    # heartbeats, and instance one is killed as soon as bob sees "grace joined". Her "joined" line
    # waits until instance one has published her, so the reaper finds her in its hash and announces
    # that she left. (It used to go out at once: killed before its next heartbeat, instance one took
    # her to its grave unpublished, and the others listed her for PRESENCE_TTL, then dropped her
    # without a word.)
    one, two = nodes(2, PRESENCE_INTERVAL="2", PRESENCE_TTL="4")
    bob = ChatClient(two, "bob")
    bob.sio.emit("join")

    ada = ChatClient(one, "ada")
    ada.sio.emit("join")
    grace = ChatClient(one, "grace")
    grace.sio.emit("join")
    harness.wait_until("bob to see grace join", lambda: control_lines(bob, "grace", " joined the channel") == 1, timeout=10)
    one.kill()
    for user in ("ada", "grace"):
        harness.wait_until(f"a left line for {user}", lambda u=user: control_lines(bob, u, " left the channel") == 1, timeout=20)
    harness.wait_until("bob alone on the list", lambda: bob.online == ["bob"], timeout=10)
    bob.close()


def test_users_of_a_stopped_instance_who_do_not_come_back_get_a_left_line(nodes):
    # SIGTERM on instance one closes ada's and grace's sockets. grace reconnects to instance two, ada
    # does not (she closed her tab). Instance one hands both over for the grace (2 s here) instead of
    # removing them: then ada gets a "left" line and grace none. (It used to remove its users from
    # Redis as it stopped: ada went off the lists without a word.)
    one, two = nodes(2, PRESENCE_INTERVAL="1", PRESENCE_TTL="3")
    bob = ChatClient(two, "bob")
    ada = ChatClient(one, "ada")
    grace = ChatClient(one, "grace")
    for client in (bob, ada, grace):
        client.sio.emit("join")
    harness.wait_until("everyone listed", lambda: bob.online == ["ada", "bob", "grace"], timeout=10)
    assert one.terminate() == 0
    grace.reconnect(two.url)
    harness.wait_until("a left line for ada", lambda: control_lines(bob, "ada", " left the channel") == 1, timeout=15)
    harness.wait_until("ada off the list", lambda: bob.online == ["bob", "grace"], timeout=10)
    assert control_lines(bob, "grace", " left the channel") == 0, "grace got a left line though she came back"
    assert "Stopped instances reaped after their grace: " + one.guid in two.program.output()
    grace.close()
    bob.close()


def test_an_instance_started_again_under_the_same_id_does_not_swallow_its_predecessors_users(nodes):
    # chat-node on its own takes "port-<PORT>" as its instance id, so a developer's restart is a new
    # run under the same id (here: the same CF_INSTANCE_GUID). Its first heartbeat used to overwrite
    # the killed run's presence, and ada left the lists without a word; the old entry is now moved
    # aside and reaped like a dead instance's.
    fast = {"PRESENCE_INTERVAL": "1", "PRESENCE_TTL": "3"}
    (one,) = nodes(1, **fast)
    (two,) = nodes(1, **fast)
    bob = ChatClient(two, "bob")
    ada = ChatClient(one, "ada")
    for client in (bob, ada):
        client.sio.emit("join")
    harness.wait_until("both listed", lambda: bob.online == ["ada", "bob"], timeout=10)
    one.kill()
    (again,) = nodes(1, CF_INSTANCE_GUID=one.guid, **fast)
    harness.wait_until("a left line for ada", lambda: control_lines(bob, "ada", " left the channel") == 1, timeout=15)
    harness.wait_until("bob alone on the list", lambda: bob.online == ["bob"], timeout=10)
    reaper_said = f"Instances gone without a goodbye: {one.guid} (a previous run)"
    assert any(reaper_said in node.program.output() for node in (two, again))
    bob.close()


def test_a_cluster_stopped_as_a_whole_announces_who_left_when_it_starts_again(redis, nodes):
    # Every instance stops (here the only one) with ada connected: nobody is left to announce her.
    # The stopped instance's entry stays, with ada in it, far longer than the 3 x PRESENCE_TTL (6 s
    # here) a hash used to live, so the next instance to start, even hours later, reaps it and
    # announces that she left: the history does not keep her "joined" forever.
    (one,) = nodes(1, PRESENCE_INTERVAL="1", PRESENCE_TTL="2")
    ada = ChatClient(one, "ada")
    ada.sio.emit("join")
    harness.wait_until("ada's joined line", lambda: control_lines(ada, "ada", " joined the channel") == 1, timeout=10)
    assert one.terminate() == 0
    published = redis_py.Redis(port=redis.port, decode_responses=True)
    entry = f"chat:presence:{one.guid}"
    assert published.hget(entry, "ada") == "0", "the stopped instance did not hand ada over"
    assert published.pttl(entry) > 3_600_000, "the entry would be gone before a cluster started again"
    (two,) = nodes(1, PRESENCE_INTERVAL="1", PRESENCE_TTL="2")
    bob = ChatClient(two, "bob")
    harness.wait_until("a left line for ada", lambda: control_lines(bob, "ada", " left the channel") == 1, timeout=10)
    bob.close()


def test_a_refresh_on_one_instance_does_not_take_the_user_off_the_others_lists(redis, nodes):
    fast = {"PRESENCE_INTERVAL": "1", "PRESENCE_TTL": "3"}  # grace: 2 s
    one, two = nodes(2, **fast)
    ada = ChatClient(one, "ada")
    bob = ChatClient(two, "bob")
    harness.wait_until("both online everywhere", lambda: ada.online == ["ada", "bob"] and bob.online == ["ada", "bob"], timeout=15)
    with bob.lock:
        seen = len(bob.events)
    published = redis_py.Redis(port=redis.port, decode_responses=True)

    def ada_published_as(sockets: str) -> bool:
        return published.hget(f"chat:presence:{one.guid}", "ada") == sockets

    # Three refreshes. While ada is away (within the grace), instance one's heartbeat must still
    # publish her, with 0 sockets, for instance two to read; back, with her socket.
    for _ in range(3):
        ada.close()
        harness.wait_until("instance one to publish ada as leaving", lambda: ada_published_as("0"), timeout=5)
        ada.reconnect(one.url)
        harness.wait_until("instance one to publish ada's socket again", lambda: ada_published_as("1"), timeout=5)
    with bob.lock:
        lists = [args[0]["users"] for event, args in bob.events[seen:] if event == "online"]
    assert all("ada" in users for users in lists), f"ada flickered off bob's list: {lists}"
    assert not any(line["action"] == "control" and line["user"] == "ada" for _, line in bob.lines), "a refresh announced a leave"
    ada.close()
    bob.close()


def test_a_client_back_while_the_instance_still_holds_its_old_connection_is_one_user(redis, nodes):
    # The client gives up on its connection and recovers on the same instance, which still holds the
    # old one (a half-open WebSocket, a long-poll error it has not seen): two sockets with one id. The
    # old one's close used to take the new one's place among the instance's users, so that ada stayed
    # published and online for ever, with no "left" line.
    one, two = nodes(2, PRESENCE_INTERVAL="1", PRESENCE_TTL="3")
    bob = ChatClient(two, "bob")
    ada = ChatClient(one, "ada")
    assert ada.send("before the overlap", "overlap-1")["ok"]
    harness.wait_until("ada's own line", lambda: ada.has_ids(["overlap-1"]))
    published = redis_py.Redis(port=redis.port, decode_responses=True)
    old = ada.sio
    ada.sio = None  # the old connection stays open
    ada.welcome = None
    ada.connect(one.url)
    assert ada.recovered, "the session was not recovered"
    harness.wait_until("instance one to publish ada's two sockets",
                       lambda: published.hget(f"chat:presence:{one.guid}", "ada") == "2", timeout=5)
    old.disconnect()
    harness.wait_until("one socket left", lambda: published.hget(f"chat:presence:{one.guid}", "ada") == "1", timeout=5)
    assert ada.send("after the overlap", "overlap-2")["ok"]
    harness.wait_until("bob to get it", lambda: bob.has_ids(["overlap-1", "overlap-2"]))
    ada.close()
    harness.wait_until("a left line for ada", lambda: control_lines(bob, "ada", " left the channel") == 1, timeout=15)
    harness.wait_until("bob alone on the list", lambda: bob.online == ["bob"], timeout=10)
    bob.close()


def wait_for_heartbeats(redis, node, count: int):
    """Waits until `node` has run `count` more presence heartbeats (each moves its expiry in chat:instances)."""
    published = redis_py.Redis(port=redis.port, decode_responses=True)
    for _ in range(count):
        before = published.zscore("chat:instances", node.guid) or 0.0
        harness.wait_until(f"a presence heartbeat of instance {node.guid}",
                           lambda: (published.zscore("chat:instances", node.guid) or 0.0) > before, timeout=5)


def test_a_new_user_stays_on_the_others_lists_from_their_joined_line_on(redis, nodes):
    # grace logs in on instance one (heartbeat every 30 s): instance two lists her from her "joined"
    # line, and its own heartbeats (every second) must not take her off again. Two things keep her
    # there: instance one publishes her as soon as she connects instead of at its next heartbeat, and
    # instance two keeps an announced user until a heartbeat shows them (PresenceStateTests covers the
    # moment before her instance has published her). Without both, bob's lists were
    # [['bob', 'grace'], ['bob']].
    (one,) = nodes(1, PRESENCE_INTERVAL="30", PRESENCE_TTL="60")
    (two,) = nodes(1, PRESENCE_INTERVAL="1", PRESENCE_TTL="60")
    bob = ChatClient(two, "bob")
    bob.sio.emit("join")
    harness.wait_until("bob online on his instance", lambda: bob.online == ["bob"], timeout=10)
    grace = ChatClient(one, "grace")
    grace.sio.emit("join")
    harness.wait_until("grace listed on bob's instance", lambda: "grace" in (bob.online or []), timeout=10)
    with bob.lock:
        first = next(index for index, (event, args) in enumerate(bob.events) if event == "online" and "grace" in args[0]["users"])
    wait_for_heartbeats(redis, two, 3)
    with bob.lock:
        lists = [args[0]["users"] for event, args in bob.events[first:] if event == "online"]
    assert all("grace" in users for users in lists), f"grace flickered off bob's list: {lists}"
    grace.close()
    bob.close()


def test_a_user_back_on_another_instance_within_the_grace_gets_no_left_line(redis, nodes):
    # ada leaves instance two (heartbeat every second, grace 2 s) and comes back on instance one, whose
    # heartbeat comes every 30 s: instance one publishes her at once, so instance two, when her grace
    # there ends, finds her online elsewhere and announces nothing.
    (one,) = nodes(1, PRESENCE_INTERVAL="30", PRESENCE_TTL="90")
    (two,) = nodes(1, PRESENCE_INTERVAL="1", PRESENCE_TTL="90")
    bob = ChatClient(two, "bob")
    ada = ChatClient(two, "ada")
    harness.wait_until("both online", lambda: bob.online == ["ada", "bob"], timeout=10)
    published = redis_py.Redis(port=redis.port, decode_responses=True)
    ada.close()
    harness.wait_until("instance two to publish ada as leaving", lambda: published.hget(f"chat:presence:{two.guid}", "ada") == "0",
                       timeout=5)
    ada.reconnect(one.url)
    harness.wait_until("instance one to publish ada, long before its next heartbeat",
                       lambda: published.hget(f"chat:presence:{one.guid}", "ada") == "1", timeout=5)
    wait_for_heartbeats(redis, two, 3)  # past ada's grace on instance two (2 s)
    assert published.hget(f"chat:presence:{two.guid}", "ada") is None, "ada's grace on instance two has not ended"
    assert not any(line["action"] == "control" and line["user"] == "ada" and line["msg"] == " left the channel"
                   for _, line in bob.lines), "ada got a left line while online on instance one"
    assert "ada" in bob.online
    ada.close()
    bob.close()


def test_joined_lines_list_users_on_every_instance_before_the_next_heartbeat(nodes):
    # Heartbeats every 30 s: within this test only the "joined" lines can move the lists.
    one, two = nodes(2, PRESENCE_INTERVAL="30", PRESENCE_TTL="90")
    ada = ChatClient(one, "ada")
    ada.sio.emit("join")  # what the page sends once connected
    bob = ChatClient(two, "bob")
    bob.sio.emit("join")
    harness.wait_until("both listed on both instances", lambda: ada.online == ["ada", "bob"] and bob.online == ["ada", "bob"],
                       timeout=10)
    # A crowd joining at once: the lists are paced (one per 0.5 s at most), not one per user.
    def lists(client: ChatClient) -> int:
        with client.lock:
            return sum(1 for event, _ in client.events if event == "online")

    before, started = lists(ada), time.monotonic()
    crowd = [ChatClient(two if index % 2 else one, f"user{index:02d}") for index in range(16)]
    for client in crowd:
        client.sio.emit("join")
    everyone = sorted(["ada", "bob"] + [client.name for client in crowd])
    harness.wait_until("the crowd listed on ada's instance", lambda: ada.online == everyone, timeout=15)
    elapsed = time.monotonic() - started
    received = lists(ada) - before
    assert received <= 2 + elapsed / 0.5, f"{received} online lists in {elapsed:.1f} s"
    for client in [ada, bob] + crowd:
        client.close()


def test_metrics_count_connections_and_messages(nodes):
    (node,) = nodes(1)
    ada = ChatClient(node, "ada")
    ada.send("counted", "m-1")
    harness.wait_until("the line", lambda: "m-1" in ada.message_ids())
    metrics = node.metrics()
    assert metrics["chat_connections"] == 1
    assert metrics["chat_messages_in_total"] == 1
    assert metrics["chat_messages_out_total"] >= 1
    assert metrics["chat_redis_errors_total"] == 0
    assert "socketio_messages_received_total" in requests.get(node.url + "/metrics", timeout=5).text
    ada.close()


def test_startup_errors_are_clear():
    binary = str(harness.executable("chat-node"))
    port = harness.free_port()
    dead = subprocess.run([binary], env={"PORT": str(harness.free_port()), "REDIS_URL": f"redis://127.0.0.1:{port}"},
                          capture_output=True, text=True, timeout=60)
    assert dead.returncode == 4
    assert "cannot reach Redis" in dead.stderr and f"127.0.0.1:{port}" in dead.stderr
    bad = subprocess.run([binary], env={"PORT": "eighty"}, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "PORT" in bad.stderr
    helped = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0
    for variable in ["PORT", "REDIS_URL", "VCAP_SERVICES", "SESSION_SECRET", "COOKIE_NAME", "CF_INSTANCE_INDEX", "CF_INSTANCE_GUID"]:
        assert variable in helped.stdout
    # The variables' table fits the 80 columns the argument parser wraps at: no entry broken onto an
    # unindented line.
    lines = helped.stdout.splitlines()
    table = lines[lines.index("Configuration comes from the environment, as on Cloud Foundry or Kubernetes:") + 1:]
    table = table[:table.index("")]
    assert len(table) >= 20 and all(line.startswith("  ") for line in table), table


def test_redis_binding_from_vcap_services(redis, nodes):
    services = json.dumps({"redis": [{"label": "redis", "name": "chat-redis", "tags": ["redis"],
                                      "credentials": {"host": "127.0.0.1", "port": redis.port}}]})
    (node,) = nodes(1, REDIS_URL="", VCAP_SERVICES=services)
    assert node.health().json()["redis"] == "up"


def test_local_fanout_is_a_split_brain(redis, nodes):
    """FANOUT=local reproduces an in-process pub/sub on purpose: each instance's users only see each
    other. bob's own message reaching him proves ada's earlier one had every chance to arrive."""
    first, second = nodes(2, FANOUT="local")
    ada, bob = ChatClient(first, "ada"), ChatClient(second, "bob")
    carol = ChatClient(first, "carol")
    assert ada.sio.call("chat", json.dumps({"action": "message", "msg": "from ada", "id": "a1"}), timeout=10)["ok"]
    harness.wait_until("carol, on ada's instance, gets it", lambda: "from ada" in carol.texts())
    assert bob.sio.call("chat", json.dumps({"action": "message", "msg": "from bob", "id": "b1"}), timeout=10)["ok"]
    harness.wait_until("bob gets his own line", lambda: "from bob" in bob.texts())
    assert bob.texts() == ["from bob"]
    assert "from bob" not in carol.texts() and "from bob" not in ada.texts()
    assert "FANOUT=local" in first.program.output()
    for client in (ada, bob, carol):
        client.close()


def test_a_user_with_tabs_on_two_instances_joins_once_and_leaves_once(redis, nodes):
    """Found by a user: rita's two tabs, one on each instance, each announced her joining, and when
    both closed together, each instance took the other's "leaving" entry for her being online there:
    she never got a left line. Now the second join announces nothing, and the instance first by name
    announces the leave, once."""
    one, two = nodes(2, PRESENCE_INTERVAL="1", PRESENCE_TTL="3")  # grace: 2 s
    bob = ChatClient(one, "bob")
    first = ChatClient(one, "rita")
    second = ChatClient(two, "rita", session=first.session)  # the same login, another tab
    first.sio.emit("join")
    harness.wait_until("rita's joined line", lambda: control_lines(bob, "rita", " joined the channel") == 1, timeout=10)
    second.sio.emit("join")
    # A connection's events wait behind its join: once this message of the second tab reached bob,
    # a joined line it announced would have reached him before it.
    assert second.send("after my join", "rita-1")["ok"]
    harness.wait_until("the second tab's message", lambda: "after my join" in bob.texts(), timeout=10)
    assert control_lines(bob, "rita", " joined the channel") == 1
    first.close()
    second.close()
    harness.wait_until("rita's left line", lambda: control_lines(bob, "rita", " left the channel") == 1, timeout=15)
    harness.wait_until("rita off the list", lambda: bob.online == ["bob"], timeout=10)
    for node in (one, two):  # past both instances' graces: a second left line would be out by now
        wait_for_heartbeats(redis, node, 3)
    assert control_lines(bob, "rita", " left the channel") == 1
    bob.close()


def test_a_redis_outage_longer_than_the_presence_ttl_announces_nobody_as_gone(redis, nodes):
    """Found by a user: Redis down for longer than PRESENCE_TTL, the first instance back reaped the
    other, alive and cut off as it was, and erin was told she had left the channel. An instance now
    reaps nobody for PRESENCE_TTL after it could not reach Redis itself."""
    one, two = nodes(2, PRESENCE_INTERVAL="1", PRESENCE_TTL="6")
    erin = ChatClient(one, "erin")
    frank = ChatClient(two, "frank")
    for client in (erin, frank):
        client.sio.emit("join")
    harness.wait_until("both listed on both", lambda: erin.online == frank.online == ["erin", "frank"], timeout=15)
    redis_py.Redis(port=redis.port).save()  # what Redis has now is what it starts with again
    published = redis_py.Redis(port=redis.port, decode_responses=True)
    expiries = {node.guid: published.zscore("chat:instances", node.guid) for node in (one, two)}
    redis.kill()
    harness.wait_until("both instances to notice", lambda: not one.healthy() and not two.healthy(), timeout=15)
    # The outage has to outlast every entry (PRESENCE_TTL from each last heartbeat): its length is
    # the fault itself, not a wait for something to happen.
    time.sleep(max(0.0, max(expiries.values()) / 1000 - time.time()) + 1)
    redis.start()
    harness.wait_until("both instances healthy again", lambda: one.healthy() and two.healthy(), timeout=30)
    # Reaping is back on PRESENCE_TTL (6 s) after each instance's last failed heartbeat: eight
    # heartbeats of one (one a second) take both past it, and one more of two reaps if it would.
    wait_for_heartbeats(redis, one, 8)
    wait_for_heartbeats(redis, two, 1)
    for client in (erin, frank):
        for user in ("erin", "frank"):
            assert control_lines(client, user, " left the channel") == 0, (client.name, user, client.lines[-5:])
    harness.wait_until("both listed on both", lambda: erin.online == frank.online == ["erin", "frank"], timeout=10)
    erin.close()
    frank.close()
