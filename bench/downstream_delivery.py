"""Downstream delivery benchmark: changes at a steady rate through the real processes to a webhook receiver.

Starts gunicorn and the django-q2 cluster against a scratch database, the Marketing
Cloud sandbox and a signature-checking webhook receiver in this process, registers
the receiver as a target, then posts journey events (each a change of a golden
record) at the offered rate. Reports delivered changes per minute and the lag from
a change's commit (its change event's created_at) to its arrival at the receiver.

    python bench/downstream_delivery.py --per-minute 1000 --minutes 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from integrations.downstream.models import new_webhook_secret  # noqa: E402
from sandboxes.marketing_cloud.journey import build_execute_payload, sign_execute  # noqa: E402
from sandboxes.marketing_cloud.server import MarketingCloudSandbox  # noqa: E402
from tests.webhook_receiver import WebhookReceiver  # noqa: E402

JWT_SECRET = "bench-jwt-signing-secret-0123456789abcdef"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-minute", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--people", type=int, default=200, help="changes spread over this many people")
    args = parser.parse_args()
    total = int(args.per_minute * args.minutes)
    db_url = scratch_database(settings.EFFECTIVE_DATABASE_URL, "hub_bench_downstream")
    sandbox = MarketingCloudSandbox().start()
    secret = new_webhook_secret()
    receiver = WebhookReceiver(secret).__enter__()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "HUB_DEBUG": "true",
        "HUB_LOG_LEVEL": "WARNING",
        "MC_AUTH_BASE_URL": sandbox.url,
        "MC_CLIENT_ID": "sandbox-client-id",
        "MC_CLIENT_SECRET": "sandbox-client-secret",
        "MC_JWT_SECRET": JWT_SECRET,
    }
    hub = HubProcesses(env, port=8901).__enter__()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO downstream_downstreamtarget (name, kind, url, secret, event_types, enabled, cursor, "
            "created_at) VALUES ('bench', 'webhook', %s, %s, '[]', true, 0, now())",
            [receiver.url, secret],
        )
    url = f"{hub.url}/api/v1/marketing-cloud/journey/execute"
    try:
        bodies = [
            sign_execute(
                build_execute_payload(
                    {
                        "SubscriberKey": f"DS-{i % args.people:05d}",
                        "EmailAddress": f"ds.{i % args.people}@example.com",
                        "FirstName": f"v{i}",
                        "LastName": "Bench",
                        "ModifiedDate": f"2026-11-01T00:{(i // 60) % 60:02d}:{i % 60:02d}Z",
                    }
                ),
                JWT_SECRET,
            )
            for i in range(total)
        ]
        rate = args.per_minute / 60.0
        session = requests.Session()
        started = time.perf_counter()

        def post(i: int) -> int:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            return session.post(
                url, data=bodies[i], timeout=30, headers={"Content-Type": "application/jwt"}
            ).status_code

        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(post, range(total)))
        offered_seconds = time.perf_counter() - started
        with psycopg.connect(db_url) as conn:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                changes, pending = conn.execute(
                    "SELECT (SELECT count(*) FROM customers_changeevent), (SELECT count(*) FROM "
                    "downstream_delivery WHERE status <> 'delivered') + (SELECT count(*) FROM "
                    "customers_changeevent WHERE NOT fanned_out) + (SELECT count(*) FROM integrations_inboundevent "
                    "WHERE status NOT IN ('synced','superseded','rejected','dead'))"
                ).fetchone()
                if pending == 0 and changes:
                    break
                time.sleep(0.5)
            drained = time.perf_counter() - started
            created = dict(conn.execute("SELECT id, EXTRACT(EPOCH FROM created_at) FROM customers_changeevent"))
        arrivals = {}
        for message in receiver.received:
            arrivals.setdefault(message["data"]["changeId"], message["receivedAt"])
        lags = [arrivals[c] - float(created[c]) for c in arrivals if c in created]
        in_order = all(
            receiver.changes_for(m) == sorted(set(receiver.changes_for(m)))
            for m in {msg["data"]["masterId"] for msg in receiver.received}
        )
        print(
            json.dumps(
                {
                    "offered_per_minute": args.per_minute,
                    "events_posted": total,
                    "accepted": codes.count(200),
                    "changes": len(created),
                    "delivered": len(arrivals),
                    "bad_signatures": receiver.bad_signatures,
                    "in_order_per_person": in_order,
                    "offered_seconds": round(offered_seconds, 1),
                    "all_delivered_after_seconds": round(drained, 1),
                    "delivered_per_minute": round(len(arrivals) / drained * 60),
                    "lag_p50_ms": round(percentile(lags, 0.5) * 1000),
                    "lag_p99_ms": round(percentile(lags, 0.99) * 1000),
                    "lag_max_ms": round(max(lags) * 1000),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                },
                indent=2,
            )
        )
    finally:
        hub.__exit__(None, None, None)
        receiver.__exit__(None, None, None)
        sandbox.stop()


if __name__ == "__main__":
    main()
