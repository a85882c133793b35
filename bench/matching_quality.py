"""Matching quality and scale: precision and recall of the match rules, and match latency by golden-set size.

    psql -h 127.0.0.1 -U postgres -c 'create database hub_bench'       # 10,000 golden records
    psql -h 127.0.0.1 -U postgres -c 'create database hub_bench_1m'    # 1,000,000
    export HUB_DEBUG=true
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/hub_bench python manage.py migrate
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/hub_bench python bench/matching_quality.py --golden 10000
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/hub_bench_1m python manage.py migrate
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/hub_bench_1m python bench/matching_quality.py --golden 1000000
    # both loaded: match against both, call for call, for the p99 ratio
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/hub_bench_1m python bench/matching_quality.py \
        --golden 1000000 --reuse --paired-golden 10000 --paired-database hub_bench

1. Loads ``--golden`` clean records (``bench/make_customers.py``: one per person,
   households and twins included) through the unit of work every golden-record write
   goes through (``customers.resolution.store``), one golden record each, in batches,
   then ``VACUUM ANALYZE`` (what autovacuum would have done by the time records arrive).
2. For each of ``--incoming`` later records (duplicates of golden people and hard
   negatives: household members, twins, namesakes, unrelated people) makes the lookup
   the engine makes for a record (``UnitOfWork.match``: candidates by blocking key,
   loaded, decided by the rules) inside a transaction that is rolled back (the tables
   never change), timing each call, and scores the verdicts against the labels.

Auto-merge precision: auto-merges into the golden record of the same person / all
auto-merges. Recall (auto): duplicates auto-merged into their own golden record /
duplicates. Recall (auto + suspect): the own golden record is the auto pick or among
the suspects. The JSON report goes to stdout and ``bench/results/`` (git-ignored);
misclassified examples go to stderr and the report file.

Latency on a shared machine moves with whatever else runs on it, so the p99 ratio is
measured with ``--paired-golden``: the same process matches each incoming record
against both golden sets (two databases, loaded beforehand), alternating which goes
first, so both see the same background load. A p99 of 4,000 calls is the 40 slowest, and on
a shared virtual machine those are mostly calls that waited on the scheduler, whatever their
size: ``--rounds N`` matches every record N times (each later round checked to decide as the
first) and takes the latencies over all calls, a steadier p99. ``--baseline`` compares with an earlier
report instead. ``--reuse`` skips the load when the database already holds this very
golden set (same --golden and --seed); ``--sync-rules`` sets the MatchRule rows from
``customers/defaults.py`` first.

Rules alone against rules + match weights (issue 13): ``--model VERSION`` (or ``active``)
matches the incoming records twice, with no matcher model active and with that one, and
reports both side by side (``rules_alone`` and ``with_model``). ``--train`` first trains a
model as ``manage.py train_matcher`` does and saves it as a draft. The bench's golden records
have one source each and no steward decisions, so training also gets a held-out stream of
incoming-like records (the generator drawn again: other records of the same golden people,
other perturbations, never the measured ones), compared with their blocking candidates, for
the EM; of these, ``--train-labels`` records (default 2000) have their pairs labelled, as a
steward's review decisions would be, and the thresholds are chosen against those labels. The
model is active only for the second pass; whatever was active before is active again at the end
(a trained model stays a draft).

    DATABASE_URL=.../hub_bench python bench/matching_quality.py --golden 10000 --reuse --train
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
os.environ.setdefault("HUB_DEBUG", "true")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import DEFAULT_DB_ALIAS, connection, connections, reset_queries, transaction  # noqa: E402
from django.db.utils import load_backend  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench.harness import percentile  # noqa: E402
from bench.make_customers import CustomerGenerator, Labelled  # noqa: E402
from bench.matching_setup import rules_in_force, set_active_model, sync_rules  # noqa: E402
from customers.choices import MatcherStatus  # noqa: E402
from customers.cim import parse_individual  # noqa: E402
from customers.models import CrossReference, Individual, MatcherModel, MatchKey  # noqa: E402
from customers.nicknames import name_groups  # noqa: E402
from customers.normalize import normalize_name  # noqa: E402
from customers.resolution.blocking import MatchProfile, blocking_keys, profile_from_source  # noqa: E402
from customers.resolution.store import UnitOfWork  # noqa: E402
from customers.training import collect, format_report, save_draft, train  # noqa: E402

SYSTEM = "BENCH_CRM"
# The targets of the resolution-engine issue: quality unchanged or better, latency flat in the golden set's size.
TARGETS = {"precision": 0.999, "recall_auto_suspect": 0.96, "p99_ratio": 1.5}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Database
# ---------------------------------------------------------------------------
def check_database() -> str:
    name = connection.settings_dict["NAME"]
    if name in ("postgres", "test_postgres"):
        raise SystemExit(f"refusing to run against the database {name!r}: point DATABASE_URL at a scratch database")
    return name


def load_golden(generator: CustomerGenerator, batch_size: int, reuse: bool) -> dict[str, Any]:
    existing = Individual.objects.count()
    if reuse:
        if existing != generator.size:
            raise SystemExit(f"--reuse: the database holds {existing} golden records, not {generator.size}")
        started = time.perf_counter()
        first: list[Labelled] = []
        for item in generator.golden():  # regenerated (same seed) for the incoming records' reservoirs
            if len(first) < 50:
                first.append(item)
        found = dict(
            CrossReference.objects.filter(system=SYSTEM, external_id__in=[x.external_id for x in first])
            .select_related("individual")
            .values_list("external_id", "individual__first_name")
        )
        if any(found.get(x.external_id) != x.record["firstName"] for x in first):
            raise SystemExit("--reuse: the database holds another golden set (other --seed?)")
        return {"reused": True, "generate_seconds": round(time.perf_counter() - started, 1)}
    if existing:
        raise SystemExit(f"the database already holds {existing} golden records: recreate it, or pass --reuse")
    started = time.perf_counter()
    upsert_seconds = 0.0
    batch: list[Labelled] = []
    done = 0

    def flush() -> None:
        nonlocal upsert_seconds, done
        t0 = time.perf_counter()
        trusted_load(batch)
        upsert_seconds += time.perf_counter() - t0
        done += len(batch)
        batch.clear()
        reset_queries()
        if done % 100_000 == 0 or done == generator.size:
            log(f"  loaded {done:,} golden records in {time.perf_counter() - started:.0f} s")

    for item in generator.golden():
        batch.append(item)
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    load_seconds = time.perf_counter() - started
    t0 = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    vacuum_seconds = time.perf_counter() - t0
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM customers_matchkey")
        match_keys = cursor.fetchone()[0]
        cursor.execute("SELECT pg_database_size(current_database())")
        size = cursor.fetchone()[0]
    return {
        "reused": False,
        "batch_size": batch_size,
        "load_seconds": round(load_seconds, 1),
        "write_seconds": round(upsert_seconds, 1),
        "vacuum_analyze_seconds": round(vacuum_seconds, 1),
        "match_keys": match_keys,
        "database_mib": round(size / 2**20),
    }


def trusted_load(batch: list[Labelled]) -> None:
    """The golden set as the hub holds it: one golden record per person, written by the unit of work.

    Not matched on the way in: the set is one record per person by construction (households
    share an email only through their owner, twins are two people), as a CRM's clean master
    would be loaded. Survivorship, contact points and blocking keys are computed as for any
    golden record.
    """
    now = timezone.now()
    with transaction.atomic():
        work = UnitOfWork(render_snapshots=False)
        work.reserve(goldens=len(batch), sources=len(batch))
        for item in batch:
            golden = work.new_golden(now)
            record = work.new_source(SYSTEM, item.external_id, golden, now)
            work.update_source(record, parse_individual(item.record), last_seen_at=now)
            work.recompute(golden, actor="bench", now=now, history_action=None)
        work.flush(now)


def individual_ids(external_ids: set[str]) -> dict[str, int]:
    result: dict[str, int] = {}
    ordered = sorted(external_ids)
    for i in range(0, len(ordered), 5000):
        rows = CrossReference.objects.filter(system=SYSTEM, external_id__in=ordered[i : i + 5000])
        result.update(rows.values_list("external_id", "individual_id"))
    return result


def entities_of(ids: set[int]) -> dict[int, str]:
    rows = CrossReference.objects.filter(system=SYSTEM, individual_id__in=ids).values_list(
        "individual_id", "external_id"
    )
    return dict(rows)


# ---------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------
def run_one(profile: MatchProfile) -> tuple[float, float, int | None, str, list[tuple[int, str]], int]:
    """One lookup as the engine makes it for a record: candidates by blocking key, loaded, decided by the rules.

    (wall s, this process's CPU s, auto pick, its rule, suspects, compared); nothing is written.
    """
    with transaction.atomic():
        t0, c0 = time.perf_counter(), time.process_time()
        result = UnitOfWork().match(profile)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        transaction.set_rollback(True)
    best = result.best[0].pk if result.best else None
    rule = result.best[1].rule if result.best else ""
    return elapsed, cpu, best, rule, [(pk, d.rule) for pk, d in result.suspects], result.compared


def same_name(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same surname and a first name that is the same or a nickname of it."""
    if normalize_name(a.get("lastName") or "") != normalize_name(b.get("lastName") or ""):
        return False
    fa, fb = normalize_name(a.get("firstName") or ""), normalize_name(b.get("firstName") or "")
    return fa == fb or bool(name_groups(fa) & name_groups(fb))


def relation(item: Labelled, other_entity: str, other: Individual) -> str:
    """How the person ``item`` is and the golden person it was wrongly put with are related."""
    other_group = other_entity.split(".")[0] if "." in other_entity else ""
    if item.group and other_group == item.group:
        return "twin" if item.group.startswith("t") else "household"
    if same_name(item.record, {"firstName": other.first_name, "lastName": other.last_name}):
        return "common_name"
    return "other"


def summary(record: dict[str, Any]) -> str:
    points = []
    for p in record.get("contactPoints", []):
        kind = p["contactPointType"]
        if kind == "ContactPointEmail":
            points.append(p["emailAddress"])
        elif kind == "ContactPointPhone":
            points.append(p["telephoneNumber"])
        else:
            points.append(f"{p.get('addressLine1', '')}, {p.get('postalCodeText', '')}")
    name = f"{record.get('firstName', '')} {record.get('lastName', '')}"
    if record.get("nameSuffix"):
        name += f" {record['nameSuffix']}"
    return f"{name} | {record.get('birthDate', '-')} | {record.get('gender', '-')} | {' ; '.join(points)}"


def golden_summary(pk: int) -> str:
    ind = Individual.objects.prefetch_related("contact_points").get(pk=pk)
    points = [
        cp.email_address or cp.telephone_number or f"{cp.address_line1}, {cp.postal_code_text}"
        for cp in ind.contact_points.all()
    ]
    name = " ".join(x for x in (ind.first_name, ind.last_name, ind.name_suffix) if x)
    return f"{name} | {ind.birth_date or '-'} | {ind.gender or '-'} | {' ; '.join(points)}"


def why_missed(profile: MatchProfile, truth: int) -> str:
    """A missed duplicate: no blocking key shared, cut by the candidate limit, or the rules said no match."""
    keys = blocking_keys(profile)
    theirs = set(MatchKey.objects.filter(individual_id=truth).values_list("kind", "value"))
    if not keys & theirs:
        return "no_shared_blocking_key"
    if truth not in UnitOfWork().candidate_ids(keys):
        return "cut_by_candidate_limit"
    return "rules_no_match"


def rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


class Scale:
    """One golden set in its own database, its incoming records and what matching them gave."""

    def __init__(self, golden: int, incoming: int, seed: int, database: str | None = None) -> None:
        self.generator = CustomerGenerator(golden, incoming, seed)
        self.golden = golden
        if database is None:
            self.connection = connections[DEFAULT_DB_ALIAS]
        else:
            # A second connection, to another database on the same server, swapped in as the default one.
            config = {**connections[DEFAULT_DB_ALIAS].settings_dict, "NAME": database}
            self.connection = load_backend(config["ENGINE"]).DatabaseWrapper(config, DEFAULT_DB_ALIAS)
        self.load: dict[str, Any] = {}
        self.rows: list[tuple[Labelled, MatchProfile, float, int | None, str, list[tuple[int, str]], int]] = []
        self.cpu_ms: list[float] = []
        # Calls of rounds after the first (--rounds): timed, and checked to decide as the first did.
        self.more_latencies_ms: list[float] = []
        self.load_average: list[float] = []
        self.match_seconds = 0.0

    def activate(self) -> None:
        connections[DEFAULT_DB_ALIAS] = self.connection

    def prepare(self) -> None:
        """The incoming records, their golden records' ids, and the warm-up calls."""
        incoming = self.generator.incoming()
        wanted = {x.entity for x in incoming} | {x.related for x in incoming if x.related}
        self.golden_of = individual_ids(wanted)
        self.measured = [x for x in incoming if x.kind != "warmup"]
        for item in incoming:
            if item.kind == "warmup":
                run_one(profile_from_source(parse_individual(item.record)))

    def match(self, n: int, round_: int = 0) -> None:
        item = self.measured[n]
        profile = profile_from_source(parse_individual(item.record))
        elapsed, cpu, best, rule, suspects, compared = run_one(profile)
        self.cpu_ms.append(cpu * 1000)
        if round_ == 0:
            self.rows.append((item, profile, elapsed, best, rule, suspects, compared))
            return
        # Nothing is written, so a call decides as it did in the first round.
        first = self.rows[n]
        if (first[3], first[4], first[5]) != (best, rule, suspects):
            raise RuntimeError(f"record {item.external_id} decided otherwise in round {round_ + 1}")
        self.more_latencies_ms.append(elapsed * 1000)


def match_all(scales: list[Scale], rounds: int = 1) -> None:
    """Every incoming record ``rounds`` times, the scales' calls interleaved record by record.

    The first scale goes first on even records, the other on odd ones.
    """
    started = time.perf_counter()
    spent = [0.0] * len(scales)
    count = len(scales[0].measured)
    for round_, n in ((r, n) for r in range(rounds) for n in range(count)):
        if n % 1000 == 0:
            for scale in scales:
                scale.load_average.append(round(os.getloadavg()[0], 2))
        order = list(enumerate(scales)) if n % 2 == 0 else list(reversed(list(enumerate(scales))))
        for i, scale in order:
            scale.activate()
            t0 = time.perf_counter()
            scale.match(n, round_)
            spent[i] += time.perf_counter() - t0
        if (n + 1) % 1000 == 0:
            log(f"  {n + 1} of {count} matched (round {round_ + 1} of {rounds}), {time.perf_counter() - started:.0f} s")
    for i, scale in enumerate(scales):
        scale.load_average.append(round(os.getloadavg()[0], 2))
        scale.match_seconds = spent[i]


def score(scale: Scale, examples: int) -> dict[str, Any]:
    """Quality and latency of one scale's verdicts against the generator's labels."""
    rows, golden_of, cpu_ms = scale.rows, scale.golden_of, scale.cpu_ms
    picked = {r[3] for r in rows if r[3]} | {pk for r in rows for pk, _ in r[5]}
    entity_of = entities_of(picked)

    auto_total = auto_correct = dup_total = dup_auto = dup_any = 0
    false_by_relation: Counter[str] = Counter()
    false_by_kind: Counter[str] = Counter()
    false_by_rule: Counter[str] = Counter()
    outcome_by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    by_perturbation: dict[str, Counter[str]] = defaultdict(Counter)
    missed_why: Counter[str] = Counter()
    false_examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
    missed_examples: list[dict[str, Any]] = []
    suspects_per_record = []
    for item, profile, _, best, rule, suspects, _ in rows:
        truth = golden_of.get(item.entity)
        suspect_ids = {pk for pk, _ in suspects}
        suspects_per_record.append(len(suspects))
        if best is not None:
            auto_total += 1
        is_dup = item.kind == "duplicate"
        correct_auto = is_dup and best is not None and best == truth
        if is_dup:
            if truth is None:
                raise SystemExit(f"no golden record for duplicate {item.entity}")
            dup_total += 1
            found = correct_auto or truth in suspect_ids
            dup_auto += correct_auto
            dup_any += found
            for p in item.perturbations or ["none"]:
                by_perturbation[p]["n"] += 1
                by_perturbation[p]["auto"] += correct_auto
                by_perturbation[p]["auto_or_suspect"] += found
            if not found:
                why = why_missed(profile, truth)
                missed_why[why] += 1
                if len(missed_examples) < examples:
                    missed_examples.append(
                        {
                            "why": why,
                            "perturbations": item.perturbations,
                            "incoming": summary(item.record),
                            "golden": golden_summary(truth),
                            "wrong_auto_pick": golden_summary(best) if best else None,
                        }
                    )
        if correct_auto:
            auto_correct += 1
            outcome = "auto_merge (right)"
        elif best is not None:
            outcome = "auto_merge (wrong)"
            kind = relation(item, entity_of.get(best, "?"), Individual.objects.get(pk=best))
            false_by_relation[kind] += 1
            false_by_kind[item.kind] += 1
            false_by_rule[rule] += 1
            if len(false_examples[kind]) < examples:
                false_examples[kind].append(
                    {
                        "incoming_kind": item.kind,
                        "rule": rule,
                        "perturbations": item.perturbations,
                        "incoming": summary(item.record),
                        "merged_into": golden_summary(best),
                        "own_golden": golden_summary(truth) if truth else None,
                    }
                )
        elif truth is not None and truth in suspect_ids:
            outcome = "suspect (right)"
        elif suspects:
            outcome = "suspect (others)"
        else:
            outcome = "no_match"
        outcome_by_kind[item.kind][outcome] += 1

    latencies = [r[2] * 1000 for r in rows] + scale.more_latencies_ms
    compared = [r[6] for r in rows]
    return {
        "incoming": dict(Counter(r[0].kind for r in rows)),
        "precision": rate(auto_correct, auto_total),
        "recall_auto": rate(dup_auto, dup_total),
        "recall_auto_suspect": rate(dup_any, dup_total),
        "auto_merges": auto_total,
        "false_auto_merges": auto_total - auto_correct,
        "false_auto_by_relation": dict(false_by_relation),
        "false_auto_by_incoming_kind": dict(false_by_kind),
        "false_auto_by_rule": dict(false_by_rule),
        "outcomes_by_incoming_kind": {k: dict(v) for k, v in sorted(outcome_by_kind.items())},
        "missed_duplicates_why": dict(missed_why),
        "suspects_per_record_mean": round(statistics.fmean(suspects_per_record), 2),
        "recall_by_perturbation": {
            p: {
                "n": c["n"],
                "auto": rate(c["auto"], c["n"]),
                "auto_or_suspect": rate(c["auto_or_suspect"], c["n"]),
            }
            for p, c in sorted(by_perturbation.items())
        },
        "latency_ms": {
            "calls": len(latencies),
            "p50": round(percentile(latencies, 0.50), 2),
            "p95": round(percentile(latencies, 0.95), 2),
            "p99": round(percentile(latencies, 0.99), 2),
            "max": round(max(latencies), 2),
            "mean": round(statistics.fmean(latencies), 2),
        },
        # Time this process spent on the CPU per call (Python side only; steadier than wall time when
        # other work shares the cores).
        "client_cpu_ms": {"p50": round(percentile(cpu_ms, 0.50), 2), "p99": round(percentile(cpu_ms, 0.99), 2)},
        "load_average_while_matching": scale.load_average,
        "candidates_compared": {
            "mean": round(statistics.fmean(compared), 2),
            "p99": percentile([float(c) for c in compared], 0.99),
            "max": max(compared),
        },
        "match_seconds": round(scale.match_seconds, 1),
        "examples": {"false_auto_merges": dict(false_examples), "missed_duplicates": missed_examples},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", type=int, default=10_000)
    parser.add_argument("--incoming", type=int, default=4_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-size", type=int, default=5_000)
    parser.add_argument("--reuse", action="store_true", help="the database already holds this golden set")
    parser.add_argument("--sync-rules", action="store_true", help="set the MatchRule rows from customers/defaults.py")
    parser.add_argument("--baseline", type=Path, help="an earlier report, for the p99 ratio")
    parser.add_argument("--paired-golden", type=int, help="also match against this golden set, call for call")
    parser.add_argument("--paired-database", default="hub_bench", help="its database (already loaded)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="match every incoming record this many times; the latencies are over all calls (a steadier p99)",
    )
    parser.add_argument("--examples", type=int, default=8, help="misclassified examples kept per kind")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model", help="a matcher model version (or 'active'): rules alone vs rules + weights")
    parser.add_argument("--train", action="store_true", help="train a matcher model first (see the docstring)")
    parser.add_argument("--train-labels", type=int, default=2000, help="training-stream records with labels")
    args = parser.parse_args()
    # Django's debug query log off, as in production (HUB_DEBUG only spares us a secret key here).
    settings.DEBUG = False
    scales = [Scale(args.golden, args.incoming, args.seed)]
    if args.paired_golden:
        scales.append(Scale(args.paired_golden, args.incoming, args.seed, args.paired_database))
    for i, scale in enumerate(scales):
        scale.activate()
        database = check_database()
        if args.sync_rules:
            sync_rules()
        reuse = args.reuse or i > 0
        log(f"{database}: {'checking' if reuse else 'loading'} {scale.golden:,} golden records")
        scale.load = load_golden(scale.generator, args.batch_size, reuse)
        scale.prepare()
    if args.model or args.train:
        compare_with_model(scales[0], args)
        return
    log(f"  matching {len(scales[0].measured)} incoming records per golden set (after 100 warm-up calls)")
    match_all(scales, args.rounds)
    reports = []
    for scale in scales:
        scale.activate()
        quality = score(scale, args.examples)
        examples = quality.pop("examples")
        report: dict[str, Any] = {
            "benchmark": "matching_quality",
            "golden": scale.golden,
            "seed": args.seed,
            "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
            "postgres": connection.connection.info.server_version,
            "database": connection.settings_dict["NAME"],
            "load": scale.load,
            **quality,
        }
        report["targets_met"] = {
            "precision": report["precision"] is not None and report["precision"] >= TARGETS["precision"],
            "recall_auto_suspect": report["recall_auto_suspect"] >= TARGETS["recall_auto_suspect"],
        }
        report["rules"] = rules_in_force()
        reports.append((report, examples))
    base = None
    if len(reports) == 2:
        small, large = sorted((r for r, _ in reports), key=lambda r: r["golden"])
        base = small | {"paired": True}
    elif args.baseline:
        base = json.loads(args.baseline.read_text())
    if base is not None:
        for report, _ in reports:
            if report["golden"] <= base["golden"]:
                continue
            ratio = report["latency_ms"]["p99"] / base["latency_ms"]["p99"]
            report["p99_ratio"] = {
                "baseline_golden": base["golden"],
                "baseline_p99_ms": base["latency_ms"]["p99"],
                "measured_together": bool(base.get("paired")),
                "ratio": round(ratio, 2),
            }
            report["targets_met"]["p99_ratio"] = ratio <= TARGETS["p99_ratio"]
    for i, (report, examples) in enumerate(reports):
        out = (args.out if i == 0 else None) or ROOT / "bench" / "results" / f"matching-quality-{report['golden']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report | {"examples": examples}, indent=2, ensure_ascii=False))
        log(f"\n######## {report['golden']:,} golden records ########")
        print_examples(examples)
        log(f"report written to {out}")
    output = [r for r, _ in reports]
    print(json.dumps(output[0] if len(output) == 1 else output, indent=2, ensure_ascii=False))


def train_on_held_out(scale: Scale, labelled: int) -> int:
    """Train on the golden set plus a held-out incoming stream (see the docstring); the draft's version."""
    started = time.perf_counter()
    stream = [x for x in scale.generator.incoming() if x.kind != "warmup"]
    golden_of = individual_ids({x.entity for x in stream})
    measured = {json.dumps(x.record, sort_keys=True) for x in scale.measured}
    items: list[tuple[MatchProfile, int | None]] = []
    for n, x in enumerate(y for y in stream if json.dumps(y.record, sort_keys=True) not in measured):
        truth = golden_of.get(x.entity, -1) if x.kind == "duplicate" else -1
        items.append((profile_from_source(parse_individual(x.record)), truth if n < labelled else None))
    with transaction.atomic():
        data = collect(incoming=items)
        trained = train(data)
        row = save_draft(trained, actor="bench", notes=f"bench --train, {labelled} labelled training records")
    log(format_report(trained.report))
    log(f"  trained matcher model v{row.version} in {time.perf_counter() - started:.0f} s")
    return row.version


def compare_with_model(scale: Scale, args: argparse.Namespace) -> None:
    """Match the incoming records with the rules alone, then with the model; both reports side by side."""
    if args.train:
        version = train_on_held_out(scale, args.train_labels)
    elif args.model == "active":
        active = MatcherModel.objects.filter(status=MatcherStatus.ACTIVE).first()
        if active is None:
            raise SystemExit("--model active: no matcher model is active")
        version = active.version
    else:
        version = int(args.model)
        if not MatcherModel.objects.filter(version=version).exists():
            raise SystemExit(f"--model {version}: no such matcher model")
    before = MatcherModel.objects.filter(status=MatcherStatus.ACTIVE).values_list("version", flat=True).first()
    status = MatcherModel.objects.get(version=version).status
    reports = {}
    for label, active in (("rules_alone", None), ("with_model", version)):
        set_active_model(active)
        scale.rows, scale.cpu_ms, scale.load_average = [], [], []
        log(f"  {label}: matching {len(scale.measured)} incoming records")
        match_all([scale])
        quality = score(scale, args.examples)
        examples = quality.pop("examples")
        if label == "with_model":
            log("\n######## with the model ########")
            print_examples(examples)
        reports[label] = quality
    set_active_model(before)
    if version != before:
        MatcherModel.objects.filter(version=version).update(status=status)  # a draft stays a draft
    keys = ("precision", "recall_auto", "recall_auto_suspect", "auto_merges", "false_auto_merges")
    log("\n" + f"{'':22}{'rules alone':>14}{'rules + weights':>18}")
    for key in (*keys, "suspects_per_record_mean"):
        log(f"{key:22}{reports['rules_alone'][key]!s:>14}{reports['with_model'][key]!s:>18}")
    log(
        f"{'p99 latency ms':22}{reports['rules_alone']['latency_ms']['p99']!s:>14}"
        f"{reports['with_model']['latency_ms']['p99']!s:>18}"
    )
    model = MatcherModel.objects.get(version=version)
    report = {
        "benchmark": "matching_quality_with_model",
        "golden": scale.golden,
        "seed": args.seed,
        "model": {
            "version": version,
            "auto_threshold": model.auto_threshold,
            "review_threshold": model.review_threshold,
            "trained_here": bool(args.train),
            "evaluated_against": model.training_report.get("evaluated_against"),
        },
        **reports,
    }
    out = args.out or ROOT / "bench" / "results" / f"matching-quality-model-{scale.golden}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(json.dumps(report, indent=2, ensure_ascii=False))


def print_examples(examples: dict[str, Any]) -> None:
    for kind, items in examples["false_auto_merges"].items():
        log(f"\n== false auto-merges ({kind}) ==")
        for e in items:
            log(f"  [{e['incoming_kind']}; {e['rule']}; {','.join(e['perturbations'])}]")
            log(f"    incoming : {e['incoming']}\n    merged to: {e['merged_into']}\n    own      : {e['own_golden']}")
    if examples["missed_duplicates"]:
        log("\n== missed duplicates ==")
        for e in examples["missed_duplicates"]:
            log(f"  [{e['why']}; {','.join(e['perturbations'])}]")
            log(f"    incoming: {e['incoming']}\n    golden  : {e['golden']}")


if __name__ == "__main__":
    main()
