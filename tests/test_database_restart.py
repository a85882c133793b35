"""PostgreSQL restarted under load: intake answers 5xx (never 2xx without a commit) while it is down,
and the hub recovers without a restart of its own processes: the web server and the task cluster.

The hub runs against a PostgreSQL of this test's own (pgserver, in a temporary directory), so the
test can stop and start it without touching the database the rest of the suite uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from sandboxes.marketing_cloud.journey import build_execute_payload, sign_execute
from tests.conftest import CLIENT_ID, CLIENT_SECRET, JWT_SECRET, subscriber
from tests.processes import ROOT, HubProcesses, wait_until

pytestmark = pytest.mark.slow


def _private_postgres(base: Path) -> tuple[object, Path, str, str]:
    os.environ.setdefault("XDG_RUNTIME_DIR", str(base))
    import pgserver

    pgdata = base / "pg"
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    socket_dir = str(server.get_postmaster_info().socket_dir)
    return server, pgdata, socket_dir, f"postgresql://postgres:@/postgres?host={quote(socket_dir)}"


def _pg_ctl(pgdata: Path, *args: str) -> None:
    from pgserver import _commands

    user = "pgserver" if os.geteuid() == 0 else None
    _commands.pg_ctl(["-w", *args], pgdata=pgdata, user=user, timeout=60)


def _has_live_children(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).children(recursive=True))
    except psutil.NoSuchProcess:
        return False


def test_intake_refuses_while_the_database_is_down_and_recovers(sandbox, tmp_path):
    base = Path(f"/tmp/hub-pg-{os.getpid()}")  # short: the socket path must fit in 107 bytes
    base.mkdir(exist_ok=True)
    server, pgdata, socket_dir, url = _private_postgres(base)
    env = {**os.environ, "DATABASE_URL": url, "HUB_DEBUG": "true"}
    env.pop("HUB_TESTING", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    hub = HubProcesses(
        {
            "MC_AUTH_BASE_URL": sandbox.url,
            "MC_CLIENT_ID": CLIENT_ID,
            "MC_CLIENT_SECRET": CLIENT_SECRET,
            "MC_JWT_SECRET": JWT_SECRET,
            "MC_HTTP_TIMEOUT": "3",
        }
    )
    hub.env["DATABASE_URL"] = url
    answers: list[tuple[float, int, int | None]] = []  # (time, status, eventId)
    stop = threading.Event()

    def load() -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set():
            body = sign_execute(build_execute_payload(subscriber(key=f"R{i}", email=f"r{i}@example.com")), JWT_SECRET)
            try:
                r = session.post(
                    f"{hub.url}/api/v1/marketing-cloud/journey/execute",
                    data=body,
                    timeout=10,
                    headers={"Content-Type": "application/jwt"},
                )
                answers.append((time.monotonic(), r.status_code, r.json().get("eventId") if r.ok else None))
            except requests.RequestException:
                answers.append((time.monotonic(), 0, None))
            i += 1
            time.sleep(0.05)

    try:
        hub.start_web()
        hub.start_cluster(log_path=tmp_path / "qcluster.log")
        # The database goes away under a running cluster (not one still starting up).
        assert wait_until(lambda: "running." in (tmp_path / "qcluster.log").read_text(), timeout=90)
        worker = threading.Thread(target=load)
        worker.start()
        time.sleep(2)
        down_at = time.monotonic()
        _pg_ctl(pgdata, "stop", "-m", "fast")
        time.sleep(3)
        up_at = time.monotonic()
        _pg_ctl(pgdata, "-l", str(pgdata / "log"), "-o", '-h ""', "-o", f"-k {socket_dir}", "start")
        time.sleep(4)
        stop.set()
        worker.join(30)
        while_down = [status for t, status, _ in answers if down_at + 0.5 < t < up_at]
        after = [status for t, status, _ in answers if t > up_at + 2]
        assert while_down and all(status == 0 or status >= 500 for status in while_down), while_down
        assert after and 200 in after, after  # recovered, same processes
        # The task cluster recovered by itself too: the same process, still running its workers (its
        # sentinel re-spawns a pusher or monitor that died on a lost connection; tasks that failed
        # while the database was down are retried by the hub's own bookkeeping).
        cluster = hub.procs["qcluster"]
        assert cluster.poll() is None and _has_live_children(cluster.pid)
        started = cluster.pid
        accepted = [event_id for _, status, event_id in answers if status == 200]
        ledger = tmp_path / "ledger.txt"
        ledger.write_text("\n".join(map(str, accepted)))

        def all_terminal() -> bool:
            out = subprocess.run(
                [sys.executable, "manage.py", "verify_invariants", "--window", "0", "--ledger", str(ledger)],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            return out.returncode == 0

        assert wait_until(all_terminal, timeout=180, interval=3)
        assert hub.procs["qcluster"].pid == started and hub.procs["qcluster"].poll() is None
    finally:
        stop.set()
        hub.stop()
        server.cleanup()
