"""The chaos run: 10,000 events through gunicorn while workers are killed at random and the
Marketing Cloud sandbox fails 20% of calls. Afterwards the invariants hold; the counts are reported."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from integrations.models import InboundEvent
from sandboxes.marketing_cloud.journey import build_execute_payload, sign_execute
from tests.conftest import CLIENT_ID, CLIENT_SECRET, JWT_SECRET, subscriber
from tests.processes import HubProcesses, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EVENTS = int(os.environ.get("CHAOS_EVENTS", "10000"))
REPORT = Path(__file__).resolve().parent.parent / "var" / "chaos-report.json"
# How long the settling may take once posting is done (the issue: it should need well under half).
SETTLE_BUDGET = 1500


FIRST_NAMES = [
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis",
    "Radia", "Tim", "Katherine", "John", "Sophie", "Linus", "Hedy", "Claude", "Annie", "Niklaus",
]  # fmt: skip
LAST_NAMES = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton",
    "Ritchie", "Perlman", "Berners", "Johnson", "McCarthy", "Wilson", "Torvalds", "Lamarr", "Shannon",
    "Easley", "Wirth", "Backus", "Kay", "Goldberg", "Engelbart", "Sammet",
]  # fmt: skip


def _payloads(rng: random.Random) -> list[dict]:
    """The decoded execute payloads, signed only when sent (see ``_signed``)."""
    people = int(EVENTS * 0.8)
    payloads = []
    for i in range(EVENTS):
        person = i if i < people else rng.randrange(people)  # 20%: a second change of someone
        day = rng.randrange(1, 28)
        # A population of distinct people (names and birth dates vary as they do in life); each
        # change of a person moves their address, so a later change really differs.
        args = subscriber(
            key=f"C{person}",
            email=f"c{person}@example.com",
            FirstName=FIRST_NAMES[person % len(FIRST_NAMES)],
            LastName=LAST_NAMES[(person // len(FIRST_NAMES)) % len(LAST_NAMES)],
            BirthDate=(dt.date(1950, 1, 1) + dt.timedelta(days=(person * 7919) % 20000)).isoformat(),
            AddressLine1=f"{i} Chaos Street",
            ModifiedDate=f"2026-11-{day:02d}T{rng.randrange(24):02d}:00:00Z",
        )
        if rng.random() < 0.01:
            args["EmailAddress"] = "not-an-email"  # refused, kept as rejected
        payloads.append(build_execute_payload(args))
    return payloads


def _signed(payload: dict) -> bytes:
    """Sign one call as it is sent, as Journey Builder does: signed up front with the usual 300 s
    lifetime, the calls still waiting when posting ran long were refused as expired."""
    issued = int(time.time())
    lifetime = payload["exp"] - payload["iat"]
    return sign_execute({**payload, "iat": issued, "exp": issued + lifetime}, JWT_SECRET)


def test_chaos(sandbox, tmp_path):
    rng = random.Random(20261127)
    payloads = _payloads(rng)
    sandbox.configure(fail_rate=0.2)
    hub = HubProcesses(
        {
            "MC_AUTH_BASE_URL": sandbox.url,
            "MC_CLIENT_ID": CLIENT_ID,
            "MC_CLIENT_SECRET": CLIENT_SECRET,
            "MC_JWT_SECRET": JWT_SECRET,
            "MC_HTTP_TIMEOUT": "3",
            "HUB_Q_TIMEOUT": "8",
            "HUB_Q_RETRY": "20",
            "HUB_WRITEBACK_MAX_ATTEMPTS": "14",
        },
        web_workers=3,
    )
    answers: dict[int, tuple[int, int | None]] = {}
    kills = {"qcluster worker": 0, "gunicorn worker": 0, "cluster restarts by the watchdog": 0}
    stop = threading.Event()
    posting_done = threading.Event()
    try:
        hub.start_web()
        hub.start_cluster(log_path=tmp_path / "qcluster.log")
        url = f"{hub.url}/api/v1/marketing-cloud/journey/execute"
        sessions = [requests.Session() for _ in range(6)]

        def post(i: int) -> None:
            for _ in range(5):  # as Journey Builder retries a 5xx or a dropped connection
                try:
                    r = sessions[i % 6].post(
                        url, data=_signed(payloads[i]), timeout=30, headers={"Content-Type": "application/jwt"}
                    )
                except requests.RequestException:
                    continue
                if r.status_code < 500:
                    answers[i] = (r.status_code, r.json().get("eventId") if r.status_code == 200 else None)
                    return
            answers[i] = (0, None)

        def killer() -> None:
            while not stop.wait(rng.uniform(1, 4)):
                try:
                    # The supervisor's part: a cluster that stopped finishing tasks is restarted
                    # (django-q2#23: a worker killed holding the internal queue lock wedges it).
                    if hub.restart_cluster_if_stalled(threshold=45):
                        kills["cluster restarts by the watchdog"] += 1
                        continue
                    if posting_done.is_set():
                        continue  # the tail drains undisturbed; the watchdog keeps watching
                    workers = hub.worker_pids()
                    if workers:
                        os.kill(rng.choice(workers), signal.SIGKILL)
                        kills["qcluster worker"] += 1
                    web = psutil.Process(hub.procs["web"].pid).children()
                    if web and rng.random() < 0.5:
                        os.kill(rng.choice(web).pid, signal.SIGKILL)
                        kills["gunicorn worker"] += 1
                except (ProcessLookupError, psutil.NoSuchProcess):
                    continue  # it died between the listing and the kill

        chaos = threading.Thread(target=killer)
        started = time.monotonic()
        chaos.start()
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(post, range(EVENTS)))
        posting_done.set()
        posted = time.monotonic()

        def settled() -> bool:
            return not InboundEvent.objects.exclude(status__in=["synced", "superseded", "rejected", "dead"]).exists()

        # Keep killing and watching until everything settled; the watchdog must also see the tail.
        assert wait_until(settled, timeout=SETTLE_BUDGET, interval=5)
        settled_at = time.monotonic()
        stop.set()
        chaos.join(15)
    finally:
        stop.set()
        hub.stop()
    # The chaos is over: the comparison below reads what Marketing Cloud holds, without random 500s.
    sandbox.configure(fail_rate=0.0)
    accepted = sorted({event_id for status, event_id in answers.values() if status == 200})
    ledger = tmp_path / "ledger.txt"
    ledger.write_text("\n".join(map(str, accepted)))
    out = io.StringIO()
    try:
        call_command(
            "verify_invariants", "--window", "0", "--ledger", str(ledger), "--compare-marketing-cloud", stdout=out
        )
        ok = True
    except CommandError:
        ok = False
    counts = {
        status: InboundEvent.objects.filter(status=status).count()
        for status in ("synced", "superseded", "rejected", "dead")
    }
    dead_reasons = InboundEvent.objects.filter(status="dead").values_list("reason", flat=True)
    report = {
        "events_sent": EVENTS,
        "answered_200": len(accepted),
        "answered_400": sum(1 for s, _ in answers.values() if s == 400),
        "answered_401": sum(1 for s, _ in answers.values() if s == 401),
        "never_answered": sum(1 for s, _ in answers.values() if s == 0),
        **counts,
        "lost": len(set(accepted) - set(InboundEvent.objects.values_list("pk", flat=True))),
        "dead_reasons": dict(Counter(reason[:80] for reason in dead_reasons)),
        "seconds_posting": round(posted - started, 1),
        "seconds_to_settle_after_posting": round(settled_at - posted, 1),
        "settle_budget_seconds": SETTLE_BUDGET,
        "kills": kills,
        "sandbox_calls": len(sandbox.requests_log()),
        "invariants": out.getvalue().splitlines(),
    }
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    assert ok, out.getvalue()
    assert report["lost"] == 0 and report["never_answered"] == 0
    # Every call is signed as it is sent: none may be refused as expired however long posting runs.
    assert report["answered_401"] == 0
    # Killed workers are not the events' fault: none is dead-lettered for them.
    assert report["dead"] == 0, report["dead_reasons"]
    assert report["seconds_to_settle_after_posting"] < SETTLE_BUDGET / 2
    assert kills["qcluster worker"] > 0
