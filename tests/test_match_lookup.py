"""Issue 13's latency target: one match call is two statements, and it loads what the ORM would (real PostgreSQL)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from customers.cim import parse_individual
from customers.models import CrossReference, Individual, MatchCandidate, MatcherModel, MatchRule, SurvivorshipRule
from customers.resolution import configuration
from customers.resolution.blocking import profile_from_source
from customers.resolution.engine import SourceChange, resolve
from customers.resolution.rules import OUTCOME_AUTO
from customers.resolution.store import UnitOfWork
from customers.stewardship import activate_matcher_model, mark_not_a_match, retire_matcher_model
from tests.test_match_weights import make_model
from tests.test_mdm import cim

pytestmark = pytest.mark.django_db

EMAIL_RULE = "Same email, same name"


def change(system: str, record_id: str, email: str) -> SourceChange:
    return SourceChange(
        system=system,
        external_id=record_id,
        source=parse_individual({"id": record_id, **cim("Ann", "Lee", email=email, postal="94105")}),
        actor="test",
    )


def namesakes() -> list[int]:
    """Four golden records of 'Ann Lee' at one postcode (each pair a suspect), one pair marked not a match."""
    for n in range(4):
        resolve([change(f"SYS{n}", f"r-{n}", f"ann{n}@example.com")], render_snapshots=False)
    ids = sorted(Individual.objects.values_list("pk", flat=True))
    assert len(ids) == 4 and MatchCandidate.objects.filter(status="open").exists()
    a, b = Individual.objects.get(pk=ids[0]), Individual.objects.get(pk=ids[1])
    mark_not_a_match(a, b, actor="test")
    return ids


def incoming():
    return profile_from_source(parse_individual(cim("Ann", "Lee", email="ann.new@example.com", postal="94105")))


def test_one_match_call_is_two_statements_however_many_candidates_it_loads():
    ids = namesakes()
    UnitOfWork().match(incoming())  # reads the configuration once for this process
    work = UnitOfWork()
    with CaptureQueriesContext(connection) as queries:
        result = work.match(incoming())
    # The configuration's fingerprint, then the keys with their golden records, sources and pair
    # memory (it was seven: keys, records, sources, not-a-match, open pairs, rules, model).
    assert len(queries) == 2, [q["sql"][:80] for q in queries]
    assert result.compared == 4 and set(work.goldens) == set(ids)


def test_a_golden_record_loaded_with_its_keys_holds_what_the_orm_reads():
    ids = namesakes()
    work = UnitOfWork()
    work.match(incoming())
    open_pairs = set(MatchCandidate.objects.filter(status="open").values_list("left_id", "right_id"))
    for pk in ids:
        golden, row = work.golden(pk), Individual.objects.get(pk=pk)
        assert (golden.master_id, golden.version, golden.erased_at, golden.merged_into_id) == (
            row.master_id,
            row.updated_at,
            row.erased_at,
            row.merged_into_id,
        )
        assert golden.stored_profile == row.match_profile
        assert {p for p in work._open_pairs if pk in p} == {p for p in open_pairs if pk in p}
        # Candidates are compared on their stored profiles: neither their values nor their sources are read.
        assert not golden.sources_loaded
        with pytest.raises(RuntimeError, match="not loaded"):
            golden.sources  # noqa: B018
        with pytest.raises(RuntimeError, match="read as a candidate only"):
            golden.values  # noqa: B018
    assert work.not_a_match_with(ids[0]) == {ids[1]} and work.not_a_match_with(ids[1]) == {ids[0]}
    assert work.not_a_match_with(ids[2]) == set()
    # The ones this work changes get their values and sources, with payloads, in one statement.
    with CaptureQueriesContext(connection) as queries:
        work.load_goldens(ids[1:3])
    assert len(queries) == 1
    for pk in ids[1:3]:
        golden, row = work.golden(pk), Individual.objects.get(pk=pk)
        for name in ("first_name", "last_name", "birth_date", "do_not_market_since", "consent_source"):
            assert golden.values[name] == getattr(row, name), name
        assert (golden.created_at, golden.merged_at, golden.pins, golden.lineage) == (
            row.created_at,
            row.merged_at,
            row.pins,
            row.lineage,
        )
        xrefs = list(CrossReference.objects.filter(individual_id=pk).order_by("id"))
        sources = work.golden(pk).sources
        assert [s.pk for s in sources] == [x.pk for x in xrefs]
        for record, xref in zip(sources, xrefs, strict=True):
            for name in ("system", "external_id", "status", "first_seen_at", "last_seen_at", "updated_at"):
                assert getattr(record, name) == getattr(xref, name), name
            assert record.match_detail == xref.match_detail and record.payload == xref.source_payload
            assert work.source(xref.system, xref.external_id) is record
    # Read by id, a golden record comes with its sources; one side of a pair knows it from either end.
    for alone, other in ((ids[1], ids[0]), (ids[0], ids[1])):
        single = UnitOfWork()
        single.load_goldens([alone])
        assert single.not_a_match_with(alone) == {other} and single.not_a_match_with(other) == {alone}
        assert [s.pk for s in single.golden(alone).sources] == list(
            CrossReference.objects.filter(individual_id=alone).order_by("id").values_list("pk", flat=True)
        )


def test_an_unchanged_configuration_is_not_read_again():
    namesakes()
    first = UnitOfWork().configuration
    with CaptureQueriesContext(connection) as queries:
        again = UnitOfWork().configuration
    assert again is first and len(queries) == 1


def test_a_rule_edited_in_sql_is_in_force_at_the_next_unit_of_work():
    """No cache timeout to wait for, and no save() needed: the fingerprint reads the rows."""
    ids = namesakes()
    [auto] = [r for r in UnitOfWork().rules if r.name == EMAIL_RULE]
    assert auto.outcome == OUTCOME_AUTO
    same = profile_from_source(parse_individual(cim("Ann", "Lee", email="ann2@example.com", postal="94105")))
    assert UnitOfWork().match(same).best[0].pk == ids[2]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {MatchRule._meta.db_table} SET enabled = false WHERE name = %s", [EMAIL_RULE])
    work = UnitOfWork()
    assert EMAIL_RULE not in {r.name for r in work.rules}
    best = work.match(same).best
    assert best is None or best[1].rule != EMAIL_RULE


def test_activating_and_retiring_a_model_is_in_force_at_the_next_unit_of_work():
    namesakes()
    assert UnitOfWork().model is None
    row = make_model(version=4, status="draft")
    assert UnitOfWork().model is None  # a draft decides nothing
    activate_matcher_model(row, actor="test")
    assert UnitOfWork().model.version == 4
    retire_matcher_model(MatcherModel.objects.get(pk=row.pk))
    assert UnitOfWork().model is None


def test_a_survivorship_rule_changed_is_in_force_at_the_next_unit_of_work():
    rule = SurvivorshipRule.objects.get(attribute="first_name")
    before = UnitOfWork().strategies["first_name"].strategy
    rule.strategy = "most_frequent" if before != "most_frequent" else "most_recent"
    rule.save()
    assert UnitOfWork().strategies["first_name"].strategy == rule.strategy != before


def test_the_fingerprint_changes_with_each_table():
    start = configuration.fingerprint()
    MatchRule.objects.filter(name=EMAIL_RULE).update(priority=999)
    after_rule = configuration.fingerprint()
    SurvivorshipRule.objects.filter(attribute="first_name").update(source_priority="CRM")
    after_survivorship = configuration.fingerprint()
    make_model(version=9)
    after_model = configuration.fingerprint()
    assert len({start, after_rule, after_survivorship, after_model}) == 4
