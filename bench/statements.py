"""SQL statements (and time) per event through the resolver, at batch sizes 1, 10 and 100.

    python bench/statements.py                      # this checkout
    python bench/statements.py --tree ../before     # another checkout (per-event processing)

In one process, against a scratch database: stores ``--events`` journey events of distinct
people (a fifth of them a second change of someone), then resolves them, counting every
statement Django sends (``connection.execute_wrapper``), and then flushes the write-backs
to the Marketing Cloud sandbox (in this process, answering at once), counted apart. A
checkout without the batched resolver processes event by event (``process_event``); its
figure is the same at every batch size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
parser.add_argument("--events", type=int, default=300)
parser.add_argument("--sizes", default="1,10,100")
ARGS = parser.parse_args()
sys.path.insert(0, str(ARGS.tree.resolve()))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
os.environ["HUB_DEBUG"] = "false"
os.environ.setdefault("HUB_SECURE", "false")
os.environ.setdefault("HUB_SECRET_KEY", "bench-only-secret-key-not-for-production-0123456789")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django_q.models import OrmQ  # noqa: E402

import integrations.marketing_cloud.writeback as writeback  # noqa: E402
from integrations.intake import AcceptedEvent, store_events  # noqa: E402
from integrations.marketing_cloud.mapping import subscriber_to_cim  # noqa: E402
from integrations.marketing_cloud.writeback import flush_writebacks  # noqa: E402
from integrations.models import InboundEvent  # noqa: E402
from sandboxes.marketing_cloud.server import MarketingCloudSandbox, SandboxConfig  # noqa: E402

try:
    from integrations.resolver import resolve_ready_events
except ImportError:  # a checkout from before the batched resolver
    resolve_ready_events = None
    from integrations.process import process_event


class Counter:
    def __init__(self) -> None:
        self.statements = 0

    def __call__(self, execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        self.statements += 1
        return execute(sql, params, many, context)


def subscribers(run: int, count: int) -> list[dict[str, str]]:
    people = int(count * 0.8)
    result = []
    for i in range(count):
        person = i if i < people else (i * 7) % people
        birth = dt.date(1950, 1, 1) + dt.timedelta(days=(person * 7919) % 20000)
        result.append(
            {
                "SubscriberKey": f"STMT-{run}-{person:06d}",
                "EmailAddress": f"s{run}.{person}@example.com",
                "SubscriberId": str(run * 1_000_000 + person + 1),  # Marketing Cloud numbers subscribers from 1
                "FirstName": ["Ada", "Grace", "Alan", "Edsger", "Barbara"][person % 5],
                "LastName": f"Person{run}x{person}",
                "MobileNumber": f"+1617{run}{person:06d}",
                "BirthDate": birth.isoformat(),
                "AddressLine1": f"{person} Statement Street",
                "PostalCode": f"{2100 + person % 90:05d}",
                "Country": "US",
                "Status": "Active",
                "ModifiedDate": f"2026-11-{1 + i % 28:02d}T09:00:00Z",
            }
        )
    return result


def store(run: int, count: int) -> None:
    for args in subscribers(run, count):
        store_events(
            [
                AcceptedEvent(
                    channel="mc_journey",
                    system="MARKETING_CLOUD",
                    external_id=args["SubscriberKey"],
                    idempotency_key=f"stmt-{run}-{args['SubscriberKey']}-{args['ModifiedDate']}",
                    raw_body=b"{}",
                    headers={},
                    content_type="application/jwt",
                    payload={},
                    individual_cim=subscriber_to_cim(args),
                )
            ]
        )
    OrmQ.objects.all().delete()  # the wake-ups: this script runs the work itself


def resolve(size: int) -> None:
    if resolve_ready_events is not None:
        while InboundEvent.objects.filter(status__in=["queued", "retrying", "processing"]).exists():
            resolve_ready_events(size)
        return
    for pk in InboundEvent.objects.filter(status="queued").order_by("pk").values_list("pk", flat=True):
        process_event(pk)


def main() -> None:
    # Write-backs are counted apart: no inline flush by a resolver that finds the queued one waiting.
    writeback.STARVED_AFTER = 10**9
    admin = psycopg.connect(settings.EFFECTIVE_DATABASE_URL, autocommit=True)
    admin.execute('DROP DATABASE IF EXISTS "hub_bench_statements"')
    admin.execute('CREATE DATABASE "hub_bench_statements"')
    admin.close()
    connection.close()
    settings.DATABASES["default"]["NAME"] = "hub_bench_statements"
    call_command("migrate", verbosity=0)
    sandbox = MarketingCloudSandbox(config=SandboxConfig()).start()
    settings.MC_AUTH_BASE_URL, settings.MC_REST_BASE_URL = sandbox.url, ""
    settings.MC_CLIENT_ID, settings.MC_CLIENT_SECRET = "sandbox-client-id", "sandbox-client-secret"
    results = []
    try:
        for run, size in enumerate(int(s) for s in ARGS.sizes.split(",")):
            store(run, ARGS.events)
            counter = Counter()
            started = time.perf_counter()
            with connection.execute_wrapper(counter):
                resolve(size)
            resolve_seconds = time.perf_counter() - started
            resolved = counter.statements
            counter = Counter()
            started = time.perf_counter()
            with connection.execute_wrapper(counter):
                while "nothing due" not in flush_writebacks(from_queue=False):
                    pass
            flush_seconds = time.perf_counter() - started
            mine = InboundEvent.objects.filter(external_id__startswith=f"STMT-{run}-")
            stored = mine.count()  # a repeated change with the same ModifiedDate is one event
            done = mine.filter(status__in=["synced", "superseded"]).count()
            results.append(
                {
                    "batch_size": size if resolve_ready_events is not None else "1 (per event)",
                    "events": stored,
                    "terminal": done,
                    "statements_per_event_resolve": round(resolved / stored, 2),
                    "statements_per_event_writeback": round(counter.statements / stored, 2),
                    "ms_per_event_resolve": round(resolve_seconds * 1000 / stored, 2),
                    "ms_per_event_writeback": round(flush_seconds * 1000 / stored, 2),
                }
            )
    finally:
        sandbox.stop()
    print(json.dumps({"tree": str(ARGS.tree.resolve()), "results": results}, indent=2))


if __name__ == "__main__":
    main()
