"""Fixtures for sticky-proxy's conformance tests (helpers in proxy_support.py)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from proxy_support import Backend, Proxy  # noqa: E402


@pytest.fixture
def backends(tmp_path):
    started: list[Backend] = []

    def start(count: int = 1, **kwargs) -> list[Backend]:
        new = [Backend(index=len(started) + i, log_dir=tmp_path, **kwargs) for i in range(count)]
        started.extend(new)
        return new

    yield start
    for backend in started:
        backend.stop()


@pytest.fixture
def proxy_factory(tmp_path):
    started: list[Proxy] = []

    def start(*args: str) -> Proxy:
        proxy = Proxy(*args, log_dir=tmp_path / f"proxy-{len(started)}")
        started.append(proxy)
        return proxy

    (tmp_path).mkdir(exist_ok=True)
    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(proxy_factory) -> Proxy:
    return proxy_factory()
