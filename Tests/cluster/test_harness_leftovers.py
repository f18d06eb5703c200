"""The test harness stops what a killed test run left running (Tests/python/leftovers.py)."""

import os
import shutil
import subprocess
import sys
import tempfile

import leftovers
from cluster_run import process_alive
from harness import REPO, wait_until

SCRIPT = """
import signal, sys, tempfile
tempfile.tempdir = {tmp!r}
sys.path.insert(0, {python!r})
import harness
redis = harness.RedisServer()
port = harness.free_port()
node = harness.Program("chat-node", env={{"PORT": str(port), "REDIS_URL": redis.url, "LOG_LEVEL": "warning"}})
harness.wait_until("chat-node", lambda: harness.is_listening(port), timeout=60)
from cluster_run import ClusterRun, app_command
cluster = ClusterRun({{"app": {{"name": "web", "command": app_command(), "instances": 1}}, "proxy": {{"enabled": False}},
                      "health_check": {{"startup_interval": "50ms"}}}})
cluster.wait_ready()
status = cluster.status()
print(redis.process.pid, node.process.pid, cluster.pid, status["redis"]["pid"], status["instances"][0]["pid"], flush=True)
signal.pause()  # until the test kills this run
"""


def test_programs_of_a_killed_test_run_are_stopped_by_the_next_one(tmp_path):
    script = tmp_path / "run.py"
    # Its programs' folders: a short path (a control socket's is limited), removed at the end.
    folder = tempfile.mkdtemp(prefix="stickylab-killed-")
    script.write_text(SCRIPT.format(tmp=folder, python=str(REPO / "Tests" / "python")))
    # A test run of its own (not marked as part of this one), killed with SIGKILL as a CI timeout would.
    env = {name: value for name, value in os.environ.items() if name != leftovers.MARKER}
    run = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env, start_new_session=True)
    # A program of this run, which is alive: not touched.
    bystander = subprocess.Popen(["sleep", "120"])
    try:
        line = run.stdout.readline()
        pids = [int(word) for word in line.split()]
        redis_pid, node_pid, cluster_pid, cluster_redis_pid, instance_pid = pids
        run.kill()
        run.wait(timeout=10)
        assert all(process_alive(pid) for pid in pids), "a killed run leaves its programs running"
        assert leftovers.run_alive(os.environ[leftovers.MARKER])

        result = subprocess.run([sys.executable, str(REPO / "Tests" / "python" / "leftovers.py")], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        # The cluster's Redis hides the marker under its process title: the cluster stops it, on SIGTERM.
        assert "stopped 4 processes left running by a test run that was killed: " in result.stdout, result.stdout
        for name, pid in [("redis-server", redis_pid), ("chat-node", node_pid), ("cluster", cluster_pid)]:
            assert f"{name} (pid {pid})" in result.stdout, result.stdout
        wait_until("the leftovers gone", lambda: not any(process_alive(pid) for pid in pids))
        assert process_alive(bystander.pid), "a program of a live test run is left alone"
        # Nothing left: a second sweep stops nothing.
        again = subprocess.run([sys.executable, str(REPO / "Tests" / "python" / "leftovers.py")], capture_output=True, text=True, timeout=60)
        assert again.stdout == "", again.stdout
    finally:
        for process in (run, bystander):
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(folder, ignore_errors=True)
