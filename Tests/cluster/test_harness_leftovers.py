"""The test harness stops what a killed test run left running (Tests/python/leftovers.py)."""

import os
import shutil
import signal
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
        # Killed with the run, as a CI timeout that SIGKILLs the whole tree does: the cluster cannot stop
        # its Redis and its instance, so the sweep must find them by their marker.
        os.kill(cluster_pid, signal.SIGKILL)
        run.kill()
        run.wait(timeout=10)
        wait_until("the cluster killed", lambda: not process_alive(cluster_pid))
        left = [pid for pid in pids if pid != cluster_pid]
        assert all(process_alive(pid) for pid in left), "a killed run leaves its programs running"
        assert leftovers.run_alive(os.environ[leftovers.MARKER])

        result = subprocess.run([sys.executable, str(REPO / "Tests" / "python" / "leftovers.py")], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        # The cluster's Redis runs with --set-proc-title no (cluster_run), so its marker is still there.
        assert "stopped 4 processes left running by a test run that was killed: " in result.stdout, result.stdout
        for name, pid in [("redis-server", redis_pid), ("chat-node", node_pid), ("redis-server", cluster_redis_pid)]:
            assert f"{name} (pid {pid})" in result.stdout, result.stdout
        assert f"(pid {instance_pid})" in result.stdout, result.stdout  # the test app, a python
        wait_until("the leftovers gone", lambda: not any(process_alive(pid) for pid in left))
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
