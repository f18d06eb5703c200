"""Runs the built `cluster` executable for a test or a benchmark: `cluster up` in its own process
group with its own state folder and a config written from a dict, plus the control commands."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness import REPO, SOCKETIO_JS, Program, executable, process_alive, scratch_dir, wait_until  # noqa: F401 - process_alive for the tests

TESTAPP = REPO / "Tests" / "cluster" / "testapp.py"
# A line of sticky-proxy's access log (gorouter's format): `... "GET /path HTTP/1.1" 200 ...`.
ACCESS_LOG = re.compile(r'"[A-Z]+ \S+ HTTP/1\.[01]" \d{3} ')


def app_command() -> str:
    return f"{sys.executable} {TESTAPP}"


def chat_cluster(affinity: str = "cf", log_level: str = "info", instances: int = 3, front_router: bool = False,
                 front_router_affinity: str = "same") -> dict:
    """The config of a chat-node cluster behind sticky-proxy (free proxy port, 100 ms startup checks)."""
    env = {"SOCKETIO_CLIENT_JS": str(SOCKETIO_JS), "LOG_LEVEL": log_level}
    return {"app": {"name": "chat", "command": "chat-node", "instances": instances, "env": env},
            "health_check": {"startup_interval": "100ms"},
            "proxy": {"port": 0, "affinity": affinity, "front_router": front_router,
                      "front_router_affinity": front_router_affinity}}


class ClusterRun:
    def __init__(self, config: dict | Path | None = None, args: list[str] | None = None, state_dir: str | None = None,
                 env: dict[str, str] | None = None):
        """`config`: a dict written to a file of the run, or the path of a config file used as it is."""
        self.state_dir = state_dir or str(scratch_dir("cluster-"))
        Path(self.state_dir).mkdir(parents=True, exist_ok=True)
        if isinstance(config, Path):
            self.config_path = config
        else:
            config = dict(config or {})
            redis = dict(config.get("redis") or {})
            if "command" not in redis and "url" not in redis:
                # Redis keeps its environment, with this test run's marker, instead of writing its
                # process title over it: a sweep finds it even when its cluster was SIGKILLed too.
                redis["command"] = "redis-server --set-proc-title no"
            config["redis"] = redis
            self.config_path = Path(self.state_dir) / f"cluster-{time.monotonic_ns()}.yml"
            # JSON is YAML.
            self.config_path.write_text(json.dumps(config))
        self.started_at = time.monotonic()
        self.program = Program("cluster", ["up", "--config", str(self.config_path), "--state-dir", self.state_dir, *(args or [])],
                               env={"NO_COLOR": "1", **(env or {})}, log_dir=Path(self.state_dir))

    # The running `cluster up`
    @property
    def pid(self) -> int:
        return self.program.process.pid

    def output(self) -> str:
        return self.program.output()

    def recent_events(self, lines: int = 60) -> str:
        """The end of the output without the proxy's access log, for a failure message: what the
        cluster, the instances and Redis said (the whole output stays in the run's log folder)."""
        said = [line for line in self.output().splitlines() if not ACCESS_LOG.search(line)]
        return "\n".join(said[-lines:])

    def wait_for_output(self, text: str, timeout: float = 60.0, count: int = 1) -> str:
        def seen():
            out = self.output()
            if self.program.process.poll() is not None and out.count(text) < count:
                raise AssertionError(f"cluster exited ({self.program.process.returncode}) before printing {text!r}:\n{out[-4000:]}")
            return out.count(text) >= count
        try:
            wait_until(f"cluster output {text!r}", seen, timeout=timeout)
        except TimeoutError as error:
            # What the cluster said instead, so that a failure in CI tells why without its log folder.
            raise AssertionError(f"{error}; the cluster said:\n{self.recent_events()}") from None
        return self.output()

    def expect(self, *texts: str, timeout: float = 15.0):
        """Each text appears in the output (lines reach the output shortly after the events)."""
        for text in texts:
            self.wait_for_output(text, timeout=timeout)

    def proxy_url(self) -> str:
        """The proxy's URL, from the "open http://localhost:PORT/" line."""
        match = re.search(r"open http://localhost:(\d+)/", self.output())
        assert match, self.recent_events()
        return f"http://127.0.0.1:{match.group(1)}"

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Waits for the 'cluster is up' line; returns the seconds since start."""
        self.wait_for_output("cluster is up", timeout=timeout)
        return time.monotonic() - self.started_at

    # The control commands
    def ctl(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([str(executable("cluster")), *args, "--state-dir", self.state_dir], capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"cluster {' '.join(args)} failed ({result.returncode}): {result.stderr}{result.stdout}\n"
                                 f"--- cluster output ---\n{self.recent_events()}")
        return result

    def status(self) -> dict:
        return json.loads(self.ctl("status", "--json").stdout)

    def instances(self) -> dict[int, dict]:
        return {instance["index"]: instance for instance in self.status()["instances"]}

    def wait_status(self, what: str, condition, timeout: float = 60.0) -> dict:
        """Polls the status until condition(status) holds; returns that status."""
        last = {}

        def check():
            nonlocal last
            last = self.status()
            return condition(last)
        try:
            wait_until(what, check, timeout=timeout)
        except TimeoutError as error:
            raise AssertionError(f"{error}; last status: {json.dumps(last, indent=1)}\n{self.recent_events()}") from None
        return last

    def down(self, timeout: float = 60.0) -> int:
        self.ctl("down", timeout=timeout)
        return self.program.process.wait(timeout=timeout)

    def close(self):
        """Stops the cluster (SIGTERM, then SIGKILL to its group) if it still runs."""
        if self.program.process.poll() is None:
            try:
                os.kill(self.program.process.pid, signal.SIGTERM)
                self.program.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.program.kill()
        self.program._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
