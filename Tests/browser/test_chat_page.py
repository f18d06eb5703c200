"""The page in headless Chromium with the official socket.io client: log in, send, see the line, refresh
and stay logged in with the history, see an XSS payload rendered as text, log out. Takes the README's
screenshots (docs/images/chat-login.png, docs/images/chat-page.png)."""

from __future__ import annotations

import os
from pathlib import Path

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from chatkit import ChatClient

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

    # Log out: back to the login page, and the socket is refused without a session.
    browser.find_element(By.ID, "logout").click()
    wait(browser, "the login page", lambda d: d.find_elements(By.ID, "user"))
    assert browser.get_cookie("JSESSIONID") is None
    # The other tab is sent to the login page too (it used to go on chatting as Ada).
    browser.switch_to.window(second)
    wait(browser, "the second tab on the login page", lambda d: d.find_elements(By.ID, "user"))
    browser.close()
    browser.switch_to.window(first)
    grace.close()


def test_the_official_client_recovers_after_a_restart_of_its_instance(redis, node, browser):
    """Socket.IO connection state recovery in the browser: the instance is killed (-9) and started again
    on the same port; the official client reconnects by itself and gets what it missed."""
    from chatkit import ChatNode

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
             lambda d: d.find_element(By.ID, "status").text.startswith("Reconnected: missed messages recovered"), timeout=40)
        wait(browser, "the missed line", lambda d: any("while you were away" in t for t in message_texts(d)))
        texts = message_texts(browser)
        assert sum("before the crash" in t for t in texts) == 1
        assert sum("while you were away" in t for t in texts) == 1
    finally:
        writer.close()
        restarted.program.kill()
        other.program.kill()
