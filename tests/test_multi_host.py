"""Several hosts: a database host, two web hosts and two worker hosts, each a network namespace on one bridge.

The database host runs a PostgreSQL of the test's own (a copy of the test database, logging every
statement), PgBouncer in transaction mode in front of it (every hub process connects through it), and
the Marketing Cloud sandbox. Journey calls go through both web hosts. While worker host 1 holds claimed
events mid-batch, its link goes down; then worker host 2's task workers are killed once. Worker host
2 takes the cut-off host's claims over once their lease ends (PostgreSQL ends the cut-off host's open
transaction, ``idle_in_transaction_session_timeout``), and when the link comes back, host 1 claims
again. At the end every accepted event is synced exactly once, no golden record is duplicated, Marketing
Cloud holds every master ID, and nothing that reached PostgreSQL kept session state.

Figures go to ``var/multi-host-report.json``. Run: ``.venv/bin/python -m pytest tests/test_multi_host.py -s``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import requests

from customers.models import CrossReference, Individual
from integrations.models import InboundEvent, SyncRun
from sandboxes.marketing_cloud.journey import build_execute_payload, sign_execute
from tests import processes
from tests.conftest import CLIENT_ID, CLIENT_SECRET, JWT_SECRET, subscriber
from tests.netns import Topology, available
from tests.private_postgres import PGBOUNCER, PgBouncer, PrivatePostgres, scratch_directory, session_state_statements
from tests.processes import ROOT, stop_leaders, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REPORT = ROOT / "var" / "multi-host-report.json"
WEB_HOSTS, WORKER_HOSTS = ("web1", "web2"), ("wk1", "wk2")
PEOPLE, SECOND_CHANGES, LATE_PEOPLE = 500, 100, 150  # first wave: people plus second changes; then late ones
Q_TIMEOUT, Q_RETRY = 8, 20  # the claims' lease is twice the task timeout: 16 s
LEASE = 2 * Q_TIMEOUT
# PostgreSQL ends a transaction left open by a host that went away: above the longest pause the hub
# makes inside a transaction (a token fetch, MC_HTTP_TIMEOUT 3 s here), below the lease.
IDLE_IN_TRANSACTION = 6
PG_PORT, BOUNCER_PORT, SANDBOX_PORT, WEB_PORT = 5432, 6432, 8765, 8000

FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton", "Ritchie"]

EVENTS, RUNS = InboundEvent._meta.db_table, SyncRun._meta.db_table
GOLDEN, XREFS = Individual._meta.db_table, CrossReference._meta.db_table


def _person(p: int, change: int) -> dict[str, str]:
    """Person ``p``'s ``change``-th change: nobody alike anyone else; a later change moves house."""
    return subscriber(
        key=f"MH{p}",
        email=f"mh{p}@example.com",
        FirstName=FIRST[p % 10],
        LastName=f"{LAST[(p // 10) % 10]}{'abcdefgh'[p // 100]}",
        BirthDate=(dt.date(1940, 1, 1) + dt.timedelta(days=37 * p)).isoformat(),
        AddressLine1=f"{p} Namespace Road, flat {change}",
        ModifiedDate=f"2026-11-{10 + change:02d}T09:00:00Z",
    )


class Hosts:
    """The hub's processes on their hosts, each logging to a file of its own."""

    def __init__(self, topology: Topology, base: Path, env: dict[str, str]) -> None:
        self.topology, self.base, self.env = topology, base, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, host: str, command: list[str], **env: str) -> subprocess.Popen[bytes]:
        log = (self.base / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            self.topology.run_in(host, command),
            cwd=ROOT,
            env={**self.env, "HUB_INSTANCE_NAME": host, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.base / f"{name}.log").read_text(errors="replace")

    def worker_pids(self, name: str) -> list[int]:
        """The live task workers of a qcluster, from its log ("ready for work at PID")."""
        pids = {int(pid) for pid in re.findall(r"ready for work at (\d+)", self.log(name))}
        return [pid for pid in pids if psutil.pid_exists(pid)]

    def stop(self) -> None:
        stop_leaders(self.procs.values())


def test_hosts_cut_off_and_killed_lose_nothing_and_double_nothing() -> None:
    if why := available():
        pytest.skip(f"several hosts need network namespaces: {why}")
    if not Path(PGBOUNCER).exists():
        pytest.fail("Debian's pgbouncer is not installed: `make pgbouncer` (or apt-get install pgbouncer)")
    began = time.monotonic()
    base = scratch_directory("hub-mh-")
    topology = Topology(["db", *WEB_HOSTS, *WORKER_HOSTS])
    db = topology.address("db")
    server = PrivatePostgres(
        base / "pg",
        db,
        PG_PORT,
        netns=topology.namespace("db"),
        idle_in_transaction_session_timeout=f"{IDLE_IN_TRANSACTION}s",
        tcp_keepalives_idle="2",
        tcp_keepalives_interval="1",
        tcp_keepalives_count="3",
    )
    bouncer = PgBouncer(
        base / "bouncer",
        server,
        db,
        BOUNCER_PORT,
        netns=topology.namespace("db"),
        idle_transaction_timeout=str(IDLE_IN_TRANSACTION),
        tcp_keepidle="2",
        tcp_keepintvl="1",
        tcp_keepcnt="3",
    )
    # Every hub process connects through PgBouncer, and gives up on a peer that stopped answering.
    database_url = (
        f"{bouncer.url('hub')}?connect_timeout=3&keepalives_idle=2&keepalives_interval=1"
        "&keepalives_count=3&tcp_user_timeout=6000"
    )
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "HUB_DATABASE_POOLER": "pgbouncer",
        "HUB_DEBUG": "true",
        "HUB_LOG_LEVEL": "WARNING",
        "HUB_ALLOWED_HOSTS": ",".join(topology.address(h) for h in WEB_HOSTS),
        "PYTHONUNBUFFERED": "1",
        "MC_AUTH_BASE_URL": f"http://{db}:{SANDBOX_PORT}",
        "MC_CLIENT_ID": CLIENT_ID,
        "MC_CLIENT_SECRET": CLIENT_SECRET,
        "MC_JWT_SECRET": JWT_SECRET,
        "MC_HTTP_TIMEOUT": "3",
        "HUB_Q_TIMEOUT": str(Q_TIMEOUT),
        "HUB_Q_RETRY": str(Q_RETRY),
        "HUB_Q_WORKERS": "2",
        "HUB_RESOLVER_BATCH": "20",
    }
    env.pop("HUB_TESTING", None)
    hosts = Hosts(topology, base, env)
    answers: dict[int, tuple[int, int | None]] = {}
    report: dict[str, Any] = {}
    mh_sandbox = f"http://{db}:{SANDBOX_PORT}"
    try:
        topology.up()
        server.start()
        server.copy_database(processes.test_database_url(), "hub")
        mark = server.log_mark()
        bouncer.start()
        hosts.start(
            "sandbox",
            "db",
            [sys.executable, "-m", "sandboxes.marketing_cloud", "--host", db, "--port", str(SANDBOX_PORT)],
        )
        for host in WEB_HOSTS:
            address = f"{topology.address(host)}:{WEB_PORT}"
            hosts.start(host, host, [sys.executable, "-m", "gunicorn", "hub.wsgi", "--bind", address, "--workers", "2"])
        for host in WORKER_HOSTS:
            hosts.start(host, host, [sys.executable, "manage.py", "qcluster"])
        for host in WEB_HOSTS:
            assert wait_until(lambda h=host: _answers(f"http://{topology.address(h)}:{WEB_PORT}/api/health"), 90)
        assert wait_until(lambda: _answers(f"{mh_sandbox}/__sandbox/health"), 30)
        db_conn = psycopg.connect(server.url("hub"), autocommit=True, prepare_threshold=None)  # nothing prepared

        def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
            return db_conn.execute(sql, params).fetchall()

        sessions = [requests.Session() for _ in range(4)]

        def post(n: int, args: dict[str, str]) -> None:
            url = f"http://{topology.address(WEB_HOSTS[n % 2])}:{WEB_PORT}/api/v1/marketing-cloud/journey/execute"
            for _ in range(5):  # as Journey Builder retries a 5xx or a dropped connection
                try:
                    body = sign_execute(build_execute_payload(args), JWT_SECRET)
                    r = sessions[n % 4].post(url, data=body, timeout=30, headers={"Content-Type": "application/jwt"})
                except requests.RequestException:
                    continue
                if r.status_code < 500:
                    answers[n] = (r.status_code, r.json().get("eventId") if r.status_code == 200 else None)
                    return
            answers[n] = (0, None)

        first_wave = [_person(p, 0) for p in range(PEOPLE)] + [_person(p, 1) for p in range(0, PEOPLE, 5)]
        assert len(first_wave) == PEOPLE + SECOND_CHANGES
        poster = ThreadPoolExecutor(4)
        posting = [poster.submit(post, n, args) for n, args in enumerate(first_wave)]
        started = time.monotonic()

        # The cut: wk1's link goes down while it holds claimed events (a batch in flight).
        def held_by(host: str) -> list[int]:
            rows = query(
                f"SELECT id FROM {EVENTS} WHERE status = 'processing' AND claimed_by LIKE %s ORDER BY id", f"{host}:%"
            )
            return [row[0] for row in rows]

        # Partway: once a third of the first wave is in.
        assert wait_until(lambda: len(answers) >= len(first_wave) // 3, timeout=120)
        held: list[int] = []
        tries = 0
        while not held and tries < 30:
            tries += 1
            assert wait_until(lambda: bool(held_by("wk1")), timeout=60, interval=0.02), "wk1 never claimed"
            topology.cut("wk1")
            cut_at = time.monotonic()
            held = held_by("wk1")
            if not held:  # its batch ended between the look and the cut: try again
                topology.rejoin("wk1")
                time.sleep(0.5)
        assert held, "could not cut wk1 off while it held claims"
        report["cut"] = {
            "after_seconds_of_posting": round(cut_at - started, 1),
            "tries": tries,
            "claims_held_by_wk1": len(held),
            "accepted_so_far": sum(1 for s, _ in answers.values() if s == 200),
        }
        # ... and wk2's task workers die once, right after: those holding claims, mid-batch. (An idle
        # worker waits on the cluster's internal queue holding its lock; killed, it would wedge the
        # cluster until a supervisor restarted it, django-q2#23: not what this test is about.)
        cluster = psutil.Process(hosts.procs["wk2"].pid)
        victims: set[int] = set()

        def busy_wk2_workers() -> bool:
            workers = {child.pid for child in cluster.children(recursive=True)}
            rows = query(
                f"SELECT DISTINCT claimed_by FROM {EVENTS} WHERE status = 'processing' AND claimed_by LIKE 'wk2:%%'"
            )
            victims.update(pid for row in rows if (pid := int(row[0].split(":")[1])) in workers)
            return bool(victims)

        assert wait_until(busy_wk2_workers, timeout=60, interval=0.01), "wk2 never claimed"
        killed_claims = [
            event_id
            for event_id, claimer in query(f"SELECT id, claimed_by FROM {EVENTS} WHERE claimed_by LIKE 'wk2:%%'")
            if int(claimer.split(":")[1]) in victims
        ]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):  # it ended between the look and the kill
                os.kill(pid, signal.SIGKILL)
        report["wk2_workers_killed"] = len(victims)
        report["claims_held_by_killed_wk2_workers"] = len(killed_claims)

        def taken_over() -> bool:
            """wk1's claims at the cut are done, by the others (a claim given back to the queue counts not)."""
            rows = query(f"SELECT count(*) FROM {EVENTS} WHERE id = ANY(%s) AND status <> 'synced'", held)
            return rows[0][0] == 0

        assert wait_until(taken_over, timeout=LEASE + 60, interval=0.2), query(
            f"SELECT id, status, claimed_by, visible_at FROM {EVENTS} WHERE id = ANY(%s)", held
        )
        took_over_at = time.monotonic()
        first_runs = query(
            f"SELECT min(r.started_at) FROM {RUNS} r WHERE r.event_id = ANY(%s) AND r.status <> 'failed'", held
        )[0][0]
        report["takeover"] = {
            "lease_seconds": LEASE,
            "all_held_claims_synced_seconds_after_cut": round(took_over_at - cut_at, 1),
            "first_held_claim_resolved_again_seconds_after_cut": round(
                first_runs.timestamp() - (time.time() - (time.monotonic() - cut_at)), 1
            ),
        }
        time.sleep(2)  # wk1 stays away a little longer
        cluster_pid = hosts.procs["wk1"].pid
        topology.rejoin("wk1")
        rejoined_wall = time.time()
        for future in posting:
            future.result()
        first_accepted = sorted({event_id for status, event_id in answers.values() if status == 200})

        def synced(ids: list[int]) -> bool:
            return query(f"SELECT count(*) FROM {EVENTS} WHERE id = ANY(%s) AND status <> 'synced'", ids)[0][0] == 0

        assert wait_until(lambda: synced(first_accepted), timeout=150, interval=0.5), query(
            f"SELECT status, count(*) FROM {EVENTS} GROUP BY status"
        )
        first_settled_at = time.monotonic()
        # wk2 leaves (a clean stop): the late wave can only be done by wk1, which proves it rejoined.
        hosts.procs["wk2"].send_signal(signal.SIGTERM)
        hosts.procs["wk2"].wait(30)
        late = [_person(p, 0) for p in range(PEOPLE, PEOPLE + LATE_PEOPLE)]
        late_start = len(first_wave)
        late_posting = [poster.submit(post, late_start + i, args) for i, args in enumerate(late)]
        for future in late_posting:
            future.result()
        poster.shutdown()
        accepted = sorted({event_id for status, event_id in answers.values() if status == 200})
        late_ids = sorted(set(accepted) - set(first_accepted))
        assert wait_until(lambda: synced(late_ids), timeout=120, interval=0.5), query(
            f"SELECT status, count(*) FROM {EVENTS} GROUP BY status"
        )
        settled_at = time.monotonic()

        def resolver_tasks_done_after_rejoin() -> list[float]:
            lines = _log_lines(hosts.log("wk1"))
            return [t for t, line in lines if t > rejoined_wall and "Processed 'integrations.resolver" in line]

        # The task commits its events before its "Processed" line is logged (the cluster's monitor
        # saves the result after): the events can be seen synced a moment before the line exists.
        wait_until(lambda: bool(resolver_tasks_done_after_rejoin()), timeout=30, interval=0.5)
        wk1_lines = _log_lines(hosts.log("wk1"))
        back_to_work = resolver_tasks_done_after_rejoin()
        errors = [t for t, line in wk1_lines if t > rejoined_wall and (" ERROR " in line or " CRITICAL " in line)]
        back = back_to_work[0] if back_to_work else float("inf")
        report["rejoin"] = {
            "first_resolver_task_done_seconds_after_link_up": round(back_to_work[0] - rejoined_wall, 1)
            if back_to_work
            else None,
            # Connections that died with the link fail once more when used, then the host is back.
            "errors_logged_by_wk1_after_link_up": len(errors),
            "errors_logged_by_wk1_once_back_to_work": len([t for t in errors if t > back]),
            "same_qcluster_process": hosts.procs["wk1"].poll() is None and hosts.procs["wk1"].pid == cluster_pid,
            "late_events_done_by_wk1_alone": len(late_ids),
            "seconds_late_wave": round(settled_at - first_settled_at, 1),
        }
        # Written back too: no cross reference waits for Marketing Cloud any more.
        assert wait_until(
            lambda: query(f"SELECT count(*) FROM {XREFS} WHERE writeback_state = 'pending'")[0][0] == 0, 60
        )

        # ---- Invariants -----------------------------------------------------------------------
        ledger = base / "ledger.txt"
        ledger.write_text("\n".join(map(str, accepted)))
        checked = subprocess.run(
            [sys.executable, "manage.py", "verify_invariants", "--window", "0", "--ledger", str(ledger)]
            + ["--compare-marketing-cloud"],
            cwd=ROOT,
            env={**env, "MC_AUTH_BASE_URL": mh_sandbox},
            capture_output=True,
            text=True,
            timeout=120,
        )
        people = PEOPLE + LATE_PEOPLE
        events = query(f"SELECT status, count(*) FROM {EVENTS} GROUP BY status")
        # One sync result per event: runs that ended with the event done (failed attempts aside).
        twice = query(
            f"SELECT event_id, count(*) FROM {RUNS} WHERE status IN ('succeeded', 'superseded', 'waiting') "
            "GROUP BY event_id HAVING count(*) <> 1"
        )
        without = query(
            f"SELECT count(*) FROM {EVENTS} e WHERE NOT EXISTS (SELECT 1 FROM {RUNS} r WHERE r.event_id = e.id "
            "AND r.status IN ('succeeded', 'superseded'))"
        )[0][0]
        failed_runs = query(f"SELECT count(*) FROM {RUNS} WHERE status = 'failed'")[0][0]
        golden = query(f"SELECT count(*) FROM {GOLDEN}")[0][0]
        xrefs = dict(
            query(f"SELECT x.external_id, g.master_id FROM {XREFS} x JOIN {GOLDEN} g ON g.id = x.individual_id")
        )
        rows = requests.get(f"{mh_sandbox}/__sandbox/rows/Individual", timeout=10).json()
        calls = requests.get(f"{mh_sandbox}/__sandbox/log", timeout=10).json()
        writes = [c for c in calls if c["method"] in ("PUT", "POST") and c["path"].startswith("/hub/v1/dataevents")]
        wrong_in_mc = sorted(
            k for k, master_id in xrefs.items() if (rows.get(k) or {}).get("GlobalPartyId") != master_id
        )
        found = session_state_statements(server.log_since(mark), "hub")
        qcluster_errors = {h: hosts.log(h).count("Traceback") for h in WORKER_HOSTS}
        report.update(
            {
                "events_posted": len(answers),
                "answered_200": len(accepted),
                "not_200": sorted({s for s, _ in answers.values() if s != 200}),
                "event_statuses": dict(events),
                "events_done_twice": len(twice),
                "events_without_a_sync_result": without,
                "failed_attempts_retried": failed_runs,
                "golden_records": golden,
                "people": people,
                "marketing_cloud_rows": len(rows),
                "marketing_cloud_wrong_or_missing_master_ids": len(wrong_in_mc),
                "marketing_cloud_write_calls": len(writes),
                "session_state_statements": found[:10],
                "tracebacks_in_qcluster_logs": qcluster_errors,
                "seconds_posting_to_settled": round(settled_at - started, 1),
                "seconds_total": round(time.monotonic() - began, 1),
                "invariants": checked.stdout.splitlines(),
            }
        )
        REPORT.parent.mkdir(exist_ok=True)
        REPORT.write_text(json.dumps(report, indent=2))
        print(json.dumps(report, indent=2))
        assert checked.returncode == 0, checked.stdout + checked.stderr[-2000:]
        assert report["not_200"] == [] and len(accepted) == len(first_wave) + LATE_PEOPLE
        assert dict(events) == {"synced": len(accepted)}
        assert twice == [] and without == 0
        assert golden == people and len(xrefs) == people
        assert len(rows) == people and wrong_in_mc == []
        assert found == [], "\n".join(found)
        assert (
            report["rejoin"]["same_qcluster_process"]
            and report["rejoin"]["first_resolver_task_done_seconds_after_link_up"]
        )
        # The claims wk1 held at the cut were taken over (claimed again), never finished twice.
        attempts = [row[0] for row in query(f"SELECT attempts FROM {EVENTS} WHERE id = ANY(%s)", held)]
        assert min(attempts) >= 2, attempts
        assert report["wk2_workers_killed"] > 0
    finally:
        hosts.stop()
        bouncer.stop()
        server.stop()
        topology.down()
        if not os.environ.get("MULTI_HOST_KEEP_FILES"):  # set it to read the hosts' logs afterwards
            shutil.rmtree(base, ignore_errors=True)


def _log_lines(text: str) -> list[tuple[float, str]]:
    """(Unix time, line) of each logged line that starts with logging's local-time stamp."""
    lines = []
    for line in text.splitlines():
        try:
            stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        except ValueError:
            continue
        lines.append((stamp.timestamp(), line))
    return lines


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
        return True
    except requests.RequestException:
        return False
