"""``verify_invariants`` finds nothing wrong after real traffic, and finds each fabricated violation."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from customers.models import CrossReference
from integrations.marketing_cloud.client import MarketingCloudClient
from integrations.models import InboundEvent
from tests.conftest import subscriber
from tests.queue import run_queued

pytestmark = pytest.mark.django_db(transaction=True)


def verify(*args: str) -> tuple[bool, str]:
    out = io.StringIO()
    try:
        call_command("verify_invariants", *args, stdout=out)
    except CommandError as exc:
        return False, out.getvalue() + str(exc)
    return True, out.getvalue()


@pytest.fixture
def traffic(journey, sandbox, tmp_path):
    ids = []
    for i in range(5):
        ids.append(journey.execute(subscriber(key=f"K{i}", email=f"k{i}@example.com")).json()["eventId"])
    journey.execute(subscriber(key="K0", email="k0@example.com", GlobalPartyId="x", EmailAddress="bad"))
    run_queued()
    ledger = tmp_path / "ledger.txt"
    ledger.write_text("\n".join(map(str, ids)))
    return ledger


def test_clean_run_holds_every_invariant(traffic):
    ok, out = verify("--window", "0", "--ledger", str(traffic), "--compare-marketing-cloud")
    assert ok, out
    assert "OK    I1 every accepted event is stored: 5 checked" in out
    assert "OK    I4 Marketing Cloud holds each written master ID: 5 checked" in out


def test_each_violation_is_found(traffic, sandbox):
    InboundEvent.objects.filter(pk=InboundEvent.objects.order_by("id").first().pk).update(
        status="queued", received_at=timezone.now() - dt.timedelta(hours=5)
    )
    traffic.write_text(traffic.read_text() + "\n999999")
    MarketingCloudClient.from_settings().upsert_row("Individual", "SubscriberKey", "K3", {"GlobalPartyId": "other"})
    ok, out = verify("--window", "3600", "--ledger", str(traffic), "--compare-marketing-cloud")
    assert not ok
    assert "FAIL  I1 every accepted event is stored: 6 checked, 1 violation(s) e.g. 999999" in out
    assert "FAIL  I2" in out and "1 violation(s)" in out.split("I2")[1].split("\n")[0]
    xref = CrossReference.objects.get(external_id="K3")
    assert (
        f"FAIL  I4 Marketing Cloud holds each written master ID: 5 checked, 1 violation(s) e.g. cross reference "
        f"{xref.pk}" in out
    )
    assert "3 invariant(s) violated" in out
