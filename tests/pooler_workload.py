"""The hub's work, run in a process of its own against whatever DATABASE_URL names (a pooler, in
``tests/test_pgbouncer.py``): intake's statement, two resolvers side by side, the write-back,
a downstream delivery round and the invariant checks. Prints one JSON line with what it saw.

Run as ``python manage.py shell -c "from tests.pooler_workload import main; main(N)"``.
"""

from __future__ import annotations

import io
import json
import threading

from django.core.management import call_command
from django.db import connection

from customers.models import Individual
from integrations.downstream.delivery import deliver, fan_out
from integrations.downstream.models import DownstreamTarget
from integrations.intake import AcceptedEvent, store_events
from integrations.marketing_cloud.mapping import subscriber_to_cim
from integrations.marketing_cloud.writeback import flush_writebacks
from integrations.models import InboundEvent
from integrations.resolver import resolve_ready_events
from tests.conftest import subscriber

FIRST_NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis"]


def _event(i: int) -> AcceptedEvent:
    # Nobody alike: one golden record each.
    args = subscriber(
        key=f"PB-{i}",
        email=f"pooled{i}@example.com",
        FirstName=FIRST_NAMES[i % len(FIRST_NAMES)],
        LastName=f"Bouncer{chr(65 + i // len(FIRST_NAMES))}",
        BirthDate=f"{1940 + i}-0{1 + i % 9}-1{i % 10}",
        PostalCode=f"{10000 + 37 * i}",
    )
    return AcceptedEvent(
        channel="mc_journey",
        system="MARKETING_CLOUD",
        external_id=args["SubscriberKey"],
        idempotency_key=f"pooled-{i}",
        raw_body=b"{}",
        headers={},
        content_type="application/jwt",
        payload={},
        individual_cim=subscriber_to_cim(args),
    )


def _in_thread(work, results: list[str]) -> threading.Thread:  # type: ignore[no-untyped-def]
    def run() -> None:
        try:
            results.append(work())
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def main(events: int) -> None:
    # A target nobody listens on: the round takes the sender's lease, fails its sends and retries later.
    target = DownstreamTarget.objects.create(name="pooled", url="http://127.0.0.1:9/hook", secret="whsec_" + "A" * 32)
    # Intake in two threads at once, then two resolvers at once: two client connections whose
    # transactions PgBouncer hands to whichever server connection is free.
    stored: list[str] = []
    half = events // 2
    writers = [
        _in_thread(lambda lo=lo, hi=hi: str(len(store_events([_event(i) for i in range(lo, hi)]))), stored)
        for lo, hi in ((0, half), (half, events))
    ]
    for thread in writers:
        thread.join()
    resolved: list[str] = []
    resolvers = [_in_thread(lambda: resolve_ready_events(limit=5), resolved) for _ in range(2)]
    for thread in resolvers:
        thread.join()
    flushed = []
    while InboundEvent.objects.filter(status="writeback").exists() and len(flushed) < 20:
        flushed.append(flush_writebacks(from_queue=False))
    fan_out()
    delivered = deliver(target.pk)
    again = deliver(target.pk)  # the lease was given back: this round may send too
    out = io.StringIO()
    call_command("verify_invariants", "--window", "0", "--compare-marketing-cloud", stdout=out)
    print(
        json.dumps(
            {
                "stored": stored,
                "resolved": resolved,
                "flushed": flushed,
                "delivered": [delivered, again],
                "statuses": sorted(set(InboundEvent.objects.values_list("status", flat=True))),
                "golden_records": Individual.objects.count(),
                "invariants": out.getvalue().splitlines(),
            }
        )
    )
