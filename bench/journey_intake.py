"""Journey intake benchmark: accepted events/s and end-to-end latency to the write-back.

Starts the real processes (gunicorn, qcluster) against a scratch database on the
configured server (DATABASE_URL, else the embedded one), the Marketing Cloud
sandbox in this process, then posts N signed execute calls from C concurrent
clients. Reports:

- accepted events/s: N / wall time until the last 200 came back;
- end-to-end p50/p99: from the event's received_at to its cross reference's
  written_at (the sandbox answered the write-back), read from the database.

    python bench/journey_intake.py --events 2000 --clients 8
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
os.environ.setdefault("HUB_DEBUG", "true")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
import requests  # noqa: E402
from django.conf import settings  # noqa: E402

from bench.harness import HubProcesses, percentile, scratch_database  # noqa: E402
from sandboxes.marketing_cloud.journey import build_execute_payload, sign_execute  # noqa: E402
from sandboxes.marketing_cloud.server import MarketingCloudSandbox, SandboxConfig  # noqa: E402

JWT_SECRET = "bench-jwt-signing-secret-0123456789abcdef"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--q-workers", type=int, default=2)
    parser.add_argument("--sandbox-latency-ms", type=int, default=0)
    parser.add_argument(
        "--rate", type=float, default=0, help="Events per second to offer (0: as fast as the clients go)."
    )
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    base_url = settings.EFFECTIVE_DATABASE_URL
    db_url = scratch_database(base_url, "hub_bench")
    sandbox = MarketingCloudSandbox(config=SandboxConfig(latency_ms=args.sandbox_latency_ms)).start()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "HUB_DEBUG": "true",
        "HUB_LOG_LEVEL": "WARNING",
        "MC_AUTH_BASE_URL": sandbox.url,
        "MC_CLIENT_ID": "sandbox-client-id",
        "MC_CLIENT_SECRET": "sandbox-client-secret",
        "MC_JWT_SECRET": JWT_SECRET,
        "HUB_Q_WORKERS": str(args.q_workers),
    }
    hub = HubProcesses(env, port=8900, web_workers=args.web_workers).__enter__()
    url = f"{hub.url}/api/v1/marketing-cloud/journey/execute"
    try:
        bodies = [
            sign_execute(
                build_execute_payload(
                    {
                        "SubscriberKey": f"BENCH-{i:07d}",
                        "EmailAddress": f"bench.{i}@example.com",
                        "FirstName": "Bench",
                        "LastName": f"Person{i}",
                        "Status": "Active",
                        "ModifiedDate": "2026-11-01T00:00:00Z",
                    }
                ),
                JWT_SECRET,
            )
            for i in range(args.events)
        ]
        sessions = [requests.Session() for _ in range(args.clients)]

        def post(i: int) -> int:
            if args.rate:
                # Paced: event i is due at i / rate seconds after the start.
                delay = started + i / args.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            response = sessions[i % args.clients].post(
                url, data=bodies[i], timeout=30, headers={"Content-Type": "application/jwt"}
            )
            return response.status_code

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            codes = list(pool.map(post, range(args.events)))
        intake_seconds = time.perf_counter() - started
        accepted = codes.count(200)

        with psycopg.connect(db_url) as conn:
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                (pending,) = conn.execute(
                    "SELECT count(*) FROM integrations_inboundevent WHERE status NOT IN "
                    "('synced','superseded','rejected','dead')"
                ).fetchone()
                if pending == 0:
                    break
                time.sleep(0.5)
            drain_seconds = time.perf_counter() - started
            rows = conn.execute(
                "SELECT EXTRACT(EPOCH FROM (x.written_at - e.received_at)) FROM integrations_inboundevent e "
                "JOIN customers_crossreference x ON x.system = e.system AND x.external_id = e.external_id "
                "WHERE x.written_at IS NOT NULL"
            ).fetchall()
            (synced,) = conn.execute(
                "SELECT count(*) FROM integrations_inboundevent WHERE status = 'synced'"
            ).fetchone()
        latencies = [float(r[0]) for r in rows]
        written = sum(1 for v in sandbox.rows("Individual").values() if v.get("GlobalPartyId"))
        writeback_calls = sandbox.count("PUT", "/hub/v1/dataevents") + sandbox.count("POST", "/hub/v1/dataevents")
        token_calls = sandbox.count("POST", "/v2/token")
        result = {
            "events": args.events,
            "clients": args.clients,
            "offered_rate": args.rate or "max",
            "web_workers": args.web_workers,
            "q_workers": args.q_workers,
            "accepted": accepted,
            "synced": synced,
            "written_in_sandbox": written,
            "intake_seconds": round(intake_seconds, 2),
            "accepted_per_second": round(accepted / intake_seconds, 1),
            "all_synced_seconds": round(drain_seconds, 2),
            "synced_per_second": round(synced / drain_seconds, 1),
            "e2e_p50_ms": round(percentile(latencies, 0.50) * 1000, 1) if latencies else None,
            "e2e_p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else None,
            "e2e_mean_ms": round(statistics.mean(latencies) * 1000, 1) if latencies else None,
            "mc_writeback_calls": writeback_calls,
            "mc_writeback_calls_per_1000_subscribers": round(writeback_calls * 1000 / max(written, 1), 1),
            "mc_token_requests": token_calls,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        }
        print(json.dumps(result, indent=2))
    finally:
        hub.__exit__(None, None, None)
        sandbox.stop()


if __name__ == "__main__":
    main()
