"""The page in headless Chromium with the official socket.io client: log in, send, see the line, refresh
and stay logged in with the history, see an XSS payload rendered as text, log out. Takes the README's
screenshots (docs/images/chat-login.png, docs/images/chat-page.png). Then the page's own machinery:
the ordered outbox across a Redis outage and a reload, the byte limit, refused messages, the bounded
list, a missing socket.io bundle, /me, a gap after a reconnection, and accessibility."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from redis import Redis
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

import harness
from chatkit import ChatClient, ChatNode

# The README's screenshots are refreshed with `make screenshots`; an ordinary test run writes its
# screenshots under .build so that `make test` leaves the working tree clean.
IMAGES = Path(os.environ.get("STICKYLAB_SCREENSHOTS", Path(__file__).resolve().parents[2] / ".build" / "screenshots"))
IMAGES.mkdir(parents=True, exist_ok=True)
XSS = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


def wait(driver, what, condition, timeout=20):
    return WebDriverWait(driver, timeout, poll_frequency=0.05, ignored_exceptions=[StaleElementReferenceException]).until(
        lambda d: condition(d), message=f"waiting for {what}")


def message_texts(driver) -> list[str]:
    # In one script call: the page replaces pending lines while we read, which would make element
    # references stale.
    return driver.execute_script("return Array.from(document.querySelectorAll('#messages li'), li => li.innerText)")


def send(driver, text: str):
    box = driver.find_element(By.ID, "input")
    box.send_keys(text)
    driver.find_element(By.CSS_SELECTOR, "#composer button").click()


def test_log_in_chat_refresh_and_stay_logged_in(node, browser):
    browser.get(node.url + "/")
    wait(browser, "the login form", lambda d: d.find_elements(By.ID, "user"))
    assert node.guid in browser.find_element(By.CSS_SELECTOR, "[data-testid=instance]").text
    IMAGES.mkdir(parents=True, exist_ok=True)
    browser.find_element(By.ID, "user").send_keys("Ada")
    browser.save_screenshot(str(IMAGES / "chat-login.png"))
    browser.find_element(By.ID, "user").clear()
    browser.find_element(By.ID, "user").send_keys("<b>x</b>")
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    wait(browser, "the name error", lambda d: "may only contain" in d.find_element(By.CSS_SELECTOR, ".error").text)
    assert not browser.find_elements(By.CSS_SELECTOR, ".error b")
    browser.find_element(By.ID, "user").clear()
    browser.find_element(By.ID, "user").send_keys("Ada")
    browser.find_element(By.CSS_SELECTOR, "form button").click()

    wait(browser, "the chat page", lambda d: d.find_elements(By.ID, "messages"))
    assert browser.find_element(By.ID, "me").text == "Ada"
    cookie = browser.get_cookie("JSESSIONID")
    assert cookie and cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    wait(browser, "the socket to connect", lambda d: d.find_element(By.ID, "status").text.startswith("Connected"))
    wait(browser, "the socket's instance", lambda d: node.guid in d.find_element(By.ID, "socket-instance").text)
    wait(browser, "Ada in the online list", lambda d: "Ada" in d.find_element(By.ID, "online").text)

    # Someone else, on python-socketio, talks too.
    grace = ChatClient(node, "Grace")
    grace.send("Hello Ada! Try killing an instance: nothing gets lost.", "g1")
    send(browser, "Hi Grace, this is a Swift chat.")
    send(browser, "/me waves")
    send(browser, XSS)
    wait(browser, "the three lines", lambda d: XSS in " ".join(message_texts(d)) and any("* Ada waves" in t for t in message_texts(d)))
    wait(browser, "the lines to be acknowledged", lambda d: not d.find_elements(By.CSS_SELECTOR, "#messages li.pending"))
    texts = message_texts(browser)
    assert any("Hello Ada!" in text for text in texts)
    assert any(text.endswith("Hi Grace, this is a Swift chat.") for text in texts)
    # The XSS payload is text: no element was created from it and nothing ran.
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages img, #messages script")
    assert browser.execute_script("return window.__pwned === undefined")
    grace.send("Refresh the page: you stay logged in and keep the history.", "g2")
    wait(browser, "Grace's second line", lambda d: any("Refresh the page" in t for t in message_texts(d)))
    wait(browser, "both in the online list", lambda d: "Grace" in d.find_element(By.ID, "online").text)
    browser.save_screenshot(str(IMAGES / "chat-page.png"))

    # Refresh: still logged in, and the history is back, each line once.
    before = message_texts(browser)
    browser.refresh()
    wait(browser, "the history after a refresh", lambda d: len(message_texts(d)) >= len(before))
    assert browser.find_element(By.ID, "me").text == "Ada"
    assert message_texts(browser) == before  # the same lines, once each, in the same order
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages img, #messages script")

    # A second tab of the same login.
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    second = browser.current_window_handle
    browser.get(node.url + "/")
    wait(browser, "the second tab's socket", lambda d: d.find_element(By.ID, "status").text.startswith("Connected"))
    browser.switch_to.window(first)

    # Log out: a form posting /logout (Chromium sends Origin and Sec-Fetch-Site: same-origin, which
    # the server's cross-site check lets through), back to the login page, and the socket is refused
    # without a session.
    assert browser.execute_script("const f = document.getElementById('logout').form; return [f.method, f.action]") == [
        "post", node.url + "/logout"]
    browser.find_element(By.ID, "logout").click()
    wait(browser, "the login page", lambda d: d.find_elements(By.ID, "user"))
    assert browser.get_cookie("JSESSIONID") is None
    browser.get(node.url + "/logout")  # logged out: GET /logout has nothing to ask
    wait(browser, "the login page again", lambda d: d.find_elements(By.ID, "user"))
    # The other tab is sent to the login page too (it used to go on chatting as Ada).
    browser.switch_to.window(second)
    wait(browser, "the second tab on the login page", lambda d: d.find_elements(By.ID, "user"))
    browser.close()
    browser.switch_to.window(first)
    grace.close()


def test_the_official_client_recovers_after_a_restart_of_its_instance(redis, node, browser):
    """Socket.IO connection state recovery in the browser: the instance is killed (-9) and started again
    on the same port; the official client reconnects by itself and gets what it missed."""
    browser.get(node.url + "/")
    browser.find_element(By.ID, "user").send_keys("Ada")
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    wait(browser, "the socket to connect", lambda d: d.find_element(By.ID, "status").text.startswith("Connected"))
    grace = ChatClient(node, "Grace")
    grace.send("before the crash", "b1")
    wait(browser, "the first line", lambda d: any("before the crash" in t for t in message_texts(d)))
    node.kill()
    wait(browser, "the page to notice", lambda d: d.find_element(By.ID, "status").text.startswith("Disconnected"))
    other = ChatNode(redis, index=1)
    writer = ChatClient(other, "Grace")
    writer.send("while you were away", "w1")
    # The same port again, like a router sending the client to a live instance.
    restarted = ChatNode(redis, index=0, PORT=str(node.port))
    try:
        wait(browser, "the recovered connection",
             lambda d: re.match(r"Reconnected: \d+ missed messages? recovered", d.find_element(By.ID, "status").text), timeout=40)
        wait(browser, "the missed line", lambda d: any("while you were away" in t for t in message_texts(d)))
        texts = message_texts(browser)
        assert sum("before the crash" in t for t in texts) == 1
        assert sum("while you were away" in t for t in texts) == 1
    finally:
        writer.close()
        restarted.program.kill()
        other.program.kill()



# --- The page's outbox, list and accessibility ---------------------------------------------------------

# Installed before any page script: keeps the socket the page creates as window.__socket, so that a test
# can call the page's own event handlers with what a server may send (a late old line, a gap).
CAPTURE_SOCKET = """
(() => {
  let real;
  Object.defineProperty(window, "io", {
    configurable: true,
    get() { return real && function (...args) { const socket = real(...args); window.__socket = socket; return socket; }; },
    set(value) { real = value; },
  });
})();
"""

# The contrast (WCAG 2) of a note in an own message of these classes, and the message's opacity.
NOTE_CONTRAST = """
const li = document.createElement('li'); li.className = arguments[0];
const note = document.createElement('span'); note.className = 'note'; note.textContent = 'sending…';
li.appendChild(note); document.getElementById('messages').appendChild(li);
const rgba = (c) => c.match(/[\\d.]+/g).map(Number);
const lum = ([r, g, b]) => [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
  .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
let background = getComputedStyle(li).backgroundColor;
if (rgba(background)[3] === 0) background = getComputedStyle(document.body).backgroundColor;
const [fg, bg] = [lum(rgba(getComputedStyle(note).color)), lum(rgba(background))];
const result = [(Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05), Number(getComputedStyle(li).opacity)];
li.remove();
return result;
"""

LEAVING_IS_WARNED = "const e = new Event('beforeunload', {cancelable: true}); dispatchEvent(e); return e.defaultPrevented"


def log_in(driver, node, name="Ada"):
    driver.get(node.url + "/")
    wait(driver, "the login form", lambda d: d.find_elements(By.ID, "user"))
    driver.find_element(By.ID, "user").send_keys(name)
    driver.find_element(By.CSS_SELECTOR, "form button").click()
    wait(driver, "the socket to connect", lambda d: d.find_element(By.ID, "status").text.startswith("Connected"))
    wait(driver, "the welcome", lambda d: d.find_element(By.ID, "socket-instance").text != "–")


def click_send(driver):
    driver.find_element(By.CSS_SELECTOR, "#composer button").click()


def type_value(driver, text: str):
    """Puts text in the input as a paste would (for characters a key press cannot type)."""
    driver.execute_script("document.getElementById('input').value = arguments[0]", text)


def stop_redis(redis):
    """Stops Redis as an operator would (SIGTERM: the append-only file keeps what was stored)."""
    redis.process.terminate()
    redis.process.wait(timeout=10)


def stored_messages(redis) -> list[str]:
    """The texts of the chat's history stream, oldest first: the one global order every page shows."""
    client = Redis(port=redis.port, decode_responses=True)
    try:
        lines = [json.loads(fields["m"]) for _, fields in client.xrange("chat:history")]
    finally:
        client.close()
    return [line["msg"] for line in lines if line.get("action") == "message"]


def bubbles(driver) -> list[dict]:
    """Own messages on their way, or refused."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#messages li.pending, #messages li.failed'),"
        " li => ({cls: li.className, text: li.innerText, note: (li.querySelector('.note') || {}).textContent}))")


def final_lines(driver) -> list[str]:
    """The lines that came from the stream, in the list's order."""
    return driver.execute_script("return Array.from(document.querySelectorAll('#messages li[data-offset]'), li => li.innerText)")


def has_line(driver, ending: str) -> bool:
    return any(text.endswith(ending) for text in final_lines(driver))


def test_own_messages_keep_their_order_across_a_redis_outage(redis, node, browser):
    """One ordered outbox: a message typed later never overtakes an earlier one that is being retried.
    The timing is the one that made the old page's per-message backoff store "second" first."""
    log_in(browser, node)
    stop_redis(redis)
    send(browser, "first")
    wait(browser, "first to be retried", lambda d: any(b["note"] == "not sent, retrying…" for b in bubbles(d)))
    # The old page retried "first" after 1, 3 and 7 s, then at 15 s: "second", typed after its fourth
    # attempt, got its own 1 s retry first. Wait for that fourth attempt, as the server logs it.
    harness.wait_until("four attempts of first", lambda: node.program.output().count("not stored, Redis failed") >= 4,
                       timeout=30)
    send(browser, "second")
    wait(browser, "second to wait", lambda d: len(bubbles(d)) == 2)
    # "second" waits behind "first", and says it is not sent yet.
    assert [b["note"] for b in bubbles(browser)] == ["not sent, retrying…", "not sent, retrying…"]
    redis.start()
    wait(browser, "both lines stored and shown", lambda d: not bubbles(d) and has_line(d, "first") and has_line(d, "second"),
         timeout=30)
    assert stored_messages(redis) == ["first", "second"]
    texts = [t for t in final_lines(browser) if t.endswith(("first", "second"))]
    assert len(texts) == 2 and texts[0].endswith("first") and texts[1].endswith("second")
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages li.failed, #messages li.retrying")


def test_a_message_over_the_byte_limit_keeps_its_text(redis, node, browser):
    """1,500 "é" are 1,500 characters but 3,000 UTF-8 bytes, over the 2,000-byte limit: the page says so
    before sending, and the text stays in the input."""
    log_in(browser, node)
    text = "é" * 1500
    box = browser.find_element(By.ID, "input")
    box.send_keys(text)
    assert box.get_attribute("value") == text  # not cut by a maxlength counting characters either
    click_send(browser)
    hint = browser.find_element(By.ID, "composer-hint")
    wait(browser, "the hint", lambda d: "3000 bytes" in hint.text and "2000" in hint.text)
    assert hint.is_displayed()
    assert box.get_attribute("value") == text
    assert box.get_attribute("aria-invalid") == "true"
    assert "composer-hint" in box.get_attribute("aria-describedby")
    assert browser.execute_script("return document.activeElement.id") == "input"
    # Refused in the same handler that shows the hint: nothing was put on its way.
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages li.mine")
    assert stored_messages(redis) == []
    # Shortened under the limit, it goes, and the hint goes away.
    type_value(browser, "é" * 1000)
    click_send(browser)
    wait(browser, "the line", lambda d: has_line(d, "é" * 1000))
    assert box.get_attribute("value") == "" and hint.text == "" and box.get_attribute("aria-invalid") is None


def test_a_refused_message_is_marked_failed_can_be_edited_and_does_not_block_the_queue(node, browser):
    log_in(browser, node)
    # The server refuses control characters for good (the page leaves that rule to the server).
    type_value(browser, "bell \u0007 here")
    click_send(browser)
    send(browser, "after the refused one")
    wait(browser, "the refusal", lambda d: any((b["note"] or "").startswith("not sent: ") for b in bubbles(d)))
    wait(browser, "the next message", lambda d: has_line(d, "after the refused one"))
    failed = browser.find_element(By.CSS_SELECTOR, "#messages li.failed")
    assert "not sent: The message contains control characters" in failed.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages li.pending")
    assert browser.execute_script(LEAVING_IS_WARNED) is False  # out of the queue: nothing holds up a reload
    browser.find_element(By.ID, "input").send_keys("a draft: ")
    failed.find_element(By.CSS_SELECTOR, "button.edit").click()  # the text back, as a paste: the draft stays
    assert browser.find_element(By.ID, "input").get_attribute("value") == "a draft: bell \u0007 here"
    assert browser.execute_script("return document.activeElement.id") == "input"
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages li.failed")


def test_a_refused_message_survives_a_reload_and_can_still_be_edited(redis, node, browser):
    """What the user typed is not lost with a reload: the failed bubble comes back after the history,
    with its reason and its Edit button, and is not sent again."""
    log_in(browser, node)
    text = "bell \u0007 kept"
    type_value(browser, text)
    click_send(browser)
    send(browser, "after the refused one")
    wait(browser, "the refusal", lambda d: any((b["note"] or "").startswith("not sent: ") for b in bubbles(d)))
    wait(browser, "the next message", lambda d: has_line(d, "after the refused one"))
    assert node.metrics()["chat_rejected_total"] == 1
    # The outbox's own key never holds it (an older page would send it again).
    assert browser.execute_script("return sessionStorage.getItem('stickylab:outbox:Ada')") is None

    browser.refresh()
    wait(browser, "the history", lambda d: has_line(d, "after the refused one"))
    wait(browser, "the failed message", lambda d: d.find_elements(By.CSS_SELECTOR, "#messages li.failed"))
    assert [b["note"] for b in bubbles(browser)] == ["not sent: The message contains control characters; only text, tabs and "
                                                     "new lines are allowed."]
    texts = message_texts(browser)
    # After the history (where it was before the reload: "after the refused one" came later, but this
    # page's list is the history, then what is left of the user's own messages).
    assert texts[-2].endswith("after the refused one") and texts[-1].startswith("Ada"), texts
    failed = browser.find_element(By.CSS_SELECTOR, "#messages li.failed")
    assert browser.execute_script("return arguments[0].lastChild.textContent", failed) == text
    assert failed.find_element(By.CSS_SELECTOR, "button.edit").text == "Edit"
    # Not sent again: the server refused one attempt in all, and stored nothing else.
    send(browser, "marker")  # the outbox is ordered: anything sent again would have gone before it
    wait(browser, "the marker", lambda d: not d.find_elements(By.CSS_SELECTOR, "#messages li.pending") and has_line(d, "marker"))
    assert node.metrics()["chat_rejected_total"] == 1
    assert stored_messages(redis) == ["after the refused one", "marker"]
    assert browser.execute_script(LEAVING_IS_WARNED) is False

    failed.find_element(By.CSS_SELECTOR, "button.edit").click()
    assert browser.find_element(By.ID, "input").get_attribute("value") == text
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages li.failed")
    # Edited: gone from storage too, so another reload does not bring it back.
    browser.find_element(By.ID, "input").clear()
    browser.refresh()
    wait(browser, "the history again", lambda d: has_line(d, "marker"))
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages li.failed")
    assert browser.execute_script("return sessionStorage.length") == 0


def test_a_reload_during_an_outage_resends_the_pending_message(redis, node, browser):
    log_in(browser, node)
    stop_redis(redis)
    send(browser, "kept across a reload")
    wait(browser, "the retry", lambda d: any(b["note"] == "not sent, retrying…" for b in bubbles(d)))
    assert browser.execute_script(LEAVING_IS_WARNED) is True
    browser.execute_script("location.reload()")
    try:
        WebDriverWait(browser, 3).until(lambda d: d.switch_to.alert)
        browser.switch_to.alert.accept()  # "Leave site?": yes
    except (TimeoutException, NoAlertPresentException):
        pass
    # With Redis down the reload gets the "Redis is unavailable" notice, which refreshes itself.
    wait(browser, "the reload", lambda d: not d.find_elements(By.ID, "messages"))
    redis.start()
    wait(browser, "the message stored and shown", lambda d: d.find_elements(By.ID, "messages") and not bubbles(d)
         and has_line(d, "kept across a reload"), timeout=25)
    assert stored_messages(redis) == ["kept across a reload"]
    assert browser.execute_script("return sessionStorage.length") == 0
    # Reloaded again: nothing is sent a second time.
    browser.refresh()
    wait(browser, "the history", lambda d: has_line(d, "kept across a reload"))
    # The outbox is ordered: anything sent again would be stored before this marker.
    send(browser, "marker")
    wait(browser, "the marker", lambda d: not bubbles(d) and has_line(d, "marker"))
    assert stored_messages(redis) == ["kept across a reload", "marker"]
    assert sum(t.endswith("kept across a reload") for t in message_texts(browser)) == 1


def test_the_list_keeps_1000_lines_and_ignores_late_old_ones(node, browser):
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CAPTURE_SOCKET})
    log_in(browser, node)
    grace = ChatClient(node, "Grace")
    try:
        for i in range(1200):
            grace.sio.emit("chat", json.dumps({"action": "message", "msg": f"line {i}", "id": f"l{i}"}))
        wait(browser, "the last line", lambda d: d.execute_script(
            "const li = document.querySelector('#messages li:last-child'); return li && li.innerText.endsWith('line 1199')"), timeout=40)
        assert browser.execute_script("return document.querySelectorAll('#messages li').length") == 1000
        assert browser.execute_script("return document.querySelector('#messages li').innerText").endswith("line 200")
        # Lines older than the list arriving late (a replay, say) are not put back at the top: neither
        # one the list dropped nor one it never had.
        wait(browser, "Grace's copy of the lines", lambda d: len(grace.offsets()) >= 1201)
        offsets = {line["msg"]: offset for offset, line in grace.lines if line.get("action") == "message"}
        for msg in ["line 5", "line 199"]:
            browser.execute_script(
                "window.__socket.listeners('chat').forEach(f => f(arguments[0], arguments[1]))",
                json.dumps({"action": "message", "user": "Grace", "msg": msg + " again", "time": 0}), offsets[msg])
        browser.execute_script(
            "window.__socket.listeners('chat').forEach(f => f(arguments[0], '1-0'))",
            json.dumps({"action": "message", "user": "Grace", "msg": "ancient again", "time": 0}))
        grace.send("one more", "l-more")
        wait(browser, "one more", lambda d: message_texts(d)[-1].endswith("one more"))
        texts = message_texts(browser)
        assert len(texts) == 1000
        assert not any("again" in t for t in texts)
        assert texts[0].endswith("line 201")
    finally:
        grace.close()


def test_a_missing_socketio_bundle_is_reported(redis, browser):
    bare = ChatNode(redis, index=3, SOCKETIO_CLIENT_JS="/nonexistent/socket.io.min.js")
    try:
        browser.get(bare.url + "/")
        browser.find_element(By.ID, "user").send_keys("Ada")
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        wait(browser, "the chat page", lambda d: d.find_elements(By.ID, "messages"))
        wait(browser, "the reason", lambda d: d.find_element(By.ID, "status").text
             == "The socket.io client is missing on this server (run make deps)")
        assert not browser.find_element(By.ID, "input").is_enabled()
        # /health stays 200 (its Socket.IO clients are served), and says the page cannot connect.
        health = bare.health()
        assert health.status_code == 200 and health.json()["pageClient"] == "missing", health.text
    finally:
        bare.program.kill()


def test_me_actions_and_the_pending_bubble(redis, node, browser):
    """The original client's rule: "\\me waves" and "/me<TAB>nods" are actions too. A pending action
    looks like the line it becomes, and a message sent after retries loses the retry styling."""
    log_in(browser, node)
    browser.execute_script("""
        window.__states = [];
        new MutationObserver((records) => records.forEach((record) => {
          const node = record.target.nodeType === 1 ? record.target : record.target.parentElement;
          const li = node && node.closest('li');
          const note = li && li.querySelector('.note');
          if (note) window.__states.push([li.className, note.textContent]);
        })).observe(document.getElementById('messages'), {subtree: true, childList: true, attributes: true, characterData: true});
    """)
    stop_redis(redis)
    send(browser, "\\me waves")
    type_value(browser, "/me\tnods")  # a tab key would move the focus: as a paste
    click_send(browser)
    wait(browser, "the pending actions", lambda d: [b["note"] for b in bubbles(d)] == ["not sent, retrying…"] * 2)
    assert [b["text"].split("\n")[0].replace("not sent, retrying…", "").strip() for b in bubbles(browser)] == [
        "* Ada waves", "* Ada nods"]
    assert all({"action", "retrying"} <= set(b["cls"].split()) for b in bubbles(browser))
    redis.start()
    wait(browser, "the action lines", lambda d: not bubbles(d) and "* Ada waves" in final_lines(d) and "* Ada nods" in final_lines(d),
         timeout=20)
    assert final_lines(browser)[-2:] == ["* Ada waves", "* Ada nods"]
    states = browser.execute_script("return window.__states")
    # "nods" was retried behind "waves", then sent: once no longer retried, it no longer looks it.
    assert any(note == "sending…" for cls, note in states[2:]), states
    for cls, note in states:
        if note != "not sent, retrying…":
            assert "retrying" not in cls.split() and "failed" not in cls.split(), (cls, note)


def test_a_gap_after_a_reconnection_is_shown(redis, node, browser):
    """A page that comes back with an offset the stream still holds gets what it missed, and no notice.
    One whose offset the stream no longer holds gets welcome {gap: true}: it says, in the list where
    lines are missing and in the status, that some are gone. A page that showed nothing says nothing."""
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CAPTURE_SOCKET})
    log_in(browser, node)
    browser.execute_script("window.__socket.listeners('welcome').forEach(f => f({instance: 'x', gap: true}))")
    assert not browser.find_elements(By.CSS_SELECTOR, "#messages li.notice")
    grace = ChatClient(node, "Grace")
    store = Redis(port=redis.port, decode_responses=True)

    def away_while(action):
        browser.execute_script("window.__socket.disconnect()")
        store.delete(*store.keys("chat:sio:*") or ["-"])  # never recovered: caught up from its offset or not
        action()
        browser.execute_script("window.__socket.connect()")
        wait(browser, "the new connection", lambda d: d.execute_script("return window.__socket.connected")
             and d.find_element(By.ID, "socket-instance").text != "–")

    try:
        grace.send("before the gap", "g1")
        wait(browser, "the line", lambda d: has_line(d, "before the gap"))
        away_while(lambda: grace.send("missed but kept", "g2"))
        wait(browser, "the missed line", lambda d: has_line(d, "missed but kept"))
        assert not browser.find_elements(By.CSS_SELECTOR, "#messages li.notice")

        def lose_the_history():
            store.xtrim("chat:history", maxlen=0)  # the page's offset is gone from the stream
            grace.send("after the gap", "g3")
        away_while(lose_the_history)
        wait(browser, "the notice", lambda d: d.find_elements(By.CSS_SELECTOR, "#messages li.notice"))
        wait(browser, "the recent history", lambda d: has_line(d, "after the gap"))
        notice = browser.find_element(By.CSS_SELECTOR, "#messages li.notice")
        assert notice.text == "Some messages sent while you were away are no longer available"
        assert "no longer available" in browser.find_element(By.ID, "status").text
        texts = message_texts(browser)
        at = texts.index(notice.text)
        assert texts[at - 1].endswith("missed but kept") and texts[at + 1].endswith("after the gap"), texts
    finally:
        store.close()
        grace.close()


def test_accessibility_of_the_page(node, browser):
    log_in(browser, node)
    assert browser.find_element(By.ID, "messages").get_attribute("role") == "log"
    assert browser.find_element(By.ID, "status").get_attribute("role") == "status"
    assert browser.execute_script("const i = document.getElementById('input'); return i.labels[0].textContent") == "Message"
    grace = ChatClient(node, "Grace")
    try:
        grace.send("news from Grace", "a1")
        wait(browser, "Grace's line", lambda d: has_line(d, "news from Grace"))
        send(browser, "my own line")
        assert browser.execute_script("return document.activeElement.id") == "input"  # back to typing
        wait(browser, "my own line", lambda d: has_line(d, "my own line"))
        # A new line of someone else is read out; one's own line is not (its bubble was not either).
        announced = browser.execute_script("return document.getElementById('announcer').textContent")
        assert "Grace: news from Grace" in announced and "my own line" not in announced
        assert browser.find_element(By.ID, "messages").get_attribute("aria-live") == "off"
        # After a reload, the history is not read out.
        browser.refresh()
        wait(browser, "the history", lambda d: has_line(d, "my own line"))
        # Lines are announced in the same pass that draws them: the history, drawn, said nothing.
        assert browser.execute_script("return document.getElementById('announcer').textContent") == ""
        # And the next live line is announced, not the history before it.
        grace.send("later from Grace", "a2")
        announcer = browser.find_element(By.ID, "announcer")
        wait(browser, "the live line announced", lambda d: "later from Grace" in announcer.get_attribute("textContent"))
        spoken = announcer.get_attribute("textContent")
        assert "news from Grace" not in spoken and "my own line" not in spoken, spoken
        # The instance that handled a line is shown, not only on hover.
        via = browser.find_element(By.CSS_SELECTOR, "#messages li[data-offset] .via")
        assert via.is_displayed() and via.text.startswith("via " + node.guid[:8])
    finally:
        grace.close()
    # The notes of own messages on their way or refused are legible (AA: 4.5:1), without transparency.
    for classes in ["mine pending", "mine pending retrying", "mine failed", "action mine pending retrying", "action mine failed"]:
        ratio, opacity = browser.execute_script(NOTE_CONTRAST, classes)
        assert ratio >= 4.5 and opacity == 1, (classes, ratio, opacity)


def test_lines_from_an_earlier_day_show_their_date(redis, node, browser):
    """The history outlives a day (a cluster's Redis keeps its data in the state folder): a line from an
    earlier day shows its date, from an earlier year the year too; today's lines only the time. Each
    time is a <time> element with the exact instant, and the full date on hover."""
    store = Redis(port=redis.port, decode_responses=True)
    old = 1_700_000_000_000  # 2023-11-14T22:13:20Z
    days_ago = int(time.time() * 1000) - 2 * 86_400_000
    try:
        for stamp, text in ((old, "from an earlier year"), (days_ago, "from two days ago")):
            line = {"action": "message", "id": f"old-{stamp}", "instance": "0", "msg": text, "time": stamp, "user": "Grace"}
            store.xadd("chat:history", {"m": json.dumps(line, sort_keys=True, separators=(",", ":"))})
    finally:
        store.close()
    log_in(browser, node)
    send(browser, "from today")
    wait(browser, "today's line", lambda d: has_line(d, "from today"))
    times = browser.execute_script(
        "return Array.from(document.querySelectorAll('#messages li[data-offset] time'),"
        " t => ({text: t.textContent, datetime: t.dateTime, title: t.title, line: t.parentElement.parentElement.innerText}))")
    by_line = {next(text for text in ("earlier year", "two days ago", "today") if text in entry["line"]): entry for entry in times}
    assert re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}, 2023 \d\d:\d\d:\d\d", by_line["earlier year"]["text"]), by_line
    assert by_line["earlier year"]["datetime"] == "2023-11-14T22:13:20.000Z" and "2023" in by_line["earlier year"]["title"], by_line
    assert re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}(, \d{4})? \d\d:\d\d:\d\d", by_line["two days ago"]["text"]), by_line
    assert re.fullmatch(r"\d\d:\d\d:\d\d", by_line["today"]["text"]), by_line


def test_the_pages_fit_a_phone(node, browser):
    """Found by a user: the login card was 369 px wide whatever the screen, so on a phone narrower than
    about 385 px the Join button was cut off, and the chat page hid the online list altogether."""
    browser.delete_all_cookies()
    try:
        for width in (320, 360, 390):
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": width, "height": 740, "deviceScaleFactor": 1, "mobile": True})
            browser.get(node.url + "/")
            wait(browser, "the login page", lambda d: d.find_elements(By.ID, "user"))
            sizes = browser.execute_script(
                "const b = document.querySelector('form button').getBoundingClientRect();"
                "return [document.documentElement.scrollWidth, window.innerWidth, b.right];")
            assert sizes[0] <= sizes[1] and sizes[2] <= sizes[1], (width, sizes)
        browser.save_screenshot(str(IMAGES / "login-phone.png"))
        browser.find_element(By.ID, "user").send_keys("Phoebe")
        browser.find_element(By.CSS_SELECTOR, "form button").click()
        wait(browser, "the socket to connect", lambda d: d.find_element(By.ID, "status").text.startswith("Connected"))
        wait(browser, "the online list, shown as a strip", lambda d: d.find_element(By.ID, "online").is_displayed()
             and "Phoebe" in d.find_element(By.ID, "online").text)
        assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        browser.save_screenshot(str(IMAGES / "chat-phone.png"))
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        browser.delete_all_cookies()
