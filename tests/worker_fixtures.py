"""Running a script as a local `multi_worker` cluster: one process per worker, each with
its TF_CONFIG on localhost ports, output in files (a pipe nobody reads could fill up and
stall a worker), every process killed at the end whatever happens.
"""

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300  # seconds for a whole run; a hung worker must fail the test, not CI


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Worker:
    """One worker process; `out` / `err` read its stdout / stderr so far."""

    def __init__(self, cmd, index, addresses, log_dir):
        self.index = index
        self.stdout_path = Path(log_dir) / f"worker{index}.out"
        self.stderr_path = Path(log_dir) / f"worker{index}.err"
        tf_config = {"cluster": {"worker": addresses},
                     "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1",
                   TF_CONFIG=json.dumps(tf_config))
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env,
                                         cwd=str(REPO))

    def out(self):
        return self.stdout_path.read_text()

    def err(self):
        return self.stderr_path.read_text()

    def wait(self, timeout):
        """Exit code, or None if still running after `timeout` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


class Cluster:
    """Context manager: `n` workers running `cmd`; all are killed on exit."""

    def __init__(self, cmd, log_dir, ports):
        addresses = [f"127.0.0.1:{port}" for port in ports]
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.workers = [Worker(cmd, i, addresses, log_dir) for i in range(len(ports))]

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        for worker in self.workers:
            worker.kill()
        return False

    def wait_until(self, index, condition, timeout=TIMEOUT):
        """Polls until condition(stdout of worker `index`) holds; fails on a timeout or
        when a worker ended first."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition(self.workers[index].out()):
                return
            ended = [w for w in self.workers if w.proc.poll() is not None]
            assert not ended, (f"worker {ended[0].index} ended (exit {ended[0].proc.returncode})"
                               f" first:\n{ended[0].err()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting on worker {index}:\n"
                             f"{self.workers[index].out()[-2000:]}")

    def wait_all(self, timeout=TIMEOUT):
        """Waits for every worker; returns their exit codes (fails on a timeout)."""
        deadline = time.time() + timeout
        codes = [w.wait(max(1.0, deadline - time.time())) for w in self.workers]
        for worker, code in zip(self.workers, codes):
            assert code is not None, f"worker {worker.index} hung:\n{worker.err()[-3000:]}"
        return codes
