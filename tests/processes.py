"""Start the hub's real processes (gunicorn, qcluster) against the test database."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

import requests
from django.db import connection

from integrations.queue import cluster_stalled

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_database_url() -> str:
    """A URL for the database pytest-django created, for child processes."""
    s = connection.settings_dict
    host = s["HOST"] or ""
    auth = quote(s["USER"] or "postgres") + (":" + quote(s["PASSWORD"]) if s["PASSWORD"] else ":")
    if host.startswith("/"):
        return f"postgresql://{auth}@/{s['NAME']}?host={quote(host)}"
    return f"postgresql://{auth}@{host or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


class HubProcesses:
    """gunicorn + qcluster as subprocesses, each in its own process group."""

    def __init__(self, env: dict[str, str], *, web_workers: int = 2) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "HUB_DEBUG": "true",
            "HUB_LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.env.pop("HUB_TESTING", None)
        self.web_workers = web_workers
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start_web(self) -> None:
        self.procs["web"] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "hub.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                str(self.web_workers),
                "--graceful-timeout",
                "5",
            ],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
        )
        self.wait_http(f"{self.url}/api/health")

    def start_cluster(self, log_path: Path | None = None) -> None:
        self.cluster_log = log_path
        self.cluster_started = time.monotonic()
        output = log_path.open("ab") if log_path else None
        self.procs["qcluster"] = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=self.env,
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )

    def restart_cluster_if_stalled(self, threshold: float) -> bool:
        """The supervisor's part: restart a cluster that has finished no task for ``threshold`` s.

        A cluster (re)started less than ``threshold`` s ago is left alone: the tasks its killed
        predecessor held come back only when their lease ends.
        """
        if time.monotonic() - self.cluster_started < threshold or not cluster_stalled(threshold=threshold):
            return False
        self.restart_cluster()
        return True

    def restart_cluster(self) -> None:
        """What a supervisor does with a wedged cluster: kill it, start a new one."""
        proc = self.procs.pop("qcluster")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        self.start_cluster(self.cluster_log)

    def worker_pids(self) -> list[int]:
        """PIDs of the cluster's live task workers, from its own log ("ready for work at PID")."""
        import re

        import psutil

        assert self.cluster_log is not None, "start_cluster(log_path=...) to know the workers"
        pids = {int(m) for m in re.findall(rb"ready for work at (\d+)", self.cluster_log.read_bytes())}
        return [pid for pid in pids if psutil.pid_exists(pid)]

    def wait_http(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}")
            try:
                requests.get(url, timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.2)
        raise TimeoutError(url)

    def stop(self) -> None:
        stop_leaders(self.procs.values())
        self.procs.clear()


def stop_leaders(procs: Iterable[subprocess.Popen[bytes]], grace: float = 20) -> None:
    """SIGTERM each process (its group's leader only), then SIGKILL the group of any still running after ``grace``.

    The leaders only, as run_hub stops them: django-q2's sentinel dies at once on a SIGTERM sent to
    the whole group, and the qcluster master then hung until the SIGKILL.
    """
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_until(predicate, timeout: float = 60, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
