"""Write a synthetic Marketing Cloud subscriber export (CSV) for the backfill benchmark.

    python bench/make_subscriber_export.py --rows 1000000 --out var/bench/export-1m.csv

People come from the matching benchmark's generator (``bench/make_customers.py``: census-like
first names and surnames, birth dates, emails at real providers, US phones and addresses in
real ZIP ranges), one subscriber each, and then what real exports hold besides:

- about 2% reuse an earlier subscriber's email, in another spelling, under another person's
  name (a family mailbox): the match rules send these pairs to review, never merge them;
- about 1% are an earlier subscriber again under a new SubscriberKey (the same name, email
  and phone): the same person twice, which the rules merge;
- about 0.1% are malformed (a bad email or date), reported by line and skipped.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.make_customers import CITIES, STREET_TYPES, CustomerGenerator  # noqa: E402
from integrations.marketing_cloud.mapping import IN_ARGUMENTS  # noqa: E402

# The journey's in-arguments, less the master ID (an export from before the hub has none).
HEADER = [name for name in IN_ARGUMENTS if name != "GlobalPartyId"]
RECENT = 100_000  # earlier subscribers a later row may reuse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    people = CustomerGenerator(golden=args.rows, incoming=4000, seed=args.seed)
    recent: list[list[str]] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(args.rows):
            roll = rng.random()
            if recent and roll < 0.01:
                row = list(rng.choice(recent))  # the same person again, under a new key
                row[1] = row[1].upper() if rng.random() < 0.5 else row[1]
            else:
                person = people.person(f"s{i}")
                address = person.address
                city, state = CITIES[address.city][0], CITIES[address.city][1]
                street = f"{address.number} {address.street} {STREET_TYPES[address.street_type][0]}"
                email = person.email or people.new_email(person.first, person.last, dob=person.dob)
                if recent and roll < 0.03:
                    email = rng.choice(recent)[1].title()  # a family member's mailbox, spelled otherwise
                row = [
                    "",
                    email,
                    "",
                    person.first,
                    person.last,
                    f"+1{person.phone}" if person.phone else "",
                    person.dob.isoformat() if person.dob else "",
                    person.gender,
                    street,
                    city,
                    address.zip,
                    state,
                    "US",
                    "Active",
                    "",
                    "",
                ]
            day = 1 + i % 28
            row[0], row[2] = f"SK{i:08d}", str(10_000_000 + i)
            row[14], row[15] = f"2026-10-{day:02d}T08:00:00Z", f"2026-11-{day:02d}T09:{i % 60:02d}:00Z"
            if len(recent) < RECENT:
                recent.append(row)
            else:
                recent[rng.randrange(RECENT)] = row
            if rng.random() < 0.001:
                row = list(row)
                if rng.random() < 0.5:
                    row[1] = "no-at-sign.example.com"
                else:
                    row[6] = "1990-02-31"
            writer.writerow(row)


if __name__ == "__main__":
    main()
