"""Slow clients against the web process as deployed: requests whose headers or body arrive a byte every 2 s.

The control case shows the attack works: four such connections stop the old documented command,
bare ``gunicorn hub.wsgi --workers 4`` (sync workers), from answering ``/api/health`` at all. The
shipped files (``deploy/gunicorn.conf.py`` behind ``deploy/nginx/hub.conf.template``, started by
``hub.webserver`` as ``make run`` starts them) must keep answering it within 2 s, every time, for
20 s, under ten times that many; nginx must cut off a request whose headers take longer than its
header timeout; and a body larger than nginx's default limit must reach the hub, whose answer,
given before it reads the body, must come back.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from hub.webserver import free_port, gunicorn_command, nginx_command
from tests.processes import ROOT
from tests.processes import test_database_url as child_database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WORKERS = 4  # the old documented command's, and the shipped file's default
TRICKLE_INTERVAL = 2.0  # seconds between two bytes of one slow connection
HEALTH_DEADLINE = 2.0  # seconds /api/health may take to answer
SURVIVE_SECONDS = 20.0
NGINX_HEADER_TIMEOUT = 10.0  # client_header_timeout in the shipped site
TARGET = "/api/v1/marketing-cloud/journey/execute"


class SlowClients:
    """Connections that send one byte every ``TRICKLE_INTERVAL`` s: of a header line, or of a declared body."""

    def __init__(self, port: int, *, headers: int, bodies: int) -> None:
        self.port = port
        self.sockets: list[tuple[str, socket.socket]] = []
        self.closed_by_server = {"headers": 0, "body": 0}
        self._stop = threading.Event()
        for kind, count in (("headers", headers), ("body", bodies)):
            for _ in range(count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                start = f"POST {TARGET} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                if kind == "body":
                    start += "Content-Type: application/jwt\r\nContent-Length: 100000\r\n\r\n"
                sock.sendall(start.encode())
                self.sockets.append((kind, sock))
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        live = list(self.sockets)
        while live and not self._stop.wait(TRICKLE_INTERVAL):
            for kind, sock in list(live):
                try:
                    # Header bytes stay inside one never-ending header line; body bytes inside the body.
                    sock.send(b"a")
                except OSError:
                    self.closed_by_server[kind] += 1
                    live.remove((kind, sock))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(TRICKLE_INTERVAL + 5)
        for _, sock in self.sockets:
            sock.close()


def probe_health(url: str, seconds: float, *, stop_at_failure: bool = False) -> list[float | None]:
    """GET ``url`` every 0.5 s on a new connection for ``seconds``: each answer's time, None if none in time."""
    times: list[float | None] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            response = requests.get(url, timeout=HEALTH_DEADLINE)
            took = time.monotonic() - started
            assert response.status_code in (200, 503), response.text
            times.append(took if took <= HEALTH_DEADLINE else None)
        except requests.RequestException:
            times.append(None)
        if stop_at_failure and times[-1] is None:
            break
        time.sleep(0.5)
    return times


@pytest.fixture
def start():
    """Start a command in its own process group; all of them stop at the end of the test."""
    procs: list[subprocess.Popen[bytes]] = []
    env = {
        **os.environ,
        "DATABASE_URL": child_database_url(),
        "HUB_DEBUG": "false",
        "HUB_SECRET_KEY": "slow-clients-test-secret-key-0123456789-abcdefghijklmnop",
        "HUB_ALLOWED_HOSTS": "127.0.0.1",
        "HUB_LOG_LEVEL": "ERROR",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("HUB_TESTING", None)
    env.pop("WEB_CONCURRENCY", None)

    def run(command: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)  # noqa: S603 - our own argv
        procs.append(proc)
        return proc

    yield run
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_healthy(url: str, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            assert proc.poll() is None, f"{proc.args[:4]} exited with {proc.returncode}"
        try:
            if requests.get(url, timeout=1).status_code in (200, 503):
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


@pytest.fixture
def slow_clients() -> Iterator[list[SlowClients]]:
    opened: list[SlowClients] = []
    yield opened
    for clients in opened:
        clients.close()


def test_control_the_attack_starves_the_old_documented_command(start, slow_clients):
    port = free_port()
    web = start(
        [sys.executable, "-m", "gunicorn", "hub.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS)]
    )
    health = f"http://127.0.0.1:{port}/api/health"
    wait_healthy(health, [web])
    assert None not in probe_health(health, 2)

    slow_clients.append(SlowClients(port, headers=WORKERS // 2, bodies=WORKERS - WORKERS // 2))
    times = probe_health(health, 12, stop_at_failure=True)
    assert times[-1] is None, f"bare sync gunicorn kept answering under {WORKERS} slow clients: {times}"


@pytest.fixture
def shipped(start, tmp_path: Path) -> Iterator[int]:
    """The shipped web process, its port: gunicorn with its settings (bind aside, as documented), nginx in front."""
    gunicorn_bind = f"127.0.0.1:{free_port()}"
    port = free_port()
    web = start(gunicorn_command(gunicorn_bind))
    front = start(nginx_command(tmp_path / "nginx", listen=f"127.0.0.1:{port}", upstream=gunicorn_bind))
    wait_healthy(f"http://127.0.0.1:{port}/api/health", [web, front])
    yield port
    assert web.poll() is None and front.poll() is None, "a process of the web front died"


def test_the_shipped_web_process_keeps_answering_under_slow_clients(shipped, slow_clients):
    attackers = 10 * WORKERS
    clients = SlowClients(shipped, headers=attackers, bodies=attackers)
    slow_clients.append(clients)
    started = time.monotonic()
    times = probe_health(f"http://127.0.0.1:{shipped}/api/health", SURVIVE_SECONDS)
    assert time.monotonic() - started >= SURVIVE_SECONDS
    assert len(times) >= SURVIVE_SECONDS / (HEALTH_DEADLINE + 0.5)
    assert None not in times, f"/api/health missed its {HEALTH_DEADLINE} s deadline: {times}"
    # Headers still incomplete after nginx's header timeout are cut off (within a trickle or two of it).
    assert SURVIVE_SECONDS > NGINX_HEADER_TIMEOUT + 2 * TRICKLE_INTERVAL
    assert clients.closed_by_server["headers"] == attackers


def test_an_oversized_body_gets_the_hubs_own_answer_through_the_front(shipped):
    """A body above nginx's default 1 MiB limit reaches the hub, and the answer the hub gives before
    reading it comes back. Without the drain in gunicorn's post_request hook about a third of these
    were 502s: gunicorn closed on the unread body while nginx was still sending it."""
    body = b"x" * (5 * 1024 * 1024)
    answers: Counter[tuple[str, int, str]] = Counter()
    for i in range(100):
        # As a TLS-terminating balancer reports it (https: the view's 413), or plain HTTP (the hub's redirect).
        proto = "https" if i % 2 else "http"
        response = requests.post(
            f"http://127.0.0.1:{shipped}{TARGET}",
            data=body,
            headers={"X-Forwarded-Proto": proto},
            allow_redirects=False,
            timeout=10,
        )
        answers[(proto, response.status_code, response.headers.get("Content-Type", "").split(";")[0])] += 1
    assert answers == {("https", 413, "application/problem+json"): 50, ("http", 301, "text/html"): 50}, answers
