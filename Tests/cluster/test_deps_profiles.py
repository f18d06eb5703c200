"""scripts/deps.sh's profiles: `run` installs only what building and `make run` need (hiredis, the
embedded Redis, the socket.io client bundle), `all` (the default) everything the tests and benchmarks
need too. `--list PROFILE` prints a profile's Debian packages, one per line, and installs nothing."""

import hashlib
import os
import re
import subprocess
import time

import pytest

from harness import REPO, SOCKETIO_JS

DEPS = REPO / "scripts" / "deps.sh"
STAMP = REPO / ".venv" / ".requirements.sha256"
RUN_NEEDS = ["libhiredis-dev", "redis-server"]
TEST_ONLY = ["chromium", "chromium-driver", "haproxy", "nginx", "wrk", "nodejs"]


def deps(*args, env=None, timeout=60):
    return subprocess.run([str(DEPS), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def listed(*args):
    result = deps("--list", *args)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout.splitlines()


def installed(package):
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return "install ok installed" in status.stdout


def test_the_run_profile_has_what_make_run_needs_and_nothing_only_the_tests_use():
    packages = listed("run")
    for package in RUN_NEEDS:
        assert package in packages
    for package in TEST_ONLY:
        assert package not in packages


def test_the_all_profile_has_everything_and_is_the_default():
    packages = listed("all")
    for package in RUN_NEEDS + TEST_ONLY:
        assert package in packages
    assert set(listed("run")) <= set(packages)
    assert len(packages) == len(set(packages))
    assert listed() == packages


@pytest.mark.parametrize("args", [["bogus"], ["--list", "bogus"], [""]])
def test_an_unknown_profile_fails_naming_the_valid_ones(args):
    result = deps(*args)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "unknown profile" in result.stderr
    assert "run (" in result.stderr and "all (" in result.stderr


@pytest.mark.parametrize("profile", ["run", "all"])
def test_a_profile_whose_deps_are_all_there_is_a_quick_no_op(profile, tmp_path):
    # Only where everything is there already (as after `make deps`): otherwise this would install it.
    missing = [package for package in listed(profile) if not installed(package)]
    if missing:
        pytest.skip(f"missing Debian packages: {' '.join(missing)} (make deps installs them)")
    want_js = re.search(r"^SOCKETIO_JS_SHA256=(\w+)$", DEPS.read_text(), re.MULTILINE).group(1)
    if not SOCKETIO_JS.exists() or hashlib.sha256(SOCKETIO_JS.read_bytes()).hexdigest() != want_js:
        pytest.skip(f"{SOCKETIO_JS} is missing or not the pinned one (make deps fetches it)")
    if profile == "all":
        requirements = b"".join((REPO / name).read_bytes() for name in ("requirements-test.txt", "constraints-test.txt"))
        if not STAMP.exists() or STAMP.read_text().strip() != hashlib.sha256(requirements).hexdigest():
            pytest.skip("the test clients in .venv are not the current requirements (make deps installs them)")

    # An apt-get that records being called: a no-op never calls it.
    calls = tmp_path / "apt-get.calls"
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    (shim / "apt-get").chmod(0o755)
    env = dict(os.environ, PATH=f"{shim}:{os.environ['PATH']}")

    stamp_before = STAMP.read_text() if STAMP.exists() else None
    stamp_mtime = STAMP.stat().st_mtime_ns if STAMP.exists() else None
    js_mtime = SOCKETIO_JS.stat().st_mtime_ns
    started = time.monotonic()
    result = deps(profile, env=env)
    elapsed = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert not calls.exists()
    assert elapsed < 15, f"scripts/deps.sh {profile} took {elapsed:.1f} s with nothing to do"
    assert (STAMP.read_text() if STAMP.exists() else None) == stamp_before
    assert (STAMP.stat().st_mtime_ns if STAMP.exists() else None) == stamp_mtime
    assert SOCKETIO_JS.stat().st_mtime_ns == js_mtime
