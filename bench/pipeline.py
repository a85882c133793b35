"""End to end, accepted -> golden record + cross reference + master ID written to Marketing Cloud.

    python bench/pipeline.py drain --events 6000               # a stored backlog, then the cluster
    python bench/pipeline.py offer --rate 50 --seconds 60      # a steady rate, the cluster running
    python bench/pipeline.py drain --tree ../before            # another checkout, same load

Real processes of the given checkout (``gunicorn -w 2``, ``manage.py qcluster`` with its
default worker count) against a scratch database; the Marketing Cloud sandbox runs in this
process and answers at once (``--sandbox-latency-ms`` to slow it). The journey bodies are a
population of distinct people (names, birth dates, emails, phones, addresses), a fifth of
them a second change of someone already sent, all signed as Journey Builder signs them.

- ``drain``: posts every event with no cluster running, then starts ``qcluster`` and times
  until every event is terminal: syncs/s = synced events / that time.
- ``offer``: starts the cluster first, posts at ``--rate`` events/s, then waits for the
  backlog to clear: per event, the time from its ``received_at`` to the end of its sync run
  (for a subscriber whose master ID had to be written: the sandbox's answer), p50/p99.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import subprocess
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

from bench.harness import PRODUCTION_SETTINGS, percentile, scratch_database  # noqa: E402
from sandboxes.marketing_cloud.journey import build_execute_payload, sign_execute  # noqa: E402
from sandboxes.marketing_cloud.server import MarketingCloudSandbox, SandboxConfig  # noqa: E402

JWT_SECRET = "bench-jwt-signing-secret-0123456789abcdef"
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Margaret", "Dennis", "Radia"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Hamilton", "Ritchie"]
TERMINAL = "('synced','superseded','rejected','dead')"


def bodies(count: int, seed: int = 20261201) -> list[bytes]:
    """Journey calls for a population of distinct people; 20% are a later change of someone."""
    rng = random.Random(seed)
    people = int(count * 0.8)
    result = []
    for i in range(count):
        person = i if i < people else rng.randrange(people)
        birth = dt.date(1950, 1, 1) + dt.timedelta(days=(person * 7919) % 20000)
        args = {
            "SubscriberKey": f"PIPE-{person:07d}",
            "EmailAddress": f"p{person}.{LAST[person % len(LAST)].lower()}@example.com",
            "SubscriberId": str(10_000_000 + person),
            "FirstName": FIRST[person % len(FIRST)],
            "LastName": LAST[(person // len(FIRST)) % len(LAST)] + ("" if person < 200 else f"{person % 997}"),
            "MobileNumber": f"+1617{person % 10_000_000:07d}",
            "BirthDate": birth.isoformat(),
            "Gender": "Female" if person % 2 else "Male",
            "AddressLine1": f"{i % 400 + 1} Pipeline Street",
            "City": "Boston",
            "PostalCode": f"{2100 + person % 90:05d}",
            "Country": "US",
            "Status": "Active",
            "ModifiedDate": f"2026-11-{1 + (i * 13) % 28:02d}T{(i * 7) % 24:02d}:00:00Z",
        }
        result.append(sign_execute(build_execute_payload(args, ttl=7200), JWT_SECRET))
    return result


def start(command: list[str], tree: Path, env: dict[str, str], log: Path | None = None) -> subprocess.Popen[bytes]:
    output = log.open("ab") if log else subprocess.DEVNULL
    return subprocess.Popen(command, cwd=tree, env=env, start_new_session=True, stderr=output, stdout=output)


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, 15)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)


def post_all(url: str, payloads: list[bytes], clients: int, rate: float = 0.0) -> tuple[list[int], float]:
    sessions = [requests.Session() for _ in range(clients)]
    started = time.perf_counter()

    def post(i: int) -> int:
        if rate:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        answer = sessions[i % clients].post(
            url, data=payloads[i], timeout=60, headers={"Content-Type": "application/jwt"}
        )
        return answer.status_code

    with ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(post, range(len(payloads))))
    return codes, time.perf_counter() - started


def wait_terminal(db_url: str, timeout: float) -> float:
    started = time.perf_counter()
    with psycopg.connect(db_url, autocommit=True) as conn:
        while time.perf_counter() - started < timeout:
            (pending,) = conn.execute(
                f"SELECT count(*) FROM integrations_inboundevent WHERE status NOT IN {TERMINAL}"
            ).fetchone()
            if pending == 0:
                return time.perf_counter() - started
            time.sleep(0.2)
    raise SystemExit(f"events still pending after {timeout} s")


def counts(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT status, count(*) FROM integrations_inboundevent GROUP BY status").fetchall()
        golden = conn.execute("SELECT count(*) FROM customers_individual").fetchone()[0]
        xrefs = conn.execute("SELECT count(*) FROM customers_crossreference").fetchone()[0]
        written = conn.execute(
            "SELECT count(*) FROM customers_crossreference WHERE writeback_state = 'written'"
        ).fetchone()[0]
    return {**dict(rows), "golden_records": golden, "cross_references": xrefs, "written": written}


def latencies(db_url: str) -> list[float]:
    with psycopg.connect(db_url) as conn:
        # Per event: from its arrival to the end of its sync run, which for a subscriber whose master ID
        # had to be written is the moment Marketing Cloud answered the write-back.
        rows = conn.execute(
            "SELECT EXTRACT(EPOCH FROM (max(r.finished_at) - e.received_at)) FROM integrations_inboundevent e "
            "JOIN integrations_syncrun r ON r.event_id = e.id "
            "WHERE e.status = 'synced' AND r.status = 'succeeded' GROUP BY e.id, e.received_at"
        ).fetchall()
    return [float(r[0]) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["drain", "offer"])
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--events", type=int, default=6000, help="drain: events in the backlog")
    parser.add_argument("--rate", type=float, default=50.0, help="offer: events per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="offer: how long")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--sandbox-latency-ms", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--log", type=Path, help="Append the processes' output here.")
    args = parser.parse_args()
    tree = args.tree.resolve()

    db_url = scratch_database(settings.EFFECTIVE_DATABASE_URL, "hub_bench_pipeline")
    sandbox = MarketingCloudSandbox(config=SandboxConfig(latency_ms=args.sandbox_latency_ms)).start()
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "PYTHONPATH": str(tree),
        **PRODUCTION_SETTINGS,
        "MC_AUTH_BASE_URL": sandbox.url,
        "MC_CLIENT_ID": "sandbox-client-id",
        "MC_CLIENT_SECRET": "sandbox-client-secret",
        "MC_JWT_SECRET": JWT_SECRET,
    }
    # The payloads are signed ahead, valid for two hours; a checkout from before the lifetime
    # bound refuses the setting as unknown.
    if "MC_JWT_MAX_LIFETIME" in (tree / "hub" / "env.py").read_text():
        env["MC_JWT_MAX_LIFETIME"] = "7200"
    env.pop("HUB_Q_WORKERS", None)  # the default worker count
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=tree, env=env, check=True)
    port = 8932
    web = start(
        [sys.executable, "-m", "gunicorn", "hub.wsgi", "-w", str(args.web_workers), "-b", f"127.0.0.1:{port}"],
        tree,
        env,
        args.log,
    )
    url = f"http://127.0.0.1:{port}/api/v1/marketing-cloud/journey/execute"
    cluster = None
    result: dict[str, object] = {"mode": args.mode, "tree": str(tree)}
    try:
        for _ in range(300):
            try:
                requests.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.2)
        count = args.events if args.mode == "drain" else int(args.rate * args.seconds)
        payloads = bodies(count)
        if args.mode == "drain":
            codes, intake_seconds = post_all(url, payloads, args.clients)
            result["accepted"] = codes.count(200)
            result["intake_seconds"] = round(intake_seconds, 1)
            cluster = start([sys.executable, "manage.py", "qcluster"], tree, env, args.log)
            drain = wait_terminal(db_url, args.timeout)
            found = counts(db_url)
            result.update(
                drain_seconds=round(drain, 1),
                syncs_per_second=round(found.get("synced", 0) / drain, 1),
                terminal_per_second=round(count / drain, 1),
                counts=found,
            )
        else:
            cluster = start([sys.executable, "manage.py", "qcluster"], tree, env, args.log)
            time.sleep(5)  # the cluster up and polling
            codes, intake_seconds = post_all(url, payloads, args.clients, args.rate)
            tail = wait_terminal(db_url, args.timeout)
            found = counts(db_url)
            values = latencies(db_url)
            result.update(
                offered_rate=args.rate,
                accepted=codes.count(200),
                offered_seconds=round(intake_seconds, 1),
                backlog_cleared_after_seconds=round(tail, 1),
                e2e_p50_ms=round(percentile(values, 0.50) * 1000, 1) if values else None,
                e2e_p99_ms=round(percentile(values, 0.99) * 1000, 1) if values else None,
                e2e_max_ms=round(max(values) * 1000, 1) if values else None,
                e2e_mean_ms=round(statistics.mean(values) * 1000, 1) if values else None,
                measured=len(values),
                counts=found,
            )
        result["mc_writeback_calls"] = sandbox.count("PUT", "/hub/v1/dataevents") + sandbox.count(
            "POST", "/hub/v1/dataevents"
        )
        result["sandbox_rows_with_master_id"] = sum(
            1 for v in sandbox.rows("Individual").values() if v.get("GlobalPartyId")
        )
    finally:
        if cluster is not None:
            stop(cluster)
        stop(web)
        sandbox.stop()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    result["commit"] = commit.stdout.strip()
    result["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
