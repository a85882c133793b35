"""Issue 13 points 2-4: Fellegi-Sunter match weights, guards, training and model activation (real PostgreSQL)."""

from __future__ import annotations

import io
import math
import random

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from bench.make_customers import CustomerGenerator
from customers.cim import parse_individual
from customers.models import CrossReference, Individual, MatchCandidate, MatcherModel
from customers.resolution.blocking import ATTRIBUTES
from customers.resolution.rules import OUTCOME_NONE, Comparisons, decide, load_rules, parse_criteria
from customers.resolution.store import UnitOfWork
from customers.resolution.weights import LEVELS, MISSING, MatchModel, decide_with_model, level_of, levels_of
from customers.stewardship import mark_not_a_match
from customers.training import (
    TrainingData,
    TrainingPair,
    collect,
    expectation_maximisation,
    posterior_floor,
    train,
)
from tests.test_matching import person
from tests.test_mdm import cim, ingest

pytestmark = pytest.mark.django_db


def parameters(top_m: float = 0.9, top_u: float = 0.01, prior: float = 0.5) -> dict:
    """m and u per level: the strongest level is likely for matches and rare for others; 'different' the reverse."""
    m, u = {}, {}
    for name, levels in LEVELS.items():
        middle = levels[1:-1]
        m[name] = {levels[0]: top_m, levels[-1]: 0.05} | {lv: (0.95 - top_m) / max(len(middle), 1) for lv in middle}
        u[name] = {levels[0]: top_u, levels[-1]: 0.9} | {lv: (0.09 - top_u) / max(len(middle), 1) for lv in middle}
    for table in (m, u):  # each attribute's levels sum to 1
        for name, levels in table.items():
            total = sum(levels.values())
            table[name] = {lv: p / total for lv, p in levels.items()}
    return {"m": m, "u": u, "prior": prior}


def make_model(version: int = 1, status: str = "active", auto: float = 15.0, review: float = 5.0) -> MatcherModel:
    return MatcherModel.objects.create(
        version=version, status=status, parameters=parameters(), auto_threshold=auto, review_threshold=review
    )


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------
def test_the_weight_is_the_prior_log_odds_plus_each_levels_log_ratio_and_missing_adds_nothing():
    model = MatchModel.from_json(parameters(prior=0.2), auto_threshold=10, review_threshold=0)
    left = person("Bob", "Smith", email="bob@example.com", phone="", postal="94105", birth="1980-03-04")
    right = person("Robert", "Smith", email="rs@example.com", phone="", postal="94105", birth="1980-04-03")
    comparisons = Comparisons(left, right)
    weight, parts = model.score(comparisons)
    assert {name: level for name, (level, _) in parts.items()} == {
        "first_name": "nickname",
        "last_name": "normalized",
        "name_suffix": MISSING,
        "birth_date": "near",  # day and month swapped
        "email": "different",
        "phone": MISSING,
        "postal_code": "normalized",
        "address": "normalized",
        "gender": MISSING,
    }
    m, u = parameters()["m"], parameters()["u"]
    expected = math.log2(0.2 / 0.8) + sum(
        math.log2(m[name][level] / u[name][level]) for name, (level, _) in parts.items() if level != MISSING
    )
    assert weight == pytest.approx(expected)
    assert parts["phone"] == (MISSING, 0.0)
    assert parts["email"][1] == pytest.approx(math.log2(m["email"]["different"] / u["email"]["different"]))


def test_a_common_shared_name_weighs_less_than_a_rare_one():
    data = parameters() | {"frequencies": {"last_name": {"smith": 0.05}}}
    model = MatchModel.from_json(data, auto_threshold=10, review_threshold=0)
    m, u = data["m"]["last_name"]["normalized"], data["u"]["last_name"]["normalized"]
    _, common = model.score(Comparisons(person(last="Smith"), person(last="SMITH")))
    _, rare = model.score(Comparisons(person(last="Okonkwo"), person(last="Okonkwo")))
    assert common["last_name"] == ("normalized", pytest.approx(math.log2(m / 0.05)))
    assert rare["last_name"] == ("normalized", pytest.approx(math.log2(m / u)))
    assert common["last_name"][1] < rare["last_name"][1]
    # Stored and read back, the table is kept.
    again = MatchModel.from_json(model.to_json(), auto_threshold=10, review_threshold=0)
    assert again.frequencies == {"last_name": {"smith": 0.05}}


def _bench_pairs(count: int) -> list[tuple]:
    """Profiles of generated pairs a lookup meets: each incoming record with its own golden record and
    with golden records sharing its postcode or first name (the crowded keys at scale), plus random ones."""
    from customers.resolution.blocking import profile_from_source

    generator = CustomerGenerator(1500, 600, seed=11)
    items = list(generator.golden())
    golden = [profile_from_source(parse_individual(x.record)) for x in items]
    by_entity = {x.entity: i for i, x in enumerate(items)}
    incoming = [(x, profile_from_source(parse_individual(x.record))) for x in generator.incoming()]
    rng = random.Random(5)
    pairs = []
    for item, profile in incoming:
        near = [g for g in golden if g.keys("postal_code") & profile.keys("postal_code")]
        near += [g for g in golden if g.keys("first_name") & profile.keys("first_name")][:10]
        own = [golden[by_entity[item.entity]]] if item.entity in by_entity else []
        pairs += [(profile, g) for g in own + near[:20] + rng.sample(golden, 3)]
    return pairs[:count]


def test_settling_a_no_match_early_never_changes_an_outcome():
    """The early no-match (``settle_early``) is a bound, never a guess: every outcome, weight and rule as in full."""
    rules = load_rules()
    trained_like = {  # weights shaped as a model trained on the bench (birth date and postcode weigh most)
        "m": {
            name: {lv: 0.9 if i == 0 else 0.1 / len(levels) for i, lv in enumerate(levels)}
            for name, levels in LEVELS.items()
        },
        "u": {
            name: {lv: 0.0002 if i == 0 else 0.9 if lv == "different" else 0.01 for i, lv in enumerate(levels)}
            for name, levels in LEVELS.items()
        },
        "prior": 0.6,
    }
    models = [
        MatchModel.from_json(parameters(), auto_threshold=15, review_threshold=5),
        MatchModel.from_json(parameters(prior=0.05), auto_threshold=10.5, review_threshold=6.5),
        MatchModel.from_json(trained_like, auto_threshold=10.5, review_threshold=6.5),
        MatchModel.from_json(trained_like, auto_threshold=30, review_threshold=-5),
    ]
    pairs = _bench_pairs(6000)
    settled = outcomes = 0
    for model in models:
        for incoming, candidate in pairs:
            full = decide_with_model(rules, model, incoming, candidate)
            early = decide_with_model(rules, model, incoming, candidate, settle_early=True)
            assert early.outcome == full.outcome
            if early.weight is None:  # settled before every attribute was compared
                assert full.outcome == OUTCOME_NONE
                settled += 1
            else:
                assert (early.rule, early.weight, early.guard) == (full.rule, full.weight, full.guard)
            outcomes += full.outcome != OUTCOME_NONE
    # Both kinds are exercised: pairs that match or go to review, and no-matches settled early.
    assert outcomes > 500 and settled > 3000


def test_phone_last_seven_digits_and_the_first_level_that_holds():
    a = person(email="", phone="+1 415 555 0100")
    b = person(email="", phone="+1 650 555 0100")
    assert level_of("phone", Comparisons(a, b)["phone"]) == "last_7"
    assert level_of("first_name", Comparisons(person("Jon"), person("John"))["first_name"]) in ("nickname", "fuzzy_92")
    assert level_of("last_name", Comparisons(person(last="Smith"), person(last="Smyth"))["last_name"]) == "fuzzy_85"
    # A shared postcode with another street is a level of its own (namesakes look like this).
    here, there = person(postal="94105", street="1 Main St"), person(postal="94105", street="77 Oak Avenue")
    levels = dict(zip(ATTRIBUTES, levels_of(Comparisons(here, there)), strict=True))
    assert levels["postal_code"] == "other_street" and levels["address"] == "different"


def test_em_recovers_m_and_the_prior_from_a_generated_sample():
    rng = random.Random(5)
    true_m = parameters(top_m=0.85)["m"]
    u = parameters(top_u=0.05)["u"]
    pairs = []
    for _ in range(6000):
        truth = rng.random() < 0.3
        source = true_m if truth else u
        levels = []
        for name in ATTRIBUTES:
            if rng.random() < 0.1:
                levels.append(MISSING)
                continue
            names, weights = zip(*source[name].items(), strict=True)
            levels.append(rng.choices(names, weights)[0])
        pairs.append(TrainingPair(levels=tuple(levels), auto_rule=False, guarded=False))
    result = expectation_maximisation(pairs, u, prior=0.1)
    assert result.converged
    assert result.prior == pytest.approx(0.3, abs=0.03)
    for name, levels in LEVELS.items():
        for level in levels:
            assert result.m[name][level] == pytest.approx(true_m[name][level], abs=0.05), (name, level)


def _drawn(rng: random.Random, table: dict) -> tuple[str, ...]:
    return tuple(rng.choices(*zip(*table[name].items(), strict=True))[0] for name in ATTRIBUTES)


def test_without_steward_decisions_the_thresholds_are_the_models_own_floor():
    # Weak labels (the rules' own merges) cannot choose a threshold: each merge the weights add
    # counts against them, so they pushed it past the top of the range (no merge by weight ever).
    rng = random.Random(3)
    source = parameters(top_m=0.85)
    pairs = [TrainingPair(levels=_drawn(rng, source["m"]), auto_rule=i % 2 == 0, guarded=False) for i in range(300)]
    pairs += [TrainingPair(levels=_drawn(rng, source["u"]), auto_rule=False, guarded=False) for _ in range(300)]
    random_pairs = [_drawn(rng, source["u"]) for _ in range(600)]
    trained = train(TrainingData(random_pairs=random_pairs, blocked=pairs))
    assert posterior_floor(0.995) == 8.0  # log2(0.995 / 0.005) = 7.64, rounded up to the half bit
    assert trained.model.auto_threshold == 8.0
    assert trained.model.review_threshold == 4.0
    assert trained.report["labels_undecided"] is True
    assert "own match probability" in trained.report["threshold_basis"]


def test_labels_every_threshold_satisfies_leave_the_auto_threshold_at_the_models_own_floor():
    # Steward decisions where every pair the weights could merge is a true match and every
    # non-match is guarded: every threshold "meets" the target precision, and the lowest tried
    # (-10 bits) used to win.
    rng = random.Random(3)
    source = parameters(top_m=0.85)
    labelled = [
        TrainingPair(levels=_drawn(rng, source["m"]), auto_rule=False, guarded=False, label=1) for _ in range(40)
    ]
    labelled += [
        TrainingPair(levels=_drawn(rng, source["u"]), auto_rule=False, guarded=True, label=0) for _ in range(40)
    ]
    random_pairs = [_drawn(rng, source["u"]) for _ in range(600)]
    trained = train(TrainingData(random_pairs=random_pairs, labelled=labelled))
    assert trained.report["threshold_basis"] == "labelled decisions"
    assert trained.report["labels_undecided"] is True
    assert trained.model.auto_threshold == posterior_floor(0.995) == 8.0
    assert trained.model.review_threshold <= 4.0


# ---------------------------------------------------------------------------
# Matching with and without an active model
# ---------------------------------------------------------------------------
def test_no_active_model_leaves_matching_to_the_rules_alone(sandbox):
    make_model(status="draft")
    make_model(version=2, status="retired")
    ingest("POS", "p-1", cim("Ann", "Lee", email="ann.lee@example.com", postal="94105"))
    ingest("CRM", "c-1", cim("Ann", "Lee", email="a.lee@other.example", postal="94105"))
    pair = MatchCandidate.objects.get()
    assert pair.rule == "Name and postcode" and pair.model_version is None
    assert "weight" not in pair.comparison and "modelVersion" not in pair.comparison


def test_an_active_model_merges_a_pair_no_auto_rule_holds_and_the_decision_names_its_version(sandbox):
    make_model(version=3)
    first = ingest("POS", "p-1", cim("Ann", "Lee", email="ann.lee@example.com", postal="94105"))
    second = ingest("CRM", "c-1", cim("Ann", "Lee", email="a.lee@other.example", postal="94105"))
    assert second == first
    xref = CrossReference.objects.get(system="CRM", external_id="c-1")
    assert xref.match_rule == "Match weight"
    detail = xref.match_detail
    assert detail["modelVersion"] == 3 and detail["weight"] >= 15
    assert detail["parts"]["first_name"]["level"] == "normalized" and detail["parts"]["phone"]["level"] == MISSING
    assert not MatchCandidate.objects.exists()


def test_a_guard_sends_a_high_weight_twin_pair_to_review(sandbox, client):
    make_model(version=4)
    shared = {"last": "Okafor", "birth": "1990-04-01", "postal": "94105", "email": "okafor.home@example.com"}
    one = ingest("POS", "p-1", cim("Chidi", **shared))
    two = ingest("POS", "p-2", cim("Chioma", **shared))
    assert one != two
    pair = MatchCandidate.objects.get(status="open")
    assert pair.model_version == 4
    assert pair.comparison["weight"] >= 15  # the weight alone would have merged them
    assert pair.comparison["guard"] == "Guard: possible twins" == pair.rule
    # The review pair page shows the weight and each attribute's part.
    client.force_login(get_user_model().objects.create_superuser("lead", "", "pw-for-tests"))
    page = client.get(reverse("admin:customers_matchcandidate_change", args=[pair.pk])).content.decode()
    assert 'id="match-weight"' in page and "matcher model v4" in page and "Guard: possible twins" in page
    assert "sounds alike" in page or "different" in page
    # The queue's list shows it too, from the stored decision (no query per row).
    queue = client.get(reverse("admin:customers_matchcandidate_changelist") + "?status__exact=open").content.decode()
    assert f"{pair.comparison['weight']:.1f} bits (model v4)" in queue and 'class="match-weight"' in queue


def test_auto_merge_rules_still_merge_whatever_the_weight(sandbox):
    make_model(version=5, auto=500.0, review=400.0)  # no weight can reach these thresholds
    first = ingest("POS", "p-1", cim("Ann", "Lee", email="ann.lee@example.com"))
    second = ingest("CRM", "c-1", cim("Ann", "Lee", email="Ann.Lee@example.com"))
    assert first == second
    assert CrossReference.objects.get(system="CRM").match_detail["rule"] == "Same email, same name"


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
def _load(records: int, duplicates: int) -> None:
    """A small golden set as the benchmark makes it; then some of its people again from another system."""
    generator = CustomerGenerator(records, 200, seed=3)
    now = timezone.now()
    golden = list(generator.golden())
    work = UnitOfWork(render_snapshots=False)
    work.reserve(goldens=len(golden), sources=len(golden) + duplicates)
    made = []
    for item in golden:
        g = work.new_golden(now)
        record = work.new_source("BENCH", item.external_id, g, now)
        work.update_source(record, parse_individual(item.record), last_seen_at=now)
        work.recompute(g, actor="test", now=now, history_action=None)
        made.append(g)
    # Second sources for some: within-record pairs for the EM.
    for n, (item, g) in enumerate(zip(golden[:duplicates], made[:duplicates], strict=True)):
        record = work.new_source("OTHER", f"o-{n}", g, now)
        copy = dict(item.record) | {"firstName": item.record["firstName"].upper()}
        work.update_source(record, parse_individual(copy), last_seen_at=now)
        work.recompute(g, actor="test", now=now, history_action=None)
    work.flush(now)


def test_train_matcher_saves_a_draft_and_prints_precision_and_recall(sandbox):
    _load(600, 80)
    # Stewards' decisions: a few pairs marked not a match, a few review pairs merged.
    rules = load_rules()
    work = UnitOfWork()
    ids = list(CrossReference.objects.order_by("individual_id").values_list("individual_id", flat=True)[:40])
    work.load_goldens(ids)
    a, b = work.golden(ids[0]), work.golden(ids[-1])
    mark_not_a_match(Individual.objects.get(pk=a.pk), Individual.objects.get(pk=b.pk), actor="steward")
    decision = decide(rules, work.profile_of(a), work.profile_of(a), explain_all=True)
    MatchCandidate.objects.create(
        left_id=min(ids[1], ids[2]),
        right_id=max(ids[1], ids[2]),
        rule="x",
        comparison=decision.explanation(),
        status="merged",
    )
    out = io.StringIO()
    call_command("train_matcher", random_records=400, blocked_records=400, stdout=out)
    text = out.getvalue()
    row = MatcherModel.objects.get()
    assert row.version == 1 and row.status == "draft" and row.created_by == "train_matcher"
    assert "threshold" in text and "precision" in text and "Saved matcher model v1 as a draft" in text
    report = row.training_report
    assert report["pairs"]["random pairs"] >= 400
    assert report["pairs"]["blocked pairs: source records of one golden record"] > 0
    assert report["pairs"]["labelled pairs: not-a-match (incl. unmerges)"] == 1
    assert report["pairs"]["labelled pairs: merged in review"] == 1
    assert "weak labels" in report["evaluated_against"]  # two labels are too few to measure against
    assert row.review_threshold <= row.auto_threshold
    model = MatchModel.from_json(row.parameters, auto_threshold=row.auto_threshold, review_threshold=0)
    # Agreement weighs for a match, disagreement against (suffixes are too rare here to say either way).
    for name in ("first_name", "last_name", "birth_date", "email", "phone", "postal_code", "address"):
        assert model.weights[name][LEVELS[name][0]] > 0 > model.weights[name]["different"], name
    # Training twice makes the next version; neither is active.
    call_command("train_matcher", random_records=100, blocked_records=100, stdout=io.StringIO())
    assert list(MatcherModel.objects.values_list("version", "status")) == [(2, "draft"), (1, "draft")]


def test_training_on_the_same_data_with_the_same_seed_draws_the_same_sample(sandbox):
    _load(300, 40)
    first, again, other = (collect(random_records=100, blocked_records=100, seed=s) for s in (5, 5, 6))
    assert first.random_pairs == again.random_pairs and first.blocked == again.blocked
    assert first.random_pairs != other.random_pairs


# ---------------------------------------------------------------------------
# Activation in the admin
# ---------------------------------------------------------------------------
def _member(client, username, group):
    user = get_user_model().objects.create_user(username, password="pw-for-tests", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    client.force_login(user)
    return client


def test_a_steward_activates_a_model_after_its_dry_run_and_can_reactivate_the_previous(sandbox, client):
    ingest("POS", "p-1", cim("Ann", "Lee", email="ann.lee@example.com", postal="94105"))
    ingest("CRM", "c-1", cim("Ann", "Lee", email="a.lee@other.example", postal="94105"))
    old = make_model(version=1, status="draft", auto=500.0, review=400.0)
    new = make_model(version=2, status="draft")
    steward = _member(client, "sam", "Data steward")
    page = steward.get(reverse("admin:customers_matchermodel_change", args=[new.pk])).content.decode()
    assert 'id="levels"' in page and "sounds alike" in page and "Activate (dry run first)" in page
    dry = steward.get(reverse("admin:customers_matchermodel_activate", args=[new.pk]))
    text = dry.content.decode()
    assert dry.status_code == 200 and "Dry run" in text and 'id="confirm-activate"' in text
    # The open review pair would auto-merge under v2: the dry run says so, and nothing changed yet.
    assert "review (Name and postcode)" in text and "auto-merge (Match weight)" in text
    assert MatcherModel.objects.get(pk=new.pk).status == "draft"
    steward.post(reverse("admin:customers_matchermodel_activate", args=[old.pk]), {"confirm": "yes"})
    steward.post(reverse("admin:customers_matchermodel_activate", args=[new.pk]), {"confirm": "yes"})
    statuses = dict(MatcherModel.objects.values_list("version", "status"))
    assert statuses == {1: "retired", 2: "active"}
    assert MatcherModel.objects.get(version=2).activated_by == "user:sam"
    # The previous one can be activated again.
    steward.post(reverse("admin:customers_matchermodel_activate", args=[old.pk]), {"confirm": "yes"})
    assert dict(MatcherModel.objects.values_list("version", "status")) == {1: "active", 2: "retired"}
    # Each activation is in the change log.
    entries = LogEntry.objects.get_for_model(MatcherModel).filter(action=LogEntry.Action.UPDATE)
    assert sum(1 for e in entries if "status" in (e.changes_dict or {})) == 5  # 3 activations, 2 retirements
    # A POST without the confirmation activates nothing.
    steward.post(reverse("admin:customers_matchermodel_activate", args=[new.pk]), {})
    assert MatcherModel.objects.get(version=2).status == "retired"


def test_a_viewer_sees_models_but_cannot_activate(sandbox, client):
    row = make_model(version=1, status="draft")
    viewer = _member(client, "vera", "Viewer")
    assert viewer.get(reverse("admin:customers_matchermodel_changelist")).status_code == 200
    page = viewer.get(reverse("admin:customers_matchermodel_change", args=[row.pk])).content.decode()
    assert 'id="levels"' in page and "dry run first" not in page
    assert viewer.get(reverse("admin:customers_matchermodel_activate", args=[row.pk])).status_code == 403
    assert (
        viewer.post(reverse("admin:customers_matchermodel_activate", args=[row.pk]), {"confirm": "yes"}).status_code
        == 403
    )
    assert MatcherModel.objects.get().status == "draft"


def test_a_differs_criterion_holds_only_when_both_sides_have_values_that_disagree():
    (criterion,) = parse_criteria([{"attribute": "birth_date", "method": "exact", "differs": True}])
    assert criterion.holds(Comparisons(person(birth="1980-01-02"), person(birth="1981-01-02"))["birth_date"])
    assert not criterion.holds(Comparisons(person(birth="1980-01-02"), person(birth="1980-01-02"))["birth_date"])
    assert not criterion.holds(Comparisons(person(birth="1980-01-02"), person())["birth_date"])  # blank: no evidence
    assert criterion.describe() == "birth_date differs (not exact)"
    with pytest.raises(ValueError, match="differs must be true or false"):
        parse_criteria([{"attribute": "birth_date", "method": "exact", "differs": "yes"}])


def test_an_active_model_with_unreadable_parameters_leaves_matching_to_the_rules(sandbox):
    MatcherModel.objects.create(
        version=9, status="active", parameters={"m": {"first_name": "oops"}}, auto_threshold=1, review_threshold=0
    )
    ingest("POS", "p-1", cim("Ann", "Lee", email="ann.lee@example.com", postal="94105"))
    ingest("CRM", "c-1", cim("Ann", "Lee", email="a.lee@other.example", postal="94105"))
    pair = MatchCandidate.objects.get()
    assert pair.rule == "Name and postcode" and pair.model_version is None


def test_the_review_queue_lists_each_pairs_weight_with_a_bounded_number_of_queries(sandbox, client):
    people = [ingest("POS", f"q-{n}", cim(f"Name{n}", f"Surname{n}", email=f"q{n}@example.com")) for n in range(7)]
    ids = sorted(p.pk for p in people)
    pairs = [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]
    MatchCandidate.objects.bulk_create(
        MatchCandidate(
            left_id=a,
            right_id=b,
            rule="Match weight",
            model_version=2,
            comparison={"weight": 7.25 + n, "modelVersion": 2, "parts": {"last_name": {"level": "exact", "weight": 6}}},
        )
        for n, (a, b) in enumerate(pairs)
    )
    client.force_login(get_user_model().objects.create_superuser("lead", "", "pw-for-tests"))
    with CaptureQueriesContext(connection) as queries:
        queue = client.get(reverse("admin:customers_matchcandidate_changelist") + "?status__exact=open")
    text = queue.content.decode()
    assert text.count('class="match-weight"') == len(pairs) == 21
    assert "7.2 bits (model v2)" in text and "last name: " in text
    assert len(queries) <= 12, len(queries)
