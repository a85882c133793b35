"""Write-back after a backfill: calls and time for N pending master IDs, rowsets versus bulk requests.

    DATABASE_URL=postgresql://.../DB python bench/writeback_bulk.py --rows 100000 --mode both
    DATABASE_URL=postgresql://.../DB python bench/writeback_bulk.py --rows 1000000 --mode bulk

**Empties the database named by DATABASE_URL** (migrates it, then truncates the golden records,
cross references and the queue): point it at a database kept for benchmarks. It seeds ``--rows``
golden records with one Marketing Cloud cross reference each, pending write-back (straight into
the tables: the import is ``bench/backfill.py``'s subject, not this one's), starts the Marketing
Cloud sandbox as a child process (0 latency, requests complete at once), and then does what one
django-q2 worker would, in this process: flush after flush (and, for bulk, the polls when due)
until every cross reference is written. Reported per mode: calls by kind, wall time, and both
scaled to 1,000,000 write-backs (calls scale with the rows; time is measured at ``--rows`` and
scaled linearly, which the report says).

``rowset``: ``HUB_MC_ASYNC_WRITEBACK_THRESHOLD=0``, today's path (50 rows a ``POST .../rowset``).
``bulk``: the threshold at its default; ``PUT /data/v1/async/dataextensions/key:Individual/rows`` of
10,000 rows, one status poll each (and the results when a request has errors).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
os.environ["HUB_DEBUG"] = "false"
os.environ.setdefault("HUB_SECURE", "false")
os.environ.setdefault("HUB_SECRET_KEY", "bench-only-secret-key-not-for-production-0123456789")
os.environ["HUB_LOG_LEVEL"] = "WARNING"

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from integrations.marketing_cloud import bulk_writeback  # noqa: E402
from integrations.marketing_cloud.models import BulkWriteback  # noqa: E402
from integrations.marketing_cloud.writeback import flush_writebacks  # noqa: E402

PER_MILLION = 1_000_000


def seed(rows: int) -> None:
    """``rows`` golden records, each with a Marketing Cloud cross reference whose write-back is due."""
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE customers_individual, customers_crossreference, customers_historyentry, "
            "marketing_cloud_bulkwriteback, django_q_ormq, integrations_queuedflag, integrations_connectorstate, "
            "integrations_accesstoken RESTART IDENTITY CASCADE"
        )
        cursor.execute(
            "INSERT INTO customers_individual (master_id, party_type, salutation, first_name, middle_name, "
            "last_name, name_suffix, gender, consent_source, created_at, updated_at, lineage, pins) "
            "SELECT gen_random_uuid()::text, 'Individual', '', 'Bench', '', 'Person' || g, '', '', '', now(), "
            "now(), '{}', '{}' FROM generate_series(1, %s) g",
            [rows],
        )
        cursor.execute(
            "INSERT INTO customers_crossreference (system, external_id, status, source_status, first_seen_at, "
            "last_seen_at, source_payload, writeback_state, source_master_id, writeback_error, created_at, "
            "updated_at, individual_id, writeback_attempts, system_record_id, match_rule, writeback_due_at) "
            "SELECT 'MARKETING_CLOUD', 'BENCH-' || lpad(id::text, 8, '0'), 'VALID', 'Active', now(), now(), '{}', "
            "'pending', '', '', now(), now(), id, 0, '', 'bench', now() + id * interval '1 microsecond' "
            "FROM customers_individual"
        )
        cursor.execute("ANALYZE customers_individual, customers_crossreference")


def pending() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM customers_crossreference WHERE writeback_state = 'pending'")
        return cursor.fetchone()[0]


def start_sandbox() -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "MC_CLIENT_ID": "bench-client", "MC_CLIENT_SECRET": "bench-secret"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandboxes.marketing_cloud", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"sandbox did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[-1].strip()


def run(mode: str, rows: int, sandbox_url: str) -> dict[str, object]:
    seed(rows)
    requests.post(f"{sandbox_url}/__sandbox/reset", timeout=10)
    settings.MC_AUTH_BASE_URL = sandbox_url
    settings.MC_REST_BASE_URL = ""
    settings.MC_CLIENT_ID, settings.MC_CLIENT_SECRET = "bench-client", "bench-secret"
    settings.MC_ASYNC_WRITEBACK_THRESHOLD = 0 if mode == "rowset" else 5000
    flushes = polls = 0
    started = time.perf_counter()
    while True:
        result = flush_writebacks(from_queue=False)
        flushes += 1
        polled = "nothing to poll"
        if BulkWriteback.objects.filter(state__in=BulkWriteback.IN_FLIGHT).exists():
            polled = bulk_writeback.poll_bulk_writebacks(from_queue=False)
            polls += 1
        if result == "nothing due" and polled == "nothing to poll":
            if not pending():
                break
            time.sleep(0.05)  # a request waits for its next poll
    seconds = time.perf_counter() - started
    log = requests.get(f"{sandbox_url}/__sandbox/log", timeout=60).json()
    by_kind: Counter[str] = Counter()
    for entry in log:
        path = entry["path"]
        if path == "/v2/token":
            by_kind["token"] += 1
        elif path.endswith("/rowset"):
            by_kind["POST rowset"] += 1
        elif path.startswith("/hub/v1/dataevents/"):
            by_kind["PUT row"] += 1
        elif path.startswith("/data/v1/async/dataextensions/"):
            by_kind["PUT async rows"] += 1
        elif path.endswith("/status"):
            by_kind["GET async status"] += 1
        elif path.endswith("/results"):
            by_kind["GET async results"] += 1
        else:
            by_kind[path] += 1
    total = sum(by_kind.values())
    left = pending()
    return {
        "mode": mode,
        "rows": rows,
        "written": rows - left,
        "calls": dict(by_kind),
        "calls_total": total,
        "seconds": round(seconds, 1),
        "rows_per_second": round(rows / seconds),
        "flush_runs": flushes,
        "poll_runs": polls,
        "per_1m_calls": round(total * PER_MILLION / rows),
        "per_1m_seconds" + ("" if rows == PER_MILLION else "_scaled_linearly"): round(seconds * PER_MILLION / rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--mode", choices=["rowset", "bulk", "both"], default="both")
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    proc, url = start_sandbox()
    try:
        modes = ["rowset", "bulk"] if args.mode == "both" else [args.mode]
        results = [run(mode, args.rows, url) for mode in modes]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(
        json.dumps(
            {"machine": f"{os.cpu_count()} cores, {platform.python_version()}", "results": results},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
