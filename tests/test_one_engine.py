"""One engine: the same shuffled subscribers through the live path and through the backfill decide alike.

The live path is the real one (signed Journey Builder calls over HTTP, stored events, the
resolver in batches of 7); the backfill is ``import_subscribers`` on a CSV of the same rows in
the same order (batches of 50, one process, then two). Both must end with the same golden
records (the same source records together, the same surviving values and contact points),
the same cross references and the same pairs waiting for review.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
from django.db import transaction

from customers.models import (
    ChangeEvent,
    ContactPoint,
    CrossReference,
    HistoryEntry,
    Individual,
    MatchCandidate,
    MatchKey,
    NotAMatch,
)
from customers.resolution.blocking import BLOCKING_KEY_KINDS
from integrations.marketing_cloud.backfill import import_subscribers
from integrations.marketing_cloud.models import ImportJob
from integrations.models import InboundEvent
from tests.queue import run_queued

pytestmark = pytest.mark.django_db(transaction=True)

FIRST = ["Robert", "Margaret", "William", "Elizabeth", "James", "Katherine", "Thomas", "Patricia", "Daniel", "Susan"]
LAST = ["Okafor", "Lindqvist", "Marchetti", "Haddad", "Kowalczyk", "Oyelaran", "Brennan", "Takahashi", "Quintero"]
NICK = {"Robert": "Bob", "Margaret": "Peggy", "William": "Bill", "Elizabeth": "Liz", "James": "Jim", "Thomas": "Tom"}
COLUMNS = [
    "SubscriberKey",
    "EmailAddress",
    "SubscriberId",
    "FirstName",
    "LastName",
    "MobileNumber",
    "BirthDate",
    "Gender",
    "AddressLine1",
    "City",
    "PostalCode",
    "Country",
    "Status",
    "ModifiedDate",
]


def subscribers(seed: int = 2026) -> list[dict[str, str]]:
    """Distinct people, the same people again under other keys (nicknames, other email case, a typo with the
    same phone), family members sharing a mailbox, later and earlier changes of a record; shuffled."""
    rng = random.Random(seed)
    people = []
    for i in range(70):
        first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)] + ("" if i < 45 else "son")
        people.append(
            {
                "SubscriberKey": f"K{i:03d}",
                "EmailAddress": f"{first.lower()}.{last.lower()}{i}@example.com",
                "SubscriberId": str(5000 + i),
                "FirstName": first,
                "LastName": last,
                "MobileNumber": f"+1 617 555 {i:04d}",
                "BirthDate": f"19{50 + i % 45}-{1 + i % 12:02d}-{1 + i % 27:02d}",
                "Gender": "Male" if first in ("Robert", "William", "James", "Thomas", "Daniel") else "Female",
                "AddressLine1": f"{10 + i} Harbor Street",
                "City": "Boston",
                "PostalCode": f"02{100 + i % 30}",
                "Country": "US",
                "Status": "Active",
                "ModifiedDate": f"2026-10-{1 + i % 28:02d}T08:00:00Z",
            }
        )
    rows = [dict(p) for p in people]
    for n, p in enumerate(rng.sample(people, 20)):  # the same person under another key
        again = dict(p, SubscriberKey=f"D{n:03d}", SubscriberId=str(7000 + n))
        if n % 2:
            again["EmailAddress"] = p["EmailAddress"].upper()
            again["FirstName"] = NICK.get(p["FirstName"], p["FirstName"])
        else:
            again["EmailAddress"] = f"new{n}@example.net"
            again["LastName"] = p["LastName"][:-2] + p["LastName"][-1] + p["LastName"][-2]  # a transposition
        rows.append(again)
    for n, p in enumerate(rng.sample(people, 12)):  # a family member with the same mailbox
        other = FIRST[(FIRST.index(p["FirstName"]) + 3) % len(FIRST)]
        rows.append(
            dict(
                p,
                SubscriberKey=f"F{n:03d}",
                SubscriberId=str(8000 + n),
                FirstName=other,
                MobileNumber=f"+1 617 444 {n:04d}",
                BirthDate=f"20{n % 10:02d}-06-15",
                Gender="Female" if p["Gender"] == "Male" else "Male",
            )
        )
    for n, p in enumerate(rng.sample(people, 14)):  # a later change, or an older one arriving late
        later = n % 3 != 0
        rows.append(
            dict(
                p,
                AddressLine1=f"{n} {'New' if later else 'Old'} Road",
                PostalCode="02999" if later else "02998",
                ModifiedDate="2026-11-20T08:00:00Z" if later else "2026-09-01T08:00:00Z",
            )
        )
    rng.shuffle(rows)
    return rows


def outcome() -> dict[str, object]:
    """What the resolution decided, independent of database ids and master IDs."""
    owner = dict(CrossReference.objects.values_list("external_id", "individual_id"))
    members: dict[int, set[str]] = {}
    for external_id, individual_id in owner.items():
        members.setdefault(individual_id, set()).add(external_id)
    group = {pk: frozenset(ids) for pk, ids in members.items()}
    points: dict[int, list[str]] = {}
    for individual_id, key in ContactPoint.objects.values_list("individual_id", "value_key"):
        points.setdefault(individual_id, []).append(key)
    golden = {}
    for ind in Individual.objects.filter(pk__in=group, merged_into__isnull=True):
        values = (ind.first_name, ind.last_name, ind.birth_date, ind.gender, ind.do_not_market_since)
        golden[group[ind.pk]] = (values, sorted(points.get(ind.pk, [])))
    keys: dict[frozenset[str], set[tuple[str, str]]] = {}
    for individual_id, kind, value in MatchKey.objects.values_list("individual_id", "kind", "value"):
        keys.setdefault(group[individual_id], set()).add((kind, value))
    suspects = {
        frozenset({group[left], group[right]})
        for left, right in MatchCandidate.objects.filter(status="open").values_list("left_id", "right_id")
    }
    return {"golden": golden, "suspects": suspects, "keys": keys}


def assert_alike(got: dict[str, object], live: dict[str, object]) -> None:
    differing = [
        (sorted(ids), live["golden"].get(ids), got["golden"].get(ids))
        for ids in set(got["golden"]) | set(live["golden"])
        if got["golden"].get(ids) != live["golden"].get(ids)
    ]
    assert not differing, differing[:3]
    assert got["suspects"] == live["suspects"], got["suspects"] ^ live["suspects"]
    # The blocking keys are written alike too, every kind (issue 13's postcode + first name included).
    assert got["keys"] == live["keys"]
    assert {kind for keys in got["keys"].values() for kind, _ in keys} == set(BLOCKING_KEY_KINDS)


def forget_everything() -> None:
    with transaction.atomic():
        for model in (MatchCandidate, NotAMatch, HistoryEntry, ChangeEvent, ContactPoint, MatchKey, CrossReference):
            model.objects.all().delete()
        Individual.objects.update(merged_into=None)
        Individual.objects.all().delete()
        InboundEvent.objects.all().delete()
        ImportJob.objects.all().delete()


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_live_path_and_the_backfill_decide_alike(journey, sandbox, tmp_path, settings):
    settings.RESOLVER_BATCH = 7
    rows = subscribers()
    for args in rows:
        assert journey.execute(args).status_code == 200
    run_queued()
    assert set(InboundEvent.objects.values_list("status", flat=True)) <= {"synced", "superseded"}
    live = outcome()
    merged = [ids for ids in live["golden"] if len(ids) > 1]
    assert len(merged) >= 15 and len(live["suspects"]) >= 8  # the rules had work to do: merges and reviews

    forget_everything()
    path = write_csv(tmp_path / "export.csv", rows)
    job = import_subscribers(path, batch_size=50, workers=1)
    assert job.rows_done == len(rows) and job.rejected == 0
    assert_alike(outcome(), live)

    forget_everything()
    job = import_subscribers(path, batch_size=25, workers=2, restart=True)
    assert job.status == "completed" and job.rows_done == len(rows)
    assert_alike(outcome(), live)
