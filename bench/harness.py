"""What the benchmarks share: a scratch database and the hub's real processes around it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent

# The hub's processes as production runs them (DEBUG off: Django keeps and times every
# statement with it on), with what production settings require of a bench.
PRODUCTION_SETTINGS = {
    "HUB_DEBUG": "false",
    "HUB_SECURE": "false",
    "HUB_SECRET_KEY": "bench-only-secret-key-not-for-production-0123456789",
    "HUB_LOG_LEVEL": "WARNING",
}


def scratch_database(base_url: str, name: str) -> str:
    """Drop and create database ``name`` on the server of ``base_url``; return its URL."""
    admin = psycopg.connect(base_url, autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    if "?" in base_url:
        head, query = base_url.split("?", 1)
        return head.rsplit("/", 1)[0] + f"/{name}?{query}"
    return base_url.rsplit("/", 1)[0] + f"/{name}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class HubProcesses:
    """gunicorn and the django-q2 cluster against ``env``'s DATABASE_URL, migrated first."""

    def __init__(self, env: dict[str, str], *, port: int, web_workers: int = 2) -> None:
        self.env, self.port, self.web_workers = env, port, web_workers
        self.url = f"http://127.0.0.1:{port}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> HubProcesses:
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=self.env, check=True)
        for command in (
            [sys.executable, "-m", "gunicorn", "hub.wsgi", "-b", f"127.0.0.1:{self.port}", "-w", str(self.web_workers)],
            [sys.executable, "manage.py", "qcluster"],
        ):
            self.procs.append(
                subprocess.Popen(command, cwd=ROOT, env=self.env, start_new_session=True, stderr=subprocess.DEVNULL)
            )
        for _ in range(300):
            try:
                requests.get(f"{self.url}/api/health", timeout=1)
                return self
            except requests.RequestException:
                time.sleep(0.2)
        raise RuntimeError("the web server did not come up")

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            os.killpg(proc.pid, 15)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
