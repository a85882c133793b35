"""Backfill benchmark: import a subscriber export into a scratch database, timed, with peak memory.

    python bench/make_subscriber_export.py --rows 1000000 --out var/bench/export-1m.csv
    python bench/backfill.py var/bench/export-1m.csv

Runs ``manage.py import_subscribers`` as a child process against a fresh database on
the configured server (DATABASE_URL, else the embedded one) and reports wall time,
rows/s and the child's peak RSS (memory must stay flat in file size). The import runs with
production settings (HUB_DEBUG=false; ``--debug-settings`` for the earlier runs' DEBUG).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
os.environ.setdefault("HUB_DEBUG", "true")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402

from bench.harness import PRODUCTION_SETTINGS, scratch_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("--batch-size", type=int, help="rows per transaction (default: the import's own)")
    parser.add_argument("--workers", type=int, help="processes applying batches (default: the import's own)")
    parser.add_argument(
        "--debug-settings",
        dest="production_settings",
        action="store_false",
        help="run the import with HUB_DEBUG=true, as this benchmark did up to 2026-12-02",
    )
    args = parser.parse_args()
    db_url = scratch_database(settings.EFFECTIVE_DATABASE_URL, "hub_bench_backfill")
    env = {**os.environ, "DATABASE_URL": db_url, **PRODUCTION_SETTINGS}
    if not args.production_settings:
        env["HUB_DEBUG"] = "true"
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    rows = sum(1 for _ in args.file.open("rb")) - 1
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "import_subscribers",
            str(args.file),
            "--quiet",
            *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
            *(["--workers", str(args.workers)] if args.workers else []),
            "--restart",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode:
        print(done.stderr[-3000:])
        raise SystemExit(done.returncode)
    with psycopg.connect(db_url) as conn:
        counts = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in (
                "customers_individual",
                "customers_crossreference",
                "customers_contactpoint",
                "customers_historyentry",
                "customers_matchkey",
                "customers_matchcandidate",
            )
        }
        pending = conn.execute(
            "SELECT count(*) FROM customers_crossreference WHERE writeback_state = 'pending'"
        ).fetchone()[0]
    print(
        json.dumps(
            {
                "file_rows": rows,
                "batch_size": args.batch_size,
                "seconds": round(seconds, 1),
                "rows_per_second": round(rows / seconds),
                "peak_rss_mib": round(peak_kib / 1024),
                "summary": done.stdout.strip(),
                "tables": counts,
                "writebacks_pending": pending,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
