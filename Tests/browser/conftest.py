"""Browser fixtures: headless Chromium (Debian's chromium + chromium-driver) driven by selenium, and
chat-node on a real Redis. The chat-node helpers are shared with Tests/chat."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chat"))

from chatkit import ChatNode  # noqa: E402


@pytest.fixture
def node(redis):
    started = ChatNode(redis, index=0, RECENT_HISTORY="50")
    yield started
    if started.program.process.poll() is None:
        started.program.kill()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.fail("chromium and chromium-driver are missing: run `make deps`")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,720",
                     "--force-device-scale-factor=1", "--lang=en-US"]:
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
