"""Intake against its floor: the journey endpoint and a bare DRF endpoint, same gunicorn, same load, one run.

    python bench/intake_vs_bare.py                      # this checkout
    python bench/intake_vs_bare.py --tree ../before     # another checkout of the hub (before a change)
    python bench/intake_vs_bare.py --shipped            # the web process as deployed: nginx in front

Starts ``gunicorn -w 2`` once (production settings: ``HUB_DEBUG=false``) with the hub's
settings plus one bare DRF view (``bench/bare``: reads the body, answers 200, touches
nothing), against a scratch database, no task cluster running. Then ``wrk`` (1 thread,
8 connections, a different pre-signed Journey Builder body on every request) alternates
between ``POST /bench/bare`` and ``POST /api/v1/marketing-cloud/journey/execute``, for
``--rounds`` rounds of ``--seconds`` each after a warm-up, and reports requests/s, latency
percentiles and the ratio intake / bare, all measured in this one run. Every intake body
is a new subscriber; the script checks that each 200 stored one event.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
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

from bench.harness import PRODUCTION_SETTINGS, scratch_database  # noqa: E402
from hub.webserver import free_port, gunicorn_command, nginx_command  # noqa: E402
from sandboxes.marketing_cloud.journey import build_execute_payload, sign_execute  # noqa: E402

JWT_SECRET = "bench-jwt-signing-secret-0123456789abcdef"
BARE = Path(__file__).resolve().parent / "bare"
JOURNEY_PATH = "/api/v1/marketing-cloud/journey/execute"


def write_bodies(path: Path, count: int, start: int) -> None:
    """``count`` signed execute calls, each a new subscriber, one JWT a line."""
    with path.open("w") as handle:
        for i in range(start, start + count):
            args = {
                "SubscriberKey": f"INTAKE-{i:08d}",
                "EmailAddress": f"intake.{i}@example.com",
                "FirstName": "Bench",
                "LastName": f"Person{i}",
                "MobileNumber": f"+1415{i % 10_000_000:07d}",
                "Status": "Active",
                "ModifiedDate": "2026-11-01T00:00:00Z",
            }
            handle.write(sign_execute(build_execute_payload(args, ttl=3600), JWT_SECRET).decode() + "\n")


def wrk(url: str, bodies: Path, seconds: float, connections: int, threads: int) -> dict[str, float]:
    env = {**os.environ, "BODIES_FILE": str(bodies)}
    done = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds:g}s",
            "--latency",
            "-s",
            str(BARE / "post_bodies.lua"),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    out = done.stdout
    result = {"requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    result["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(bad.group(1)) if bad else 0
    errors = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = errors.group(1).strip() if errors else ""
    for label in ("50", "90", "99"):
        match = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)", out)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            result[f"p{label}_ms"] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=ROOT, help="The checkout of the hub to run (default: this one).")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gunicorn-threads", type=int, default=1, help="gunicorn --threads (1: sync workers)")
    parser.add_argument("--bodies", type=int, default=60_000, help="Distinct intake bodies per round.")
    parser.add_argument(
        "--shipped",
        action="store_true",
        help="gunicorn with deploy/gunicorn.conf.py behind nginx (deploy/nginx/), as deployed; wrk talks to nginx.",
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    tree = args.tree.resolve()

    db_url = scratch_database(settings.EFFECTIVE_DATABASE_URL, "hub_bench_intake")
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "DJANGO_SETTINGS_MODULE": "bench_bare_settings",
        "PYTHONPATH": os.pathsep.join([str(BARE), str(tree)]),
        **PRODUCTION_SETTINGS,
        "MC_JWT_SECRET": JWT_SECRET,
    }
    # The bodies are signed ahead, valid for an hour; a checkout from before the lifetime bound
    # refuses the setting as unknown.
    if "MC_JWT_MAX_LIFETIME" in (tree / "hub" / "env.py").read_text():
        env["MC_JWT_MAX_LIFETIME"] = "3600"
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=tree, env=env, check=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-intake-"))
    bare_bodies = scratch / "bare.txt"
    write_bodies(bare_bodies, 1000, 0)
    port = 8931
    sizing = ["-w", str(args.workers), "--threads", str(args.gunicorn_threads)]
    if args.shipped:
        upstream = f"127.0.0.1:{free_port()}"
        commands = [
            gunicorn_command(upstream, *sizing),
            nginx_command(scratch / "nginx", listen=f"127.0.0.1:{port}", upstream=upstream),
        ]
    else:
        commands = [[sys.executable, "-m", "gunicorn", "hub.wsgi", *sizing, "-b", f"127.0.0.1:{port}"]]
    processes = [
        subprocess.Popen(command, cwd=tree, env=env, start_new_session=True, stderr=subprocess.DEVNULL)  # noqa: S603
        for command in commands
    ]
    base = f"http://127.0.0.1:{port}"
    rounds = []
    try:
        for _ in range(300):
            try:
                if requests.get(f"{base}/api/health", timeout=1).status_code in (200, 503):
                    break
            except requests.RequestException:
                time.sleep(0.2)
        warm = scratch / "warm.txt"
        write_bodies(warm, 10_000, 10_000_000)
        wrk(f"{base}/bench/bare", bare_bodies, 2, args.connections, args.threads)
        warm_up = wrk(f"{base}{JOURNEY_PATH}", warm, 2, args.connections, args.threads)
        for r in range(args.rounds):
            bodies = scratch / f"intake-{r}.txt"
            write_bodies(bodies, args.bodies, (r + 1) * 1_000_000)
            bare = wrk(f"{base}/bench/bare", bare_bodies, args.seconds, args.connections, args.threads)
            intake = wrk(f"{base}{JOURNEY_PATH}", bodies, args.seconds, args.connections, args.threads)
            if intake["requests"] > args.bodies:
                raise SystemExit(f"round {r}: {intake['requests']} requests but only {args.bodies} distinct bodies")
            rounds.append({"bare": bare, "intake": intake})
    finally:
        for process in processes:
            os.killpg(process.pid, 15)
        for process in processes:
            process.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)
    with psycopg.connect(db_url) as conn:
        (stored,) = conn.execute(
            "SELECT count(*) FROM integrations_inboundevent WHERE external_id LIKE 'INTAKE-%%'"
        ).fetchone()
    accepted = sum(r["intake"]["requests"] - r["intake"]["non_2xx"] for r in rounds)
    accepted += warm_up["requests"] - warm_up["non_2xx"]
    bare_mean = sum(r["bare"]["requests_per_second"] for r in rounds) / len(rounds)
    intake_mean = sum(r["intake"]["requests_per_second"] for r in rounds) / len(rounds)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    print(
        json.dumps(
            {
                "tree": str(tree),
                "commit": commit.stdout.strip(),
                "gunicorn": f"-w {args.workers} --threads {args.gunicorn_threads}",
                "front": "nginx, deploy/nginx/hub.conf.template" if args.shipped else "none (gunicorn direct)",
                "wrk": f"-t{args.threads} -c{args.connections} -d{args.seconds:g}s",
                "rounds": rounds,
                "bare_requests_per_second": round(bare_mean, 1),
                "intake_requests_per_second": round(intake_mean, 1),
                "intake_over_bare": round(intake_mean / bare_mean, 3),
                "events_stored": stored,
                "intake_answered_2xx_with_warm_up": accepted,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
