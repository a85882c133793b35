"""Ctrl-C stops `make run` promptly: `manage.py run_hub` and every process it started are gone
within a few seconds of SIGINT, none of them left to the SIGKILL that follows a hang."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from tests import processes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# run_hub kills what is still running 15 s after the signal; a clean stop takes about a second.
STOP_BUDGET = 8.0


def test_ctrl_c_stops_run_hub_and_all_its_processes_within_seconds():
    env = {
        **os.environ,
        "DATABASE_URL": processes.test_database_url(),
        "HUB_DEBUG": "true",
        "HUB_LOG_LEVEL": "WARNING",
        "HUB_PORT": str(processes.free_port()),
        "MC_SANDBOX_PORT": str(processes.free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("HUB_TESTING", "MC_AUTH_BASE_URL"):
        env.pop(name, None)
    hub = subprocess.Popen(  # noqa: S603 - our own argv
        [sys.executable, "manage.py", "run_hub", "--no-demo", "--web-workers", "1"],
        cwd=processes.ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: list[str] = []
    children: list[psutil.Process] = []
    up = threading.Event()

    def read() -> None:
        for line in hub.stdout:  # type: ignore[union-attr]
            output.append(line)
            if "Ctrl-C stops everything" in line:
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert up.wait(90), "run_hub did not come up:\n" + "".join(output[-40:])
        children[:] = psutil.Process(hub.pid).children(recursive=True)
        names = {" ".join(child.cmdline()[1:4]) for child in children}
        assert any("qcluster" in name for name in names), names
        # The cluster's workers are up (the sentinel forks them a moment after it starts).
        time.sleep(2)
        children[:] = psutil.Process(hub.pid).children(recursive=True)

        sent = time.monotonic()
        hub.send_signal(signal.SIGINT)
        hub.wait(30)
        stopped = time.monotonic() - sent
        _, alive = psutil.wait_procs(children, timeout=max(0.1, STOP_BUDGET - stopped))
        print(f"run_hub exited {stopped:.1f} s after SIGINT; {len(children)} children")
        assert not alive, [proc.pid for proc in alive]
        assert stopped < STOP_BUDGET, f"run_hub took {stopped:.1f} s to stop"
    finally:
        if hub.poll() is None:
            os.killpg(hub.pid, signal.SIGKILL)
            hub.wait()
        # The children run in sessions of their own: on a failure, what this test started goes too.
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
