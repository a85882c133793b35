"""Write a synthetic Marketing Cloud subscriber export (CSV) for the backfill benchmark.

    python bench/make_subscriber_export.py --rows 1000000 --out var/bench/export-1m.csv

About 2% of rows reuse an earlier row's email under a new SubscriberKey (the same
person twice), and 0.1% are malformed (a bad email or date), as real exports have.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from integrations.marketing_cloud.mapping import IN_ARGUMENTS  # noqa: E402

# The journey's in-arguments, less the master ID (an export from before the hub has none).
HEADER = [name for name in IN_ARGUMENTS if name != "GlobalPartyId"]
FIRST = ["Ava", "Noah", "Mia", "Liam", "Emma", "Lucas", "Sofia", "Leo", "Chloe", "Omar", "Yuki", "Ines", "Jonas"]
LAST = ["Smith", "Garcia", "Müller", "Rossi", "Dubois", "Nowak", "Silva", "Tanaka", "Okafor", "Jensen", "Kowalski"]
CITIES = [
    ("Leeds", "LS1 4DY", "", "GB"),
    ("Austin", "78701", "TX", "US"),
    ("Lyon", "69002", "", "FR"),
    ("Porto", "4000-322", "", "PT"),
    ("Kraków", "31-042", "", "PL"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i in range(args.rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            email = f"person.{i}@example.com"
            if i > 100 and rng.random() < 0.02:
                email = f"Person.{rng.randrange(i)}@Example.com"  # someone earlier, spelled differently
            birth = f"{rng.randrange(1940, 2006)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
            if rng.random() < 0.001:
                email, birth = ("no-at-sign.example.com", birth) if rng.random() < 0.5 else (email, "1990-02-31")
            city, postal, state, country = rng.choice(CITIES)
            day = 1 + i % 28
            writer.writerow(
                [
                    f"SK{i:08d}",
                    email,
                    str(10_000_000 + i),
                    first,
                    last,
                    f"+4477009{i % 100000:05d}",
                    birth,
                    rng.choice(["Female", "Male", ""]),
                    f"{rng.randrange(1, 300)} High Street",
                    city,
                    postal,
                    state,
                    country,
                    "Active",
                    f"2026-10-{day:02d}T08:00:00Z",
                    f"2026-11-{day:02d}T09:{i % 60:02d}:00Z",
                ]
            )


if __name__ == "__main__":
    main()
